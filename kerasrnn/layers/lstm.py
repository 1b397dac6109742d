"""LSTM cell and layer (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000)."""

from typing import ClassVar

import keras
from keras import activations, ops

from kerasrnn.initializers import ForgetGateBias
from kerasrnn.layers import _checks
from kerasrnn.layers.cell import (
    RecurrentCell,
    center_blocks,
    gated_fused_ok,
    normalize,
)
from kerasrnn.layers.rnn import CellLayer
from kerasrnn.ops.fused import FusedSpec, Slot
from kerasrnn.ops.math import activate, matmul

_register = keras.saving.register_keras_serializable(package="kerasrnn")


@_register
class LSTMCell(RecurrentCell):
    r"""Long Short-Term Memory cell (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al.).

    At time step `t`, with input `x_t`, short-term state `h_{t-1}` and long-term
    state `c_{t-1}`:

    ```
    i_t = σ(x_t W_xi + h_{t-1} W_hi + b_i)          input gate
    f_t = σ(x_t W_xf + h_{t-1} W_hf + b_f)          forget gate
    g_t = tanh(x_t W_xg + h_{t-1} W_hg + b_g)       candidate memory
    o_t = σ(x_t W_xo + h_{t-1} W_ho + b_o)          output gate
    c_t = f_t ⊗ c_{t-1} + i_t ⊗ g_t
    y_t = h_t = o_t ⊗ tanh(c_t)
    ```

    Weights are fused in Keras's layout and gate order `i, f, c (= g), o`:
    `kernel (input_dim, 4·units) = [W_xi W_xf W_xg W_xo]`,
    `recurrent_kernel (units, 4·units)`, `bias (4·units,)`. The state is `[h, c]`.
    (`torch.nn.LSTM` uses the same gate order, transposed.)

    Options (each off by default; any combination works):

    - `use_peepholes=True` (Gers & Schmidhuber 2000): the gates also see the cell
      state through diagonal weights `w_ci, w_cf, w_co` — `i_t` and `f_t` see
      `c_{t-1}`, `o_t` sees the new `c_t`:

      ```
      i_t = σ(x_t W_xi + h_{t-1} W_hi + w_ci ⊗ c_{t-1} + b_i)
      f_t = σ(x_t W_xf + h_{t-1} W_hf + w_cf ⊗ c_{t-1} + b_f)
      o_t = σ(x_t W_xo + h_{t-1} W_ho + w_co ⊗ c_t + b_o)
      ```

      Extra weight `peephole_kernel (3, units)` = rows `[w_ci, w_cf, w_co]`,
      initialized to zeros (the cell starts as the plain LSTM).
    - `proj_size=P > 0` (Sak et al. 2014; `torch.nn.LSTM(proj_size=P)`): the output
      is projected, `h_t = (o_t ⊗ tanh(c_t)) W_hr`, so `h` has `P` units and is what
      the gates see: `recurrent_kernel (P, 4·units)`, state `[h (P), c (units)]`,
      output size `P`. Extra weight `projection_kernel (units, P)` (initializer,
      regularizer and constraint of `kernel`).
    - `layer_norm=True` (Ba et al. 2016): the input and the recurrent projections are
      normalized separately, each gate block with its own statistics, and the cell
      state is normalized before the output `tanh`:

      ```
      (z_i, z_f, z_g, z_o) = LN_x(x_t W_x) + LN_h(h_{t-1} W_h) + b
      h_t = o_t ⊗ tanh(LN_c(c_t))                 (c_t itself is carried unnormalized)
      ```

      Extra weights `kernel_norm_{gamma,beta} (4·units,)`,
      `recurrent_norm_{gamma,beta} (4·units,)`, `state_norm_{gamma,beta} (units,)`
      (gains ones, shifts zeros). How it runs fast: the block means of `x_t W_x` and
      `h_{t-1} W_h` are linear in the weights, so the step multiplies by weights
      centered once per sequence (`kerasrnn.layers.cell.center_blocks`) and only
      computes a variance; the shifts `β` join the bias. The saved weights are the
      ones above, uncentered.
    - `zoneout=p_h`, `zoneout_cell=p_c` (Krueger et al. 2016): during training each
      unit of `h_t` (of `c_t`) keeps its previous value with probability `p_h`
      (`p_c`), with masks drawn per step; at inference the expectation
      `p h_{t-1} + (1 − p) h̃_t`. `h̃_t` is computed from the un-zoned `c̃_t`.

    Extra weights come after `kernel`, `recurrent_kernel`, `bias` in `weights`, in the
    order layer norm, peepholes, projection, so the Keras layout of the first three
    never changes.

    Args:
        units: positive int, the size of `c_t` (and of `h_t` without projection).
        activation: the `tanh` of `g_t` and of the output (default `"tanh"`).
        recurrent_activation: the `σ` of the gates (default `"sigmoid"`).
        use_bias: whether to add the biases.
        kernel_initializer: default `"glorot_uniform"`.
        recurrent_initializer: default `"orthogonal"`.
        bias_initializer: default `"zeros"`.
        unit_forget_bias: add 1 to the forget-gate bias at initialization (default
            True: "inicializa los términos de sesgo en 1, no en 0"; Jozefowicz et
            al. 2015). See `kerasrnn.initializers.ForgetGateBias`.
        kernel_regularizer, recurrent_regularizer, bias_regularizer: regularizers.
        kernel_constraint, recurrent_constraint, bias_constraint: constraints.
        dropout: fraction of input units dropped (one mask per sequence).
        recurrent_dropout: fraction of `h_{t-1}` units dropped before the recurrent
            product (one mask per sequence, shared by the four gates).
        seed: seed of the dropout and zoneout masks.
        use_peepholes: add the peephole connections (default False).
        proj_size: size `P` of the projected output, `0 < P < units`; 0 (default)
            means no projection.
        layer_norm: layer-normalize as above (default False).
        layer_norm_epsilon: the `ε` of every normalization, > 0 (default 1e-3).
        zoneout: zoneout probability of `h`, in [0, 1) (default 0).
        zoneout_cell: zoneout probability of `c`, in [0, 1) (default 0).
        implementation: accepted for `keras.layers` compatibility, 1 or 2 (default
            2). In Keras it chooses one small matrix product per gate (1) or one for
            all gates (2): the same sums, grouped differently. kerasrnn always runs
            the fused products, so it changes nothing here.

    Call arguments:
        inputs: `(batch, input_dim)`; states: `[h_{t-1}, c_{t-1}]`; training: bool.

    Example:

    >>> import numpy as np, keras, kerasrnn
    >>> cell = kerasrnn.layers.LSTMCell(4)
    >>> out, h, c = keras.layers.RNN(cell, return_state=True)(np.ones((2, 3, 5), "float32"))
    >>> tuple(out.shape), tuple(c.shape)
    ((2, 4), (2, 4))
    >>> cell = kerasrnn.layers.LSTMCell(4, proj_size=2, use_peepholes=True, layer_norm=True)
    >>> out, h, c = keras.layers.RNN(cell, return_state=True)(np.ones((2, 3, 5), "float32"))
    >>> tuple(h.shape), tuple(c.shape), tuple(cell.recurrent_kernel.shape)
    ((2, 2), (2, 4), (2, 16))

    Reference:
        Hochreiter & Schmidhuber, "Long Short-Term Memory", Neural Computation 9(8),
        1997; Gers, Schmidhuber & Cummins, "Learning to Forget", 2000. Gers &
        Schmidhuber, "Recurrent Nets that Time and Count", IJCNN 2000 (peepholes).
        Sak, Senior & Beaufays, "Long Short-Term Memory Recurrent Neural Network
        Architectures for Large Scale Acoustic Modeling", Interspeech 2014
        (projection). Ba, Kiros & Hinton, "Layer Normalization", arXiv:1607.06450,
        2016. Krueger et al., "Zoneout", arXiv:1606.01305, 2016.

    Notes:
        One input dropout mask and one recurrent dropout mask are shared by the four
        gates (the "tied" variant of Gal & Ghahramani 2016); `keras.layers.LSTM` draws
        one per gate when `recurrent_dropout > 0`.

        Layer norm differs from TensorFlow Addons' `LayerNormLSTMCell` in two ways,
        both on purpose: TFA normalizes the whole `4·units` projection at once (we
        normalize each gate block, so the gates' statistics do not mix, as TF1's
        `LayerNormBasicLSTMCell` did), and TFA carries the *normalized* cell state
        (we carry `c_t` as in Ba et al. 2016, eq. 20-22, so the memory's additive path
        is not rescaled at every step). The normalizations have their own shift `β`
        next to the cell's bias `b`, as in TFA.
    """

    gates = 4
    gate_names = ("i", "f", "g", "o")
    recorded_values: ClassVar[dict] = {
        "i": "recurrent_activation",
        "f": "recurrent_activation",
        "g": "activation",
        "o": "recurrent_activation",
        "c": None,
    }

    def __init__(
        self,
        units,
        activation="tanh",
        recurrent_activation="sigmoid",
        unit_forget_bias=True,
        use_peepholes=False,
        proj_size=0,
        zoneout_cell=0.0,
        implementation=2,
        **kwargs,
    ):
        super().__init__(units, activation=activation, **kwargs)
        self.recurrent_activation = _checks.activation("recurrent_activation", recurrent_activation)
        self.unit_forget_bias = bool(unit_forget_bias)
        self.use_peepholes = bool(use_peepholes)
        self.proj_size = _checks.non_negative_int("proj_size", proj_size)
        if self.proj_size >= self.units:
            raise ValueError(
                f"`proj_size` must be smaller than `units` (as in torch.nn.LSTM); received "
                f"proj_size={self.proj_size}, units={self.units}. Use proj_size=0 for no "
                "projection."
            )
        self.zoneout_cell = _checks.rate("zoneout_cell", zoneout_cell, meaning=_checks.ZONEOUT_MEANING)
        self.implementation = _checks.implementation(implementation)

    @property
    def state_size(self):
        return [self.output_size, self.units]

    @property
    def output_size(self):
        return self.proj_size or self.units

    def cost_hints(self):
        # Four gates and a cell state per product: recomputed, 0.80x the time even
        # plain (JAX, CPU, shape A).
        return {"remat": True}

    def _zoneout_rates(self):
        return [self.zoneout, self.zoneout_cell]

    def build(self, input_shape):
        super().build(input_shape)
        if self.layer_norm:
            self._add_layer_norm("kernel_norm", 4 * self.units)
            self._add_layer_norm("recurrent_norm", 4 * self.units)
            self._add_layer_norm("state_norm", self.units)
        if self.use_peepholes:
            self.peephole_kernel = self.add_weight(
                shape=(3, self.units), name="peephole_kernel", initializer="zeros", autocast=False
            )
        if self.proj_size:
            self.projection_kernel = self.add_weight(
                shape=(self.units, self.proj_size),
                name="projection_kernel",
                initializer=self.kernel_initializer,
                regularizer=self.kernel_regularizer,
                constraint=self.kernel_constraint,
                autocast=False,
            )

    def loop_constants(self, inputs, training=False):
        constants = super().loop_constants(inputs, training)
        stored = constants.stored  # float32 under mixed precision (see `LoopConstants`)
        if self.use_peepholes:
            peepholes = self._read_weight(self.peephole_kernel)
            constants["peepholes"] = (peepholes[0], peepholes[1], peepholes[2])
        if self.proj_size:
            constants["projection_kernel"] = self._read_weight(self.projection_kernel)
        if self.layer_norm:
            for name in ("kernel_norm", "recurrent_norm", "state_norm"):
                constants[name] = self._read_layer_norm(name)
            # LN(x W) only sees x W minus its block means: take them out of the weights
            # once here, and the normalizations need no mean (see `center_blocks`).
            constants["kernel"] = center_blocks(stored("kernel"), 4)
            constants["recurrent_kernel"] = center_blocks(stored("recurrent_kernel"), 4)
            # b and LN_h's shift β_h are added to every step's pre-activations, and LN_x's
            # β_x too: one vector, formed once per sequence and added with the input.
            bias, beta_h = stored("bias"), stored("recurrent_norm")[1]
            constants["input_bias"] = beta_h if bias is None else bias + beta_h
            constants["input_shift"] = stored("input_bias") + stored("kernel_norm")[1]
        return constants

    def project_inputs(self, inputs, constants):
        if self.layer_norm:
            return self._normalized_projection(inputs, constants)
        return super().project_inputs(inputs, constants)

    def _bias_initializer(self):
        if self.unit_forget_bias:
            return ForgetGateBias(self.bias_initializer, gates=4, forget_index=1)
        return self.bias_initializer

    def step(self, projected, states, constants):
        h_prev, c_prev = states
        eps = self.layer_norm_epsilon
        rec = matmul(constants.recurrent(h_prev), constants["recurrent_kernel"])
        if self.layer_norm:
            rec = normalize(rec, constants["recurrent_norm"], eps, groups=4, centered=True, shift=False)
        z_i, z_f, z_g, z_o = ops.split(projected + rec, 4, axis=-1)
        if self.use_peepholes:
            w_ci, w_cf, w_co = constants["peepholes"]
            z_i = z_i + w_ci * c_prev
            z_f = z_f + w_cf * c_prev
        i = self.recurrent_activation(z_i)
        f = self.recurrent_activation(z_f)
        g = activate(self.activation, z_g)
        c = f * c_prev + i * g
        if self.use_peepholes:
            z_o = z_o + w_co * c
        o = self.recurrent_activation(z_o)
        h = o * activate(self.activation, normalize(c, constants["state_norm"], eps) if self.layer_norm else c)
        if self.proj_size:
            h = matmul(h, constants["projection_kernel"])
        constants.record(i=i, f=f, g=g, o=o, c=c)
        h, c = constants.zoneout(states, [h, c])
        return h, [h, c]

    def fused_spec(self, constants, training=False):
        if self.use_peepholes:
            return "use_peepholes=True (no backend kernel has peepholes)"
        reason = gated_fused_ok(self, constants)
        if reason:
            return reason
        # torch's LSTM has Keras's gate order: its weights are the transposed variables.
        slots = [
            Slot(self.kernel, constants["kernel"], transpose=True),
            Slot(self.recurrent_kernel, constants["recurrent_kernel"], transpose=True),
        ]
        if self.use_bias:
            slots += [Slot(self.bias, constants["bias"]), Slot.zeros((4 * self.units,))]
        if self.proj_size:  # torch's `weight_hr`, last in each layer's parameters
            slots.append(Slot(self.projection_kernel, constants["projection_kernel"], transpose=True))
        return FusedSpec("LSTM", slots, self.use_bias, owner=self)

    def get_config(self):
        config = {
            "recurrent_activation": activations.serialize(self.recurrent_activation),
            "unit_forget_bias": self.unit_forget_bias,
            "use_peepholes": self.use_peepholes,
            "proj_size": self.proj_size,
            "zoneout_cell": self.zoneout_cell,
            "implementation": self.implementation,
        }
        return {**super().get_config(), **config}


@_register
class LSTM(CellLayer):
    r"""LSTM layer: `LSTMCell` (equations there) run over a sequence.

    Takes every argument of `LSTMCell` and of `kerasrnn.layers.RNN`
    (`return_sequences`, `return_state`, `go_backwards`, `stateful`,
    `zero_output_for_mask`, `fused`, `hoist_inputs`). Weights are in the layout of
    `keras.layers.LSTM`, so `ours.set_weights(keras_lstm.get_weights())` computes the
    same function.

    On torch, `fused="auto"` runs `torch._VF.lstm` (the kernel of `torch.nn.LSTM`)
    whenever it computes the same function: `tanh`/`sigmoid` activations, no recurrent
    dropout, no peepholes, layer norm or zoneout (a projection is fine:
    `torch.nn.LSTM(proj_size=...)` has one), and no mask or a right-padded one (from
    `Embedding(mask_zero=True)`; run as a packed sequence). `layer.last_path` tells
    which ran.

    Example:

    >>> import numpy as np, keras, kerasrnn
    >>> layer = kerasrnn.layers.LSTM(8, return_state=True)
    >>> out, h, c = layer(np.ones((2, 5, 3), "float32"))
    >>> bool(np.allclose(keras.ops.convert_to_numpy(out), keras.ops.convert_to_numpy(h)))
    True
    >>> layer = kerasrnn.LSTM(8, layer_norm=True, use_peepholes=True, proj_size=4, zoneout=0.1,
    ...                       return_state=True)
    >>> out, h, c = layer(np.ones((2, 5, 3), "float32"))
    >>> tuple(out.shape), tuple(c.shape), layer.last_path
    ((2, 4), (2, 8), 'kerasrnn.ops.unroll')

    Reference:
        Hochreiter & Schmidhuber, "Long Short-Term Memory", Neural Computation 9(8), 1997.
        See `LSTMCell` for the papers of each option.
    """

    cell_class = LSTMCell

