"""Layer normalization (Ba et al. 2016) in SimpleRNN, LSTM and GRU: golden values,
placement, gradients, save/load, the fused path refused, bad options."""

import keras
import numpy as np
import pytest
from conftest import BACKEND, to_numpy
from extension_utils import (
    GRAD_DTYPE,
    check_gradients,
    random_weights,
    save_and_load,
    weighted_sum,
)

import kerasrnn
from kerasrnn.layers.cell import center_blocks, layer_norm, normalize_centered
from kerasrnn.ops.math import rms_scale
from kerasrnn.testing import reference as ref

B, T, I, U = 3, 6, 5, 4


def _reference_step(kind, w, epsilon=1e-3):
    if kind == "simple_rnn":
        return lambda x, s: ref.simple_rnn_ln_step(
            x, s, w["kernel"], w["recurrent_kernel"], w["bias"], (w["norm_gamma"], w["norm_beta"]), epsilon
        )
    if kind == "lstm":
        norms = {n: (w[f"{n}_norm_gamma"], w[f"{n}_norm_beta"]) for n in ("kernel", "recurrent", "state")}
        return lambda x, s: ref.lstm_extended_step(
            x, s, w["kernel"], w["recurrent_kernel"], w["bias"], norms=norms, epsilon=epsilon
        )
    reset_after = kind == "gru"
    return lambda x, s: ref.gru_ln_step(
        x, s, w["kernel"], w["recurrent_kernel"], w["bias"],
        (w["kernel_norm_gamma"], w["kernel_norm_beta"]),
        (w["recurrent_norm_gamma"], w["recurrent_norm_beta"]),
        epsilon, reset_after=reset_after,
    )


def _layer(kind, **kwargs):
    if kind == "simple_rnn":
        return kerasrnn.SimpleRNN(U, layer_norm=True, **kwargs)
    if kind == "lstm":
        return kerasrnn.LSTM(U, layer_norm=True, **kwargs)
    return kerasrnn.GRU(U, layer_norm=True, reset_after=kind == "gru", **kwargs)


KINDS = ["simple_rnn", "lstm", "gru", "gru_cho"]


@pytest.mark.parametrize("hoist", [True, False])
@pytest.mark.parametrize("kind", KINDS)
def test_golden_values(kind, hoist, rng):
    x = rng.uniform(0.1, 1.0, (B, T, I))
    layer = _layer(kind, return_sequences=True, return_state=True, hoist_inputs=hoist, layer_norm_epsilon=1e-2)
    layer.build((None, None, I))
    w = random_weights(layer, rng)
    out, *states = layer(x.astype("float32"))
    init = [np.zeros((B, s)) for s in layer.state_size]
    expected, expected_states = ref.run_sequence(_reference_step(kind, w, 1e-2), x, init)
    np.testing.assert_allclose(to_numpy(out), expected, atol=1e-5)
    for got, want in zip(states, expected_states):
        np.testing.assert_allclose(to_numpy(got), want, atol=1e-5)
    assert layer.last_path == "kerasrnn.ops.unroll"


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_golden_values_with_mask_and_go_backwards(kind, rng):
    x = rng.uniform(0.1, 1.0, (B, T, I))
    mask = np.ones((B, T), bool)
    mask[0, 4:] = False
    mask[1, :2] = False
    layer = _layer(kind, return_sequences=True, go_backwards=True)
    layer.build((None, None, I))
    w = random_weights(layer, rng)
    out = layer(x.astype("float32"), mask=mask)
    init = [np.zeros((B, s)) for s in layer.state_size]
    expected, _ = ref.run_sequence(_reference_step(kind, w), x, init, mask=mask, go_backwards=True)
    np.testing.assert_allclose(to_numpy(out), expected, atol=1e-5)


def test_normalization_matches_keras_layer_normalization(rng):
    z = rng.normal(2.0, 3.0, (B, 4 * U)).astype("float32")
    gamma, beta = rng.normal(size=4 * U).astype("float32"), rng.normal(size=4 * U).astype("float32")
    keras_ln = keras.layers.LayerNormalization(epsilon=1e-3)
    keras_ln.build((None, U))
    # Per gate block: each block equals Keras's LayerNormalization of that block.
    ours = to_numpy(layer_norm(keras.ops.convert_to_tensor(z), gamma, beta, 1e-3, groups=4))
    for k in range(4):
        block = slice(k * U, (k + 1) * U)
        keras_ln.set_weights([gamma[block], beta[block]])
        np.testing.assert_allclose(ours[:, block], to_numpy(keras_ln(z[:, block])), atol=1e-5)


def test_input_projection_is_normalized_before_the_bias(rng):
    """Scaling the input kernel changes nothing (up to ε) only if LN_x(x W_x) comes
    before `+ b` and apart from the recurrent projection."""
    x = rng.uniform(0.1, 1.0, (B, T, I)).astype("float32")
    layer = kerasrnn.LSTM(U, layer_norm=True, layer_norm_epsilon=1e-7, return_sequences=True)
    layer.build((None, None, I))
    random_weights(layer, rng)
    before = to_numpy(layer(x))
    layer.cell.kernel.assign(to_numpy(layer.cell.kernel) * 50.0)
    np.testing.assert_allclose(to_numpy(layer(x)), before, atol=1e-4)
    plain = kerasrnn.LSTM(U, return_sequences=True)
    plain.build((None, None, I))
    plain.set_weights(layer.get_weights()[:3])
    assert np.abs(to_numpy(plain(x)) - before).max() > 1e-2  # the normalization matters


def test_simple_rnn_is_scale_invariant(rng):
    """Géron's LN-SimpleRNN normalizes the whole pre-activation: scaling W_x, W_h and b
    together leaves h_t unchanged."""
    x = rng.uniform(0.1, 1.0, (B, T, I)).astype("float32")
    layer = kerasrnn.SimpleRNN(U, layer_norm=True, layer_norm_epsilon=1e-7, return_sequences=True)
    layer.build((None, None, I))
    random_weights(layer, rng)
    before = to_numpy(layer(x))
    for w in (layer.cell.kernel, layer.cell.recurrent_kernel, layer.cell.bias):
        w.assign(to_numpy(w) * 7.0)
    np.testing.assert_allclose(to_numpy(layer(x)), before, atol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_extra_weights_keep_the_keras_layout(kind):
    layer = _layer(kind)
    layer.build((None, None, I))
    names = [w.name for w in layer.weights]
    assert names[:3] == ["kernel", "recurrent_kernel", "bias"]
    gated = {"lstm": 4, "gru": 3, "gru_cho": 3}.get(kind)
    sizes = {"norm": U} if gated is None else {"kernel_norm": gated * U, "recurrent_norm": gated * U}
    if kind == "lstm":
        sizes["state_norm"] = U
    assert names[3:] == [f"{n}_{p}" for n in sizes for p in ("gamma", "beta")]
    for w in layer.weights[3:]:
        expected = 1.0 if w.name.endswith("gamma") else 0.0
        assert w.shape == (sizes[w.name.rsplit("_", 1)[0]],)
        np.testing.assert_array_equal(to_numpy(w), expected)
    plain = type(layer)(U, **({"reset_after": False} if kind == "gru_cho" else {}))
    plain.build((None, None, I))
    assert [w.shape for w in plain.weights] == [w.shape for w in layer.weights[:3]]
    assert plain.get_config()["layer_norm"] is False


@pytest.mark.parametrize("kind", ["simple_rnn", "lstm", "gru"])
def test_never_fused(kind):
    x = np.ones((2, 3, I), "float32")
    layer = _layer(kind)
    layer(x)
    assert layer.last_path == "kerasrnn.ops.unroll"
    if BACKEND == "torch":
        assert "layer_norm" in layer.last_path_reason
        with pytest.raises(ValueError, match="layer_norm"):
            _layer(kind, fused=True)(x)


@pytest.mark.parametrize("kind", ["simple_rnn", "lstm", "gru_cho"])
def test_gradients(kind, rng, float64):
    layer = _layer(kind, return_sequences=True, return_state=True, dtype=GRAD_DTYPE)
    layer.build((None, None, I))
    random_weights(layer, rng)
    x = rng.uniform(0.1, 1.0, (2, 4, I))
    h0 = rng.normal(0, 0.5, (2, layer.state_size[0]))
    weights = [rng.normal(size=(2, 4, U)), rng.normal(size=(2, U))]

    def loss(x, h0):
        states = [h0] + [keras.ops.zeros((2, s), GRAD_DTYPE) for s in layer.state_size[1:]]
        out, h, *_ = layer(x, initial_state=states)
        return weighted_sum([out, h], weights)

    check_gradients(loss, [x, h0])


def test_save_and_load(rng, tmp_path):
    inputs = keras.Input((None, I))
    outputs = kerasrnn.LSTM(U, layer_norm=True, layer_norm_epsilon=1e-4)(inputs)
    outputs = kerasrnn.GRU(U, layer_norm=True, reset_after=False)(outputs[:, None, :])
    model = keras.Model(inputs, outputs)
    for layer in model.layers[1:]:
        if layer.weights:
            random_weights(layer, rng)
    x = rng.uniform(size=(2, T, I)).astype("float32")
    loaded = save_and_load(model, tmp_path)
    np.testing.assert_allclose(to_numpy(loaded(x)), to_numpy(model(x)), atol=1e-6)
    lstm = next(layer for layer in loaded.layers if isinstance(layer, kerasrnn.LSTM))
    assert lstm.layer_norm and lstm.layer_norm_epsilon == 1e-4


def test_mixed_precision(rng):
    x = rng.uniform(size=(2, T, I)).astype("float32")
    layer = kerasrnn.LSTM(U, layer_norm=True)
    layer.build((None, None, I))
    random_weights(layer, rng)
    expected = to_numpy(layer(x))
    keras.config.set_dtype_policy("mixed_float16")
    half = kerasrnn.LSTM(U, layer_norm=True)
    half.build((None, None, I))
    half.set_weights(layer.get_weights())
    out = half(x)
    assert "float16" in str(out.dtype)
    np.testing.assert_allclose(to_numpy(out).astype("float32"), expected, atol=1e-2)


@pytest.mark.parametrize("epsilon, error", [(0.0, ValueError), (-1e-3, ValueError), ("small", TypeError)])
def test_bad_epsilon(epsilon, error):
    with pytest.raises(error, match="layer_norm_epsilon"):
        kerasrnn.LSTM(U, layer_norm=True, layer_norm_epsilon=epsilon)


@pytest.mark.parametrize("groups", [1, 4])
def test_centered_weights_give_the_layer_norm_of_the_product(groups, rng):
    """LN(x W) = normalize_centered(x · center_blocks(W)): what every cell computes."""
    x = rng.normal(size=(3, 5))
    w = rng.normal(1.0, 2.0, size=(5, 4 * groups))  # block means far from zero
    gamma, beta = rng.normal(size=4 * groups), rng.normal(size=4 * groups)
    centered = to_numpy(center_blocks(w.astype("float32"), groups))
    assert np.abs(centered.reshape(5, groups, 4).mean(-1)).max() < 1e-6
    got = to_numpy(normalize_centered((x @ centered).astype("float32"), gamma, beta, 1e-3, groups))
    z = (x @ w).reshape(3, groups, 4)
    want = (z - z.mean(-1, keepdims=True)) / np.sqrt(z.var(-1, keepdims=True) + 1e-3)
    np.testing.assert_allclose(got, want.reshape(3, -1) * gamma + beta, rtol=1e-4, atol=1e-5)
    # The plain path (any mean) computes the same.
    plain = to_numpy(layer_norm((x @ w).astype("float32"), gamma, beta, 1e-3, groups))
    np.testing.assert_allclose(plain, want.reshape(3, -1) * gamma + beta, rtol=1e-4, atol=1e-5)


def test_rms_scale_values_and_gradient(rng, float64):
    """`rms_scale` (its own backward pass on TensorFlow) against NumPy and finite differences."""
    z = rng.normal(size=(2, 3, 6))
    z = z - z.mean(-1, keepdims=True)
    want = z / np.sqrt((z**2).mean(-1, keepdims=True) + 1e-2)
    np.testing.assert_allclose(to_numpy(rms_scale(z.astype(GRAD_DTYPE), 1e-2)), want, rtol=1e-12)
    weights = rng.normal(size=z.shape)
    check_gradients(lambda z: weighted_sum(rms_scale(z, 1e-2), [weights]), [z])


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_rms_scale_half_precision(dtype, rng):
    z = rng.normal(size=(4, 8)) * 300.0  # squares overflow float16: statistics in float32
    z = z - z.mean(-1, keepdims=True)
    y = rms_scale(keras.ops.convert_to_tensor(z, dtype), 1e-3)
    assert keras.backend.standardize_dtype(y.dtype) == dtype
    want = z / np.sqrt((z**2).mean(-1, keepdims=True) + 1e-3)
    np.testing.assert_allclose(to_numpy(keras.ops.cast(y, "float32")), want, atol=3e-2)
