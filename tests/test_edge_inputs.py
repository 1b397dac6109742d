"""Edge cases of what a layer is called with: NaN at masked steps, an empty batch,
`stateless_call` with NumPy inputs and under mixed precision."""

import keras
import numpy as np
import pytest
from _util import (
    BATCH,
    FEATURES,
    TIME,
    UNITS,
    loss_and_grads,
    output_shapes,
    random_mask,
)
from conftest import BACKEND, FUSED_LSTM, to_numpy

import kerasrnn

FORMS = {
    "simple": (kerasrnn.SimpleRNN, {}),
    "lstm": (kerasrnn.LSTM, {}),
    "gru_after": (kerasrnn.GRU, {}),
    "gru_before": (kerasrnn.GRU, {"reset_after": False}),
}


def _poisoned(x, mask):
    """`x` with NaN and infinities at the masked steps."""
    bad = x.copy()
    holes = np.argwhere(~mask)
    for k, (b, t) in enumerate(holes):
        bad[b, t] = [np.nan, np.inf, -np.inf][k % 3]
    return bad


def _grads_with_and_without_poison(layer, x, mask, **call_kwargs):
    """Loss and gradients with zeros at the masked steps, then with NaN/inf there."""
    layer(x, mask=mask, **call_kwargs)
    shapes = output_shapes(layer, x.shape)
    rng = np.random.default_rng(1)
    cotangents = [rng.normal(size=s).astype("float32") for s in shapes]
    clean = np.where(mask[..., None], x, 0.0).astype("float32")
    results = [
        loss_and_grads(layer, inputs, cotangents, mask=mask, **call_kwargs)
        for inputs in (clean, _poisoned(x, mask))
    ]
    return results


def _assert_masked_steps_never_reach_the_gradients(results, mask):
    (loss, gx, gw), (bad_loss, bad_gx, bad_gw) = results
    assert np.isfinite(bad_loss) and np.isfinite(bad_gx).all()
    assert all(np.isfinite(g).all() for g in bad_gw)
    np.testing.assert_allclose(bad_loss, loss, rtol=1e-6)
    np.testing.assert_allclose(bad_gx, gx, rtol=1e-5, atol=1e-6)
    for bad, good in zip(bad_gw, gw):
        np.testing.assert_allclose(bad, good, rtol=1e-5, atol=1e-6)
    assert not bad_gx[~mask].any()  # the input of a masked step has gradient zero
    assert np.abs(gw[0]).max() > 0  # a live gradient, not a vacuous comparison


@pytest.mark.parametrize("hoist", [True, False], ids=["hoisted", "in_step"])
@pytest.mark.parametrize("go_backwards", [False, True], ids=["forward", "backward"])
@pytest.mark.parametrize("kind", ["right", "arbitrary"])
@pytest.mark.parametrize("form", list(FORMS))
def test_nan_at_masked_steps_reaches_no_gradient(form, kind, go_backwards, hoist):
    layer_class, options = FORMS[form]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH, TIME, FEATURES)).astype("float32")
    mask = random_mask(rng, BATCH, TIME, kind)
    layer = layer_class(
        UNITS, return_sequences=True, return_state=True, go_backwards=go_backwards,
        hoist_inputs=hoist, **options,
    )
    results = _grads_with_and_without_poison(layer, x, mask)
    _assert_masked_steps_never_reach_the_gradients(results, mask)
    fused = BACKEND == "torch" and kind == "right" and form != "gru_before"
    assert layer.last_path.startswith("fused:") == fused, (layer.last_path, layer.last_path_reason)


@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
def test_nan_at_masked_steps_reaches_no_gradient_of_a_stack(residual):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH, TIME, UNITS)).astype("float32")
    mask = random_mask(rng, BATCH, TIME, "right")
    deep = kerasrnn.DeepRNN(
        [kerasrnn.LSTM(UNITS), kerasrnn.LSTM(UNITS)], residual=residual, return_sequences=True
    )
    results = _grads_with_and_without_poison(deep, x, mask)
    _assert_masked_steps_never_reach_the_gradients(results, mask)
    fused = BACKEND == "torch" and not residual
    assert deep.last_path.startswith("fused:") == fused, (deep.last_path, deep.last_path_reason)


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


@pytest.mark.parametrize("form", list(FORMS))
def test_an_empty_batch_runs_the_loop_with_or_without_a_mask(form):
    """An empty batch never reaches a fused kernel (cuDNN's descriptors take no zero-sized
    tensors), masked or not, and gives empty outputs; `fused=True` does not make it an
    error (it is not a configuration the kernel lacks: nothing is computed)."""
    layer_class, options = FORMS[form]
    layer = layer_class(UNITS, return_sequences=True, return_state=True, **options)
    x = np.zeros((0, TIME, FEATURES), "float32")
    outputs = layer(x)
    states = [(0, UNITS)] * (2 if layer_class is kerasrnn.LSTM else 1)
    assert [tuple(o.shape) for o in outputs] == [(0, TIME, UNITS), *states]
    assert layer.last_path == "kerasrnn.ops.unroll" and "empty batch" in layer.last_path_reason
    strict = layer_class(UNITS, fused=True, **options)
    strict(x, mask=np.zeros((0, TIME), bool))
    assert strict.last_path == "kerasrnn.ops.unroll"


@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
def test_an_empty_batch_through_a_stack(masked):
    deep = kerasrnn.DeepRNN([kerasrnn.GRU(UNITS), kerasrnn.GRU(UNITS)], return_state=True, fused=True)
    mask = np.zeros((0, TIME), bool) if masked else None
    out, *states = deep(np.zeros((0, TIME, FEATURES), "float32"), mask=mask)
    assert tuple(out.shape) == (0, UNITS) and [tuple(s.shape) for s in states] == [(0, UNITS)] * 2
    assert "empty batch" in deep.last_path_reason and not deep.last_path.startswith("fused:")


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
    fused = FUSED_LSTM if form == "lstm" else (BACKEND == "torch" and form != "gru_before")
    assert layer.last_path.startswith("fused:") == fused


@pytest.mark.parametrize("training", [1, 0, np.True_, np.False_], ids=["1", "0", "np_true", "np_false"])
def test_training_given_as_a_number_is_a_flag(training):
    # keras.layers accept `training=1`; on JAX it reached `if training:` as a tracer.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH, TIME, FEATURES)).astype("float32")
    layer = kerasrnn.LSTM(UNITS, dropout=0.5, seed=1)
    layer(x)
    out = to_numpy(layer(x, training=training))
    inference = to_numpy(layer(x, training=False))
    if bool(training):
        assert not np.allclose(out, inference)  # dropout ran
    else:
        np.testing.assert_allclose(out, inference, rtol=1e-6)


@pytest.mark.parametrize("kind", ["ints", "floats", "bools"])
def test_a_mask_given_as_nested_python_values(kind):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH, TIME, FEATURES)).astype("float32")
    mask = random_mask(rng, BATCH, TIME, "arbitrary")
    values = {"ints": int, "floats": float, "bools": bool}[kind]
    nested = [[values(v) for v in row] for row in mask.tolist()]
    layer = kerasrnn.GRU(UNITS, return_sequences=True)
    expected = to_numpy(layer(x, mask=mask))
    np.testing.assert_allclose(to_numpy(layer(x, mask=nested)), expected, rtol=1e-6)
