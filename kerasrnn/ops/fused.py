"""Dispatch to backend kernels that compute a cell's equations exactly.

A fused kernel is used only where it computes the same function as the `keras.ops`
reference loop (`kerasrnn.ops.unroll`): same equations, same weight values. The cells
say which kernel and how its parameters are read from their Keras variables
(`RecurrentCell.fused_spec`); this module runs the kernel.

torch: `torch._VF.lstm / gru / rnn_tanh / rnn_relu`, the kernels behind `torch.nn.LSTM`
and friends (native on a CPU, cuDNN on CUDA). They are differentiable with torch's
autograd, so the Keras trainer needs nothing special.

JAX: `jax.experimental.rnn.lstm`, cuDNN's LSTM (what `keras.layers.LSTM` runs on a JAX
GPU), differentiable through its own cuDNN backward pass. It exists on CUDA GPUs only
and takes float32, unmasked sequences (it pads with zeros, not Keras's masking).

The kernel's weights, like `torch.nn.LSTM`'s after `flatten_parameters()`, are views of
one flat buffer laid out as cuDNN reads it, with no copy per call: the Keras variables
themselves are moved into that buffer (their values and their Keras shapes unchanged,
now strided views of it), so training, `set_weights`, saving and interop all still
work on the variables, and the kernel receives `kernel.T` etc., contiguous slices of
the buffer. Where torch's layout is not a view of Keras's (the GRU orders its gates
`r, z, n`, Keras `z, r, h`) the buffer is a mirror of the variables, refreshed only
when a variable changed (torch's version counter); and where the values are not the
variables' own tensors (mixed precision casts them, `stateless_call` substitutes
them) they are packed into the buffer's layout with one differentiable concatenation
per call, which is what torch does under autocast. So they are under `torch.export`,
whose program records that concatenation (a buffer made while tracing would not be in
it).
"""

import contextlib
import functools

import keras

from kerasrnn.ops.device import jax_platforms, outside_inference_mode, torch_exporting

__all__ = ["FusedSpec", "Lengths", "Slot", "permute_gates", "run_fused", "stack_fused_specs"]

#: The kernels kerasrnn can call, by torch's mode name.
_TORCH_MODES = ("LSTM", "GRU", "RNN_TANH", "RNN_RELU")


class Slot:
    """How one parameter of the kernel (torch layout) is read from a Keras variable.

    `torch_value = transpose?(permute_gates(value[row]?))`: `value` is the variable's
    value as the cell read it this call, `row` picks a row of it (the GRU's input or
    recurrent bias), `gate_order` reorders its gate blocks (block `j` of the result is
    block `gate_order[j]` of the value), `transpose` turns Keras's `(in, G·units)` into
    torch's `(G·units, in)`. A slot without a variable is zeros of `shape` (the second
    bias of an LSTM or a SimpleRNN, which Keras folds into the first).
    """

    def __init__(self, variable=None, value=None, *, row=None, gate_order=None, units=None,
                 transpose=False, shape=None):
        self.variable = variable
        self.value = value
        self.row = row
        self.gate_order = None
        if gate_order is not None and tuple(gate_order) != tuple(range(len(gate_order))):
            self.gate_order = tuple(gate_order)
        self.units = units
        self.transpose = bool(transpose)
        if variable is None:
            self.shape = tuple(shape)
        else:
            shape = tuple(value.shape)[1:] if row is not None else tuple(value.shape)
            self.shape = shape[::-1] if transpose else shape

    @classmethod
    def zeros(cls, shape):
        return cls(shape=shape)

    @property
    def is_view(self):
        """Whether the torch parameter is a view of the variable (a transpose at most)."""
        return self.variable is not None and self.row is None and self.gate_order is None

    def keras_value(self, dtype="float32"):
        """The torch-layout value with `keras.ops` (any backend); zeros of `dtype`."""
        if self.variable is None:
            return keras.ops.zeros(self.shape, dtype=dtype)
        value = self.value if self.row is None else self.value[self.row]
        if self.gate_order is not None:
            value = permute_gates(value, self.gate_order, self.units)
        return keras.ops.transpose(value) if self.transpose else value


class FusedSpec:
    """What a fused kernel needs: its mode and where each of its parameters comes from.

    Args:
        mode: one of `"LSTM"`, `"GRU"`, `"RNN_TANH"`, `"RNN_RELU"`.
        slots: one `Slot` per parameter, in `torch.nn`'s order: `w_ih, w_hh, b_ih, b_hh`
            (or `w_ih, w_hh` without bias), then `w_hr` for an LSTM with projection. For
            several layers or directions, each layer's slots (forward, then backward)
            one after the other, as `torch.nn.LSTM._flat_weights`.
        has_biases: whether each layer has `b_ih, b_hh`.
        num_layers: number of stacked layers the slots describe.
        bidirectional: whether each layer has a backward direction.
        owner: the layer or cell whose flat weight buffer the kernel uses (one buffer
            per owner; a cell run alone and a stack of it each keep their own).
    """

    def __init__(self, mode, slots, has_biases, num_layers=1, bidirectional=False, owner=None):
        if mode not in _TORCH_MODES:
            raise ValueError(f"Unknown fused mode {mode!r}; expected one of {_TORCH_MODES}.")
        self.mode = mode
        self.slots = list(slots)
        self.has_biases = bool(has_biases)
        self.num_layers = int(num_layers)
        self.bidirectional = bool(bidirectional)
        self.owner = owner
        directions = 2 if self.bidirectional else 1
        self.per_layer = len(self.slots) // (self.num_layers * directions)
        self.proj_size = 0
        if self.per_layer in (3, 5):  # w_hr (proj_size, units) closes each layer
            self.proj_size = int(self.slots[self.per_layer - 1].shape[0])

    @property
    def kernel_name(self):
        """`torch._VF.<name>` (`jax.experimental.rnn.lstm` on JAX), with the stack's
        shape when it has several layers."""
        if keras.backend.backend() == "jax":
            name = "jax.experimental.rnn.lstm"
        else:
            name = f"torch._VF.{self.mode.lower()}"
        if self.num_layers > 1 or self.bidirectional:
            name += f"(num_layers={self.num_layers}, bidirectional={self.bidirectional})"
        return name

    @property
    def params(self):
        """The parameters in `torch.nn` layout, computed with `keras.ops` (any backend)."""
        dtype = next(s.value.dtype for s in self.slots if s.variable is not None)
        return [slot.keras_value(keras.backend.standardize_dtype(dtype)) for slot in self.slots]

    def slot_names(self):
        """`w_ih`, `w_hh`, `b_ih`, `b_hh`, `w_hr` for each slot."""
        names = ["w_ih", "w_hh"] + (["b_ih", "b_hh"] if self.has_biases else [])
        names += ["w_hr"] if self.proj_size else []
        return names * (len(self.slots) // len(names))

    @property
    def input_size(self):
        return int(self.slots[0].shape[1])

    @property
    def hidden_size(self):
        return int(self.slots[1].shape[0]) // {"LSTM": 4, "GRU": 3}.get(self.mode, 1)


def stack_fused_specs(specs, bidirectional=False, owner=None):
    """One `FusedSpec` for a stack: `specs` per layer (and direction, forward first).

    Returns `(spec, None)`, or `(None, reason)` when torch's multi-layer kernel cannot
    run them all.
    """
    modes = {s.mode for s in specs}
    biases = {s.has_biases for s in specs}
    counts = {len(s.slots) for s in specs}
    recurrent_shapes = {s.slots[1].shape for s in specs}  # (G*units, h size)
    if len(modes) != 1 or len(biases) != 1 or len(counts) != 1:
        return None, "the layers are not all the same kind of cell (mode, bias, projection)"
    if len(recurrent_shapes) != 1:
        return None, "the layers do not all have the same units (and proj_size)"
    directions = 2 if bidirectional else 1
    slots = [slot for s in specs for slot in s.slots]
    spec = FusedSpec(
        specs[0].mode, slots, specs[0].has_biases, len(specs) // directions, bidirectional, owner
    )
    return spec, None


def permute_gates(w, order, units):
    """Reorders the gate blocks of the last axis: block `j` of the result is block
    `order[j]` of `w` (e.g. `(1, 0, 2)` turns Keras's GRU `z, r, h` into torch's
    `r, z, n`, and back)."""
    if tuple(order) == tuple(range(len(order))):
        return w
    blocks = [w[..., k * units : (k + 1) * units] for k in order]
    return keras.ops.concatenate(blocks, axis=-1)


class Lengths:
    """The lengths of right-padded sequences: on the inputs' device (for the index
    arithmetic around the kernel) and on the host (what packing a sequence takes)."""

    def __init__(self, device, host):
        self.device = device
        self.host = host


def right_padded_lengths(mask):
    """`Lengths` if `mask (batch, time)` is right-padded with every length > 0
    (`[1, 1, 0, 0]`) and the batch is not empty (torch packs no empty batch), else
    `None`. Reads the mask on the host (torch only)."""
    import torch

    if mask.device.type == "meta" or mask.shape[0] == 0:  # symbolic (values unknown), or empty
        return None
    mask = mask.to(torch.bool)
    lengths = mask.sum(dim=1)
    steps = torch.arange(mask.shape[1], device=mask.device)
    if bool((lengths > 0).all()) and bool((mask == (steps[None, :] < lengths[:, None])).all()):
        return Lengths(lengths, lengths.cpu())
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

    Every tensor it makes is on the device of `sequences`; the states must be there too.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        if lengths is not None:
            raise NotImplementedError("JAX's cuDNN LSTM runs unmasked sequences only.")
        return _run_jax(spec, sequences, initial_states, go_backwards, return_sequences)
    if backend != "torch":
        raise NotImplementedError(f"No fused kernel for backend {backend!r}.")
    return _run_torch(
        spec, sequences, initial_states, lengths, go_backwards, return_sequences,
        zero_output_for_mask,
    )


# ----------------------------------------------------------------- torch: weights
class _Layout:
    """Where each parameter of a kernel lies in its flat buffer (in elements)."""

    def __init__(self, offsets, size):
        self.offsets = list(offsets)
        self.size = int(size)


_LAYOUTS = {}


def _layout(spec, dtype, device):
    """The flat buffer's layout (cached): cuDNN's own on CUDA (asked of torch, as
    `flatten_parameters()` does), elsewhere the same order (every layer's matrices,
    then every layer's biases), packed."""
    shapes = tuple(slot.shape for slot in spec.slots)
    key = (spec.mode, shapes, spec.num_layers, spec.bidirectional, dtype, device)
    if key not in _LAYOUTS:
        _LAYOUTS[key] = _new_layout(spec, shapes, dtype, device)
    return _LAYOUTS[key]


def _new_layout(spec, shapes, dtype, device):
    import torch

    if device.type == "cuda" and torch._use_cudnn_rnn_flatten_weight():
        probe = [torch.zeros(shape, dtype=dtype, device=device) for shape in shapes]
        if torch.backends.cudnn.is_acceptable(probe[0]):
            import torch.backends.cudnn.rnn as cudnn_rnn

            with torch.no_grad(), torch.cuda.device_of(probe[0]):
                buffer = torch._cudnn_rnn_flatten_weight(
                    probe, spec.per_layer, spec.input_size, cudnn_rnn.get_cudnn_mode(spec.mode),
                    spec.hidden_size, spec.proj_size, spec.num_layers, True, spec.bidirectional,
                )
            return _Layout([p.storage_offset() for p in probe], buffer.numel())
    names = spec.slot_names()
    order = [i for i, n in enumerate(names) if n.startswith("w")]
    order += [i for i, n in enumerate(names) if n.startswith("b")]
    offsets, position = [0] * len(shapes), 0
    for i in order:
        offsets[i] = position
        position += _numel(shapes[i])
    return _Layout(offsets, position)


def _numel(shape):
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _own_tensor(slot):
    """The variable's own torch tensor, if `slot.value` is it (not a cast or a
    substitute from a stateless call), else `None`."""
    if slot.variable is None:
        return None
    own = getattr(slot.variable, "_value", None)
    return own if own is not None and slot.value is own else None


class _FlatWeights:
    """The flat weight buffers of one owner (a cell or a stack), by layout."""

    def __init__(self):
        self.buffers = {}  # layout -> the buffer the variables live in (or the mirror)
        self.mirror_versions = {}
        self.mirror_gathers = {}  # layout -> (signature, index, zero, inverse): `_mirror_gather`


def _flat_weights(owner):
    weights = getattr(owner, "_kerasrnn_flat_weights", None)
    if weights is None:
        weights = _FlatWeights()
        owner._kerasrnn_flat_weights = weights
    return weights


def kernel_params(spec):
    """The kernel's parameters (torch layout), as views of one flat buffer.

    See the module's docstring for the three ways they are formed: the variables
    themselves moved into the buffer, a mirror refreshed when a variable changes, or
    one concatenation per call. The last also under `torch.export` (the program records
    it), and for variables that are inference tensors (which cannot be moved; kerasrnn
    builds its layers outside `torch.inference_mode()`, so only a variable made
    elsewhere can be one).
    """
    owned = [_own_tensor(slot) for slot in spec.slots]
    variable_slots = [i for i, slot in enumerate(spec.slots) if slot.variable is not None]
    first = owned[variable_slots[0]] if variable_slots else None
    if (
        spec.owner is None
        or torch_exporting()  # a buffer made or filled while tracing is not in the program
        or any(owned[i] is None or owned[i].is_inference() for i in variable_slots)
        or first.device.type == "meta"
        or len({o.dtype for o in owned if o is not None}) != 1
    ):
        return _packed(spec)
    weights = _flat_weights(spec.owner)
    layout = key = _layout(spec, first.dtype, first.device)
    unique = len({id(owned[i]) for i in variable_slots}) == len(variable_slots)
    if unique and all(spec.slots[i].is_view for i in variable_slots):
        buffer = _home(weights, key, layout, spec, owned)
        return [
            (own.t() if slot.transpose else own) if own is not None
            else _region(buffer, layout.offsets[i], slot.shape)
            for i, (slot, own) in enumerate(zip(spec.slots, owned))
        ]
    sources = list({id(o): o for o in owned if o is not None}.values())
    return list(_mirror(weights, key, layout, spec, owned, *sources))


def _region(buffer, offset, shape):
    return buffer.narrow(0, offset, _numel(shape)).view(shape)


def _homed(buffer, layout, spec, owned):
    """Whether every variable is still the view of `buffer` it was made."""
    if buffer is None:
        return False
    base = buffer.untyped_storage().data_ptr()
    for offset, slot, own in zip(layout.offsets, spec.slots, owned):
        if own is None:
            continue
        if own.untyped_storage().data_ptr() != base or own.storage_offset() != offset:
            return False
        if own.dtype != buffer.dtype or own.device != buffer.device:
            return False
    return True


def _home(weights, key, layout, spec, owned):
    """Moves the variables' tensors into the flat buffer of `key` (once; again only if
    something moved them out, e.g. the same cell run alone after a stack of it)."""
    import torch

    buffer = weights.buffers.get(key)
    if _homed(buffer, layout, spec, owned):
        return buffer
    first = next(o for o in owned if o is not None)
    with outside_inference_mode(), torch.no_grad():
        buffer = torch.zeros(layout.size, dtype=first.dtype, device=first.device)
        storage = buffer.untyped_storage()
        for offset, slot, own in zip(layout.offsets, spec.slots, owned):
            if own is None:
                continue
            region = _region(buffer, offset, slot.shape)
            region.copy_(own.t() if slot.transpose else own)
            keras_view = region.t() if slot.transpose else region
            own.set_(storage, offset, keras_view.shape, keras_view.stride())
    weights.buffers[key] = buffer
    return buffer


def _torch_value(slot, value):
    """`slot`'s torch-layout tensor from the variable's `value` (differentiable)."""
    import torch

    if slot.row is not None:
        value = value[slot.row]
    if slot.gate_order is not None:
        u = slot.units
        value = torch.cat([value[..., k * u : (k + 1) * u] for k in slot.gate_order], dim=-1)
    return value.t() if slot.transpose else value


def _keras_layout_gradient(slot, grad):
    """The inverse of `_torch_value` for a gradient, but for the row: torch layout ->
    the variable's (of `value[row]` if the slot reads a row)."""
    import torch

    if slot.transpose:
        grad = grad.t()
    if slot.gate_order is not None:
        u, inverse = slot.units, [slot.gate_order.index(k) for k in range(len(slot.gate_order))]
        grad = torch.cat([grad[..., k * u : (k + 1) * u] for k in inverse], dim=-1)
    return grad


def _variable_gradient(source, parts):
    """The gradient of the variable tensor `source` from those of the kernel parameters
    read from it, `parts` (`(slot, grad)` pairs): their sum, each in the variable's
    layout (a row's in a zero tensor of the variable's shape)."""
    import torch

    total = None
    for slot, grad in parts:
        grad = _keras_layout_gradient(slot, grad)
        if slot.row is not None:
            full = torch.zeros_like(source)
            full[slot.row] = grad
            grad = full
        total = grad if total is None else total + grad
    return total


def _mirror_gather(weights, key, layout, spec, owned, sources):
    """`(index, zero, inverse)`: the mirror buffer of `key` is
    `cat([*sources.flat, zero])[index]`, and the sources' gradients side by side are
    `cat([*grads.flat])[inverse]` (`grads` in slot order), or `inverse` is `None` where
    the slots do not read every source element exactly once.

    Made once per layout, by writing each source element's position in that
    concatenation with `_torch_value`, the mapping the slots define; gaps and padding
    point at `zero`, one zero element after the sources."""
    import torch

    where = {id(source): i for i, source in enumerate(sources)}
    signature = (
        tuple(tuple(source.shape) for source in sources),
        tuple(None if own is None else (where[id(own)], slot.row, slot.gate_order, slot.units, slot.transpose)
              for slot, own in zip(spec.slots, owned)),
    )
    made = weights.mirror_gathers.get(key)
    if made is not None and made[0] == signature:
        return made[1:]
    device = sources[0].device
    starts = [0]
    for source in sources:
        starts.append(starts[-1] + source.numel())
    index = torch.full((layout.size,), starts[-1], dtype=torch.int64, device=device)
    read = []  # per slot, the source elements it reads, flat in the slot's order
    for offset, slot, own in zip(layout.offsets, spec.slots, owned):
        if own is not None:
            i = where[id(own)]
            positions = _torch_value(slot, torch.arange(starts[i], starts[i + 1], device=device).view(own.shape))
            _region(index, offset, slot.shape).copy_(positions)
            read.append(positions.reshape(-1))
        else:
            read.append(torch.full((_numel(slot.shape),), -1, dtype=torch.int64, device=device))
    read = torch.cat(read)
    inverse = None
    if torch.equal(torch.sort(read[read >= 0]).values, torch.arange(starts[-1], device=device)):
        inverse = torch.empty(starts[-1], dtype=torch.int64, device=device)
        inverse[read[read >= 0]] = torch.nonzero(read >= 0).reshape(-1)
    zero = torch.zeros(1, dtype=sources[0].dtype, device=device)
    weights.mirror_gathers[key] = (signature, index, zero, inverse)
    return index, zero, inverse


def _mirror_class():
    import torch

    class Mirror(torch.autograd.Function):
        """The kernel's parameters as views of a buffer that mirrors the variables.

        Forward refreshes the buffer only when a variable changed since the last
        refresh (torch's version counter), so the weights are reordered once per
        update, not once per call, by one gather (`_mirror_gather`); backward maps
        each parameter's gradient back to its variable's layout.
        """

        @staticmethod
        def forward(ctx, weights, key, layout, spec, owned, *sources):
            ctx.mirror = (weights, key, layout, spec, owned)
            ctx.spec, ctx.owned, ctx.sources = spec, owned, sources
            return _mirror_regions(weights, key, layout, spec, owned, sources)

        @staticmethod
        def backward(ctx, *grads):
            inverse = _mirror_gather(*ctx.mirror, ctx.sources)[2]
            if inverse is not None:  # two kernels: the gradients side by side, gathered
                flat = torch.cat([
                    (g if g is not None else torch.zeros(slot.shape, dtype=ctx.sources[0].dtype,
                                                         device=ctx.sources[0].device)).reshape(-1)
                    for slot, g in zip(ctx.spec.slots, grads)
                ])[inverse]
                sizes = [s.numel() for s in ctx.sources]
                return (None, None, None, None, None,
                        *[g.view(s.shape) for g, s in zip(flat.split(sizes), ctx.sources)])
            parts = {id(s): [] for s in ctx.sources}
            for slot, own, grad in zip(ctx.spec.slots, ctx.owned, grads):
                if own is not None and grad is not None:
                    parts[id(own)].append((slot, grad))
            return (None, None, None, None, None,
                    *[_variable_gradient(s, parts[id(s)]) for s in ctx.sources])

    return Mirror


def _mirror_regions(weights, key, layout, spec, owned, sources):
    """The kernel's parameters as views of the mirror buffer of `key`, refreshed first if
    a variable changed since the last refresh (torch's version counter)."""
    import torch

    versions = tuple((s.data_ptr(), s._version) for s in sources)
    buffer = weights.buffers.get(key)
    if buffer is None or weights.mirror_versions.get(key) != versions:
        with outside_inference_mode(), torch.no_grad():
            index, zero, _ = _mirror_gather(weights, key, layout, spec, owned, sources)
            if buffer is None:
                buffer = torch.empty(layout.size, dtype=sources[0].dtype, device=sources[0].device)
            # Two kernels however many gate blocks: the variables side by side, then
            # each buffer element picked from them (the gaps from `zero`).
            flat = torch.cat([*(source.reshape(-1) for source in sources), zero])
            torch.index_select(flat, 0, index, out=buffer)
        weights.buffers[key] = buffer
        weights.mirror_versions[key] = versions
    return tuple(_region(buffer, o, s.shape) for o, s in zip(layout.offsets, spec.slots))


_MIRROR = []  # the autograd.Function, made on first use (torch imported only then)


def _mirror(weights, key, layout, spec, owned, *sources):
    import torch

    if not (torch.is_grad_enabled() and any(source.requires_grad for source in sources)):
        # No gradient can flow (inference, frozen weights): the views, without the
        # autograd.Function around them.
        return _mirror_regions(weights, key, layout, spec, owned, sources)
    if not _MIRROR:
        _MIRROR.append(_mirror_class())
    return _MIRROR[0].apply(weights, key, layout, spec, owned, *sources)


def _packed(spec):
    """The parameters packed into the buffer's layout by one concatenation (the values
    are not the variables' own tensors: a cast, a substitute, a symbolic placeholder)."""
    import torch

    values = [
        _torch_value(slot, torch.as_tensor(slot.value)) if slot.variable is not None else None
        for slot in spec.slots
    ]
    reference = next(v for v in values if v is not None)
    dtype, device = reference.dtype, reference.device
    for i, slot in enumerate(spec.slots):
        if values[i] is None:
            values[i] = torch.zeros(slot.shape, dtype=dtype, device=device)
        elif values[i].dtype != dtype:
            values[i] = values[i].to(dtype)
    if device.type == "meta":
        return values
    layout = _layout(spec, dtype, device)
    pieces, position = [], 0
    for offset, i in sorted((o, i) for i, o in enumerate(layout.offsets)):
        if offset > position:
            pieces.append(torch.zeros(offset - position, dtype=dtype, device=device))
        pieces.append(values[i].reshape(-1))
        position = offset + values[i].numel()
    if layout.size > position:
        pieces.append(torch.zeros(layout.size - position, dtype=dtype, device=device))
    buffer = torch.cat(pieces)
    return [_region(buffer, o, s.shape) for o, s in zip(layout.offsets, spec.slots)]


# ------------------------------------------------------------------ torch: kernel
def _torch_kernel(spec, x, states, lengths=None):
    """torch's kernel over `x (batch, time, features)`, whole or (with `lengths`, host
    lengths of right-padded sequences) packed: `(outputs (batch, time, ·), final states)`,
    the outputs zero past each length. Never traced by torch.compile (`_out_of_graph`)."""
    return _KERNEL_CALL(spec, x, list(states), lengths)


def _kernel_call(spec, x, states, lengths):
    import torch

    # One lookup (each attribute of `torch._VF` goes through its module `__getattr__`),
    # at every call: what `torch._VF` holds at the time, as for `torch.nn.LSTM`.
    kernel = getattr(torch._VF, spec.mode.lower())
    train = torch.is_grad_enabled()  # cuDNN keeps its workspace for backward only then
    args = (kernel_params(spec), spec.has_biases, spec.num_layers, 0.0, train, spec.bidirectional)
    lstm = spec.mode == "LSTM"
    if lengths is not None:
        from torch.nn.utils.rnn import pack_padded_sequence

        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        # The states in the packed (length-sorted) order, and the results back.
        order, unorder = packed.sorted_indices, packed.unsorted_indices
        states = [s[order] for s in states]
    # torch stacks the states of every layer and direction: (layers·directions, batch, size).
    hx = (_stacked(states[0::2]), _stacked(states[1::2])) if lstm else _stacked(states)
    # torch.nn.LSTM(proj_size=...) warns once too: oneDNN has no projection. (Only
    # there: catching warnings costs every call, and it is not thread-safe.)
    with _quiet_projection() if spec.proj_size else contextlib.nullcontext():
        # The packed overloads take (data, batch_sizes, hx, params, has_biases, num_layers,
        # dropout, train, bidirectional); the padded ones (input, hx, params, has_biases,
        # num_layers, dropout, train, bidirectional, batch_first).
        if lengths is None:
            result = kernel(x, hx, *args, True)
        else:
            result = kernel(packed.data, packed.batch_sizes, hx, *args)
    # (layers·directions, batch, size) back to one state per layer and direction.
    if lstm:
        final = [s for pair in zip(result[1].unbind(0), result[2].unbind(0)) for s in pair]
    else:
        final = list(result[1].unbind(0))
    out = result[0]
    if lengths is not None:
        final = [s[unorder] for s in final]
        # `pad_packed_sequence` without its host copy of the indices (a device sync).
        out, _ = torch._VF._pad_packed_sequence(out, packed.batch_sizes, True, 0.0, x.shape[1])
        out = out.index_select(0, unorder)
    return out, final


@contextlib.contextmanager
def _quiet_projection():
    """Hides the warning torch gives at the first projection LSTM on a CPU (oneDNN has
    no projection; torch runs its own kernel instead)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*projections is not supported with oneDNN.*")
        yield


def _stacked(states):
    """`torch.stack(states)`: contiguous, as cuDNN requires ("rnn: hx is not contiguous";
    the CPU takes any strides). One state (one layer, one direction) that already is,
    as a view, without a copy."""
    import torch

    return states[0].unsqueeze(0).contiguous() if len(states) == 1 else torch.stack(states)


def _out_of_graph(fn):
    """`fn`, which torch.compile never traces: called from a compiled function, it runs
    eagerly between two graphs (a graph break), as dynamo does for `torch.nn.LSTM` and
    friends by default (`torch._dynamo.config.allow_rnn`). The kernel's weights, its
    buffer and its layout (cuDNN's, asked of torch with real tensors on CUDA) are then
    made as in eager mode; traced, the CPU's LSTM fails (torch 2.13: "expected Tensor()
    for op: torch.ops.aten.mkldnn_rnn_layer"), and so do unpacking a packed run and the
    mirror's buffer. The wrapper is made at import (dynamo cannot trace making it); on
    the torch backend torch is imported by then, and it is not imported otherwise."""
    if keras.backend.backend() != "torch":
        return fn  # the kernels run on torch only
    import torch

    return torch.compiler.disable(fn)


_KERNEL_CALL = _out_of_graph(_kernel_call)


def _top_output(spec, new_states):
    """The top layer's final `h` (both directions side by side): the last valid output."""
    import torch

    hs = new_states[0::2] if spec.mode == "LSTM" else new_states
    return torch.cat(hs[-2:], dim=-1) if spec.bidirectional else hs[-1]


def _run_torch(spec, x, states, lengths, go_backwards, return_sequences, zero_output):
    import torch

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
    lengths_ = lengths.device.to(x.device)[:, None]
    if go_backwards:  # reverse each sequence within its own length
        index = torch.where(time < lengths_, lengths_ - 1 - time, time)
        x = torch.gather(x, 1, index[..., None].expand(-1, -1, x.shape[-1]))
    out, new_states = _torch_kernel(spec, x, states, lengths.host)
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


# ---------------------------------------------------------------------------- jax
def jax_unfused_reason(sequences, mask, spec=None):
    """Why JAX's cuDNN LSTM cannot run this call (`None` if it can); `spec` is the
    cell's (or stack's) `FusedSpec`, checked when given."""
    if not _jax_cudnn_ready(sequences):
        return "no fused kernel is used on the jax backend without a GPU (cuDNN's LSTM)"
    if mask is not None:
        return "a mask (JAX's cuDNN LSTM pads with zeros instead of Keras's masking)"
    if keras.backend.standardize_dtype(sequences.dtype) != "float32":
        return f"{keras.backend.standardize_dtype(sequences.dtype)} inputs (JAX's cuDNN LSTM takes float32)"
    if spec is not None and spec.mode != "LSTM":
        return "JAX has a cuDNN kernel for the LSTM only (jax.experimental.rnn)"
    if spec is not None and spec.proj_size:
        return "proj_size > 0 (JAX's cuDNN LSTM has no projection)"
    return _jax_precision_reason()


def _jax_precision_reason():
    """Why `jax_default_matmul_precision` keeps this call off JAX's cuDNN LSTM (`None` if
    it does not). That kernel has two float32 maths, full float32 and TF32, chosen by the
    precision ('highest'/'float32' and 'high'/'tensorfloat32'; TF32 when unset, as JAX's
    GPU matmuls). Under 'default'/'bfloat16' it raises NotImplementedError, and a dot
    algorithm preset (e.g. 'F32_F32_F32') it would run in TF32: the loop honours both."""
    import jax

    value = jax.config.jax_default_matmul_precision
    if value is None:
        return None
    try:
        precision = jax.lax.Precision(value)
    except ValueError:  # a `jax.lax.DotAlgorithmPreset` name
        return (f"jax_default_matmul_precision={value!r} names a dot algorithm; JAX's "
                "cuDNN LSTM has only float32 and TF32 math")
    if precision == jax.lax.Precision.DEFAULT:
        return (f"jax_default_matmul_precision={value!r} (JAX's cuDNN LSTM has no "
                "bfloat16 math)")
    return None


def _jax_cudnn_ready(x):
    """Whether `x` lives on a GPU and this jaxlib has cuDNN's (or MIOpen's) RNN."""
    try:
        from jax.experimental import rnn
    except ImportError:
        return False
    if getattr(rnn, "gpu_rnn", None) is None:
        return False
    return jax_platforms(x) == {"gpu"}


def _jax_lstm_parts():
    """The forward and backward halves of `jax.experimental.rnn.lstm` (its custom VJP)."""
    from jax.experimental import rnn

    return rnn.lstm_fwd, rnn.lstm_bwd


def _jax_lstm():
    """`jax.experimental.rnn.lstm` (same arguments) that also runs under `jax.vmap`.

    The kernel's primitives have no batching rule, so `jax.vmap` over the layer, and
    `jax.jacrev` or per-example gradients (which vmap the backward pass), raise
    NotImplementedError on a GPU where the CPU's loop works. Here the kernel's forward
    and backward each run once per vmapped slice (`sequential_vmap`, a `lax.map`): the
    same kernel calls, so the same numbers, at the cost of a sequential loop over the
    vmapped axis (`fused=False` vectorizes it instead)."""
    import jax
    from jax.custom_batching import sequential_vmap

    forward_half, backward_half = _jax_lstm_parts()

    def kernel(x, h_0, c_0, weights, seq_lengths, *, input_size, hidden_size, num_layers,
               dropout, bidirectional):
        static = (input_size, hidden_size, num_layers, dropout, bidirectional, None)

        @sequential_vmap
        def forward(x, h_0, c_0, weights, seq_lengths):
            return forward_half(x, h_0, c_0, weights, seq_lengths, *static)

        @sequential_vmap
        def backward(residuals, cotangents):
            return backward_half(*static, residuals, cotangents)

        @jax.custom_vjp
        def lstm(x, h_0, c_0, weights, seq_lengths):
            return forward(x, h_0, c_0, weights, seq_lengths)[0]

        lstm.defvjp(forward, backward)
        return lstm(x, h_0, c_0, weights, seq_lengths)

    return kernel


def _jax_batch_split(batch):
    """The JAX mesh and axis name over which the active Keras distribution splits the
    batch, if it splits this one (`None` otherwise)."""
    distribution = keras.distribution.distribution()
    name = getattr(distribution, "batch_dim_name", None)
    mesh = getattr(distribution, "device_mesh", None)
    if name is None or mesh is None or name not in mesh.axis_names:
        return None
    shards = mesh.shape[list(mesh.axis_names).index(name)]
    backend_mesh = getattr(mesh, "backend_mesh", None)  # older Keras and JAX: as before
    if shards <= 1 or batch % shards or backend_mesh is None or _jax_shard_map() is None:
        return None
    return backend_mesh, name


@functools.cache
def _jax_shard_map():
    """`jax.shard_map` where this JAX has it as used here (with `check_vma`), else None."""
    import inspect

    import jax

    shard_map = getattr(jax, "shard_map", None)
    if shard_map is None or "check_vma" not in inspect.signature(shard_map).parameters:
        return None
    return shard_map


def _per_batch_shard(kernel, mesh, axis):
    """`kernel` run by each device on its own rows of the batch (`jax.shard_map`).

    cuDNN's LSTM is an XLA custom call without a sharding rule, so on a batch split over
    several devices XLA's partitioner would gather the whole batch onto every device and
    run the kernel there on all of it: the same result, N times the work and activation
    memory. The LSTM is independent across rows, so each device runs its shard; the
    weights, replicated, get their gradients summed over the devices by `shard_map`'s
    transpose."""
    from jax.sharding import PartitionSpec as P

    rows, layered = P(axis), P(None, axis)
    return _jax_shard_map()(
        kernel, mesh=mesh, in_specs=(rows, layered, layered, P(), rows),
        out_specs=(rows, layered, layered), check_vma=False)


def jax_lstm_weights(spec):
    """The flat weight vector of `jax.experimental.rnn.lstm`: every pseudo-layer's
    `w_ih, w_hh`, then every pseudo-layer's `b_ih, b_hh` (zeros without bias)."""
    import jax.numpy as jnp

    params = [jnp.asarray(p) for p in spec.params]
    per_layer = spec.per_layer
    layers = [params[i : i + per_layer] for i in range(0, len(params), per_layer)]
    dtype = params[0].dtype
    matrices = [w.ravel() for layer in layers for w in layer[:2]]
    if spec.has_biases:
        biases = [b.ravel() for layer in layers for b in layer[2:4]]
    else:
        biases = [jnp.zeros((4 * spec.hidden_size,), dtype)] * (2 * len(layers))
    return jnp.concatenate(matrices + biases)


def _run_jax(spec, x, states, go_backwards, return_sequences):
    import jax.numpy as jnp

    if go_backwards:
        x = jnp.flip(x, axis=1)
    h0, c0 = jnp.stack(states[0::2]), jnp.stack(states[1::2])
    batch, steps = x.shape[0], x.shape[1]
    kernel = functools.partial(
        _jax_lstm(), input_size=spec.input_size, hidden_size=spec.hidden_size,
        num_layers=spec.num_layers, dropout=0.0, bidirectional=spec.bidirectional)
    split = _jax_batch_split(batch)
    if split is not None:
        kernel = _per_batch_shard(kernel, *split)
    y, h_n, c_n = kernel(x, h0, c0, jax_lstm_weights(spec), jnp.full((batch,), steps, jnp.int32))
    if spec.bidirectional:
        half = y.shape[-1] // 2
        last = jnp.concatenate([y[:, -1, :half], y[:, 0, half:]], axis=-1)
    else:
        last = y[:, -1]
    new_states = [s for pair in zip(list(h_n), list(c_n)) for s in pair]
    return last, (y if return_sequences else None), new_states
