"""Edge cases of what a layer is called with: an empty batch, `stateless_call` with
NumPy inputs and under mixed precision."""

import keras
import numpy as np
import pytest
from _util import (
    BATCH,
    FEATURES,
    TIME,
    UNITS,
    random_mask,
)
from conftest import BACKEND, to_numpy

import kerasrnn

FORMS = {
    "simple": (kerasrnn.SimpleRNN, {}),
    "lstm": (kerasrnn.LSTM, {}),
    "gru_after": (kerasrnn.GRU, {}),
    "gru_before": (kerasrnn.GRU, {"reset_after": False}),
}


# ------------------------------------------------------------------- empty batch
@pytest.mark.parametrize("form", list(FORMS))
def test_an_empty_batch_with_a_mask_gives_empty_outputs(form):
    """No sequences in, no outputs out (on torch the fused kernel cannot pack an empty
    batch; the loop runs it). keras.layers does the same, but for its LSTM on
    TensorFlow, which fails ("Biases must be 1D")."""
    layer_class, options = FORMS[form]
    layer = layer_class(UNITS, return_sequences=True, return_state=True, **options)
    outputs = layer(np.zeros((0, TIME, FEATURES), "float32"), mask=np.zeros((0, TIME), bool))
    states = [(0, UNITS)] * (2 if layer_class is kerasrnn.LSTM else 1)
    assert [tuple(o.shape) for o in outputs] == [(0, TIME, UNITS), *states]
    assert layer.last_path == "kerasrnn.ops.unroll"


def test_an_empty_batch_through_a_stack():
    deep = kerasrnn.DeepRNN([kerasrnn.GRU(UNITS), kerasrnn.GRU(UNITS)], return_state=True)
    out, *states = deep(np.zeros((0, TIME, FEATURES), "float32"), mask=np.zeros((0, TIME), bool))
    assert tuple(out.shape) == (0, UNITS) and [tuple(s.shape) for s in states] == [(0, UNITS)] * 2


# ---------------------------------------------------------------- stateless_call
def _stateless(layer, x, **kwargs):
    trainable = [v.value for v in layer.trainable_variables]
    non_trainable = [v.value for v in layer.non_trainable_variables]
    out, _ = layer.stateless_call(trainable, non_trainable, x, **kwargs)
    return out


@pytest.mark.parametrize("numpy_inputs", [True, False], ids=["numpy", "tensor"])
@pytest.mark.parametrize("form", list(FORMS))
def test_stateless_call_under_mixed_precision_is_the_call(form, numpy_inputs):
    """`stateless_call` skips Keras's autocast: the layer still computes in its compute
    dtype, and gives what `layer(x)` gives."""
    keras.config.set_dtype_policy("mixed_bfloat16")
    layer_class, options = FORMS[form]
    layer = layer_class(UNITS, return_sequences=True, **options)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH, TIME, FEATURES)).astype("float32")
    mask = random_mask(rng, BATCH, TIME, "arbitrary")
    expected = layer(x, mask=mask)
    inputs = x if numpy_inputs else keras.ops.convert_to_tensor(x)
    got = _stateless(layer, inputs, mask=mask)
    assert keras.backend.standardize_dtype(got.dtype) == "bfloat16"
    np.testing.assert_array_equal(to_numpy(keras.ops.cast(got, "float32")),
                                  to_numpy(keras.ops.cast(expected, "float32")))


def test_stateless_call_of_a_stack_under_mixed_precision():
    keras.config.set_dtype_policy("mixed_bfloat16")
    deep = kerasrnn.DeepRNN([kerasrnn.LSTM(UNITS), kerasrnn.LSTM(UNITS)], return_sequences=True)
    x = np.random.default_rng(0).normal(size=(BATCH, TIME, FEATURES)).astype("float32")
    expected = to_numpy(keras.ops.cast(deep(x), "float32"))
    got = to_numpy(keras.ops.cast(_stateless(deep, x), "float32"))
    np.testing.assert_allclose(got, expected, atol=1e-2)  # bfloat16: 8 bits of mantissa


@pytest.mark.parametrize("form", list(FORMS))
def test_stateless_call_with_numpy_inputs(form):
    layer_class, options = FORMS[form]
    layer = layer_class(UNITS, return_sequences=True, **options)
    x = np.random.default_rng(0).normal(size=(BATCH, TIME, FEATURES)).astype("float32")
    expected = to_numpy(layer(x))
    np.testing.assert_allclose(to_numpy(_stateless(layer, x)), expected, rtol=1e-6, atol=1e-6)
    assert layer.last_path.startswith("fused:") == (BACKEND == "torch" and form != "gru_before")
