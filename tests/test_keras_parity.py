"""Parity with `keras.layers.SimpleRNN/LSTM/GRU` after `ours.set_weights(theirs.get_weights())`.

Keras bug (JAX backend on a GPU): `keras.layers.LSTM(go_backwards=True,
return_sequences=True)` takes cuDNN (`jax.experimental.rnn`) there and returns the
sequence in input order, where it returns it in processing order on a CPU and on the
other backends (and Keras documents processing order). The NumPy reference agrees with
processing order, and kerasrnn with it on every device; the tests check both sides
against the reference there (docs/migrating.md has a reproduction).

Keras quirk (JAX backend only): where `keras.layers.RNN` masks a step it outputs
`states[0]`, so before the first valid step of a row the output is the initial state
`h0`, not zeros as on TensorFlow and torch (and in kerasrnn, on every backend). With a
nonzero `initial_state` and leading masked steps, only the steps after the first valid
one (and the final states) are defined the same way; the tests compare just those
(docs/migrating.md has a reproduction).
"""

import keras
import numpy as np
import pytest
from _util import (
    BATCH,
    FEATURES,
    TIME,
    UNITS,
    both_directions,
    n_states,
    nonzero_uniform,
    random_mask,
    random_weights,
    reference_step,
)
from conftest import BACKEND, ON_GPU, to_numpy

import kerasrnn
from kerasrnn.testing import reference

TOL = {"rtol": 1e-5, "atol": 1e-5}

#: (kerasrnn class, keras class, keyword arguments): the Keras layers we mirror.
PAIRS = {
    "simple_rnn": (kerasrnn.SimpleRNN, keras.layers.SimpleRNN, {}),
    "simple_rnn_relu": (kerasrnn.SimpleRNN, keras.layers.SimpleRNN, {"activation": "relu"}),
    "lstm": (kerasrnn.LSTM, keras.layers.LSTM, {}),
    "gru": (kerasrnn.GRU, keras.layers.GRU, {"reset_after": True}),
    "gru_reset_before": (kerasrnn.GRU, keras.layers.GRU, {"reset_after": False}),
}
CORE_PAIRS = ["simple_rnn", "lstm", "gru", "gru_reset_before"]


def make_pair(name, rng, input_dim=FEATURES, batch=None, **kwargs):
    """A Keras layer with random weights and our layer with the same weights."""
    ours_class, keras_class, pair_kwargs = PAIRS[name]
    theirs = keras_class(UNITS, **pair_kwargs, **kwargs)
    theirs.build((batch, TIME, input_dim))
    random_weights(theirs, rng)
    ours = ours_class(UNITS, **pair_kwargs, **kwargs)
    ours.build((batch, TIME, input_dim))
    ours.set_weights(theirs.get_weights())
    return ours, theirs


def assert_same(ours, theirs, tol=TOL):
    ours, theirs = _listed(ours), _listed(theirs)
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert tuple(a.shape) == tuple(b.shape)
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), **tol)


def _listed(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


def inputs(rng, batch=BATCH, time=TIME):
    return nonzero_uniform(rng, (batch, time, FEATURES)).astype("float32")


def keras_reverses_its_sequence(name, go_backwards, return_sequences, mask=None):
    """Whether Keras's cuDNN LSTM on a JAX GPU returns this sequence in input order."""
    return (BACKEND == "jax" and ON_GPU and name == "lstm" and go_backwards
            and return_sequences and mask is None)


def assert_both_against_reference(ours, got, want, x, initial_state=None):
    """The bug in the module docstring: ours follows the NumPy reference (processing
    order); Keras's sequence is the reference reversed in time; the states agree."""
    weights = [to_numpy(w) for w in ours.get_weights()]
    states = initial_state or [np.zeros((x.shape[0], UNITS))] * n_states(ours)
    expected, _ = reference.run_sequence(reference_step(ours, weights), x, states, go_backwards=True)
    np.testing.assert_allclose(to_numpy(got[0]), expected, **TOL)
    np.testing.assert_allclose(to_numpy(want[0]), expected[:, ::-1], **TOL)
    assert_same(got[1:], want[1:])


@pytest.mark.parametrize("return_sequences", [False, True], ids=["last", "sequences"])
@both_directions
@pytest.mark.parametrize("name", PAIRS)
def test_outputs_and_states(name, go_backwards, return_sequences, rng):
    ours, theirs = make_pair(
        name, rng, return_sequences=return_sequences, return_state=True,
        go_backwards=go_backwards,
    )
    x = inputs(rng)
    if keras_reverses_its_sequence(name, go_backwards, return_sequences):
        assert_both_against_reference(ours, ours(x), theirs(x), x)
    else:
        assert_same(ours(x), theirs(x))


@pytest.mark.parametrize("kind", ["right", "arbitrary"])
@both_directions
@pytest.mark.parametrize("name", PAIRS)
def test_explicit_mask(name, go_backwards, kind, rng):
    ours, theirs = make_pair(
        name, rng, return_sequences=True, return_state=True, go_backwards=go_backwards
    )
    x = inputs(rng)
    mask = random_mask(rng, BATCH, TIME, kind)
    got = ours(x, mask=mask)
    assert_same(got, theirs(x, mask=mask))
    # The mask matters: without it the outputs differ.
    assert np.abs(to_numpy(got[0]) - to_numpy(ours(x)[0])).max() > 1e-3


@pytest.mark.parametrize("name", CORE_PAIRS)
def test_embedding_mask_zero(name, rng):
    """Masks made by `Embedding(mask_zero=True)` (padding and holes) reach our layer."""
    vocab = 11
    tokens = rng.integers(1, vocab, (BATCH, TIME))
    tokens[1, 4:] = 0  # right padding
    tokens[2, 2] = 0  # a hole
    tokens[3, 0] = 0  # a leading masked step
    embedding = keras.layers.Embedding(vocab, FEATURES, mask_zero=True)
    ours, theirs = make_pair(name, rng, return_sequences=True)

    def model(rnn):
        token_input = keras.Input((TIME,), dtype="int32")
        return keras.Model(token_input, rnn(embedding(token_input)))

    got = model(ours)(tokens)
    assert_same(got, model(theirs)(tokens))
    unmasked = ours(to_numpy(embedding(tokens)))  # a NumPy array carries no mask
    assert np.abs(to_numpy(got) - to_numpy(unmasked)).max() > 1e-3


@pytest.mark.parametrize("name", CORE_PAIRS)
def test_masking_layer(name, rng):
    x = inputs(rng)
    x[1, 5:] = 0.0
    x[2, 1] = 0.0
    ours, theirs = make_pair(name, rng, return_sequences=True, return_state=True)

    def model(rnn):
        seq = keras.Input((TIME, FEATURES))
        return keras.Model(seq, rnn(keras.layers.Masking(0.0)(seq)))

    got = model(ours)(x)
    assert_same(got, model(theirs)(x))
    assert np.abs(to_numpy(got[0]) - to_numpy(ours(x)[0])).max() > 1e-3  # the mask matters


@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
@both_directions
@pytest.mark.parametrize("name", CORE_PAIRS)
def test_initial_state(name, go_backwards, masked, rng):
    ours, theirs = make_pair(
        name, rng, return_sequences=True, return_state=True, go_backwards=go_backwards
    )
    x = inputs(rng)
    h0 = [nonzero_uniform(rng, (BATCH, UNITS)).astype("float32") for _ in range(n_states(ours))]
    mask = random_mask(rng, BATCH, TIME, "arbitrary") if masked else None
    got = ours(x, initial_state=h0, mask=mask)
    want = theirs(x, initial_state=h0, mask=mask)
    if mask is not None and BACKEND == "jax":
        # The quirk in the module docstring: compare only steps at or after the first
        # valid one (in processing order) and the final states.
        order = mask[:, ::-1] if go_backwards else mask
        defined = np.cumsum(order, axis=1) > 0
        assert not defined.all()  # the test has leading masked steps to skip
        got_out, want_out = to_numpy(got[0]), to_numpy(want[0])
        np.testing.assert_allclose(got_out[defined], want_out[defined], **TOL)
        np.testing.assert_allclose(got_out[~defined], 0.0)
        assert_same(got[1:], want[1:])
    elif keras_reverses_its_sequence(name, go_backwards, True, mask):
        assert_both_against_reference(ours, got, want, x, h0)
    else:
        assert_same(got, want)


@pytest.mark.parametrize("name", CORE_PAIRS)
def test_stateful_two_batches_and_reset(name, rng):
    ours, theirs = make_pair(
        name, rng, batch=BATCH, stateful=True, return_sequences=True
    )
    # The states are not weights, in either (ours are among `variables`, which
    # `jit`-compiled steps on JAX carry).
    assert len(ours.get_weights()) == len(theirs.get_weights())
    assert len(ours.states) == n_states(ours)
    first, second = inputs(rng), inputs(rng)
    assert_same(ours(first), theirs(first))
    # The second batch starts from the first's final state, in both.
    got = ours(second)
    assert_same(got, theirs(second))
    ours.reset_states()
    theirs.reset_states()
    fresh = ours(second)
    assert_same(fresh, theirs(second))
    assert np.abs(to_numpy(fresh) - to_numpy(got)).max() > 1e-3


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave", None])
def test_bidirectional_merge_modes(merge_mode, rng):
    name = "lstm"  # every cell runs in test_bidirectional_masked_with_states
    ours, theirs = make_pair(name, rng, return_sequences=True)
    ours_bi = keras.layers.Bidirectional(ours, merge_mode=merge_mode)
    theirs_bi = keras.layers.Bidirectional(theirs, merge_mode=merge_mode)
    x = inputs(rng)
    mask = random_mask(rng, BATCH, TIME, "right")
    want = theirs_bi(x, mask=mask)
    ours_bi(x)  # build
    ours_bi.set_weights(theirs_bi.get_weights())
    assert_same(ours_bi(x, mask=mask), want)


@pytest.mark.parametrize("kind", ["right", "arbitrary"])
@pytest.mark.parametrize("name", CORE_PAIRS)
def test_bidirectional_masked_with_states(name, kind, rng):
    """Bidirectional sets `zero_output_for_mask` on both directions; the backward
    layer is rebuilt from our config."""
    ours, theirs = make_pair(name, rng, return_sequences=True, return_state=True)
    ours_bi = keras.layers.Bidirectional(ours)
    theirs_bi = keras.layers.Bidirectional(theirs)
    x = inputs(rng)
    mask = random_mask(rng, BATCH, TIME, kind)
    want = theirs_bi(x, mask=mask)
    ours_bi(x)
    ours_bi.set_weights(theirs_bi.get_weights())
    got = ours_bi(x, mask=mask)
    assert_same(got, want)
    assert ours_bi.backward_layer.go_backwards and isinstance(ours_bi.backward_layer, type(ours))


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_time_distributed(name, rng):
    """TimeDistributed runs the layer over an outer axis: (batch, outer, time, features)."""
    ours, theirs = make_pair(name, rng)
    x = nonzero_uniform(rng, (2, 3, TIME, FEATURES)).astype("float32")
    got = keras.layers.TimeDistributed(ours)(x)
    assert tuple(got.shape) == (2, 3, UNITS)
    assert_same(got, keras.layers.TimeDistributed(theirs)(x))


CELL_PAIRS = {
    "simple_rnn": (kerasrnn.SimpleRNNCell, keras.layers.SimpleRNNCell, {}),
    "lstm": (kerasrnn.LSTMCell, keras.layers.LSTMCell, {}),
    "gru": (kerasrnn.GRUCell, keras.layers.GRUCell, {"reset_after": True}),
    "gru_reset_before": (kerasrnn.GRUCell, keras.layers.GRUCell, {"reset_after": False}),
}


@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
@pytest.mark.parametrize("name", CELL_PAIRS)
def test_our_cells_in_keras_rnn(name, masked, rng):
    ours_class, keras_class, kwargs = CELL_PAIRS[name]
    theirs = keras.layers.RNN(
        keras_class(UNITS, **kwargs), return_sequences=True, return_state=True,
        go_backwards=masked,
    )
    ours = keras.layers.RNN(
        ours_class(UNITS, **kwargs), return_sequences=True, return_state=True,
        go_backwards=masked,
    )
    x = inputs(rng)
    mask = random_mask(rng, BATCH, TIME, "arbitrary") if masked else None
    theirs(x)
    random_weights(theirs, rng)
    ours(x)
    ours.set_weights(theirs.get_weights())
    assert_same(ours(x, mask=mask), theirs(x, mask=mask))
