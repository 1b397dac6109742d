"""Keras's own SimpleRNN, LSTM and GRU tests, run on the kerasrnn layers.

The test files that ship with the installed Keras (`keras/src/layers/rnn/
{simple_rnn,lstm,gru}_test.py`) are loaded as fresh modules, apart from Keras's own
copies, and their module-level `layers` (Keras's `keras.src.layers`) is replaced by a
namespace where `SimpleRNN`, `LSTM` and `GRU` are kerasrnn's and every other name is
Keras's. Their test cases then run unchanged: golden values, masking, statefulness,
initial states, the config round trip, `fit`, mixed precision, and a legacy
`implementation` argument in a saved config. None is skipped or changed here: every
one passes on every backend (the ones Keras itself skips, e.g. on a backend or
without CUDA, skip here too).

Skipped as a whole where the installed Keras ships no test files.
"""

import importlib.util
import os

import pytest

import kerasrnn

keras_layers = pytest.importorskip("keras.src.layers")
pytest.importorskip("absl.testing.parameterized")  # what Keras's test cases are built on

_TEST_DIR = os.path.join(os.path.dirname(keras_layers.__file__), "rnn")
_NAMES = ("simple_rnn", "lstm", "gru")
if not all(os.path.exists(os.path.join(_TEST_DIR, f"{name}_test.py")) for name in _NAMES):
    pytest.skip(f"the installed Keras ships no RNN test files in {_TEST_DIR}", allow_module_level=True)


class _Swapped:
    """`keras.src.layers`, with some names pointing elsewhere."""

    def __init__(self, base, **swaps):
        self._base, self._swaps = base, swaps

    def __getattr__(self, name):
        if name in self._swaps:
            return self._swaps[name]
        return getattr(self._base, name)


def _load_with_kerasrnn(name):
    """Keras's `<name>_test.py`, loaded as a new module whose `layers` is swapped."""
    path = os.path.join(_TEST_DIR, f"{name}_test.py")
    spec = importlib.util.spec_from_file_location(f"kerasrnn_keras_suite_{name}_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.layers = _Swapped(
        keras_layers, SimpleRNN=kerasrnn.SimpleRNN, LSTM=kerasrnn.LSTM, GRU=kerasrnn.GRU
    )
    return module


_simple_rnn, _lstm, _gru = (_load_with_kerasrnn(name) for name in _NAMES)


class TestKerasSimpleRNNSuite(_simple_rnn.SimpleRNNTest):
    """keras/src/layers/rnn/simple_rnn_test.py with `kerasrnn.SimpleRNN`."""


class TestKerasLSTMSuite(_lstm.LSTMTest):
    """keras/src/layers/rnn/lstm_test.py with `kerasrnn.LSTM`."""


class TestKerasGRUSuite(_gru.GRUTest):
    """keras/src/layers/rnn/gru_test.py with `kerasrnn.GRU`."""


def test_the_suite_runs_kerasrnn_layers():
    """The swap took: the loaded test modules build kerasrnn's layers."""
    for module, name in ((_simple_rnn, "SimpleRNN"), (_lstm, "LSTM"), (_gru, "GRU")):
        layer = getattr(module.layers, name)(2)
        assert isinstance(layer, getattr(kerasrnn, name)), type(layer)
        assert module.layers.Dense is keras_layers.Dense
