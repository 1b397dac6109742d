"""The base class of every kerasrnn cell: weights, dropout masks and the two-part step."""

import keras
from keras import activations, constraints, initializers, ops, regularizers

from kerasrnn.layers import _checks
from kerasrnn.ops.math import matmul


class RecurrentCell(keras.layers.Layer):
    """Base class of kerasrnn cells (not used directly).

    A cell keeps the Keras cell protocol — `call(inputs, states, training)` returns
    `(output, new_states)`, with `state_size`, `output_size` and `get_initial_state` — so
    it works inside `keras.layers.RNN`. It also splits its work in two so that
    `kerasrnn.layers.RNN` can run it fast:

    - `project_inputs(x, constants)`: everything that depends only on the input,
      `x @ kernel + bias` (with the input dropout mask). It accepts one step
      `(batch, features)` or a whole sequence `(batch, time, features)`.
    - `step(projected_t, states, constants)`: the recurrent part only.

    `loop_constants(inputs, training)` returns what stays fixed over the sequence (the
    weights as tensors, already split and cast; dropout masks drawn once per sequence).
    It runs before the time loop so the loop body is stateless.

    Weights follow the Keras layout: `kernel (input_dim, G*units)`,
    `recurrent_kernel (units, G*units)`, `bias`, where `G` is the number of gates.
    """

    #: Number of gate blocks in the fused weight layout (1, 3 or 4).
    gates = 1

    def __init__(
        self,
        units,
        activation="tanh",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        kernel_regularizer=None,
        recurrent_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        recurrent_constraint=None,
        bias_constraint=None,
        dropout=0.0,
        recurrent_dropout=0.0,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.units = _checks.positive_int("units", units)
        self.activation = _checks.activation("activation", activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.recurrent_initializer = initializers.get(recurrent_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.recurrent_regularizer = regularizers.get(recurrent_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.kernel_constraint = constraints.get(kernel_constraint)
        self.recurrent_constraint = constraints.get(recurrent_constraint)
        self.bias_constraint = constraints.get(bias_constraint)
        self.dropout = _checks.rate("dropout", dropout)
        self.recurrent_dropout = _checks.rate("recurrent_dropout", recurrent_dropout)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed=seed)

    # ------------------------------------------------------------------ protocol
    @property
    def state_size(self):
        return self.units

    @property
    def output_size(self):
        return self.units

    def get_initial_state(self, batch_size=None):
        sizes = self.state_size if isinstance(self.state_size, (list, tuple)) else [self.state_size]
        return [ops.zeros((batch_size, s), dtype=self.compute_dtype) for s in sizes]

    def build(self, input_shape):
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError(
                f"{type(self).__name__} needs a known feature size (last axis of the "
                f"inputs); received input shape {tuple(input_shape)}."
            )
        self.input_dim = int(input_dim)
        self.kernel = self.add_weight(
            shape=(self.input_dim, self.gates * self.units),
            name="kernel",
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        self.recurrent_kernel = self.add_weight(
            shape=(self.units, self.gates * self.units),
            name="recurrent_kernel",
            initializer=self.recurrent_initializer,
            regularizer=self.recurrent_regularizer,
            constraint=self.recurrent_constraint,
        )
        if self.use_bias:
            self.bias = self.add_weight(
                shape=self._bias_shape(),
                name="bias",
                initializer=self._bias_initializer(),
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )
        else:
            self.bias = None

    def _bias_shape(self):
        return (self.gates * self.units,)

    def _bias_initializer(self):
        return self.bias_initializer

    def call(self, inputs, states, training=False):
        nested = isinstance(states, (list, tuple))
        states = list(states) if nested else [states]
        constants = self.loop_constants(inputs, training)
        output, new_states = self.step(self.project_inputs(inputs, constants), states, constants)
        return output, (new_states if nested else new_states[0])

    # ------------------------------------------------------------ the fast split
    def loop_constants(self, inputs, training=False):
        """Loop-invariant tensors: weights (cast to the compute dtype) and dropout masks.

        Args:
            inputs: the sequence `(batch, time, features)` or one step
                `(batch, features)`; only its batch size and feature size are used.
            training: whether dropout is active.
        """
        constants = {
            "kernel": ops.convert_to_tensor(self.kernel),
            "recurrent_kernel": ops.convert_to_tensor(self.recurrent_kernel),
            "bias": ops.convert_to_tensor(self.bias) if self.use_bias else None,
            "input_mask": None,
            "recurrent_mask": None,
        }
        if training:
            batch = ops.shape(inputs)[0]
            if self.dropout > 0:
                constants["input_mask"] = self._dropout_mask((batch, inputs.shape[-1]), self.dropout)
            if self.recurrent_dropout > 0:
                constants["recurrent_mask"] = self._dropout_mask((batch, self.units), self.recurrent_dropout)
        return constants

    def _dropout_mask(self, shape, rate):
        ones = ops.ones(shape, dtype=self.compute_dtype)
        return keras.random.dropout(ones, rate=rate, seed=self.seed_generator)

    def input_bias(self, constants):
        """The part of the bias added to the input projection."""
        return constants["bias"]

    def project_inputs(self, inputs, constants=None):
        """`inputs @ kernel + bias` for one step or a whole sequence."""
        if constants is None:
            constants = self.loop_constants(inputs)
        mask = constants["input_mask"]
        if mask is not None:
            if len(inputs.shape) == 3:
                mask = ops.expand_dims(mask, 1)  # one mask for every time step
            inputs = inputs * mask
        z = matmul(inputs, constants["kernel"])
        bias = self.input_bias(constants)
        if bias is not None:
            z = z + bias
        return z

    def recurrent_input(self, h, constants):
        """`h` as the recurrent matrix product sees it (recurrent dropout applied)."""
        mask = constants["recurrent_mask"]
        return h if mask is None else h * mask

    def step(self, projected, states, constants):
        """One time step from the projected input; returns `(output, new_states)`."""
        raise NotImplementedError

    def fused_spec(self, constants, training=False):
        """A `kerasrnn.ops.fused.FusedSpec` if a backend kernel computes this cell
        exactly with these constants, else `None` with the reason in `self.unfused_reason`."""
        return None

    # --------------------------------------------------------------------- config
    def get_config(self):
        config = {
            "units": self.units,
            "activation": activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "kernel_initializer": initializers.serialize(self.kernel_initializer),
            "recurrent_initializer": initializers.serialize(self.recurrent_initializer),
            "bias_initializer": initializers.serialize(self.bias_initializer),
            "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
            "recurrent_regularizer": regularizers.serialize(self.recurrent_regularizer),
            "bias_regularizer": regularizers.serialize(self.bias_regularizer),
            "kernel_constraint": constraints.serialize(self.kernel_constraint),
            "recurrent_constraint": constraints.serialize(self.recurrent_constraint),
            "bias_constraint": constraints.serialize(self.bias_constraint),
            "dropout": self.dropout,
            "recurrent_dropout": self.recurrent_dropout,
            "seed": self.seed,
        }
        return {**super().get_config(), **config}


def gated_fused_ok(cell, constants):
    """Why a gated cell cannot use a fused kernel (`None` if it can)."""
    if cell.activation is not activations.tanh:
        return "activation is not tanh"
    if cell.recurrent_activation is not activations.sigmoid:
        return "recurrent_activation is not sigmoid"
    return common_fused_reason(constants)


def common_fused_reason(constants):
    if constants["recurrent_mask"] is not None:
        return "recurrent dropout is active"
    return None
