"""GRU cell and layer, in both forms: Cho et al. 2014 ("reset before") and Keras/cuDNN ("reset after")."""

from typing import ClassVar

import keras
from keras import activations, ops

from kerasrnn.layers import _checks
from kerasrnn.layers.cell import RecurrentCell, center_blocks, gated_fused_ok, normalize
from kerasrnn.layers.rnn import CellLayer
from kerasrnn.ops.fused import FusedSpec, Slot
from kerasrnn.ops.math import activate, matmul

_register = keras.saving.register_keras_serializable(package="kerasrnn")


@_register
class GRUCell(RecurrentCell):
    r"""Gated Recurrent Unit cell, in the form of Cho et al. (2014) or of Keras/cuDNN.

    With `reset_after=False` (the equations of Cho et al. 2014), at step `t`:

    ```
    z_t = σ(x_t W_xz + h_{t-1} W_hz + b_z)                  update gate
    r_t = σ(x_t W_xr + h_{t-1} W_hr + b_r)                  reset gate
    g_t = tanh(x_t W_xg + (r_t ⊗ h_{t-1}) W_hg + b_g)       candidate
    h_t = z_t ⊗ h_{t-1} + (1 − z_t) ⊗ g_t
    ```

    With `reset_after=True` (default, as `keras.layers.GRU`, cuDNN and `torch.nn.GRU`),
    the reset gate is applied after the recurrent product, which has its own bias:

    ```
    g_t = tanh(x_t W_xg + b_xg + r_t ⊗ (h_{t-1} W_hg + b_hg))
    ```

    and `z_t`, `r_t` add both biases (`b_x· + b_h·`). Weights use Keras's layout and
    gate order `z, r, h (= g)`: `kernel (input_dim, 3·units)`,
    `recurrent_kernel (units, 3·units)`; `bias (3·units,)` for `reset_after=False`,
    `bias (2, 3·units)` (input bias, recurrent bias) for `reset_after=True`.

    With `layer_norm=True` (Ba et al. 2016; no paper fixes a GRU form, this is the
    choice of the LSTM applied to the GRU) the input projection and the recurrent
    projection are normalized separately, each gate block with its own statistics,
    before the biases and the reset gate:

    ```
    (a_z, a_r, a_g) = LN_x(x_t W_x) + b_x,     (u_z, u_r, u_g) = LN_h(h_{t-1} W_h) + b_h
    z_t = σ(a_z + u_z),   r_t = σ(a_r + u_r)
    g_t = tanh(a_g + r_t ⊗ u_g)                             reset_after=True
    g_t = tanh(a_g + LN_g((r_t ⊗ h_{t-1}) W_hg))            reset_after=False
    ```

    (for `reset_after=False` the `z, r` blocks of `LN_h` see `h_{t-1} W_hz, W_hr` and
    the candidate block sees `(r_t ⊗ h_{t-1}) W_hg`). Extra weights
    `kernel_norm_{gamma,beta} (3·units,)` and `recurrent_norm_{gamma,beta} (3·units,)`
    (gains ones, shifts zeros), after `kernel`, `recurrent_kernel`, `bias`; the step
    runs on weights centered per gate block, as `LSTMCell` explains. With
    `zoneout=p` (Krueger et al. 2016) each unit of `h_t` keeps its previous value with
    probability `p` during training and is the expectation
    `p h_{t-1} + (1 − p) h̃_t` at inference.

    Args:
        units: positive int.
        activation: the `tanh` of `g_t` (default `"tanh"`).
        recurrent_activation: the `σ` of the gates (default `"sigmoid"`).
        reset_after: which form (default True, the Keras/cuDNN form).
        use_bias: whether to add the biases.
        kernel_initializer, recurrent_initializer, bias_initializer: as in
            `SimpleRNNCell` (defaults "glorot_uniform", "orthogonal", "zeros").
        kernel_regularizer, recurrent_regularizer, bias_regularizer: regularizers.
        kernel_constraint, recurrent_constraint, bias_constraint: constraints.
        dropout, recurrent_dropout, seed: as in `SimpleRNNCell`.
        layer_norm: layer-normalize the projections as above (default False).
        layer_norm_epsilon: the `ε` of the normalizations, > 0 (default 1e-3).
        zoneout: zoneout probability of `h`, in [0, 1) (default 0).
        implementation: accepted for `keras.layers` compatibility, 1 or 2 (default
            2). In Keras it chooses one small matrix product per gate (1) or one for
            all gates (2): the same sums, grouped differently. kerasrnn always runs
            the fused products, so it changes nothing here.

    Call arguments:
        inputs: `(batch, input_dim)`; states: `[h_{t-1}]`; training: bool.

    Example:

    >>> import numpy as np, keras, kerasrnn
    >>> cell = kerasrnn.layers.GRUCell(4, reset_after=False)
    >>> tuple(keras.layers.RNN(cell)(np.ones((2, 3, 5), "float32")).shape)
    (2, 4)

    Reference:
        Cho et al., "Learning Phrase Representations using RNN Encoder-Decoder for
        Statistical Machine Translation", EMNLP 2014. Ba, Kiros & Hinton, "Layer
        Normalization", arXiv:1607.06450, 2016. Krueger et al., "Zoneout",
        arXiv:1606.01305, 2016.

    Notes:
        The update gate keeps the *old* state: `h_t = z_t h_{t-1} + (1 − z_t) g_t`, as in
        the seed and in Keras (Cho et al. write it with `z` and `1 − z` swapped, which is
        the same family up to relabelling `z`).
    """

    gates = 3
    #: torch.nn.GRU's gate blocks `r, z, n` as indices of ours (`z, r, h`).
    _torch_gate_order = (1, 0, 2)
    gate_names = ("z", "r", "g")
    recorded_values: ClassVar[dict] = {"z": "recurrent_activation", "r": "recurrent_activation", "g": "activation"}

    def __init__(
        self,
        units,
        activation="tanh",
        recurrent_activation="sigmoid",
        reset_after=True,
        implementation=2,
        **kwargs,
    ):
        super().__init__(units, activation=activation, **kwargs)
        self.recurrent_activation = _checks.activation("recurrent_activation", recurrent_activation)
        self.reset_after = bool(reset_after)
        self.implementation = _checks.implementation(implementation)

    def _bias_shape(self):
        return (2, 3 * self.units) if self.reset_after else (3 * self.units,)

    def cost_hints(self):
        # The plain GRU step is cheaper stored (1.10x recomputed); layer norm and
        # zoneout tip it (JAX, CPU).
        return {"remat": self.layer_norm or self.zoneout > 0}

    def build(self, input_shape):
        super().build(input_shape)
        if self.layer_norm:
            self._add_layer_norm("kernel_norm", 3 * self.units)
            self._add_layer_norm("recurrent_norm", 3 * self.units)

    def loop_constants(self, inputs, training=False):
        constants = super().loop_constants(inputs, training)
        units = self.units
        stored = constants.stored  # float32 under mixed precision (see `LoopConstants`)
        recurrent = stored("recurrent_kernel")
        if self.layer_norm:
            for name in ("kernel_norm", "recurrent_norm"):
                constants[name] = self._read_layer_norm(name)
            # LN(x W) only sees x W minus its block means: take them out of the weights
            # once here (see `center_blocks`). Splitting after centering keeps the z, r,
            # g blocks centered.
            constants["kernel"] = center_blocks(stored("kernel"), 3)
            recurrent = constants["recurrent_kernel"] = center_blocks(recurrent, 3)
        if not self.reset_after:
            # Split once, outside the loop: the candidate sees r ⊗ h, not h.
            constants["recurrent_zr"] = recurrent[:, : 2 * units]
            constants["recurrent_g"] = recurrent[:, 2 * units :]
            if self.layer_norm:
                gamma, beta = stored("recurrent_norm")
                constants["recurrent_norm_zr"] = (gamma[: 2 * units], beta[: 2 * units])
                constants["recurrent_norm_g"] = (gamma[2 * units :], beta[2 * units :])
        bias = stored("bias")
        if bias is not None and self.reset_after:
            constants["input_bias"] = bias[0]
            constants["recurrent_bias"] = bias[1]
        else:
            constants["input_bias"] = bias
            constants["recurrent_bias"] = None
        if self.layer_norm:  # LN_x's shift β_x joins the input bias, once per sequence
            beta_x = stored("kernel_norm")[1]
            bias = stored("input_bias")
            constants["input_shift"] = beta_x if bias is None else bias + beta_x
        return constants

    def project_inputs(self, inputs, constants):
        if self.layer_norm:
            return self._normalized_projection(inputs, constants)
        return super().project_inputs(inputs, constants)

    def step(self, projected, states, constants):
        h_prev = states[0]
        h_in = constants.recurrent(h_prev)
        eps = self.layer_norm_epsilon
        x_z, x_r, x_g = ops.split(projected, 3, axis=-1)
        if self.reset_after:
            rec = matmul(h_in, constants["recurrent_kernel"])
            if self.layer_norm:
                rec = normalize(rec, constants["recurrent_norm"], eps, groups=3, centered=True)
            if constants["recurrent_bias"] is not None:
                rec = rec + constants["recurrent_bias"]
            rec_z, rec_r, rec_g = ops.split(rec, 3, axis=-1)
            z = self.recurrent_activation(x_z + rec_z)
            r = self.recurrent_activation(x_r + rec_r)
            g = activate(self.activation, x_g + r * rec_g)
        else:
            rec_zr = matmul(h_in, constants["recurrent_zr"])
            if self.layer_norm:
                rec_zr = normalize(rec_zr, constants["recurrent_norm_zr"], eps, groups=2, centered=True)
            rec_z, rec_r = ops.split(rec_zr, 2, axis=-1)
            z = self.recurrent_activation(x_z + rec_z)
            r = self.recurrent_activation(x_r + rec_r)
            rec_g = matmul(r * h_in, constants["recurrent_g"])
            if self.layer_norm:
                rec_g = normalize(rec_g, constants["recurrent_norm_g"], eps, centered=True)
            g = activate(self.activation, x_g + rec_g)
        h = z * h_prev + (1.0 - z) * g
        constants.record(z=z, r=r, g=g)
        (h,) = constants.zoneout(states, [h])
        return h, [h]

    def fused_spec(self, constants, training=False):
        if not self.reset_after:
            return "reset_after=False (no backend kernel computes Cho's form)"
        reason = gated_fused_ok(self, constants)
        if reason:
            return reason

        # Keras z, r, h -> torch r, z, n: torch's weights are reordered variables.
        order = {"gate_order": self._torch_gate_order, "units": self.units}
        slots = [
            Slot(self.kernel, constants["kernel"], transpose=True, **order),
            Slot(self.recurrent_kernel, constants["recurrent_kernel"], transpose=True, **order),
        ]
        if self.use_bias:  # `bias` is (2, 3·units): the input bias, then the recurrent one
            slots += [Slot(self.bias, constants["bias"], row=row, **order) for row in (0, 1)]
        return FusedSpec("GRU", slots, self.use_bias, owner=self)

    def get_config(self):
        config = {
            "recurrent_activation": activations.serialize(self.recurrent_activation),
            "reset_after": self.reset_after,
            "implementation": self.implementation,
        }
        return {**super().get_config(), **config}


@_register
class GRU(CellLayer):
    r"""GRU layer: `GRUCell` (both forms; equations there) run over a sequence.

    Takes every argument of `GRUCell` (including `reset_after`) and of
    `kerasrnn.layers.RNN`. Weights are in the layout of `keras.layers.GRU` with the
    same `reset_after`, so `set_weights(keras_gru.get_weights())` computes the same
    function.

    On torch, `fused="auto"` runs `torch._VF.gru` (the kernel of `torch.nn.GRU`, the
    reset-after form) when `reset_after=True`, activations are `tanh`/`sigmoid`, and
    there is no recurrent dropout, layer norm or zoneout and the mask, if any, is
    right-padded.

    Example:

    >>> import numpy as np, kerasrnn
    >>> layer = kerasrnn.layers.GRU(8, reset_after=False, return_sequences=True)
    >>> tuple(layer(np.ones((2, 5, 3), "float32")).shape)
    (2, 5, 8)

    Reference:
        Cho et al., EMNLP 2014; Chung et al., "Empirical Evaluation of Gated Recurrent
        Neural Networks on Sequence Modeling", 2014.
    """

    cell_class = GRUCell
