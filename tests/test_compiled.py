"""`kerasrnn.ops.compiled` and `Seq2Seq.translate`'s compiled steps.

Decoding runs a small step once per generated token. Eagerly on JAX and TensorFlow each
op of that step is dispatched on its own, and on JAX every op is compiled again for each
new batch shape. `compiled` runs the step as one program per signature. The risk of
compiling is stale weights (JAX bakes what it traces as constants): these tests change
the weights after the first compiled call and check that the new ones are used.
"""

import keras
import numpy as np
import pytest
from conftest import BACKEND, to_numpy

from kerasrnn import seq2seq
from kerasrnn.ops.compiled import compiled, compiled_function

COMPILES = BACKEND in ("jax", "tensorflow")


class Affine(keras.layers.Layer):
    """`x @ w + b`, counting how often its method body runs in Python."""

    def __init__(self):
        super().__init__()
        self.runs = 0

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1], 3), initializer="glorot_uniform")
        self.b = self.add_weight(shape=(3,), initializer="zeros")

    def affine(self, x):
        self.runs += 1
        return keras.ops.matmul(x, self.w) + self.b


def _layer(rng):
    layer = Affine()
    layer.build((None, 4))
    return layer, rng.normal(size=(2, 4)).astype("float32")


def test_runs_once_per_signature(rng):
    layer, x = _layer(rng)
    step = compiled(layer, "affine")
    expected = x @ to_numpy(layer.w) + to_numpy(layer.b)
    for _ in range(3):
        np.testing.assert_allclose(to_numpy(step(x)), expected, rtol=1e-6, atol=1e-6)
    if COMPILES:
        assert compiled(layer, "affine") is step  # cached on the layer
    assert layer.runs == (1 if COMPILES else 3)


def test_new_weights_are_used_after_the_first_call(rng):
    layer, x = _layer(rng)
    step = compiled(layer, "affine")
    step(x)
    w = rng.normal(size=(4, 3)).astype("float32")
    layer.set_weights([w, np.ones(3, "float32")])
    np.testing.assert_allclose(to_numpy(step(x)), x @ w + 1.0, rtol=1e-5, atol=1e-5)
    layer.w.assign(2 * w)
    np.testing.assert_allclose(to_numpy(step(x)), x @ (2 * w) + 1.0, rtol=1e-5, atol=1e-5)
    assert layer.runs == (1 if COMPILES else 3)


def test_run_eagerly_runs_the_method_as_it_is(rng):
    model = keras.Sequential([keras.layers.Dense(3)])
    model.build((None, 4))
    model.run_eagerly = True
    assert compiled(model, "call").__func__ is type(model).call


class Counter(keras.layers.Layer):
    """A method that assigns a variable, records what it did on the layer, and branches
    on a Python flag."""

    def __init__(self):
        super().__init__()
        self.runs = 0
        self.kind = None

    def build(self, input_shape):
        self.total = self.add_weight(shape=(), initializer="zeros", trainable=False)

    def add(self, x, mask=None, double=False):
        self.runs += 1
        x = 2.0 * x if double else x  # a Python branch: `double` must not be traced
        if mask is not None:
            x = keras.ops.where(mask, x, 0.0)
        self.kind = ("masked" if mask is not None else "plain", double, tuple(x.shape))
        self.total.assign(self.total + keras.ops.sum(x))
        return keras.ops.convert_to_tensor(self.total)


def _counter():
    layer = Counter()
    layer.build(None)
    return layer


def test_assignments_are_written_back(rng):
    """What the method assigns reaches the variable at every call, though the method
    runs in Python once (JAX: the values come back from the compiled program)."""
    layer = _counter()
    x = rng.normal(size=(3, 2)).astype("float32")
    step = compiled(layer, "add", python_state=("kind",) if BACKEND == "jax" else ())
    for i in range(1, 4):
        out = step(x)
        np.testing.assert_allclose(to_numpy(layer.total), i * x.sum(), rtol=1e-5)
        np.testing.assert_allclose(to_numpy(out), i * x.sum(), rtol=1e-5)
    assert layer.runs == (1 if COMPILES else 3)


@pytest.mark.skipif(BACKEND != "jax", reason="`python_state` and static flags: JAX's path")
def test_python_values_are_part_of_the_signature_and_state_follows_each_call(rng):
    """`True`/`False`/`None` are static (a Python branch on them works), arrays of a
    new shape trace anew, and the attribute each trace set is set again after every
    call of its signature."""
    layer = _counter()
    step = compiled(layer, "add", python_state=("kind",))
    x, y = rng.normal(size=(3, 2)).astype("float32"), rng.normal(size=(4, 2)).astype("float32")
    mask = x > 0
    calls = [
        ((x,), {}, ("plain", False, (3, 2)), x.sum()),
        ((x,), {"double": True}, ("plain", True, (3, 2)), 2 * x.sum()),
        ((x, mask), {}, ("masked", False, (3, 2)), x[mask].sum()),
        ((y,), {}, ("plain", False, (4, 2)), y.sum()),
    ]
    total = 0.0
    for _ in range(2):
        for args, kwargs, kind, added in calls:
            layer.kind = None
            step(*args, **kwargs)
            total += added
            assert layer.kind == kind
            np.testing.assert_allclose(to_numpy(layer.total), total, rtol=1e-5)
    assert layer.runs == len(calls)


@pytest.mark.skipif(BACKEND != "jax", reason="JAX's path")
def test_calls_under_a_transformation_or_with_other_values_run_as_they_are(rng):
    """Inside `jax.jit` (a tracer among the arguments) the method runs in that trace,
    and an argument that is neither an array, a number nor a flag (here a list of
    objects) runs it as it is: nothing is compiled or cached for either."""
    import jax

    layer, x = _layer(rng)
    step = compiled(layer, "affine")
    expected = x @ to_numpy(layer.w) + to_numpy(layer.b)
    np.testing.assert_allclose(to_numpy(jax.jit(lambda v: step(v))(x)), expected, rtol=1e-5, atol=1e-6)
    assert layer.runs == 1

    counter = _counter()
    add = compiled(counter, "add")
    add(x, mask=None, double=False)
    with pytest.raises(TypeError):
        add(x, mask=[object()])  # run as is: the method itself fails on the object
    assert counter.runs == 2


def test_compiled_function_traces_once_per_shape(rng):
    """A plain function (the beam search's scoring) is compiled once per input shape on
    JAX and TensorFlow, and is the function itself on PyTorch; its values are the same."""
    traced = []

    def scale(x, y):
        traced.append(tuple(x.shape))
        return keras.ops.sum(x * y, axis=-1)

    function = compiled_function(scale)
    assert (function is scale) == (BACKEND == "torch")
    assert compiled_function(scale, backends=()) is scale
    for shape in [(2, 3), (2, 3), (4, 3), (2, 3)]:
        x, y = rng.normal(size=shape).astype("float32"), rng.normal(size=shape).astype("float32")
        np.testing.assert_allclose(to_numpy(function(x, y)), (x * y).sum(-1), rtol=1e-6)
    calls = 4 if BACKEND == "torch" else 2
    assert len(traced) == calls, traced


def test_python_state_outside_jax_needs_jax_only(rng):
    """`python_state` is kept on JAX only: TensorFlow refuses it unless told to run the
    method as it is there (`backends=("jax",)`), which is what it then returns."""
    layer = _counter()
    if BACKEND == "tensorflow":
        with pytest.raises(ValueError, match="python_state"):
            compiled(layer, "add", python_state=("kind",))
    step = compiled(layer, "add", backends=("jax",), python_state=("kind",))
    as_it_is = getattr(step, "__func__", None) is Counter.add
    assert as_it_is == (BACKEND != "jax")


def _toy_model(attention="luong"):
    keras.utils.set_random_seed(0)
    model = seq2seq.Seq2Seq(14, 14, embedding_dim=8, encoder_units=8, decoder_units=16, attention=attention)
    model.build()
    return model


def _source(rng, batch, length):
    source = rng.integers(4, 14, size=(batch, length))
    lengths = rng.integers(1, length + 1, size=batch)
    lengths[0] = length  # one sentence fills the batch, as `pad_batch` makes it
    return np.where(np.arange(length)[None, :] < lengths[:, None], source, 0)


@pytest.mark.parametrize("attention", ["luong", "bahdanau", "none"])
@pytest.mark.parametrize("beam_size", [1, 3])
def test_translate_compiled_equals_op_by_op(attention, beam_size, rng):
    """The compiled steps (and the source padded to a multiple of 8) decode what the
    op-by-op steps on the source as given decode."""
    model = _toy_model(attention)
    source = _source(rng, 5, 11)
    tokens, weights = model.translate(source, beam_size=beam_size, max_length=12)
    model.run_eagerly = True
    ref_tokens, ref_weights = model.translate(source, beam_size=beam_size, max_length=12)
    assert tokens == ref_tokens
    for w, ref in zip(weights, ref_weights):
        if attention == "none":
            assert w is None and ref is None
        else:
            assert w.shape == ref.shape and w.shape[1] == 11
            np.testing.assert_allclose(w, ref, rtol=1e-5, atol=1e-6)


def test_translate_compiles_once_per_padded_length(rng, monkeypatch):
    """Sources of 9 to 16 tokens share one compiled step (padded to 16), and a model
    whose weights change between calls decodes with the new ones."""
    model = _toy_model()
    runs = []
    step = seq2seq.Seq2Seq._decode_step

    def counted(self, *args):
        runs.append(1)
        return step(self, *args)

    monkeypatch.setattr(seq2seq.Seq2Seq, "_decode_step", counted)
    for length in (9, 13, 16):
        model.translate(_source(rng, 4, length), max_length=5)
    if COMPILES:
        assert len(runs) == 1
    source = _source(rng, 4, 10)
    before, _ = model.translate(source, max_length=6)
    model.set_weights([np.asarray(w) * 1.5 + 0.05 for w in model.get_weights()])
    after, after_weights = model.translate(source, max_length=6)
    model.run_eagerly = True
    expected, expected_weights = model.translate(source, max_length=6)
    assert after == expected
    for w, ref in zip(after_weights, expected_weights):
        np.testing.assert_allclose(w, ref, rtol=1e-5, atol=1e-6)
    assert after != before  # the new weights decode differently: the test can fail


@pytest.mark.parametrize(
    "source, match",
    [(np.arange(5), r"shape \(5,\)"), (np.ones((2, 3), "float32"), "dtype float32")],
)
def test_translate_rejects_bad_source(source, match):
    model = _toy_model()
    with pytest.raises(ValueError, match=r"`source` must be integer token ids(.|\n)*" + match):
        model.translate(source)
