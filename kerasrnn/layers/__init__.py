"""kerasrnn cells and sequence layers."""

from kerasrnn.layers.cell import RecurrentCell
from kerasrnn.layers.gru import GRU, GRUCell
from kerasrnn.layers.lstm import LSTM, LSTMCell
from kerasrnn.layers.rnn import RNN
from kerasrnn.layers.simple_rnn import IRNN, SimpleRNN, SimpleRNNCell
from kerasrnn.layers.stacked import DeepRNN

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
]
