"""kerasrnn's own cells pass the conformance kit (`kerasrnn.testing.check_cell`), every
check on every backend: the battery a third-party cell runs too (the example cell of
docs/layers/custom_cell.md runs it in tests/test_docs_examples.py)."""

import pytest

import kerasrnn
from kerasrnn.testing import CHECKS, check_cell, reference

U = 3


def _simple(x, states, w):
    return reference.simple_rnn_step(x, states, w["kernel"], w["recurrent_kernel"], w.get("bias"))


def _lstm(x, states, w):
    return reference.lstm_step(x, states, w["kernel"], w["recurrent_kernel"], w.get("bias"))


def _gru(reset_after):
    def step(x, states, w):
        return reference.gru_step(x, states, w["kernel"], w["recurrent_kernel"], w.get("bias"),
                                  reset_after=reset_after)

    return step


def _peephole_projection(x, states, w):
    return reference.lstm_extended_step(
        x, states, w["kernel"], w["recurrent_kernel"], w["bias"],
        peepholes=tuple(w["peephole_kernel"]), projection=w["projection_kernel"],
    )


CELLS = {
    "simple_rnn": (lambda **kw: kerasrnn.SimpleRNNCell(U, **kw), _simple),
    "lstm": (lambda **kw: kerasrnn.LSTMCell(U, **kw), _lstm),
    "gru": (lambda **kw: kerasrnn.GRUCell(U, **kw), _gru(True)),
    "gru_cho": (lambda **kw: kerasrnn.GRUCell(U, reset_after=False, **kw), _gru(False)),
    "lstm_peephole_projection": (
        lambda **kw: kerasrnn.LSTMCell(U, use_peepholes=True, proj_size=2, **kw), _peephole_projection,
    ),
}


@pytest.mark.parametrize("check", CHECKS)
@pytest.mark.parametrize("name", CELLS)
def test_cell_passes_the_kit(name, check):
    make_cell, numpy_step = CELLS[name]
    assert check_cell(make_cell, numpy_step, checks=[check]) == [check]


def test_the_kit_catches_a_wrong_cell():
    """A tanh cell checked against ReLU equations fails, naming the check."""

    def relu_step(x, states, w):
        return reference.simple_rnn_step(x, states, w["kernel"], w["recurrent_kernel"], w["bias"],
                                         activation=reference.relu)

    for check in ("golden", "masks", "keras_rnn", "deep"):
        with pytest.raises(AssertionError, match=f"check '{check}' failed for SimpleRNNCell"):
            check_cell(lambda **kw: kerasrnn.SimpleRNNCell(U, **kw), relu_step, checks=[check])
    with pytest.raises(ValueError, match="unknown"):
        check_cell(lambda **kw: kerasrnn.GRUCell(U, **kw), _gru(True), checks=["speed"])


class _DetachedRecurrence(kerasrnn.SimpleRNNCell):
    """A SimpleRNN whose gradient skips the recurrent product: right values, wrong
    gradients."""

    def step(self, projected, states, constants):
        import keras

        recurrent = keras.ops.matmul(states[0], constants["recurrent_kernel"])
        h = keras.ops.tanh(projected + keras.ops.stop_gradient(recurrent))
        return h, [h]


def test_the_kit_catches_a_wrong_gradient():
    with pytest.raises(AssertionError, match="check 'gradients' failed for _DetachedRecurrence"):
        check_cell(lambda **kw: _DetachedRecurrence(U, **kw), _simple, checks=["gradients"])
    assert check_cell(lambda **kw: _DetachedRecurrence(U, **kw), _simple, checks=["golden"]) == ["golden"]


def _gru_cho_layer_norm(x, states, w):
    return reference.gru_ln_step(x, states, w["kernel"], w["recurrent_kernel"], w["bias"],
                                 (w["kernel_norm_gamma"], w["kernel_norm_beta"]),
                                 (w["recurrent_norm_gamma"], w["recurrent_norm_beta"]), reset_after=False)


def test_the_whole_battery_in_one_call():
    """The checks share one random generator: run together, the gradient check drew
    directions along which a 1e-3 central difference was off by more than its 2e-3
    tolerance (3.2e-6 of 1.2e-3) for this right cell, and rejected it."""
    make_cell = lambda **kw: kerasrnn.GRUCell(U, reset_after=False, layer_norm=True, **kw)
    assert check_cell(make_cell, _gru_cho_layer_norm) == list(CHECKS)


class _NoRecurrentDropout(kerasrnn.SimpleRNNCell):
    """Takes `recurrent_dropout` but never applies it to h."""

    def step(self, projected, states, constants):
        import keras

        h = keras.ops.tanh(projected + keras.ops.matmul(states[0], constants["recurrent_kernel"]))
        return h, [h]


class _WideState(kerasrnn.SimpleRNNCell):
    """Returns a state twice as wide as its `state_size`."""

    def step(self, projected, states, constants):
        import keras

        h, _ = super().step(projected, states, constants)
        return h, [keras.ops.concatenate([h, h], axis=-1)]


def test_the_kit_catches_ignored_recurrent_dropout_and_a_wrong_state_size():
    # Input and recurrent dropout were switched on together, and input dropout (the base
    # class's) alone made training differ from inference.
    with pytest.raises(AssertionError, match="check 'regularization' failed .*recurrent_dropout does nothing"):
        check_cell(lambda **kw: _NoRecurrentDropout(U, **kw), _simple, checks=["regularization"])
    # The backend's own error (scan carry types, a size mismatch) came out unnamed.
    with pytest.raises(AssertionError, match=r"check 'golden' failed for _WideState: the layer raised \w+"):
        check_cell(lambda **kw: _WideState(U, **kw), _simple, checks=["golden"])
