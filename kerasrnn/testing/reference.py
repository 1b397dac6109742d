"""NumPy reference implementations of the cells, written straight from the equations.

These are the golden values of the test suite: plain float64 NumPy, one time step at a
time, no fusion, no tricks. Weights use the Keras layout of the corresponding kerasrnn
cell (`kernel (input_dim, G*units)`, `recurrent_kernel (units, G*units)`, `bias`).
"""

import numpy as np

__all__ = [
    "sigmoid",
    "simple_rnn_step",
    "lstm_step",
    "gru_step",
    "run_sequence",
]


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def relu(x):
    return np.maximum(x, 0.0)


def _gates(w, n):
    return np.split(w, n, axis=-1)


def simple_rnn_step(x, states, kernel, recurrent_kernel, bias=None, activation=np.tanh):
    """`h_t = φ(x_t W_x + h_{t-1} W_h + b)`."""
    (h,) = states
    pre = x @ kernel + h @ recurrent_kernel
    if bias is not None:
        pre = pre + bias
    h = activation(pre)
    return h, [h]


def lstm_step(x, states, kernel, recurrent_kernel, bias=None):
    """The seed's LSTM: gates `i, f, g, o`; `c_t = f c_{t-1} + i g`; `h_t = o tanh(c_t)`."""
    h, c = states
    W_xi, W_xf, W_xg, W_xo = _gates(kernel, 4)
    W_hi, W_hf, W_hg, W_ho = _gates(recurrent_kernel, 4)
    b_i, b_f, b_g, b_o = _gates(bias, 4) if bias is not None else (0.0,) * 4
    i = sigmoid(x @ W_xi + h @ W_hi + b_i)
    f = sigmoid(x @ W_xf + h @ W_hf + b_f)
    o = sigmoid(x @ W_xo + h @ W_ho + b_o)
    g = np.tanh(x @ W_xg + h @ W_hg + b_g)
    c = f * c + i * g
    h = o * np.tanh(c)
    return h, [h, c]


def gru_step(x, states, kernel, recurrent_kernel, bias=None, reset_after=True):
    """The seed's GRU (`reset_after=False`, Cho 2014) or the Keras/cuDNN form (`True`)."""
    (h,) = states
    W_xz, W_xr, W_xg = _gates(kernel, 3)
    W_hz, W_hr, W_hg = _gates(recurrent_kernel, 3)
    if bias is None:
        b_x = b_h = (0.0, 0.0, 0.0)
    elif reset_after:
        b_x, b_h = _gates(bias[0], 3), _gates(bias[1], 3)
    else:
        b_x, b_h = _gates(bias, 3), (0.0, 0.0, 0.0)
    z = sigmoid(x @ W_xz + b_x[0] + h @ W_hz + b_h[0])
    r = sigmoid(x @ W_xr + b_x[1] + h @ W_hr + b_h[1])
    if reset_after:
        g = np.tanh(x @ W_xg + b_x[2] + r * (h @ W_hg + b_h[2]))
    else:
        g = np.tanh(x @ W_xg + b_x[2] + (r * h) @ W_hg)
    h = z * h + (1.0 - z) * g
    return h, [h]


def run_sequence(step, x, initial_states, mask=None, go_backwards=False, zero_output_for_mask=False):
    """Runs `step(x_t, states) -> (output, states)` over `x (batch, time, features)`.

    Masked steps keep the states and repeat the previous output (zeros before the first
    valid step), or output zeros with `zero_output_for_mask`. With `go_backwards` the
    outputs are in processing order, as in Keras.

    Returns `(outputs (batch, time, units), final_states)`.
    """
    x = np.asarray(x, dtype=np.float64)
    states = [np.asarray(s, dtype=np.float64) for s in initial_states]
    order = range(x.shape[1] - 1, -1, -1) if go_backwards else range(x.shape[1])
    outputs, prev = [], None
    for t in order:
        out, new_states = step(x[:, t], states)
        if prev is None:
            prev = np.zeros_like(out)
        if mask is not None:
            m = np.asarray(mask[:, t], dtype=bool)[:, None]
            out = np.where(m, out, 0.0 if zero_output_for_mask else prev)
            new_states = [np.where(m, n, s) for n, s in zip(new_states, states)]
        states, prev = new_states, out
        outputs.append(out)
    return np.stack(outputs, axis=1), states
