"""Dropout and zoneout mean the same wherever a cell runs: `kerasrnn.layers.RNN`,
`DeepRNN`, `keras.layers.RNN`, the diagnostics' trace and both seq2seq decoders.

- dropout: one input mask and one recurrent mask per sequence (Gal & Ghahramani 2016);
- zoneout in training: a fresh mask per step, each unit keeping its previous value or
  taking the new one, never the inference-time expectation.

The cell is a linear SimpleRNN with `W_x = I` and no recurrence (`W_h = 0`), so
`h̃_t = x_t`: the dropout mask shows in the output, and zoneout makes each `h_t` unit
either `h_{t-1}` or `x_t`.
"""

import keras
import numpy as np
import pytest
from conftest import BACKEND, to_numpy

import kerasrnn
from kerasrnn.diagnostics import traced
from kerasrnn.seq2seq import Decoder

B, T, U = 256, 6, 4


def _cell(**options):
    return kerasrnn.SimpleRNNCell(
        U, activation="linear", use_bias=False, kernel_initializer="identity",
        recurrent_initializer="zeros", **options,
    )


def _inputs():
    """`x_t = t + 1` in every unit: each step's value is recognizable."""
    steps = np.arange(1, T + 1, dtype="float32")[None, :, None]
    return np.broadcast_to(steps, (B, T, U)).copy()


def _run_rnn(cell, x):
    return to_numpy(kerasrnn.layers.RNN(cell, return_sequences=True)(x, training=True))


def _run_deep(cell, x):
    return to_numpy(kerasrnn.layers.DeepRNN([cell], return_sequences=True)(x, training=True))


def _run_keras(cell, x):
    return to_numpy(keras.layers.RNN(cell, return_sequences=True)(x, training=True))


def _run_trace(cell, x):
    layer = kerasrnn.layers.RNN(cell, return_sequences=True)
    layer.build(x.shape)
    with traced([layer]):
        return to_numpy(layer(x, training=True))


RUNNERS = {"RNN": _run_rnn, "DeepRNN": _run_deep, "keras.layers.RNN": _run_keras, "trace": _run_trace}


@pytest.mark.parametrize("runner", RUNNERS)
def test_dropout_is_one_mask_per_sequence(runner):
    y = RUNNERS[runner](_cell(dropout=0.5, seed=3), _inputs())
    kept = y != 0
    # The same units are dropped at every step of a sequence ...
    np.testing.assert_array_equal(kept, np.broadcast_to(kept[:, :1], kept.shape))
    # ... a different pattern for each sequence, about half of them, scaled by 1/(1-p).
    assert len({tuple(row) for row in kept[:, 0]}) > 8
    assert abs(kept.mean() - 0.5) < 0.05
    np.testing.assert_allclose(y[kept], (2 * _inputs())[kept])


@pytest.mark.parametrize("runner", RUNNERS)
def test_recurrent_dropout_is_one_mask_per_sequence(runner):
    """With `W_h = I`, no input and `h_0 = 1`: `h_t = m^t`, the same `m` at every step."""
    cell = kerasrnn.SimpleRNNCell(
        U, activation="linear", use_bias=False, kernel_initializer="zeros",
        recurrent_initializer="identity", recurrent_dropout=0.5, seed=2,
    )
    if runner in ("RNN", "trace", "keras.layers.RNN"):
        layer = (keras.layers.RNN if runner == "keras.layers.RNN" else kerasrnn.layers.RNN)(
            cell, return_sequences=True
        )
        x, h0 = np.zeros((B, T, U), "float32"), np.ones((B, U), "float32")
        layer.build(x.shape)
        if runner == "trace":
            with traced([layer]):
                h = to_numpy(layer(x, initial_state=[h0], training=True))
        else:
            h = to_numpy(layer(x, initial_state=[h0], training=True))
    else:
        deep = kerasrnn.layers.DeepRNN([cell], return_sequences=True)
        h = to_numpy(deep(np.zeros((B, T, U), "float32"), initial_state=[np.ones((B, U), "float32")], training=True))
    mask = h[:, 0]
    assert set(np.unique(mask)) <= {0.0, 2.0}
    np.testing.assert_allclose(h, mask[:, None, :] ** np.arange(1, T + 1)[None, :, None], rtol=1e-6)


@pytest.mark.parametrize("runner", RUNNERS)
def test_zoneout_draws_a_mask_per_step_in_training(runner):
    x = _inputs()
    if runner == "keras.layers.RNN" and BACKEND == "jax":
        # Keras traces its loop's step once on JAX: no new mask per step can be drawn
        # there, so the cell says so rather than freeze the units of a whole sequence.
        with pytest.raises(ValueError, match="kerasrnn.layers.RNN"):
            RUNNERS[runner](_cell(zoneout=0.5, seed=5), x)
        return
    y = RUNNERS[runner](_cell(zoneout=0.5, seed=5), x)
    previous = np.concatenate([np.zeros_like(y[:, :1]), y[:, :-1]], axis=1)
    kept = np.isclose(y, previous) & ~np.isclose(x, previous)
    updated = np.isclose(y, x)
    assert (kept | updated).all(), "each unit is h_{t-1} or x_t, not the expectation"
    assert abs(kept[:, 1:].mean() - 0.5) < 0.05
    assert not (kept[:, 2:] == kept[:, 1:2]).all()  # a fresh mask per step


@pytest.mark.parametrize("attention", ["bahdanau", "luong"])
def test_decoders_apply_zoneout_in_training(attention):
    """In training a decoder's zoneout draws masks (the logits vary from call to call and
    differ from inference); at inference it is the expectation (deterministic)."""
    cell = kerasrnn.GRUCell(8, zoneout=0.5, seed=7)
    decoder = Decoder(vocab_size=11, units=8, embedding_dim=4, cell=cell, attention=attention)
    rng = np.random.default_rng(0)
    targets = rng.integers(1, 11, (4, 6))
    memory, summary = rng.normal(size=(4, 5, 6)).astype("float32"), rng.normal(size=(4, 6)).astype("float32")
    inference = [to_numpy(decoder(targets, memory, summary)) for _ in range(2)]
    np.testing.assert_array_equal(inference[0], inference[1])
    training = [to_numpy(decoder(targets, memory, summary, training=True)) for _ in range(2)]
    assert np.abs(training[0] - training[1]).max() > 1e-4
    assert np.abs(training[0] - inference[0]).max() > 1e-4
