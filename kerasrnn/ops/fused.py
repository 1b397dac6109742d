"""Dispatch to backend kernels that compute a cell's equations exactly.

A fused kernel is used only where it computes the same function as the `keras.ops`
reference loop (`kerasrnn.ops.unroll`) — same equations, same weight values. The cells
decide that (`RecurrentCell.fused_spec`); this module only calls the kernel.

torch: `torch._VF.lstm / gru / rnn_tanh / rnn_relu`, the kernels behind `torch.nn.LSTM`
and friends (native on CPU, cuDNN on CUDA). They are differentiable with torch's autograd,
so the Keras trainer needs nothing special.
"""

import warnings

import keras

__all__ = ["FusedSpec", "fused_backends", "permute_gates", "run_fused"]

#: Kernels each backend offers, by mode.
_TORCH_MODES = ("LSTM", "GRU", "RNN_TANH", "RNN_RELU")


class FusedSpec:
    """What a fused kernel needs: its mode and torch-layout parameters.

    Args:
        mode: one of `"LSTM"`, `"GRU"`, `"RNN_TANH"`, `"RNN_RELU"`.
        params: `[w_ih, w_hh, b_ih, b_hh]` (or `[w_ih, w_hh]` without bias), in
            `torch.nn` layout: `w_ih (G*units, input_dim)`, gate order of torch.
    """

    def __init__(self, mode, params, has_biases):
        if mode not in _TORCH_MODES:
            raise ValueError(f"Unknown fused mode {mode!r}; expected one of {_TORCH_MODES}.")
        self.mode = mode
        self.params = list(params)
        self.has_biases = bool(has_biases)


def permute_gates(w, order, units):
    """Reorders the gate blocks of the last axis: block `j` of the result is block
    `order[j]` of `w` (e.g. `(1, 0, 2)` turns Keras's GRU `z, r, h` into torch's
    `r, z, n`, and back)."""
    if tuple(order) == tuple(range(len(order))):
        return w
    blocks = [w[..., k * units : (k + 1) * units] for k in order]
    return keras.ops.concatenate(blocks, axis=-1)


def fused_backends():
    """Backends (for the current device) with a fused kernel kerasrnn can call."""
    return ("torch",)


def run_fused(spec, sequences, initial_states, *, go_backwards=False, return_sequences=True):
    """Runs a fused kernel; returns `(last_output, outputs, final_states)` like `unroll`."""
    backend = keras.backend.backend()
    if backend != "torch":
        raise NotImplementedError(f"No fused kernel for backend {backend!r}.")
    return _run_torch(spec, sequences, initial_states, go_backwards, return_sequences)


def _run_torch(spec, x, states, go_backwards, return_sequences):
    import torch

    if go_backwards:
        x = torch.flip(x, dims=(1,))
    # Keras variables are torch Parameters; the transposed and permuted views are not
    # one flat buffer, which cuDNN warns about once per call before copying them.
    train = torch.is_grad_enabled()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*contiguous chunk of memory.*")
        # torch.nn.LSTM(proj_size=...) says the same once: oneDNN has no projection.
        warnings.filterwarnings("ignore", message=".*projections is not supported with oneDNN.*")
        if spec.mode == "LSTM":
            h0, c0 = states
            out, h, c = torch._VF.lstm(
                x, (h0[None], c0[None]), spec.params, spec.has_biases,
                1, 0.0, train, False, True,
            )
            new_states = [h[0], c[0]]
        else:
            kernel = {
                "GRU": torch._VF.gru,
                "RNN_TANH": torch._VF.rnn_tanh,
                "RNN_RELU": torch._VF.rnn_relu,
            }[spec.mode]
            out, h = kernel(
                x, states[0][None], spec.params, spec.has_biases, 1, 0.0, train, False, True
            )
            new_states = [h[0]]
    last = out[:, -1]
    return last, (out if return_sequences else None), new_states
