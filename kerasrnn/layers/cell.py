"""The base class of every kerasrnn cell: weights, dropout masks and the two-part step."""

from typing import ClassVar

import keras
from keras import activations, constraints, initializers, ops, regularizers

from kerasrnn import regularizers as rnn_regularizers
from kerasrnn.layers import _checks
from kerasrnn.ops.math import layer_normalization, matmul, reshape, rms_scale


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
    With `layer_norm=True` each normalization adds a gain `<name>_gamma` (ones) and a
    shift `<name>_beta` (zeros) after those three (see `layer_norm_sizes`).

    Random numbers that change at every step (zoneout) are drawn before the loop by
    `per_step_inputs(inputs, constants, training)` as `(batch, time, ...)` tensors;
    the layer scans them with the inputs and `step` finds their slices in `constants`.
    """

    #: Number of gate blocks in the fused weight layout (1, 3 or 4).
    gates = 1
    #: Names of the gate blocks of `recurrent_kernel`, in the fused layout's order.
    gate_names = ("h",)
    #: What `step` passes to `record`: value name -> the name of the cell attribute
    #: holding the activation that produced it (`None`: unbounded, e.g. LSTM's `c`).
    #: `kerasrnn.diagnostics` reads it to find each value's saturation limits.
    recorded_values: ClassVar[dict] = {}

    @property
    def torch_gate_order(self):
        """torch.nn's gate blocks as indices of ours (the same order unless overridden)."""
        return tuple(range(self.gates))

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
        layer_norm=False,
        layer_norm_epsilon=1e-3,
        zoneout=0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.units = _checks.positive_int("units", units)
        self.activation = _checks.activation("activation", activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = _checks.keras_object("kernel_initializer", kernel_initializer)
        self.recurrent_initializer = _checks.keras_object("recurrent_initializer", recurrent_initializer)
        self.bias_initializer = _checks.keras_object("bias_initializer", bias_initializer)
        self.kernel_regularizer = _checks.keras_object("kernel_regularizer", kernel_regularizer)
        self.recurrent_regularizer = _checks.keras_object("recurrent_regularizer", recurrent_regularizer)
        self.bias_regularizer = _checks.keras_object("bias_regularizer", bias_regularizer)
        self.kernel_constraint = _checks.keras_object("kernel_constraint", kernel_constraint)
        self.recurrent_constraint = _checks.keras_object("recurrent_constraint", recurrent_constraint)
        self.bias_constraint = _checks.keras_object("bias_constraint", bias_constraint)
        self.dropout = _checks.rate("dropout", dropout)
        self.recurrent_dropout = _checks.rate("recurrent_dropout", recurrent_dropout)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed=seed)
        self.layer_norm = bool(layer_norm)
        self.layer_norm_epsilon = _checks.positive_float("layer_norm_epsilon", layer_norm_epsilon)
        self.zoneout = _checks.rate("zoneout", zoneout, meaning=_checks.ZONEOUT_MEANING)

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
            shape=(self.output_size, self.gates * self.units),
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
        if self.layer_norm:
            for name, size in self.layer_norm_sizes().items():
                gamma = self.add_weight(shape=(size,), name=f"{name}_gamma", initializer="ones")
                beta = self.add_weight(shape=(size,), name=f"{name}_beta", initializer="zeros")
                setattr(self, f"{name}_gamma", gamma)
                setattr(self, f"{name}_beta", beta)

    def layer_norm_sizes(self):
        """`{name: size}` of the layer normalizations this cell applies with
        `layer_norm=True`; each has the weights `<name>_gamma` and `<name>_beta`."""
        return {}

    def state_zoneout(self):
        """Zoneout probability of each state, in the order of `state_size`."""
        return [self.zoneout]

    def remat_pays(self):
        """Whether recomputing this cell's step in the backward pass (`remat`) beats
        storing its intermediates, where the backend allows it (JAX on a CPU).

        Measured (`nox -s bench`, docs/performance.md): yes with layer norm, whose
        statistics and normalized values would be stored at every step; the cells
        override it for their other configurations.
        """
        return self.layer_norm

    def xla_pays(self):
        """Whether the XLA-compiled loop (`xla`) beats TensorFlow's graph-mode loop for
        this cell, where the backend allows it (TensorFlow on a CPU).

        Measured (`nox -s bench`, docs/performance.md): the compiled loop and its
        recomputed forward pass cost about what the graph loop does for a plain GRU or
        SimpleRNN (0.95–0.97×) and much less with layer norm or zoneout; `LSTMCell`
        overrides it.
        """
        return True

    def _bias_shape(self):
        return (self.gates * self.units,)

    def _bias_initializer(self):
        return self.bias_initializer

    def call(self, inputs, states, training=False):
        nested = isinstance(states, (list, tuple))
        states = list(states) if nested else [states]
        constants = self.loop_constants(inputs, training)
        constants.update(self.per_step_inputs(inputs, constants, training))
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
            "kernel": read(self.kernel, self.compute_dtype),
            "recurrent_kernel": read(self.recurrent_kernel, self.compute_dtype),
            "bias": read(self.bias, self.compute_dtype) if self.use_bias else None,
            "input_mask": None,
            "recurrent_mask": None,
        }
        if training:
            batch = ops.shape(inputs)[0]
            if self.dropout > 0:
                constants["input_mask"] = self._dropout_mask((batch, inputs.shape[-1]), self.dropout)
            if self.recurrent_dropout > 0:
                constants["recurrent_mask"] = self._dropout_mask((batch, self.output_size), self.recurrent_dropout)
        if self.layer_norm:
            for name in self.layer_norm_sizes():
                constants[name] = (
                    read(getattr(self, f"{name}_gamma"), self.compute_dtype),
                    read(getattr(self, f"{name}_beta"), self.compute_dtype),
                )
            if "kernel_norm" in constants:
                # LN_x(x W) only sees x W minus its block means: take them out of W
                # once here, and the step's normalization needs no mean (see
                # `center_blocks`).
                constants["kernel"] = center_blocks(constants["kernel"], self.gates)
        return constants

    def _dropout_mask(self, shape, rate):
        return rnn_regularizers.dropout_mask(shape, rate, self.seed_generator, self.compute_dtype)

    def per_step_inputs(self, inputs, constants, training=False):
        """Random tensors that change at every step, drawn before the loop.

        Returns `{name: tensor}` with tensors `(batch, time, size)` for a sequence
        `inputs (batch, time, features)`, or `(batch, size)` for one step; the layer
        scans them along with the inputs and `step` reads each step's slice as
        `constants[name]`. Here: the zoneout masks `zoneout_<i>` of the states whose
        zoneout probability is positive, in training only (inference uses the
        expectation, no random numbers).
        """
        if not training:
            return {}
        sizes = self.state_size if isinstance(self.state_size, (list, tuple)) else [self.state_size]
        leading = tuple(ops.shape(inputs)[:-1])
        masks = {}
        for i, (rate, size) in enumerate(zip(self.state_zoneout(), sizes)):
            if rate > 0:
                masks[f"zoneout_{i}"] = rnn_regularizers.zoneout_mask(
                    leading + (size,), rate, self.seed_generator, self.compute_dtype
                )
        return masks

    def apply_zoneout(self, states, new_states, constants):
        """Zoneout of each state (Krueger et al. 2016); the identity at rate 0.

        With a per-step mask `d_t` in `constants` (training) each unit keeps its
        previous value where `d_t = 1`; without one (inference) the state is the
        expectation `p · u_{t-1} + (1 − p) · ũ_t`.
        """
        zoned = []
        for i, (old, new, rate) in enumerate(zip(states, new_states, self.state_zoneout())):
            if rate > 0:
                new = rnn_regularizers.zoneout(old, new, constants.get(f"zoneout_{i}", rate))
            zoned.append(new)
        return zoned

    def normalize(self, z, constants, name, groups=1, centered=False, shift=True):
        """Layer normalization of `z` with the gain and shift `constants[name]`.

        `centered=True` says each block of `z` already has mean zero (a product with
        weights that `center_blocks` centered), so only the variance is computed.
        `shift=False` leaves out `β` (a cell that added it to its bias instead).
        """
        gamma, beta = constants[name]
        if centered:
            return normalize_centered(z, gamma, beta if shift else None, self.layer_norm_epsilon, groups)
        return layer_norm(z, gamma, beta if shift else None, self.layer_norm_epsilon, groups)

    def input_bias(self, constants):
        """The part of the bias added to the input projection."""
        return constants["bias"]

    def project_inputs(self, inputs, constants=None):
        """`inputs @ kernel + bias` for one step or a whole sequence.

        With `layer_norm=True` on a gated cell the projection is normalized per gate
        block before the bias is added: `LN(inputs @ kernel) + bias`.
        """
        if constants is None:
            constants = self.loop_constants(inputs)
        z = matmul(self.drop_inputs(inputs, constants), constants["kernel"])
        if constants.get("kernel_norm") is not None:  # `kernel` is centered
            z = self.normalize(z, constants, "kernel_norm", groups=self.gates, centered=True, shift=False)
            return z + constants["input_shift"]  # see `fold_input_shift`
        bias = self.input_bias(constants)
        if bias is not None:
            z = z + bias
        return z

    def fold_input_shift(self, constants):
        """With layer norm, `constants["input_shift"]`: the bias plus `LN_x`'s shift `β_x`
        (and what else the cell folds into it), the one vector `project_inputs` adds
        after `LN_x`. Gated cells call it last in `loop_constants`, so the sum is formed
        once per sequence, never inside the time loop.
        """
        bias = self.input_bias(constants)
        beta = constants["kernel_norm"][1]
        constants["input_shift"] = beta if bias is None else bias + beta
        return constants

    def drop_inputs(self, inputs, constants):
        """`inputs` times the input dropout mask (one mask for every time step)."""
        mask = constants["input_mask"]
        if mask is None:
            return inputs
        if len(inputs.shape) == 3:
            mask = ops.expand_dims(mask, 1)
        return inputs * mask

    def recurrent_input(self, h, constants):
        """`h` as the recurrent matrix product sees it (recurrent dropout applied)."""
        mask = constants["recurrent_mask"]
        return h if mask is None else h * mask

    def step(self, projected, states, constants):
        """One time step from the projected input; returns `(output, new_states)`."""
        raise NotImplementedError

    def record(self, constants, **values):
        """Diagnostics hook: hands a step's intermediate values (its gates) to an observer.

        `kerasrnn.diagnostics` runs the cell's own `step` with a fresh dict under
        `constants["observer"]` and reads the values back inside the same step, so
        nothing leaves the scan body and the gates are never computed a second way.
        Everywhere else `constants` has no observer and this does nothing.

        Args:
            constants: the dict from `loop_constants` (plus `"observer"` when traced).
            **values: tensors `(batch, units)` named as in `recorded_values`.
        """
        observer = constants.get("observer")
        if observer is not None:
            observer.update(values)

    def fused_spec(self, constants, training=False):
        """A `kerasrnn.ops.fused.FusedSpec` if a backend kernel computes this cell
        exactly with these constants, else `None` with the reason in `self.unfused_reason`."""
        return

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
            "layer_norm": self.layer_norm,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "zoneout": self.zoneout,
        }
        return {**super().get_config(), **config}


def gated_fused_ok(cell, constants):
    """Why a gated cell cannot use a fused kernel (`None` if it can)."""
    if cell.activation is not activations.tanh:
        return "activation is not tanh"
    if cell.recurrent_activation is not activations.sigmoid:
        return "recurrent_activation is not sigmoid"
    return common_fused_reason(cell, constants)


def common_fused_reason(cell, constants):
    """Why no backend kernel computes `cell` (any family) exactly, or `None`."""
    if constants["recurrent_mask"] is not None:
        return "recurrent dropout is active"
    if cell.layer_norm:
        return "layer_norm=True (no backend kernel normalizes inside the step)"
    if any(rate > 0 for rate in cell.state_zoneout()):
        return "zoneout is active (no backend kernel computes it, in training or inference)"
    return None


def read(variable, dtype=None):
    """A weight's value as a tensor, read once (for `loop_constants`), in `dtype`.

    On TensorFlow `keras.ops.convert_to_tensor` returns the variable itself: a time
    loop using it reads it again at every step, and the XLA-compiled loop
    (`kerasrnn.ops.unroll(xla=True)`) needs the value, not the variable.

    `dtype` is the cell's compute dtype. `Layer.__call__` reads the variables of a
    mixed-precision layer in it already (autocast); `Layer.stateless_call` does not,
    and the loop must not mix dtypes. Where they agree the value is the variable's
    own tensor, which the fused torch kernel's weight buffer relies on.
    """
    value = ops.convert_to_tensor(variable)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if not isinstance(value, tf.Tensor):
            value = tf.convert_to_tensor(value)
    if dtype is not None and keras.backend.standardize_dtype(value.dtype) != dtype:
        value = ops.cast(value, dtype)
    return value


def layer_norm(z, gamma, beta, epsilon, groups=1):
    r"""Layer normalization over the last axis, optionally per block (Ba et al. 2016).

    ```
    LN(z; γ, β) = γ ⊗ (z − μ) / sqrt(σ² + ε) + β,   μ, σ² the mean and variance of z
    ```

    With `groups > 1` the last axis is split into `groups` equal blocks (the gates of
    a fused projection) and each block gets its own `μ` and `σ²`; `γ` and `β` span the
    whole axis. On torch `keras.ops.layer_normalization` (one fused kernel; float64
    kept by `kerasrnn.ops.math.layer_normalization`); elsewhere `z − μ` then
    `normalize_centered`, whose backward pass is shorter than autodiff's of the moments.
    """
    if keras.backend.backend() != "torch":
        return normalize_centered(center_blocks(z, groups), gamma, beta, epsilon, groups)
    if groups == 1:
        if beta is None:
            return layer_normalization(z, epsilon=epsilon) * gamma
        return layer_normalization(z, gamma, beta, epsilon=epsilon)
    shape = ops.shape(z)
    blocks = reshape(z, tuple(shape[:-1]) + (groups, shape[-1] // groups))
    normalized = reshape(layer_normalization(blocks, epsilon=epsilon), shape) * gamma
    return normalized if beta is None else normalized + beta


def center_blocks(w, groups=1):
    r"""`w` minus the mean of each of its `groups` blocks along the last axis.

    The mean of a block of `x W` is `x` times the mean column of that block of `W`,
    so `x W − μ(x W) = x W̃` with `W̃ = center_blocks(W)`: exactly (up to rounding),
    for any `x`. A cell layer-normalizes `x W` as `normalize_centered(x W̃)`; centering
    the weights once per sequence replaces the per-step mean, forward and backward.
    The block means of `W` get zero gradient, as they do through `LN(x W)`.

    Example:

    >>> import numpy as np, keras
    >>> from kerasrnn.layers.cell import center_blocks
    >>> w = center_blocks(np.array([[1.0, 3.0, 0.0, 4.0]], "float32"), groups=2)
    >>> keras.ops.convert_to_numpy(w).tolist()
    [[-1.0, 1.0, -2.0, 2.0]]
    """
    w = ops.convert_to_tensor(w)
    if groups == 1:
        return w - _mean_last(w)
    shape = ops.shape(w)
    blocks = reshape(w, tuple(shape[:-1]) + (groups, shape[-1] // groups))
    return reshape(blocks - _mean_last(blocks), shape)


def normalize_centered(z, gamma, beta, epsilon, groups=1):
    r"""`LN(z; γ, β)` for a `z` whose blocks already have mean zero (see `center_blocks`).

    ```
    γ ⊗ z / sqrt(mean(z²) + ε) + β
    ```

    per block, which is `layer_norm` when `μ = 0`: one reduction instead of two, and
    a shorter backward pass (`kerasrnn.ops.math.rms_scale`).
    """
    shape = ops.shape(z)
    blocks = z if groups == 1 else reshape(z, tuple(shape[:-1]) + (groups, shape[-1] // groups))
    normalized = rms_scale(blocks, epsilon)
    if groups != 1:
        normalized = reshape(normalized, shape)
    normalized = normalized * gamma
    return normalized if beta is None else normalized + beta


def _mean_last(x):
    # A sum over the last axis, scaled: `keras.ops.mean` computes float64 in float32
    # on JAX and torch, and the float64 gradient checks need every digit.
    return ops.sum(x, axis=-1, keepdims=True) * (1.0 / x.shape[-1])
