"""kerasrnn: recurrent networks for Keras 3, correct to the equation and fast on every backend."""

from kerasrnn import _keras

_keras.import_keras()  # before the modules below import Keras: a missing backend gets a clear error

from kerasrnn import initializers, interop, layers, ops, regularizers
from kerasrnn.layers import (
    GRU,
    IRNN,
    LSTM,
    RNN,
    DeepRNN,
    GRUCell,
    LSTMCell,
    RecurrentCell,
    SimpleRNN,
    SimpleRNNCell,
)

__version__ = "0.1.0"

__all__ = [
    "GRU",
    "IRNN",
    "LSTM",
    "RNN",
    "DeepRNN",
    "GRUCell",
    "LSTMCell",
    "RecurrentCell",
    "SimpleRNN",
    "SimpleRNNCell",
    "initializers",
    "interop",
    "layers",
    "ops",
    "regularizers",
]
