"""A model exported for serving computes what the model computes.

TensorFlow and JAX: `model.export(path, format="tf_saved_model")` (JAX through jax2tf),
loaded back with `tf.saved_model.load`; on TensorFlow also converted to TF Lite. PyTorch: `torch.export.export`, whose program
ExecuTorch and ONNX start from (Keras 3.15's `model.export` fails on PyTorch 2.13 for
any model, a `Dense` alone too). Each exported program runs on inputs it was not traced
with (other batch sizes, other masks; other lengths too where the time axis is dynamic).
"""

import keras
import numpy as np
import pytest
from conftest import BACKEND, to_numpy

import kerasrnn

VOCAB = 20


def _ids(rng, batch, steps):
    """Token ids right-padded with 0 (one sentence of every length class)."""
    ids = rng.integers(1, VOCAB, size=(batch, steps)).astype("int32")
    lengths = rng.integers(1, steps + 1, size=batch)
    lengths[0] = steps
    return np.where(np.arange(steps)[None, :] < lengths[:, None], ids, 0).astype("int32")


def masked_bidirectional(inputs):
    x = keras.layers.Embedding(VOCAB, 4, mask_zero=True)(inputs)
    x = keras.layers.Bidirectional(kerasrnn.GRU(5, return_sequences=True))(x)
    return keras.layers.Dense(2)(kerasrnn.LSTM(6)(x))


def deep_stack(inputs):
    x = kerasrnn.DeepRNN.repeat(kerasrnn.LSTM(5), 2, bidirectional=True, return_sequences=True)(inputs)
    return kerasrnn.IRNN(4, go_backwards=True, return_sequences=True)(x)


def extensions(inputs):
    x = kerasrnn.LSTM(6, layer_norm=True, use_peepholes=True, proj_size=3, return_sequences=True)(inputs)
    return kerasrnn.GRU(4, reset_after=False, dropout=0.2, recurrent_dropout=0.2, zoneout=0.1)(x)


#: name -> (model body, whether its input is token ids)
MODELS = {
    "masked_bidirectional": (masked_bidirectional, True),
    "deep_stack": (deep_stack, False),
    "extensions": (extensions, False),
}


def _model(name, steps=None):
    body, ids = MODELS[name]
    inputs = keras.Input((steps,), dtype="int32") if ids else keras.Input((steps, 3))
    return keras.Model(inputs, body(inputs)), ids


def _data(rng, ids, batch, steps):
    return _ids(rng, batch, steps) if ids else rng.normal(size=(batch, steps, 3)).astype("float32")


@pytest.mark.skipif(BACKEND == "torch", reason="Keras's export fails on PyTorch 2.13 (see the module)")
@pytest.mark.parametrize("name", MODELS)
def test_saved_model_serves_what_the_model_computes(name, rng, tmp_path):
    tf = pytest.importorskip("tensorflow")
    model, ids = _model(name)
    model.export(str(tmp_path / "served"), format="tf_saved_model", verbose=False)
    served = tf.saved_model.load(str(tmp_path / "served"))  # kept: its variables live in it
    for batch, steps in ((3, 9), (5, 6)):
        data = _data(rng, ids, batch, steps)
        np.testing.assert_allclose(
            served.serve(tf.constant(data)).numpy(), to_numpy(model(data)), rtol=1e-5, atol=1e-6
        )


@pytest.mark.skipif(BACKEND != "tensorflow", reason="JAX: the seed generators' uint32 state stops TF Lite")
@pytest.mark.parametrize("name", MODELS)
def test_tflite_with_a_fixed_signature_serves_what_the_model_computes(name, rng, tmp_path):
    """TF Lite's own ops (no Flex delegate) take the loop once every shape is fixed: the
    time loop's `TensorArray`s need a static element shape (`keras.layers.LSTM` and
    `GRU` convert on the same condition)."""
    tf = pytest.importorskip("tensorflow")
    steps = 7
    model, ids = _model(name)
    data = _data(rng, ids, 2, steps)
    spec = tf.TensorSpec(data.shape, tf.as_dtype(data.dtype))
    model.export(str(tmp_path / "served"), format="tf_saved_model", verbose=False, input_signature=[spec])
    interpreter = tf.lite.Interpreter(
        model_content=tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "served")).convert()
    )
    interpreter.allocate_tensors()
    for _ in range(2):  # other values (other masks), the same shape
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], data)
        interpreter.invoke()
        got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
        np.testing.assert_allclose(got, to_numpy(model(data)), rtol=1e-5, atol=1e-6)
        data = _data(rng, ids, 2, steps)


@pytest.mark.skipif(BACKEND != "torch", reason="torch.export")
@pytest.mark.parametrize("called_first", [False, True], ids=["fresh", "called-first"])
@pytest.mark.parametrize("name", MODELS)
def test_torch_export_runs_what_the_model_computes(name, called_first, rng):
    """The batch axis is dynamic; the time axis is not (torch's own LSTM kernel
    specializes it when exported, as a Python loop over time does). A fresh model is
    exported before any call has made the fused kernel's weight buffer, and a mask is
    traced without reading its values: both failed before (a storage swap, a
    data-dependent check of the padding)."""
    import torch

    steps = 7
    model, ids = _model(name, steps)
    example = torch.tensor(_data(rng, ids, 4, steps))
    if called_first:
        model(example)
    batch = torch.export.Dim("batch", min=2, max=64)
    exported = torch.export.export(model, (example,), dynamic_shapes=(({0: batch},),))
    if name == "deep_stack":  # the stack runs as torch's kernel in the program too
        ops = {str(node.target) for node in exported.graph.nodes if node.op == "call_function"}
        assert any("lstm" in op for op in ops), sorted(ops)
    program = exported.module()
    for size in (3, 5):
        data = torch.tensor(_data(rng, ids, size, steps))
        np.testing.assert_allclose(to_numpy(program(data)), to_numpy(model(data)), rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(BACKEND != "torch", reason="torch.jit.trace")
@pytest.mark.parametrize("grad", [True, False], ids=["grad", "no-grad"])
@pytest.mark.parametrize("name", MODELS)
def test_torch_jit_trace_runs_what_the_model_computes(name, grad, rng):
    """The fused GRU's weight mirror failed under `torch.jit.trace` (traced with
    gradients: "unordered_map::at"; traced without them, then called with them:
    `index_select(out=...)` under autograd), and a mask's padding read while tracing
    would have frozen one batch's lengths into the program."""
    import torch

    steps = 7
    model, ids = _model(name, steps)
    with torch.enable_grad() if grad else torch.no_grad():
        traced = torch.jit.trace(model, (torch.tensor(_data(rng, ids, 4, steps)),), strict=False, check_trace=False)
    for size in (4, 3):
        data = torch.tensor(_data(rng, ids, size, steps))
        np.testing.assert_allclose(to_numpy(traced(data)), to_numpy(model(data)), rtol=1e-5, atol=1e-6)
