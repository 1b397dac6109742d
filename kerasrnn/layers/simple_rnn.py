"""SimpleRNN (Elman) cell and layer, and the IRNN recipe of Le, Jaitly & Hinton (2015)."""

from typing import ClassVar

import keras
from keras import activations

from kerasrnn.initializers import Identity
from kerasrnn.layers import _checks
from kerasrnn.layers.cell import (
    RecurrentCell,
    center_blocks,
    common_fused_reason,
    normalize,
)
from kerasrnn.layers.rnn import CellLayer
from kerasrnn.ops.fused import FusedSpec, Slot
from kerasrnn.ops.math import activate, matmul

_register = keras.saving.register_keras_serializable(package="kerasrnn")


@_register
class SimpleRNNCell(RecurrentCell):
    r"""Fully-connected recurrent cell: the output is fed back as the next input.

    At time step `t`, with `x_t` the input and `h_{t-1}` the previous output:

    ```
    h_t = φ(x_t W_x + h_{t-1} W_h + b)
    ```

    `W_x` is `kernel (input_dim, units)`, `W_h` is `recurrent_kernel (units, units)`,
    `b` is `bias (units,)` and `φ` is `activation` (`tanh` by default). This is the
    recurrent neuron of Géron's chapter 15, `ŷ_(t) = φ(X_(t) W_x + ŷ_(t-1) W_ŷ + b)`.

    With `layer_norm=True` (the LN-SimpleRNN cell of Géron's chapter 15; Ba et al.
    2016) the pre-activation is normalized before `φ`:

    ```
    a_t = x_t W_x + h_{t-1} W_h + b
    h_t = φ(γ ⊗ (a_t − μ_t) / sqrt(σ_t² + ε) + β)      μ_t, σ_t²: mean, variance of a_t
    ```

    with the extra weights `norm_gamma (units,)` (ones) and `norm_beta (units,)`
    (zeros), after `kernel`, `recurrent_kernel`, `bias` (the step runs on centered
    weights and bias: `μ_t` is linear in them, see `LSTMCell`). With `zoneout=p`
    (Krueger et al. 2016) each unit of `h_t` keeps its previous value with
    probability `p` during training, `h_t = d_t ⊗ h_{t-1} + (1 − d_t) ⊗ h̃_t`, and is
    the expectation `p h_{t-1} + (1 − p) h̃_t` at inference (`kerasrnn.regularizers`).

    Args:
        units: positive int, the size of `h_t`.
        activation: `φ`; `"tanh"` (default) or `"relu"` (the IRNN), or any Keras
            activation.
        use_bias: whether to add `b`.
        kernel_initializer: initializer of `W_x` (default `"glorot_uniform"`,
            Glorot & Bengio 2010).
        recurrent_initializer: initializer of `W_h` (default `"orthogonal"`).
        bias_initializer: initializer of `b` (default `"zeros"`).
        kernel_regularizer, recurrent_regularizer, bias_regularizer: Keras
            regularizers for `W_x`, `W_h`, `b`.
        kernel_constraint, recurrent_constraint, bias_constraint: Keras constraints.
        dropout: fraction of input units dropped (one mask per sequence).
        recurrent_dropout: fraction of `h_{t-1}` units dropped before `W_h`
            (one mask per sequence, Gal & Ghahramani 2016).
        seed: seed of the dropout and zoneout masks.
        layer_norm: normalize the pre-activation (default False).
        layer_norm_epsilon: the `ε` of the normalization, > 0 (default 1e-3).
        zoneout: probability `p` in [0, 1) that a unit of `h` keeps its previous
            value at a training step (default 0).

    Call arguments:
        inputs: `(batch, input_dim)`, one time step.
        states: `[h_{t-1}]`, `(batch, units)`.
        training: whether dropout is active.

    Example:

    >>> import numpy as np, keras, kerasrnn
    >>> cell = kerasrnn.layers.SimpleRNNCell(4)
    >>> y = keras.layers.RNN(cell)(np.ones((2, 3, 5), "float32"))
    >>> tuple(y.shape)
    (2, 4)

    >>> ln = kerasrnn.layers.SimpleRNNCell(4, layer_norm=True)
    >>> y = keras.layers.RNN(ln)(np.ones((2, 3, 5), "float32"))
    >>> [w.name for w in ln.weights]
    ['kernel', 'recurrent_kernel', 'bias', 'norm_gamma', 'norm_beta']

    Reference:
        Elman, "Finding structure in time", Cognitive Science 14, 1990.
        Ba, Kiros & Hinton, "Layer Normalization", arXiv:1607.06450, 2016.
        Krueger et al., "Zoneout", arXiv:1606.01305, 2016.
    """

    gates = 1
    gate_names = ("h",)
    recorded_values: ClassVar[dict] = {"h": "activation"}

    def cost_hints(self):
        # remat pays with layer norm only (its statistics would be stored per step).
        return {"remat": self.layer_norm}

    def build(self, input_shape):
        super().build(input_shape)
        if self.layer_norm:
            self._add_layer_norm("norm", self.units)

    def loop_constants(self, inputs, training=False):
        constants = super().loop_constants(inputs, training)
        if self.layer_norm:
            constants["norm"] = self._read_layer_norm("norm")
            # The mean of a_t = x_t W_x + h_{t-1} W_h + b is linear in the weights:
            # take it out of them once, and the step's LN needs no mean (see
            # `center_blocks`).
            for name in ("kernel", "recurrent_kernel", "bias"):
                if constants.stored(name) is not None:  # in float32 under mixed precision
                    constants[name] = center_blocks(constants.stored(name))
            constants["input_bias"] = constants.stored("bias")
        return constants

    def step(self, projected, states, constants):
        a = projected + matmul(constants.recurrent(states[0]), constants["recurrent_kernel"])
        if self.layer_norm:
            a = normalize(a, constants["norm"], self.layer_norm_epsilon, centered=True)
        h = activate(self.activation, a)
        constants.record(h=h)
        (h,) = constants.zoneout(states, [h])
        return h, [h]

    def fused_spec(self, constants, training=False):
        modes = {activations.tanh: "RNN_TANH", activations.relu: "RNN_RELU"}
        if self.activation not in modes:
            return "activation is neither tanh nor relu"
        reason = common_fused_reason(self, constants)
        if reason:
            return reason
        slots = [
            Slot(self.kernel, constants["kernel"], transpose=True),
            Slot(self.recurrent_kernel, constants["recurrent_kernel"], transpose=True),
        ]
        if self.use_bias:
            slots += [Slot(self.bias, constants["bias"]), Slot.zeros((self.units,))]
        return FusedSpec(modes[self.activation], slots, self.use_bias, owner=self)


@_register
class SimpleRNN(CellLayer):
    r"""Fully-connected RNN layer (`h_t = φ(x_t W_x + h_{t-1} W_h + b)`) over a sequence.

    Takes every argument of `SimpleRNNCell` (`units`, `activation`, initializers,
    regularizers, constraints, `dropout`, `recurrent_dropout`, `seed`) and of
    `kerasrnn.layers.RNN` (`return_sequences`, `return_state`, `go_backwards`,
    `stateful`, `zero_output_for_mask`, `fused`, `hoist_inputs`).

    On torch, `fused="auto"` runs `torch._VF.rnn_tanh`/`rnn_relu` (the kernels of
    `torch.nn.RNN`) when there is no recurrent dropout and the mask, if any, is
    right-padded (run as a packed sequence).

    Example:

    >>> import numpy as np, kerasrnn
    >>> layer = kerasrnn.layers.SimpleRNN(8, return_sequences=True)
    >>> tuple(layer(np.ones((2, 5, 3), "float32")).shape)
    (2, 5, 8)

    Reference:
        Elman, "Finding structure in time", Cognitive Science 14, 1990.
    """

    cell_class = SimpleRNNCell


@_register
class IRNN(SimpleRNN):
    r"""SimpleRNN of rectified linear units with identity recurrent initialization.

    ```
    h_t = max(0, x_t W_x + h_{t-1} W_h + b),   W_h ← gain · I,  b ← 0,  W_x ~ N(0, σ²)
    ```

    At initialization, with no input, the state is copied unchanged from step to step:
    the error signal flows back through time without exploding or vanishing, which lets
    a plain RNN learn dependencies over hundreds of steps (the adding problem).

    Args:
        units: positive int.
        gain: scale of the identity recurrent matrix (default 1.0; the paper also
            uses smaller values such as 0.01 for the language model).
        input_stddev: standard deviation of the normal input kernel (default 0.001,
            as in the paper's toy problems).
        **kwargs: any other `SimpleRNN` argument. Passing `activation`,
            `recurrent_initializer` or `kernel_initializer` overrides the recipe.

    Example:

    >>> import numpy as np, kerasrnn
    >>> layer = kerasrnn.layers.IRNN(6)
    >>> layer.build((None, 4, 3))
    >>> bool(np.allclose(layer.cell.recurrent_kernel.numpy(), np.eye(6)))
    True

    Reference:
        Le, Jaitly & Hinton, "A Simple Way to Initialize Recurrent Networks of
        Rectified Linear Units", arXiv:1504.00941, 2015.

    Notes:
        Gradient clipping (`clipnorm` on the optimizer) is part of the paper's recipe.
    """

    def __init__(self, units, gain=1.0, input_stddev=0.001, **kwargs):
        self.gain = _checks.positive_float("gain", gain, "the scale of the identity recurrent matrix")
        self.input_stddev = _checks.positive_float(
            "input_stddev", input_stddev, "the spread of the input weights"
        )
        kwargs.setdefault("activation", "relu")
        kwargs.setdefault("recurrent_initializer", Identity(gain=self.gain))
        kwargs.setdefault(
            "kernel_initializer", keras.initializers.RandomNormal(stddev=self.input_stddev)
        )
        super().__init__(units, **kwargs)

    def get_config(self):
        return {**super().get_config(), "gain": self.gain, "input_stddev": self.input_stddev}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        written = config.get("recurrent_initializer")
        if (
            isinstance(written, dict)
            and written.get("class_name") == "Identity"
            and written.get("module") == "keras.initializers"
            and "gain" not in (written.get("config") or {})
        ):
            # Written before kerasrnn's Identity: Keras's `{}` dropped the gain, which
            # was the layer's own (IRNN's default recurrent initializer).
            config["recurrent_initializer"] = Identity(gain=config.get("gain", 1.0))
        return super().from_config(config, custom_objects=custom_objects)
