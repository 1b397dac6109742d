"""The base class of every kerasrnn cell, and what its `step` works with.

A cell says what one time step computes; everything around the step (weights in
Keras's layout, dropout masks drawn once per sequence, zoneout, masking,
`go_backwards`, the fast loop, a fused kernel where one exists, saving, the
diagnostics) is the base class's and the sequence layer's.
"""

from typing import ClassVar

import keras
from keras import activations, constraints, initializers, ops, regularizers

from kerasrnn import regularizers as rnn_regularizers
from kerasrnn.layers import _checks
from kerasrnn.ops.device import BuildsOutsideInferenceMode
from kerasrnn.ops.math import layer_normalization, matmul, reshape, rms_scale
from kerasrnn.ops.run import zoneout_masks


def _keras_dropout_cell():
    """Keras's dropout-mask cache for cells, found through a public Keras cell class.

    `keras.layers.RNN` fills it once per sequence before its time loop (and clears it
    after) for the cells that have it, so that every step of a sequence shares one
    input mask and one recurrent mask. Inheriting it gives kerasrnn cells the same
    masks per sequence under `keras.layers.RNN` as under `kerasrnn.layers.RNN`.
    """
    for klass in keras.layers.SimpleRNNCell.__mro__:
        if klass.__name__ == "DropoutRNNCell":
            return (klass,)
    return ()


class _KerasSequenceMasks(*_keras_dropout_cell()):
    """Keras's mask cache, and whether `keras.layers.RNN` is running the cell: it calls
    `get_dropout_mask` before its loop and `reset_dropout_mask` after it."""

    def get_dropout_mask(self, step_input):
        self._keras_rnn_running = True
        return super().get_dropout_mask(step_input)

    def reset_dropout_mask(self):
        self._keras_rnn_running = False
        super().reset_dropout_mask()


class LoopConstants(dict):
    """What stays fixed over a sequence, and what a cell's `step` calls.

    `loop_constants` returns one: the weights as tensors (`"kernel"`,
    `"recurrent_kernel"`, `"bias"`, `"input_bias"`, and what the cell adds), the dropout
    masks drawn for this sequence, and the zoneout rates. The layer gives each step
    its own copy with that step's zoneout masks. In `step`, a cell reads its weights
    by key and calls:

    - `recurrent(h)`: `h` as the recurrent product sees it (recurrent dropout applied);
    - `zoneout(states, new_states)`: the new states with zoneout applied;
    - `record(**values)`: hands intermediate values (the gates) to the diagnostics.

    **Mixed precision.** Under a mixed policy (`mixed_float16`, `mixed_bfloat16`) the
    weights are kept in their variable dtype (float32) and `constants[key]` casts them
    to the compute dtype where it is read: in the step, inside the time loop. So each
    step's gradient of a weight reaches the float32 value and the sum over time is
    float32, as in keras.layers (which reads its variables at every step); a weight
    cast once before the loop has its gradient summed over time in float16 (200
    steps: 5–10× the error on JAX, docs/performance.md). `stored(key)` gives the value as stored, for
    `loop_constants` to transform in float32 (center, split, add) before the step
    casts it. Elsewhere (`cast_to` is `None`) both are the entry itself.
    """

    #: The compute dtype the floating entries are cast to where they are read, under
    #: a mixed policy; `None` elsewhere.
    cast_to = None

    def __getitem__(self, key):
        value = dict.__getitem__(self, key)
        return value if self.cast_to is None else _cast_floats(value, self.cast_to)

    def get(self, key, default=None):
        try:
            return self[key]
        except KeyError:
            return default

    def stored(self, key):
        """The entry as stored (in the variable dtype under mixed precision)."""
        return dict.__getitem__(self, key)

    def drop_inputs(self, inputs):
        """`inputs` times the input dropout mask (one mask for every time step)."""
        mask = self.get("input_mask")
        if mask is None:
            return inputs
        if len(inputs.shape) == 3:
            mask = ops.expand_dims(mask, 1)
        return inputs * mask

    def recurrent(self, h):
        """`h` times the recurrent dropout mask, if one is active."""
        mask = self.get("recurrent_mask")
        return h if mask is None else h * mask

    def zoneout(self, states, new_states):
        """Zoneout of each state (Krueger et al. 2016); the identity at rate 0.

        With this step's mask `d_t` (training) each unit keeps its previous value
        where `d_t = 1`; without one (inference) the state is the expectation
        `p · u_{t-1} + (1 − p) · ũ_t`.
        """
        rates, zoned = self.get("zoneout_rates", ()), []
        for i, (old, new) in enumerate(zip(states, new_states)):
            rate = rates[i] if i < len(rates) else 0.0
            if rate > 0:
                new = rnn_regularizers.zoneout(old, new, self.get(f"zoneout_{i}", rate))
            zoned.append(new)
        return zoned

    def record(self, **values):
        """Diagnostics hook: hands a step's intermediate values to an observer.

        `kerasrnn.diagnostics` runs the cell's own `step` with a fresh dict under
        `"observer"` and reads the values back inside the same step, so nothing
        leaves the scan body and the gates are never computed a second way.
        Elsewhere there is no observer and this does nothing.
        """
        observer = self.get("observer")
        if observer is not None:
            observer.update(values)

    def at_step(self, **entries):
        """A copy with this step's entries (its zoneout masks, an observer)."""
        if not entries:
            return self
        copy = LoopConstants(dict.items(self), **entries)
        copy.cast_to = self.cast_to
        return copy


def _cast_floats(value, dtype):
    """`value` (a tensor, or a tuple of them) with its floating tensors in `dtype`."""
    if isinstance(value, tuple):
        return tuple(_cast_floats(v, dtype) for v in value)
    value_dtype = getattr(value, "dtype", None)
    if value_dtype is None:
        return value
    value_dtype = keras.backend.standardize_dtype(value_dtype)
    if value_dtype != dtype and keras.backend.is_float_dtype(value_dtype):
        return ops.cast(value, dtype)
    return value


class RecurrentCell(BuildsOutsideInferenceMode, keras.layers.Layer, _KerasSequenceMasks):
    """Base class of kerasrnn cells.

    **What a cell writes** (see "Write your own cell" in the docs):

    - `gates`, a class attribute: the number `G` of gate blocks. The base class makes
      `kernel (input_dim, G·units)`, `recurrent_kernel (output_size, G·units)` and
      `bias (G·units,)` in Keras's layout.
    - `step(projected, states, constants) -> (output, new_states)`: one time step from
      the projected input `x_t W_x + b` (`G·units` wide), the previous states and the
      `LoopConstants` (weights by key; `constants.recurrent(h)`,
      `constants.zoneout(states, new_states)`, `constants.record(**values)`).

    **What it may add**:

    - `state_size` and `output_size` (default `units` for both);
    - `loop_constants(inputs, training)`: more per-sequence tensors (call `super()`
      and add to what it returns: weights read once, blocks split once);
    - `project_inputs(inputs, constants)`: the input side, applied to one step or the
      whole sequence (default: input dropout, then `x W_x + b`);
    - `fused_spec(constants, training)`: a backend kernel that computes the cell
      exactly (`kerasrnn.ops.fused.FusedSpec`), or why none does (a string);
    - `cost_hints()`: `{"remat": bool}`, whether recomputing the step in the backward
      pass pays for this cell, where the planner asks (JAX on a CPU; default: no).

    The Keras cell protocol is kept, `call(inputs, states, training)` returning
    `(output, new_states)`, so a kerasrnn cell also runs in `keras.layers.RNN`, with
    one dropout mask per sequence there too.
    """

    #: Number of gate blocks in the fused weight layout (1, 3 or 4).
    gates = 1
    #: Names of the gate blocks of `recurrent_kernel`, in the fused layout's order
    #: (the diagnostics' spectrum per gate).
    gate_names = ("h",)
    #: What `step` passes to `constants.record`: value name -> the name of the cell
    #: attribute holding the activation that produced it (`None`: unbounded, e.g.
    #: LSTM's `c`). `kerasrnn.diagnostics` reads it to find each value's saturation.
    recorded_values: ClassVar[dict] = {}
    #: torch.nn's gate blocks as indices of ours, where they differ (the GRU).
    _torch_gate_order = None

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
        return [ops.zeros((batch_size, s), dtype=self.compute_dtype) for s in _sizes(self.state_size)]

    def build(self, input_shape):
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError(
                f"{type(self).__name__} needs a known feature size (last axis of the "
                f"inputs); received input shape {tuple(input_shape)}."
            )
        self.input_dim = int(input_dim)
        # `autocast=False`: the weights are read once per sequence (`loop_constants`),
        # in float32 under mixed precision, and cast where the step reads them.
        self.kernel = self.add_weight(
            shape=(self.input_dim, self.gates * self.units),
            name="kernel",
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
            autocast=False,
        )
        self.recurrent_kernel = self.add_weight(
            shape=(self.output_size, self.gates * self.units),
            name="recurrent_kernel",
            initializer=self.recurrent_initializer,
            regularizer=self.recurrent_regularizer,
            constraint=self.recurrent_constraint,
            autocast=False,
        )
        if self.use_bias:
            self.bias = self.add_weight(
                shape=self._bias_shape(),
                name="bias",
                initializer=self._bias_initializer(),
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
                autocast=False,
            )
        else:
            self.bias = None

    def call(self, inputs, states, training=False):
        """One step (the Keras cell protocol): `(output, new_states)`."""
        nested = isinstance(states, (list, tuple))
        states = list(states) if nested else [states]
        self._in_keras_step = True  # take the masks keras.layers.RNN drew for the sequence
        try:
            constants = self.loop_constants(inputs, training)
        finally:
            self._in_keras_step = False
        if training and any(r > 0 for r in constants["zoneout_rates"]) and _in_keras_jax_scan(self):
            raise ValueError(
                f"{type(self).__name__}: zoneout in training needs a new random mask at every "
                "step, which keras.layers.RNN cannot draw on JAX (its loop is traced once). "
                "Run the cell in kerasrnn.layers.RNN, which draws the masks before the loop."
            )
        constants = constants.at_step(**zoneout_masks(self, constants, inputs, training))
        output, new_states = self.step(self.project_inputs(inputs, constants), states, constants)
        return output, (new_states if nested else new_states[0])

    # ----------------------------------------------------------------- the split
    def loop_constants(self, inputs, training=False):
        """Tensors fixed over the sequence: the weights, read once (cast to the compute
        dtype; under mixed precision where the step reads them, see `LoopConstants`),
        and the dropout masks (one per sequence, in training).

        Args:
            inputs: the sequence `(batch, time, features)` or one step
                `(batch, features)`; only its batch size and feature size are used.
            training: whether dropout is active.
        """
        bias = self._read_weight(self.bias) if self.use_bias else None
        constants = LoopConstants(
            kernel=self._read_weight(self.kernel),
            recurrent_kernel=self._read_weight(self.recurrent_kernel),
            bias=bias,
            input_bias=bias,
            input_mask=None,
            recurrent_mask=None,
            zoneout_rates=tuple(self._zoneout_rates()),
        )
        if self._mixed_precision:
            constants.cast_to = self.compute_dtype
        if training:
            batch = ops.shape(inputs)[0]
            if self.dropout > 0:
                constants["input_mask"] = self._draw_dropout_mask(
                    "_dropout_mask", (batch, inputs.shape[-1]), self.dropout
                )
            if self.recurrent_dropout > 0:
                constants["recurrent_mask"] = self._draw_dropout_mask(
                    "_recurrent_dropout_mask", (batch, self.output_size), self.recurrent_dropout
                )
        return constants

    def project_inputs(self, inputs, constants):
        """`dropout(inputs) @ kernel + input_bias`, for one step or a whole sequence."""
        z = matmul(constants.drop_inputs(inputs), constants["kernel"])
        bias = constants["input_bias"]
        return z if bias is None else z + bias

    def step(self, projected, states, constants):
        """One time step from the projected input; returns `(output, new_states)`."""
        raise NotImplementedError(f"{type(self).__name__} must define `step`.")

    def fused_spec(self, constants, training=False):
        """A `kerasrnn.ops.fused.FusedSpec` if a backend kernel computes this cell
        exactly with these constants, else a string that says why none does."""
        return f"{type(self).__name__} has no fused kernel"

    def cost_hints(self):
        """`{"remat": bool}`: whether recomputing the step in the backward pass (instead
        of storing its intermediate values) is faster for this cell, where the planner
        asks (`kerasrnn.ops.plan.LOOP_DEFAULTS`)."""
        return {"remat": False}

    # ------------------------------------------------------------------ private
    def _bias_shape(self):
        return (self.gates * self.units,)

    def _bias_initializer(self):
        return self.bias_initializer

    def _zoneout_rates(self):
        """The zoneout probability of each state, in the order of `state_size`."""
        return [self.zoneout]

    @property
    def _mixed_precision(self):
        return self.compute_dtype != self.variable_dtype

    def _read_weight(self, variable):
        """A weight's value for `loop_constants`: in the compute dtype, or as the
        variable holds it under mixed precision (`LoopConstants` casts it where read)."""
        return read(variable, None if self._mixed_precision else self.compute_dtype)

    def _draw_dropout_mask(self, cached, shape, rate):
        # `keras.layers.RNN` draws the masks of a sequence before its loop (see
        # `_keras_dropout_cell`); everywhere else they are drawn here, once per sequence.
        mask = getattr(self, cached, None) if getattr(self, "_in_keras_step", False) else None
        if mask is not None and tuple(mask.shape)[-1:] == tuple(shape)[-1:]:
            return ops.cast(mask, self.compute_dtype)
        return rnn_regularizers.dropout_mask(shape, rate, self.seed_generator, self.compute_dtype)

    def _add_layer_norm(self, name, size):
        """The gain `<name>_gamma` (ones) and shift `<name>_beta` (zeros) of one layer
        normalization, made in `build`."""
        gamma = self.add_weight(shape=(size,), name=f"{name}_gamma", initializer="ones", autocast=False)
        beta = self.add_weight(shape=(size,), name=f"{name}_beta", initializer="zeros", autocast=False)
        setattr(self, f"{name}_gamma", gamma)
        setattr(self, f"{name}_beta", beta)

    def _read_layer_norm(self, name):
        """`(γ, β)` of the layer normalization `name`, as tensors (`_read_weight`)."""
        return self._read_weight(getattr(self, f"{name}_gamma")), self._read_weight(getattr(self, f"{name}_beta"))

    def _normalized_projection(self, inputs, constants):
        """`LN_x(dropout(inputs) @ kernel) + input_shift` per gate block, on the
        centered kernel that `loop_constants` made (see `center_blocks`); the gated
        cells' input side with layer norm."""
        z = matmul(constants.drop_inputs(inputs), constants["kernel"])
        gamma = constants["kernel_norm"][0]
        z = normalize_centered(z, gamma, None, self.layer_norm_epsilon, self.gates)
        return z + constants["input_shift"]

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


def _in_keras_jax_scan(cell):
    """Whether `keras.layers.RNN` is running `cell` on JAX (it drew the sequence's
    dropout masks, `_keras_dropout_cell`, and clears them after its loop)."""
    return keras.backend.backend() == "jax" and getattr(cell, "_keras_rnn_running", False)


def _sizes(size):
    return list(size) if isinstance(size, (list, tuple)) else [size]


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
    if any(rate > 0 for rate in constants["zoneout_rates"]):
        return "zoneout is active (no backend kernel computes it, in training or inference)"
    return None


def normalize(z, norm, epsilon, groups=1, centered=False, shift=True):
    """Layer normalization of `z` with `norm = (γ, β)` (see `layer_norm`).

    `centered=True` says each block of `z` already has mean zero (a product with
    weights that `center_blocks` centered), so only the variance is computed.
    `shift=False` leaves out `β` (a cell that added it to its bias instead).
    """
    gamma, beta = norm
    if centered:
        return normalize_centered(z, gamma, beta if shift else None, epsilon, groups)
    return layer_norm(z, gamma, beta if shift else None, epsilon, groups)


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
