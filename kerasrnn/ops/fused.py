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

__all__ = ["FusedSpec", "fused_backends", "permute_gates", "run_fused", "stack_fused_specs"]

#: Kernels each backend offers, by mode.
_TORCH_MODES = ("LSTM", "GRU", "RNN_TANH", "RNN_RELU")


class FusedSpec:
    """What a fused kernel needs: its mode and torch-layout parameters.

    Args:
        mode: one of `"LSTM"`, `"GRU"`, `"RNN_TANH"`, `"RNN_RELU"`.
        params: `[w_ih, w_hh, b_ih, b_hh]` (or `[w_ih, w_hh]` without bias), then
            `w_hr` for an LSTM with projection, in `torch.nn` layout:
            `w_ih (G*units, input_dim)`, gate order of torch. For several layers or
            directions, the lists of each layer (forward, then backward) one after
            the other, as `torch.nn.LSTM._flat_weights`.
        num_layers: number of stacked layers the params describe.
        bidirectional: whether each layer has a backward direction.
    """

    def __init__(self, mode, params, has_biases, num_layers=1, bidirectional=False):
        if mode not in _TORCH_MODES:
            raise ValueError(f"Unknown fused mode {mode!r}; expected one of {_TORCH_MODES}.")
        self.mode = mode
        self.params = list(params)
        self.has_biases = bool(has_biases)
        self.num_layers = int(num_layers)
        self.bidirectional = bool(bidirectional)

    @property
    def kernel_name(self):
        """`torch._VF.<name>`, with the stack's shape when it has several layers."""
        name = f"torch._VF.{self.mode.lower()}"
        if self.num_layers > 1 or self.bidirectional:
            name += f"(num_layers={self.num_layers}, bidirectional={self.bidirectional})"
        return name


def stack_fused_specs(specs, bidirectional=False):
    """One `FusedSpec` for a stack: `specs` per layer (and direction, forward first).

    Returns `None` with a reason when torch's multi-layer kernel cannot run them all:
    `(spec, reason)`.
    """
    modes = {s.mode for s in specs}
    biases = {s.has_biases for s in specs}
    counts = {len(s.params) for s in specs}
    recurrent_shapes = {tuple(s.params[1].shape) for s in specs}  # (G*units, h size)
    if len(modes) != 1 or len(biases) != 1 or len(counts) != 1:
        return None, "the layers are not all the same kind of cell (mode, bias, projection)"
    if len(recurrent_shapes) != 1:
        return None, "the layers do not all have the same units (and proj_size)"
    directions = 2 if bidirectional else 1
    params = [p for s in specs for p in s.params]
    spec = FusedSpec(specs[0].mode, params, specs[0].has_biases, len(specs) // directions, bidirectional)
    return spec, None


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

    For a stack (`spec.num_layers > 1` or `spec.bidirectional`), `initial_states` and
    `final_states` are the states of each layer and direction one after the other
    (`[h, c]` or `[h]` each), and the last output of a bidirectional stack is the
    forward direction's last step next to the backward direction's (time 0), as
    `keras.layers.Bidirectional` returns it.
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
    lstm = spec.mode == "LSTM"
    # torch stacks the states of every layer and direction: (layers·directions, batch, size).
    hx = (torch.stack(states[0::2]), torch.stack(states[1::2])) if lstm else torch.stack(states)
    args = (spec.params, spec.has_biases, spec.num_layers, 0.0, train, spec.bidirectional)
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
        # torch.nn.LSTM(proj_size=...) says the same once: oneDNN has no projection.
        warnings.filterwarnings("ignore", message=".*projections is not supported with oneDNN.*")
        if batch_sizes is None:
            result = kernel(x, hx, *args, True)
        else:
            result = kernel(x, batch_sizes, hx, *args)
    if lstm:
        _, h, c = result
        return result[0], [s for pair in zip(h, c) for s in pair]
    return result[0], list(result[1])


def _top_output(spec, new_states):
    """The top layer's final `h` (both directions side by side): the last valid output."""
    import torch

    hs = new_states[0::2] if spec.mode == "LSTM" else new_states
    return torch.cat(hs[-2:], dim=-1) if spec.bidirectional else hs[-1]


def _run_torch(spec, x, states, lengths, go_backwards, return_sequences, zero_output):
    import torch
    from torch.nn.utils.rnn import (
        PackedSequence,
        pack_padded_sequence,
        pad_packed_sequence,
    )

    if lengths is None:
        if go_backwards:
            x = torch.flip(x, dims=(1,))
        out, new_states = _torch_kernel(spec, x, states)
        if spec.bidirectional:
            half = out.shape[-1] // 2
            last = torch.cat([out[:, -1, :half], out[:, 0, half:]], dim=-1)
        else:
            last = out[:, -1]
        return last, (out if return_sequences else None), new_states

    steps = x.shape[1]
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
    last = _top_output(spec, new_states)  # h at the last valid step is the output there
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
