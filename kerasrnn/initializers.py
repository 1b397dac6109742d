"""Initializers for recurrent networks: identity (IRNN) and the forget-gate bias."""

import numbers

import keras
from keras import initializers, ops

__all__ = ["ForgetGateBias", "Identity"]

@keras.saving.register_keras_serializable(package="kerasrnn")
class Identity(keras.initializers.Identity):
    """The IRNN recurrent initializer (Le, Jaitly & Hinton 2015): `gain · I`.

    `keras.initializers.Identity` with its `gain` kept in `get_config()`: Keras's own
    serializes as `{}`, so every copy of a layer made from its config (`from_config`, the
    backward half of `Bidirectional`, `DeepRNN.repeat`, `keras.models.clone_model`)
    started from `1 · I`. kerasrnn's layers turn a Keras `Identity` they are given into
    this one, with the same gain.

    Args:
        gain: scale of the identity matrix (default 1.0).

    Example:

    >>> import keras
    >>> from kerasrnn.initializers import Identity
    >>> keras.ops.convert_to_numpy(Identity(gain=0.5)((2, 2))).tolist()
    [[0.5, 0.0], [0.0, 0.5]]
    >>> Identity(gain=0.5).get_config()
    {'gain': 0.5}

    Reference:
        Le, Jaitly & Hinton, "A Simple Way to Initialize Recurrent Networks of
        Rectified Linear Units", arXiv:1504.00941, 2015.
    """

    def __init__(self, gain=1.0):
        super().__init__(gain=float(gain))

    def get_config(self):
        return {"gain": self.gain}


@keras.saving.register_keras_serializable(package="kerasrnn")
class ForgetGateBias(keras.initializers.Initializer):
    """Bias of a gated cell with the forget gate's block set to `forget_bias`.

    The other blocks come from `base` (default zeros). For `LSTMCell` (gate order
    `i, f, c, o`) this is `[base, forget_bias, base, base]`: the forget gate starts
    open, so the cell state is remembered and the error signal flows back through
    time from the first update (Gers et al. 2000; Jozefowicz et al. 2015).

    A bias of more than one row, such as the `(2, 3·units)` bias of a reset-after
    GRU (the input and the recurrent bias, which the cell adds), gets `forget_bias`
    in its first row only, so the gate's summed bias starts at `forget_bias` (with
    the default zeros `base`); every other value comes from `base`.

    Args:
        base: initializer of the other gates' blocks.
        gates: number of gate blocks in the bias (4 for LSTM).
        forget_index: which block is the forget gate (1 for `i, f, c, o`).
        forget_bias: the forget gate's initial bias (default 1.0).

    Example:

    >>> import keras
    >>> from kerasrnn.initializers import ForgetGateBias
    >>> keras.ops.convert_to_numpy(ForgetGateBias()((8,))).tolist()
    [0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    """

    def __init__(self, base="zeros", gates=4, forget_index=1, forget_bias=1.0):
        self.base = initializers.get(base)
        if isinstance(gates, bool) or not isinstance(gates, numbers.Integral) or gates < 1:
            raise ValueError(f"ForgetGateBias: `gates` must be a positive integer (4 for LSTM); received {gates!r}.")
        if isinstance(forget_index, bool) or not isinstance(forget_index, numbers.Integral) or not 0 <= forget_index < gates:
            raise ValueError(
                f"ForgetGateBias: `forget_index` must be an integer in [0, gates={gates}) (1 for LSTM's "
                f"i, f, c, o); received {forget_index!r}."
            )
        self.gates = int(gates)
        self.forget_index = int(forget_index)
        self.forget_bias = float(forget_bias)

    def __call__(self, shape, dtype=None):
        shape = tuple(shape)
        if not shape:
            raise ValueError("ForgetGateBias: the bias needs at least one axis; received shape ().")
        total = shape[-1]
        if total % self.gates:
            raise ValueError(
                f"ForgetGateBias: bias size {total} is not a multiple of gates={self.gates}."
            )
        units = total // self.gates
        # One draw for the whole bias: a seeded (or Keras's unseeded, per-instance
        # seeded) random base returns the same values at every call, so a draw per
        # block gave the input, cell and output gates the very same biases.
        values = ops.reshape(self.base(shape, dtype=dtype), (-1, total))
        start = self.forget_index * units
        forget = ops.full((1, units), self.forget_bias, dtype=values.dtype)
        first = ops.concatenate([values[:1, :start], forget, values[:1, start + units :]], axis=1)
        return ops.reshape(ops.concatenate([first, values[1:]], axis=0), shape)

    def get_config(self):
        return {
            "base": initializers.serialize(self.base),
            "gates": self.gates,
            "forget_index": self.forget_index,
            "forget_bias": self.forget_bias,
        }
