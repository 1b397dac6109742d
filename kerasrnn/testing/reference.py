"""NumPy reference implementations of the cells, written straight from the equations.

These are the golden values of the test suite: plain float64 NumPy, one time step at a
time, no fusion, no tricks. Weights use the Keras layout of the corresponding kerasrnn
cell (`kernel (input_dim, G*units)`, `recurrent_kernel (units, G*units)`, `bias`).
"""

import numpy as np

__all__ = [
    "gru_step",
    "lstm_step",
    "run_sequence",
    "sigmoid",
    "simple_rnn_step",
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


def _gru_biases(bias, reset_after):
    """The input and recurrent biases of a GRU, three blocks each (zeros if absent)."""
    if bias is None:
        return (0.0, 0.0, 0.0), (0.0, 0.0, 0.0)
    if reset_after:
        return _gates(bias[0], 3), _gates(bias[1], 3)
    return _gates(bias, 3), (0.0, 0.0, 0.0)


def gru_step(x, states, kernel, recurrent_kernel, bias=None, reset_after=True):
    """The seed's GRU (`reset_after=False`, Cho 2014) or the Keras/cuDNN form (`True`)."""
    (h,) = states
    W_xz, W_xr, W_xg = _gates(kernel, 3)
    W_hz, W_hr, W_hg = _gates(recurrent_kernel, 3)
    b_x, b_h = _gru_biases(bias, reset_after)
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


# ----------------------------------------------------------------------------------
# Extensions (layer norm, peepholes, projection, zoneout): their golden values.

__all__ += ["gru_ln_step", "layer_norm", "lstm_extended_step", "simple_rnn_ln_step", "zoneout_step"]


def layer_norm(z, gamma, beta, epsilon=1e-3, groups=1):
    """`γ (z − μ) / sqrt(σ² + ε) + β`, with `μ, σ²` per block of `z.shape[-1] / groups`."""
    z = np.asarray(z, dtype=np.float64)
    blocks = np.split(z, groups, axis=-1)
    normed = [(b - b.mean(-1, keepdims=True)) / np.sqrt(b.var(-1, keepdims=True) + epsilon) for b in blocks]
    return np.concatenate(normed, axis=-1) * gamma + beta


def simple_rnn_ln_step(x, states, kernel, recurrent_kernel, bias, norm, epsilon=1e-3, activation=np.tanh):
    """LN-SimpleRNN (Géron ch. 15): `h_t = φ(LN(x_t W_x + h_{t-1} W_h + b))`; `norm = (γ, β)`."""
    (h,) = states
    pre = x @ kernel + h @ recurrent_kernel + (0.0 if bias is None else bias)
    h = activation(layer_norm(pre, *norm, epsilon))
    return h, [h]


def lstm_extended_step(
    x, states, kernel, recurrent_kernel, bias=None, *, peepholes=None, projection=None,
    norms=None, epsilon=1e-3,
):
    """The LSTM with its options, gate by gate.

    `peepholes = (w_ci, w_cf, w_co)` (Gers & Schmidhuber 2000: `i, f` see `c_{t-1}`,
    `o` sees `c_t`); `projection = W_hr (units, P)` (Sak et al. 2014:
    `h_t = (o_t tanh c_t) W_hr`); `norms = {"kernel": (γ, β), "recurrent": (γ, β),
    "state": (γ, β)}` (Ba et al. 2016: each projection normalized per gate block,
    `h_t = o_t tanh(LN(c_t))`, `c_t` carried unnormalized).
    """
    h, c = states
    W_xi, W_xf, W_xg, W_xo = _gates(kernel, 4)
    W_hi, W_hf, W_hg, W_ho = _gates(recurrent_kernel, 4)
    b_i, b_f, b_g, b_o = _gates(bias, 4) if bias is not None else (0.0,) * 4
    xs = [x @ W_xi, x @ W_xf, x @ W_xg, x @ W_xo]
    hs = [h @ W_hi, h @ W_hf, h @ W_hg, h @ W_ho]
    if norms is not None:
        gk, bk = (_gates(v, 4) for v in norms["kernel"])
        gr, br = (_gates(v, 4) for v in norms["recurrent"])
        xs = [layer_norm(v, gk[k], bk[k], epsilon) for k, v in enumerate(xs)]
        hs = [layer_norm(v, gr[k], br[k], epsilon) for k, v in enumerate(hs)]
    w_ci, w_cf, w_co = peepholes if peepholes is not None else (0.0, 0.0, 0.0)
    i = sigmoid(xs[0] + hs[0] + b_i + w_ci * c)
    f = sigmoid(xs[1] + hs[1] + b_f + w_cf * c)
    g = np.tanh(xs[2] + hs[2] + b_g)
    c = f * c + i * g
    o = sigmoid(xs[3] + hs[3] + b_o + w_co * c)
    h = o * np.tanh(layer_norm(c, *norms["state"], epsilon) if norms is not None else c)
    if projection is not None:
        h = h @ projection
    return h, [h, c]


def gru_ln_step(x, states, kernel, recurrent_kernel, bias, kernel_norm, recurrent_norm, epsilon=1e-3, reset_after=True):
    """Layer-normalized GRU: input and recurrent projections normalized per gate block.

    `reset_after=True`: `g_t = tanh(LN_x(x W_xg) + b_xg + r ⊗ (LN_h(h W_hg) + b_hg))`;
    `False`: `g_t = tanh(LN_x(x W_xg) + b_g + LN_h((r ⊗ h) W_hg))`.
    """
    (h,) = states
    W_x, W_h = _gates(kernel, 3), _gates(recurrent_kernel, 3)
    gk, bk = (_gates(v, 3) for v in kernel_norm)
    gr, br = (_gates(v, 3) for v in recurrent_norm)
    b_x, b_h = _gru_biases(bias, reset_after)
    a = [layer_norm(x @ W_x[k], gk[k], bk[k], epsilon) + b_x[k] for k in range(3)]

    def rec(v, k):
        return layer_norm(v @ W_h[k], gr[k], br[k], epsilon) + b_h[k]

    z = sigmoid(a[0] + rec(h, 0))
    r = sigmoid(a[1] + rec(h, 1))
    g = np.tanh(a[2] + (r * rec(h, 2) if reset_after else rec(r * h, 2)))
    h = z * h + (1.0 - z) * g
    return h, [h]


def zoneout_step(step, keep):
    """Wraps `step` with zoneout: `u_t = keep_u ⊗ u_{t-1} + (1 − keep_u) ⊗ ũ_t` per state.

    `keep` is one value per state: the rate `p` gives the inference expectation
    (Krueger et al. 2016); a 0/1 array gives a training step with that mask.
    """

    def zoned(x, states):
        _, new_states = step(x, states)
        new_states = [k * s + (1.0 - k) * n for k, s, n in zip(keep, states, new_states)]
        return new_states[0], new_states

    return zoned
