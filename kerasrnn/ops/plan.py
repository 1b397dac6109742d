"""Which code path a recurrent call runs: decided once per call, here.

`plan_call` looks at the cell, the inputs (backend, device, dtype), the mask,
`training` and the layer's options, and returns a `Plan`: a fused kernel (with its
reason when there is none), or the `keras.ops` loop with its choices (hoist the input
projection, recompute the step in the backward pass, compile the loop with XLA).
`kerasrnn.layers.RNN`, `DeepRNN` (`plan_stack`), the diagnostics trace and the seq2seq
decoders run what it returns, and `last_path` reports it.
"""

import keras

from kerasrnn.ops.device import on_accelerator, torch_exporting
from kerasrnn.ops.fused import (
    jax_unfused_reason,
    right_padded_lengths,
    stack_fused_specs,
)
from kerasrnn.ops.unroll import xla_unavailable_reason

__all__ = ["LOOP_DEFAULTS", "Plan", "plan_call", "plan_stack"]

#: The loop's choices under "auto", by (backend, device): `hoist` the input projection
#: of the whole sequence before the loop, `remat` (JAX) recompute each step in the
#: backward pass, `xla` (TensorFlow) compile the loop when Keras's training step is not
#: compiled. `"cell"` asks the cell's `cost_hints()`. How each was measured, in the
#: context users run it (a whole `train_on_batch`), is in docs/performance.md:
#:
#: - CPU, JAX and TensorFlow: the projection inside the step (one loop body, no
#:   `(batch, time, G·units)` buffer and its gradient) trains faster; eager torch hoists.
#: - JAX on a CPU: remat where the cell says it pays (layer norm, zoneout, the LSTM).
#: - TensorFlow on a CPU: no XLA. In a whole `train_on_batch` (wall clock, default
#:   threads) the graph loop was faster for every SimpleRNN and GRU form and for the
#:   LSTM at shape A; only the LSTM with layer norm or peepholes at shape B gained from
#:   the compiled loop (0.78-0.86x), which `xla=True` gives where wanted.
#: - GPU: hoisting (one large product instead of `time` small ones, 1.3-1.8x faster on
#:   an H100); remat and XLA unmeasured there, so off (Keras compiles TensorFlow's
#:   training step with XLA on a GPU anyway). `benchmarks/gpu_check.sh` times each.
LOOP_DEFAULTS = {
    ("jax", "cpu"): {"hoist": False, "remat": "cell", "xla": False},
    ("jax", "gpu"): {"hoist": True, "remat": False, "xla": False},
    ("tensorflow", "cpu"): {"hoist": False, "remat": False, "xla": False},
    ("tensorflow", "gpu"): {"hoist": True, "remat": False, "xla": False},
    ("torch", "cpu"): {"hoist": True, "remat": False, "xla": False},
    ("torch", "gpu"): {"hoist": True, "remat": False, "xla": False},
}


class Plan:
    """What one call runs.

    Attributes:
        fused: the `FusedSpec` of the kernel that runs, or `None` (the loop).
        lengths: `Lengths` of right-padded sequences for the fused kernel, or `None`.
        hoist, remat, xla: the loop's choices.
        reason: why no fused kernel runs (`None` when one does).
        xla_reason: why the loop is not compiled although `xla` was asked for.
        per_layer: a `DeepRNN` plan whose layers each run their own plan.
    """

    def __init__(self, fused=None, lengths=None, hoist=True, remat=False, xla=False,
                 reason=None, xla_reason=None, per_layer=False):
        self.fused = fused
        self.lengths = lengths
        self.hoist = hoist
        self.remat = remat
        self.xla = xla
        self.reason = reason
        self.xla_reason = xla_reason
        self.per_layer = per_layer

    @property
    def path(self):
        """What `last_path` says: `"fused:<kernel>"`, `"kerasrnn.ops.unroll"`,
        `"kerasrnn.ops.unroll:xla"` or (a stack) `"per-layer"`."""
        if self.fused is not None:
            return f"fused:{self.fused.kernel_name}"
        if self.per_layer:
            return "per-layer"
        return "kerasrnn.ops.unroll:xla" if self.xla else "kerasrnn.ops.unroll"

    @property
    def last_path_reason(self):
        """Why not fused, and why not compiled where compiling was asked for."""
        if self.xla_reason:
            return f"{self.reason}; not compiled by XLA: {self.xla_reason}"
        return self.reason

    def __repr__(self):
        return f"Plan({self.path!r}, reason={self.last_path_reason!r}, hoist={self.hoist}, remat={self.remat})"


def device_kind(sequences):
    """`"gpu"` if `sequences` live on an accelerator, else `"cpu"`."""
    return "gpu" if on_accelerator(sequences) else "cpu"


def plan_call(cell, sequences, mask, training, constants, *, fused="auto", hoist_inputs="auto",
              remat="auto", xla="auto", name="layer"):
    """The `Plan` of one call of `cell` over `sequences`.

    Args:
        cell: a kerasrnn cell (its `fused_spec` and `cost_hints` are asked).
        sequences: the backend tensor `(batch, time, features)` the call runs on.
        mask: the boolean `(batch, time)` mask, or `None`.
        training: whether dropout and zoneout are active.
        constants: the cell's `loop_constants` for this call.
        fused, hoist_inputs, remat, xla: the layer's options (`"auto"`, True, False).
        name: the layer's name, for errors.

    Raises:
        ValueError: `fused=True` where no fused kernel computes this call exactly.
    """
    backend = keras.backend.backend()
    spec, lengths, reason = None, None, None
    empty = sequences.shape[0] == 0
    if fused is False:
        reason = "fused=False"
    elif empty:
        reason = _EMPTY_BATCH
    elif backend == "jax":
        reason = jax_unfused_reason(sequences, mask)
        if reason is None:
            spec, reason = _cell_spec(cell, constants, training)
            reason = reason or jax_unfused_reason(sequences, mask, spec)
    elif backend != "torch":
        reason = f"no fused kernel is used on the {backend} backend"
    elif mask is not None and torch_exporting():
        reason = "a mask under torch.export or torch.jit.trace (whether it is right-padded is not known while tracing)"
    elif mask is not None and (lengths := right_padded_lengths(mask)) is None:
        reason = "the mask is not right-padded (or a sequence is fully masked, or the batch is empty)"
    elif str(sequences.dtype) not in ("torch.float32", "torch.float64") and not on_accelerator(sequences):
        reason = f"{sequences.dtype} on CPU"
    else:
        spec, reason = _cell_spec(cell, constants, training)
    if reason is not None:
        spec, lengths = None, None
    if spec is None and fused is True and not empty:
        raise ValueError(
            f"{name}: fused=True, but no fused kernel computes this configuration: "
            f"{reason}. Use fused='auto' to fall back to the kerasrnn.ops loop."
        )
    if spec is not None:
        return Plan(fused=spec, lengths=lengths)

    defaults = LOOP_DEFAULTS.get((backend, device_kind(sequences)), {"hoist": True})
    hints = cell.cost_hints()

    def choose(option, key):
        if option != "auto":
            return bool(option)
        default = defaults.get(key, False)
        return bool(hints.get(key, False)) if default == "cell" else bool(default)

    plan = Plan(
        hoist=choose(hoist_inputs, "hoist"), remat=choose(remat, "remat") and backend == "jax",
        xla=choose(xla, "xla") and backend == "tensorflow", reason=reason,
    )
    if plan.xla and (why := xla_unavailable_reason()):
        plan.xla, plan.xla_reason = False, why
    return plan


def _cell_spec(cell, constants, training):
    overridden = _overrides_the_fused_equations(type(cell))
    if overridden:
        return None, overridden
    spec = cell.fused_spec(constants, training)
    if spec is None or isinstance(spec, str):
        return None, spec or f"{type(cell).__name__} has no fused kernel"
    return spec, None


def _overrides_the_fused_equations(klass):
    """Why a subclass's `fused_spec` does not describe its equations (`None` if it does):
    the kernel computes the `step` and `project_inputs` of the class that wrote the
    spec, not an override of them further down."""
    spec_owner = _defining_class(klass, "fused_spec")
    for method in ("step", "project_inputs"):
        owner = _defining_class(klass, method)
        if not issubclass(spec_owner, owner):
            return (f"{klass.__name__} overrides `{method}` of {spec_owner.__name__}, whose "
                    "fused kernel computes the original")
    return None


def _defining_class(klass, name):
    return next(k for k in klass.__mro__ if name in vars(k))


#: Why an empty batch runs the loop, even with `fused=True` (nothing is computed, so no
#: configuration is missing): cuDNN's descriptors are not made for zero-sized tensors.
_EMPTY_BATCH = "an empty batch (the loop runs it; no fused kernel is given empty tensors)"


def plan_stack(deep, sequences, mask, training):
    """The `Plan` of a `DeepRNN` call: the backend's multi-layer kernel for the whole
    stack (torch), or `per_layer` with the reason (each layer then plans its own call).

    Raises:
        ValueError: `fused=True` on the stack where its kernel does not compute it.
    """
    spec, lengths = None, None
    reason = _stack_reason(deep, sequences, training)
    if reason is None and mask is not None:
        lengths = right_padded_lengths(keras.ops.cast(mask, "bool"))
        if lengths is None:
            reason = "the mask is not right-padded (or a sequence is fully masked, or the batch is empty)"
    if reason is None:
        specs = []
        for i in range(len(deep.rnn_layers)):
            layer = deep.rnn_layers[i]
            directions = [layer.forward_layer, layer.backward_layer] if deep.bidirectional[i] else [layer]
            for sub in directions:
                cell_spec, why = _cell_spec(sub.cell, sub.cell.loop_constants(sequences, training), training)
                if cell_spec is None:
                    reason = f"layer {i}: {why}"
                    break
                specs.append(cell_spec)
            if reason:
                break
        if reason is None:
            spec, reason = stack_fused_specs(specs, deep.bidirectional[0], owner=deep)
    if spec is None and deep.fused is True and reason != _EMPTY_BATCH:
        raise ValueError(
            f"{deep.name}: fused=True, but torch's multi-layer kernel does not compute "
            f"this stack exactly: {reason}. Use fused='auto'."
        )
    if spec is None:
        return Plan(reason=reason, per_layer=True)
    return Plan(fused=spec, lengths=lengths)


def _stack_reason(deep, sequences, training):
    """Why torch's multi-layer kernel cannot run this stack (`None` if it may)."""
    from kerasrnn.layers.rnn import RNN  # the layers import this module

    backend = keras.backend.backend()
    if deep.fused is False:
        return "fused=False"
    if sequences.shape[0] == 0:
        return _EMPTY_BATCH
    if backend != "torch":
        return f"no multi-layer fused kernel is used on the {backend} backend"
    if deep.residual:
        return "residual connections"
    if training and deep.dropout > 0:
        return "dropout between layers is active (torch's kernel draws its own masks)"
    if len(set(deep.bidirectional)) != 1:
        return "some layers are bidirectional and others not"
    if deep.bidirectional[0] and deep.merge_mode != "concat":
        return f"merge_mode={deep.merge_mode!r} (torch's kernel concatenates)"
    if len({deep.base_layer(i).compute_dtype for i in range(len(deep.rnn_layers))}) != 1:
        return "the layers do not all compute in one dtype"
    if str(sequences.dtype) not in ("torch.float32", "torch.float64") and not on_accelerator(sequences):
        return f"{sequences.dtype} on CPU"
    for i in range(len(deep.rnn_layers)):
        base = deep.base_layer(i)
        if not isinstance(base, RNN):
            return f"layer {i} is not a kerasrnn layer"
        layer = deep.rnn_layers[i]
        directions = [layer.forward_layer, layer.backward_layer] if deep.bidirectional[i] else [base]
        if any("call" in vars(d) for d in directions):  # replaced on the instance
            return f"layer {i} is traced (kerasrnn.diagnostics runs each layer's own loop)"
        if base.fused is False or base.stateful or base.go_backwards:
            return f"layer {i} has fused=False, stateful or go_backwards"
        if training and base.cell.dropout > 0:
            return f"layer {i} has input dropout"
    return None
