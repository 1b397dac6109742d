"""`Encoder`: a stack of (bidirectional) kerasrnn layers that reads the source sentence."""

import keras
import numpy as np
from keras import ops

from kerasrnn.layers import _checks
from kerasrnn.layers.cell import RecurrentCell
from kerasrnn.layers.gru import GRUCell
from kerasrnn.layers.lstm import LSTMCell
from kerasrnn.layers.rnn import RNN
from kerasrnn.layers.simple_rnn import SimpleRNNCell
from kerasrnn.ops.device import BuildsOutsideInferenceMode

__all__ = ["Encoder", "make_cell", "reverse_padded"]

_register = keras.saving.register_keras_serializable(package="kerasrnn")

CELLS = {"gru": GRUCell, "lstm": LSTMCell, "simple": SimpleRNNCell}


def make_cell(cell, units, name=None, dtype=None):
    """A new kerasrnn cell of `units` units from a name or a template cell.

    Args:
        cell: `"gru"`, `"lstm"`, `"simple"`, or a kerasrnn cell instance whose
            configuration (activations, initializers, dropout, ...) is copied.
        units: the number of units of the new cell.
        name: the new cell's name.
        dtype: the new cell's dtype policy (default: the template's, or Keras's global
            policy); `Encoder` and `Decoder` pass their own.

    Example:

    >>> import kerasrnn
    >>> c = make_cell(kerasrnn.layers.GRUCell(3, reset_after=False), 8)
    >>> (type(c).__name__, c.units, c.reset_after)
    ('GRUCell', 8, False)
    """
    if isinstance(cell, RecurrentCell):
        config = {**cell.get_config(), "units": units}
        config.pop("name", None)
        if dtype is not None:
            config["dtype"] = dtype
        try:
            return type(cell).from_config({**config, "name": name} if name else config)
        except TypeError as err:  # Keras wraps the cell's own error, with the whole config
            cause = err.__cause__ or err.__context__
            if isinstance(cause, (ValueError, TypeError)):
                raise type(cause)(
                    f"`cell`: the template {type(cell).__name__} cannot make a cell of {units} "
                    f"units: {cause}"
                ) from err
            raise
    if isinstance(cell, str) and cell.lower() in CELLS:
        return CELLS[cell.lower()](units, name=name, dtype=dtype)
    raise ValueError(
        f"`cell` must be one of {sorted(CELLS)} or a kerasrnn cell instance (e.g. "
        f"kerasrnn.layers.LSTMCell(256, dropout=0.1)); received {cell!r}."
    )


def serialize_cell(cell):
    return cell if isinstance(cell, str) else keras.saving.serialize_keras_object(cell)


def deserialize_cell(cell):
    """A cell name, a cell template (instance) or a serialized one, as `make_cell` takes it."""
    if isinstance(cell, (str, RecurrentCell)):
        return cell
    return keras.saving.deserialize_keras_object(cell)


def reverse_padded(x, lengths):
    """Reverses each row of `x (batch, time, ...)` within its first `lengths[b]` steps.

    Padding stays at the end, so a forward RNN over the result reads each sentence
    backwards and meets the padding only after the last real token.

    Example:

    >>> import numpy as np, keras
    >>> x = np.array([[1, 2, 3, 0], [4, 5, 6, 7]])[..., None]
    >>> keras.ops.convert_to_numpy(reverse_padded(x, np.array([3, 4])))[..., 0].tolist()
    [[3, 2, 1, 0], [7, 6, 5, 4]]
    """
    x = ops.convert_to_tensor(x)
    lengths = ops.cast(ops.convert_to_tensor(lengths), "int32")[:, None]
    t = ops.arange(ops.shape(x)[1], dtype="int32")[None, :]
    index = ops.where(t < lengths, lengths - 1 - t, t)
    index = ops.reshape(index, tuple(ops.shape(index)) + (1,) * (len(x.shape) - 2))
    index = ops.broadcast_to(index, ops.shape(x))
    return ops.take_along_axis(x, index, axis=1)


@_register
class Encoder(BuildsOutsideInferenceMode, keras.layers.Layer):
    r"""Reads a source sequence into a memory `h_1..h_S` and a summary vector.

    A stack of `num_layers` kerasrnn layers; with `bidirectional=True` each layer runs a
    forward and a backward RNN and concatenates their outputs,
    `h_j = [h→_j ; h←_j]` (Bahdanau et al. 2015). The summary is the state after the
    whole sentence in each direction, `[h→_{len} ; h←_1]`, used to initialize the decoder.

    Padding is handled without a mask, so each direction runs as one fused kernel where
    the backend has one (torch): the forward RNN meets the right padding only after the
    real tokens, and the backward RNN reads each sentence reversed *within its length*
    (`reverse_padded`). Outputs at padded positions are meaningless; the decoder's
    attention masks them out.

    Args:
        units: units of each RNN (per direction).
        cell: `"gru"` (default), `"lstm"`, `"simple"` or a kerasrnn cell used as a
            template (its settings are copied for every layer and direction).
        num_layers: number of stacked layers.
        bidirectional: whether each layer also reads the sentence backwards.
        dropout: dropout rate between stacked layers.

    Call arguments:
        inputs: `(batch, source, features)` (embedded tokens).
        mask: boolean `(batch, source)`, True at real tokens (or `None`: all real).
        training: whether dropout is active.

    Returns:
        `(memory (batch, source, units·directions), summary (batch, units·directions))`.

    Example:

    >>> import numpy as np
    >>> enc = Encoder(4, cell="lstm", num_layers=2)
    >>> memory, summary = enc(np.ones((2, 5, 3), "float32"), mask=np.arange(5) < np.array([[3], [5]]))
    >>> tuple(memory.shape), tuple(summary.shape)
    ((2, 5, 8), (2, 8))

    Reference:
        Cho et al., "Learning Phrase Representations using RNN Encoder-Decoder", EMNLP
        2014; Bahdanau, Cho & Bengio, ICLR 2015 (bidirectional encoder).
    """

    def __init__(self, units, cell="gru", num_layers=1, bidirectional=True, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.units = _checks.positive_int("units", units)
        self.cell = deserialize_cell(cell)
        make_cell(self.cell, self.units)  # validates `cell` now, not at build time
        self.num_layers = _checks.positive_int("num_layers", num_layers)
        if not isinstance(bidirectional, (bool, np.bool_)):  # bool("no") is True
            raise TypeError(f"`bidirectional` must be True or False; received {bidirectional!r}.")
        self.bidirectional = bool(bidirectional)
        self.dropout = _checks.rate("dropout", dropout)
        self.directions = ("forward", "backward") if self.bidirectional else ("forward",)
        # One flat list (layer-major): Keras tracks the sublayers of a flat list.
        self.rnns = [
            RNN(
                make_cell(self.cell, self.units, name=f"cell_{i}_{d}", dtype=self.dtype_policy),
                return_sequences=True, name=f"rnn_{i}_{d}", dtype=self.dtype_policy,
            )
            for i in range(self.num_layers)
            for d in self.directions
        ]
        self.drop = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)
        self.supports_masking = True

    def compute_mask(self, inputs, mask=None):
        return None

    @property
    def output_dim(self):
        # A cell's output may be smaller than its units (an LSTM with `proj_size`).
        return self.rnns[0].cell.output_size * (2 if self.bidirectional else 1)

    def build(self, input_shape):
        dim = input_shape[-1]
        for i, rnn in enumerate(self.rnns):
            rnn.build((None, None, dim if i < len(self.directions) else self.output_dim))
        self.built = True

    def call(self, inputs, mask=None, training=False):
        x = ops.convert_to_tensor(inputs)
        if mask is None:
            lengths = ops.full((ops.shape(x)[0],), ops.shape(x)[1], dtype="int32")
        else:
            lengths = ops.sum(ops.cast(mask, "int32"), axis=1)
        n = len(self.directions)
        for i in range(self.num_layers):
            layer = self.rnns[i * n : (i + 1) * n]
            if i > 0:
                x = self.drop(x, training=training)
            forward = layer[0](x, training=training)
            outputs = [forward]
            if self.bidirectional:
                backward = reverse_padded(layer[1](reverse_padded(x, lengths), training=training), lengths)
                outputs.append(backward)
            x = ops.concatenate(outputs, axis=-1) if self.bidirectional else forward
        last = ops.maximum(lengths - 1, 0)[:, None, None]
        summary = ops.take_along_axis(forward, ops.broadcast_to(last, (ops.shape(x)[0], 1, self.rnns[0].cell.output_size)), axis=1)[:, 0]
        if self.bidirectional:
            summary = ops.concatenate([summary, backward[:, 0]], axis=-1)
        return x, summary

    def compute_output_spec(self, inputs, mask=None, training=False):
        batch, time = inputs.shape[0], inputs.shape[1]
        return (
            keras.KerasTensor((batch, time, self.output_dim), dtype=self.compute_dtype),
            keras.KerasTensor((batch, self.output_dim), dtype=self.compute_dtype),
        )

    def get_config(self):
        config = {
            "units": self.units,
            "cell": serialize_cell(self.cell),
            "num_layers": self.num_layers,
            "bidirectional": self.bidirectional,
            "dropout": self.dropout,
        }
        return {**super().get_config(), **config}
