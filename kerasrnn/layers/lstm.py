"""LSTM cell and layer (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000)."""

import keras
from keras import activations, ops

from kerasrnn.initializers import ForgetGateBias
from kerasrnn.layers import _checks
from kerasrnn.layers.cell import RecurrentCell, gated_fused_ok
from kerasrnn.layers.rnn import CellLayer
from kerasrnn.ops.fused import FusedSpec
from kerasrnn.ops.math import activate, matmul

_register = keras.saving.register_keras_serializable(package="kerasrnn")


@_register
class LSTMCell(RecurrentCell):
    r"""Long Short-Term Memory cell, with the equations of the seed lesson.

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

    Args:
        units: positive int, the size of `h_t` and `c_t`.
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
        seed: seed of the dropout masks.

    Call arguments:
        inputs: `(batch, input_dim)`; states: `[h_{t-1}, c_{t-1}]`; training: bool.

    Example:

    >>> import numpy as np, keras, kerasrnn
    >>> cell = kerasrnn.layers.LSTMCell(4)
    >>> out, h, c = keras.layers.RNN(cell, return_state=True)(np.ones((2, 3, 5), "float32"))
    >>> tuple(out.shape), tuple(c.shape)
    ((2, 4), (2, 4))

    Reference:
        Hochreiter & Schmidhuber, "Long Short-Term Memory", Neural Computation 9(8),
        1997; Gers, Schmidhuber & Cummins, "Learning to Forget", 2000.

    Notes:
        One input dropout mask and one recurrent dropout mask are shared by the four
        gates (the "tied" variant of Gal & Ghahramani 2016); `keras.layers.LSTM` draws
        one per gate when `recurrent_dropout > 0`.
    """

    gates = 4

    def __init__(
        self,
        units,
        activation="tanh",
        recurrent_activation="sigmoid",
        unit_forget_bias=True,
        **kwargs,
    ):
        super().__init__(units, activation=activation, **kwargs)
        self.recurrent_activation = _checks.activation("recurrent_activation", recurrent_activation)
        self.unit_forget_bias = bool(unit_forget_bias)

    @property
    def state_size(self):
        return [self.units, self.units]

    def _bias_initializer(self):
        if self.unit_forget_bias:
            return ForgetGateBias(self.bias_initializer, gates=4, forget_index=1)
        return self.bias_initializer

    def step(self, projected, states, constants):
        h_prev, c_prev = states
        z = projected + matmul(self.recurrent_input(h_prev, constants), constants["recurrent_kernel"])
        z_i, z_f, z_g, z_o = ops.split(z, 4, axis=-1)
        i = self.recurrent_activation(z_i)
        f = self.recurrent_activation(z_f)
        g = activate(self.activation, z_g)
        o = self.recurrent_activation(z_o)
        c = f * c_prev + i * g
        h = o * activate(self.activation, c)
        return h, [h, c]

    def fused_spec(self, constants, training=False):
        self.unfused_reason = gated_fused_ok(self, constants)
        if self.unfused_reason:
            return None
        params = [ops.transpose(constants["kernel"]), ops.transpose(constants["recurrent_kernel"])]
        if self.use_bias:
            params += [constants["bias"], ops.zeros_like(constants["bias"])]
        return FusedSpec("LSTM", params, self.use_bias)

    def get_config(self):
        config = {
            "recurrent_activation": activations.serialize(self.recurrent_activation),
            "unit_forget_bias": self.unit_forget_bias,
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
    dropout, and no mask or a right-padded one (from `Embedding(mask_zero=True)`; run as
    a packed sequence).

    Example:

    >>> import numpy as np, keras, kerasrnn
    >>> layer = kerasrnn.layers.LSTM(8, return_state=True)
    >>> out, h, c = layer(np.ones((2, 5, 3), "float32"))
    >>> bool(np.allclose(keras.ops.convert_to_numpy(out), keras.ops.convert_to_numpy(h)))
    True

    Reference:
        Hochreiter & Schmidhuber, "Long Short-Term Memory", Neural Computation 9(8), 1997.
    """

    cell_class = LSTMCell

