"""kerasrnn: recurrent networks for Keras 3, correct to the equation and fast on every backend."""

from kerasrnn import initializers, layers, ops
from kerasrnn.layers import (
    GRU,
    IRNN,
    LSTM,
    RNN,
    GRUCell,
    LSTMCell,
    RecurrentCell,
    SimpleRNN,
    SimpleRNNCell,
)

__version__ = "0.1.0"

__all__ = [
    "GRU",
    "GRUCell",
    "IRNN",
    "LSTM",
    "LSTMCell",
    "RNN",
    "RecurrentCell",
    "SimpleRNN",
    "SimpleRNNCell",
    "initializers",
    "layers",
    "ops",
]
