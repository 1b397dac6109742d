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

__all__ = ["FusedSpec", "fused_backends", "run_fused"]

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


def fused_backends():
    """Backends (for the current device) with a fused kernel kerasrnn can call."""
    return ("torch",)


def right_padded_lengths(mask):
    """Sequence lengths if `mask (batch, time)` is right-padded with every length > 0
    (`[1, 1, 0, 0]`), else `None`. Reads the mask on the host (torch only)."""
    import torch

    mask = mask.to(torch.bool)
    lengths = mask.sum(dim=1)
    steps = torch.arange(mask.shape[1], device=mask.device)
    if bool((lengths > 0).all()) and bool((mask == (steps[None, :] < lengths[:, None])).all()):
        return lengths
    return None


def run_fused(
    spec,
    sequences,
    initial_states,
    *,
    lengths=None,
    go_backwards=False,
    return_sequences=True,
    zero_output_for_mask=False,
):
    """Runs a fused kernel; returns `(last_output, outputs, final_states)` like `unroll`.

    `lengths` (from `right_padded_lengths`) runs right-padded sequences with Keras's
    masking semantics: padded steps carry the state and repeat the last valid output
    (or zeros with `zero_output_for_mask`); with `go_backwards` the padding is met
    first, as Keras's reversal of the whole padded sequence does.
    """
    backend = keras.backend.backend()
    if backend != "torch":
        raise NotImplementedError(f"No fused kernel for backend {backend!r}.")
    return _run_torch(
        spec, sequences, initial_states, lengths, go_backwards, return_sequences,
        zero_output_for_mask,
    )


def _torch_kernel(spec, x, states, batch_sizes=None):
    """One call of the torch kernel on a padded (`batch_first`) or packed input."""
    import torch

    # The packed overloads take (data, batch_sizes, hx, params, has_biases, num_layers,
    # dropout, train, bidirectional); the padded ones (input, hx, params, has_biases,
    # num_layers, dropout, train, bidirectional, batch_first).
    train = torch.is_grad_enabled()  # cuDNN keeps its workspace for backward only then
    hx = (states[0][None], states[1][None]) if spec.mode == "LSTM" else states[0][None]
    args = (spec.params, spec.has_biases, 1, 0.0, train, False)
    kernel = {
        "LSTM": torch._VF.lstm,
        "GRU": torch._VF.gru,
        "RNN_TANH": torch._VF.rnn_tanh,
        "RNN_RELU": torch._VF.rnn_relu,
    }[spec.mode]
    # Keras variables are torch Parameters; the transposed and permuted views are not
    # one flat buffer, which cuDNN warns about before copying them.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*contiguous chunk of memory.*")
        if batch_sizes is None:
            result = kernel(x, hx, *args, True)
        else:
            result = kernel(x, batch_sizes, hx, *args)
    return result[0], [s[0] for s in result[1:]]


def _run_torch(spec, x, states, lengths, go_backwards, return_sequences, zero_output):
    import torch
    from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

    if lengths is None:
        if go_backwards:
            x = torch.flip(x, dims=(1,))
        out, new_states = _torch_kernel(spec, x, states)
        return out[:, -1], (out if return_sequences else None), new_states

    batch, steps = x.shape[0], x.shape[1]
    time = torch.arange(steps, device=x.device)[None, :]
    lengths_ = lengths[:, None]
    if go_backwards:  # reverse each sequence within its own length
        index = torch.where(time < lengths_, lengths_ - 1 - time, time)
        x = torch.gather(x, 1, index[..., None].expand(-1, -1, x.shape[-1]))
    packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    # Permute the states into the packed (length-sorted) order and back.
    order, unorder = packed.sorted_indices, packed.unsorted_indices
    out_packed, new_states = _torch_kernel(
        spec, packed.data, [s[order] for s in states], packed.batch_sizes
    )
    new_states = [s[unorder] for s in new_states]
    out_packed = PackedSequence(out_packed, packed.batch_sizes, order, unorder)
    out, _ = pad_packed_sequence(out_packed, batch_first=True, total_length=steps)
    last = new_states[0]  # h at the last valid step is the output there
    if go_backwards:
        # Keras meets the padding first: zeros, then the reversed run.
        shift = steps - lengths_
        valid = time >= shift
        index = torch.where(valid, time - shift, torch.zeros_like(time))
        out = torch.gather(out, 1, index[..., None].expand(-1, -1, out.shape[-1]))
        out = torch.where(valid[..., None], out, torch.zeros_like(out))
    else:
        valid = (time < lengths_)[..., None]
        fill = torch.zeros_like(out) if zero_output else last[:, None, :].expand_as(out)
        out = torch.where(valid, out, fill)
        if zero_output:
            last = torch.where(lengths_ < steps, torch.zeros_like(last), last)
    return last, (out if return_sequences else None), new_states
