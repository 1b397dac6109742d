"""Zoneout (Krueger et al. 2016) and variational dropout (Gal & Ghahramani 2016):
expectation at inference, per-step masks in training, statistics with a fixed seed."""

import keras
import numpy as np
import pytest
from conftest import BACKEND, to_numpy
from extension_utils import (
    GRAD_DTYPE,
    check_gradients,
    random_weights,
    weighted_sum,
)

import kerasrnn
from kerasrnn.testing import reference as ref

B, T, I, U = 3, 6, 5, 4


def _steps(layer, w):
    """The reference step of the layer's plain cell."""
    cell = layer.cell
    if isinstance(cell, kerasrnn.LSTMCell):
        return lambda x, s: ref.lstm_step(x, s, w["kernel"], w["recurrent_kernel"], w["bias"])
    if isinstance(cell, kerasrnn.GRUCell):
        return lambda x, s: ref.gru_step(x, s, w["kernel"], w["recurrent_kernel"], w["bias"], reset_after=True)
    return lambda x, s: ref.simple_rnn_step(x, s, w["kernel"], w["recurrent_kernel"], w["bias"])


LAYERS = {
    "simple_rnn": lambda **kw: kerasrnn.SimpleRNN(U, zoneout=0.3, **kw),
    "gru": lambda **kw: kerasrnn.GRU(U, zoneout=0.3, **kw),
    "lstm": lambda **kw: kerasrnn.LSTM(U, zoneout=0.3, zoneout_cell=0.6, **kw),
}


@pytest.mark.parametrize("kind", list(LAYERS))
def test_inference_is_the_expectation(kind, rng):
    """u_t = p u_{t-1} + (1 − p) ũ_t at inference, for h (and c)."""
    x = rng.uniform(0.1, 1.0, (B, T, I))
    layer = LAYERS[kind](return_sequences=True, return_state=True)
    layer.build((None, None, I))
    w = random_weights(layer, rng)
    out, *states = layer(x.astype("float32"))
    rates = [layer.zoneout] + ([layer.zoneout_cell] if isinstance(layer, kerasrnn.LSTM) else [])
    init = [np.zeros((B, s)) for s in layer.state_size]
    expected, expected_states = ref.run_sequence(ref.zoneout_step(_steps(layer, w), rates), x, init)
    np.testing.assert_allclose(to_numpy(out), expected, atol=1e-5)
    for got, want in zip(states, expected_states):
        np.testing.assert_allclose(to_numpy(got), want, atol=1e-5)
    assert layer.last_path == "kerasrnn.ops.unroll"
    if BACKEND == "torch":
        assert "zoneout" in layer.last_path_reason


@pytest.mark.parametrize("kind", ["simple_rnn", "gru"])
def test_training_keeps_or_updates_each_unit(kind, rng):
    """In training each unit of h_t is either h_{t-1} or the cell's update h̃_t, and is
    kept with probability p, with a new mask at every step."""
    x = rng.uniform(0.1, 1.0, (64, 12, I))
    layer = LAYERS[kind](return_sequences=True, seed=7)
    layer.build((None, None, I))
    w = random_weights(layer, rng)
    h = to_numpy(layer(x.astype("float32"), training=True)).astype("float64")
    previous = np.concatenate([np.zeros((64, 1, U)), h[:, :-1]], axis=1)
    step = _steps(layer, w)
    update = np.stack([step(x[:, t], [previous[:, t]])[0] for t in range(12)], axis=1)
    kept = np.isclose(h, previous, atol=1e-5)
    updated = np.isclose(h, update, atol=1e-5)
    assert (kept | updated).all()
    decided = kept != updated  # units where h_{t-1} and h̃_t differ
    fraction = kept[decided].mean()
    n = decided.sum()
    assert abs(fraction - 0.3) < 4 * np.sqrt(0.3 * 0.7 / n), (fraction, n)
    # Per step: the pattern of kept units differs from step to step.
    assert not (kept[:, 1:] == kept[:, :1]).all()


def test_lstm_cell_training_step(rng):
    """One training step of the cell: each unit of c_t is c_{t-1} or c̃_t (rate 0.6),
    each unit of h_t is h_{t-1} or h̃_t (rate 0.3)."""
    cell = kerasrnn.layers.LSTMCell(U, zoneout=0.3, zoneout_cell=0.6, seed=3)
    n = 2000
    x = rng.uniform(0.1, 1.0, (n, I)).astype("float32")
    h0, c0 = (rng.normal(0, 1, (n, U)).astype("float32") for _ in range(2))
    cell.build((None, I))
    w = random_weights(cell, rng)
    _, (h, c) = cell(x, [h0, c0], training=True)
    _, (eh, ec) = ref.lstm_step(x, [h0, c0], w["kernel"], w["recurrent_kernel"], w["bias"])
    for got, old, new, rate in ((h, h0, eh, 0.3), (c, c0, ec, 0.6)):
        got = to_numpy(got)
        kept = np.isclose(got, old, atol=1e-5)
        assert (kept | np.isclose(got, new, atol=1e-5)).all()
        assert abs(kept.mean() - rate) < 4 * np.sqrt(rate * (1 - rate) / kept.size)


def test_training_expectation_matches_inference(rng):
    """For a linear cell ũ_t = x_t, E[h_t] = p E[h_{t-1}] + (1 − p) x_t: the average
    over many sequences in training is the inference output."""
    layer = kerasrnn.SimpleRNN(
        U, activation="linear", use_bias=False, zoneout=0.4, seed=11, return_sequences=True,
        kernel_initializer="identity", recurrent_initializer="zeros",
    )
    n = 4000
    x = np.broadcast_to(rng.uniform(-1, 1, (1, T, U)), (n, T, U)).astype("float32")
    training = to_numpy(layer(x, training=True)).astype("float64")
    inference = to_numpy(layer(x[:1]))[0]
    standard_error = training.std(axis=0) / np.sqrt(n) + 1e-6
    assert (np.abs(training.mean(axis=0) - inference) < 4.5 * standard_error).all()


def test_dropout_and_zoneout_are_identity_at_inference(rng):
    x = rng.uniform(size=(B, T, I)).astype("float32")
    plain = kerasrnn.LSTM(U, return_sequences=True)
    noisy = kerasrnn.LSTM(U, return_sequences=True, dropout=0.5, recurrent_dropout=0.5)
    for layer in (plain, noisy):
        layer.build((None, None, I))
    random_weights(plain, rng)
    noisy.set_weights(plain.get_weights())
    np.testing.assert_array_equal(to_numpy(noisy(x)), to_numpy(plain(x)))
    assert np.abs(to_numpy(noisy(x, training=True)) - to_numpy(plain(x))).max() > 1e-3


def test_input_dropout_mask_is_one_per_sequence_and_unbiased(rng):
    """Gal & Ghahramani: one mask per sequence. With ũ_t = x_t W (W = I, no recurrence)
    a constant input gives a constant output over time, and E[output] = x."""
    n = 4000
    layer = kerasrnn.SimpleRNN(
        U, activation="linear", use_bias=False, dropout=0.3, seed=5, return_sequences=True,
        kernel_initializer="identity", recurrent_initializer="zeros",
    )
    x = np.broadcast_to(rng.uniform(0.5, 1.0, (1, 1, U)), (n, T, U)).astype("float32")
    y = to_numpy(layer(x, training=True))
    np.testing.assert_allclose(y, np.broadcast_to(y[:, :1], y.shape), atol=1e-6)
    dropped = y[:, 0] == 0
    assert abs(dropped.mean() - 0.3) < 4 * np.sqrt(0.3 * 0.7 / dropped.size)
    np.testing.assert_allclose(y[:, 0].mean(axis=0), x[0, 0], rtol=0.05)


def test_recurrent_dropout_mask_is_one_per_sequence():
    """h_t = (h_{t-1} ⊗ m) W_h with W_h = I and no input: h_t = h_0 ⊗ m^t, the same m."""
    layer = kerasrnn.SimpleRNN(
        U, activation="linear", use_bias=False, recurrent_dropout=0.5, seed=2,
        return_sequences=True, kernel_initializer="zeros", recurrent_initializer="identity",
    )
    x = np.zeros((8, T, I), "float32")
    h = to_numpy(layer(x, initial_state=[np.ones((8, U), "float32")], training=True))
    mask = h[:, 0]  # h_1 = 1 ⊗ m
    assert set(np.unique(mask)) <= {0.0, 2.0} and 0 < mask.mean() < 2
    np.testing.assert_allclose(h, mask[:, None, :] ** np.arange(1, T + 1)[None, :, None], rtol=1e-6)


def test_zoneout_gradients_in_training(rng, float64):
    """Gradients through the zoneout masks, replayed identically for each evaluation."""
    layer = kerasrnn.GRU(U, zoneout=0.5, seed=4, return_sequences=True, dtype=GRAD_DTYPE)
    layer.build((None, None, I))
    random_weights(layer, rng)
    start = to_numpy(layer.cell.seed_generator.state)
    x = rng.uniform(0.1, 1.0, (2, 5, I))
    weights = [rng.normal(size=(2, 5, U))]

    def replay():
        layer.cell.seed_generator.state.assign(start)

    check_gradients(
        lambda x: weighted_sum(layer(x, training=True), weights), [x], before_call=replay
    )


@pytest.mark.parametrize(
    "options, error, match",
    [
        ({"zoneout": 1.0}, ValueError, "zoneout"),
        ({"zoneout": -0.1}, ValueError, "zoneout"),
        ({"zoneout_cell": 1.5}, ValueError, "zoneout_cell"),
        ({"zoneout": "half"}, TypeError, "zoneout"),
        ({"recurrent_dropout": 1.0}, ValueError, "recurrent_dropout"),
    ],
)
def test_bad_rates(options, error, match):
    with pytest.raises(error, match=match):
        kerasrnn.LSTM(U, **options)


def test_config_round_trip():
    layer = kerasrnn.LSTM(U, zoneout=0.2, zoneout_cell=0.05, dropout=0.1, recurrent_dropout=0.3)
    again = kerasrnn.LSTM.from_config(layer.get_config())
    assert (again.zoneout, again.zoneout_cell, again.dropout, again.recurrent_dropout) == (0.2, 0.05, 0.1, 0.3)
    assert keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer)).zoneout == 0.2


# On TensorFlow, the masks are drawn with the "philox" algorithm: compiled by XLA on a
# CPU, the stateless random ops' default ("auto_select") took 350 ms for one
# (64, 100, 128) zoneout mask (2.5 ms with "philox"): 26x the whole training step.
RANDOM_DRAWS = {
    "zoneout_mask": lambda seed: kerasrnn.regularizers.zoneout_mask((64, 100, 128), 0.1, seed),
    "dropout_mask": lambda seed: kerasrnn.regularizers.dropout_mask((64, 100, 128), 0.1, seed),
    "sequence_dropout": lambda seed: kerasrnn.regularizers.sequence_dropout(
        keras.ops.ones((64, 100, 128)), 0.1, seed
    ),
}


@pytest.mark.skipif(BACKEND != "tensorflow", reason="TensorFlow's random algorithms")
@pytest.mark.parametrize("name", sorted(RANDOM_DRAWS))
def test_masks_are_fast_under_xla(name):
    import time

    import tensorflow as tf

    seed = keras.random.SeedGenerator(3)  # as the layers pass it
    draw = tf.function(lambda: RANDOM_DRAWS[name](seed), jit_compile=True)
    draw()  # compile
    seconds = []
    for _ in range(3):
        start = time.perf_counter()
        to_numpy(draw())
        seconds.append(time.perf_counter() - start)
    assert min(seconds) < 0.1, f"{name}: {min(seconds):.3f} s under XLA"


@pytest.mark.skipif(BACKEND != "tensorflow", reason="TensorFlow's random algorithms")
def test_masks_are_keras_numbers_outside_xla():
    # Outside XLA "philox" is what TensorFlow's default picks: the same masks as Keras.
    x = keras.ops.ones((16, 5, 7), dtype="float64")
    ours = kerasrnn.regularizers.sequence_dropout(x, 0.3, seed=keras.random.SeedGenerator(5))
    theirs = keras.random.dropout(x, 0.3, seed=keras.random.SeedGenerator(5))
    np.testing.assert_array_equal(to_numpy(ours), to_numpy(theirs))
    # Int seeds beyond 31 bits and negative ones too (Keras reduces [seed, 0] as int64;
    # they were read as int32 bits and gave other numbers).
    for seed in (11, 2**31 + 5, -1):
        ours = kerasrnn.regularizers.zoneout_mask((16, 7), 0.3, seed=seed)
        theirs = keras.ops.cast(keras.random.uniform((16, 7), seed=seed) < 0.3, "float32")
        np.testing.assert_array_equal(to_numpy(ours), to_numpy(theirs))
        ours = kerasrnn.regularizers.dropout_mask((16, 7), 0.5, seed=seed)
        theirs = keras.random.dropout(keras.ops.ones((16, 7)), 0.5, seed=seed)
        np.testing.assert_array_equal(to_numpy(ours), to_numpy(theirs))


@pytest.mark.parametrize("draw", ["zoneout_mask", "dropout_mask"])
def test_bad_seed_is_the_same_error_on_every_backend(draw):
    with pytest.raises(ValueError, match="seed"):
        getattr(kerasrnn.regularizers, draw)((2, 3), 0.5, seed="not a seed")
