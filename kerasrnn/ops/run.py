"""One way to run a cell over a sequence, shared by the layers, the diagnostics and the
decoders, so that dropout, zoneout and the loop's choices are the same everywhere."""

from keras import ops

from kerasrnn.ops.fused import run_fused
from kerasrnn.ops.unroll import unroll
from kerasrnn.regularizers import zoneout_mask

__all__ = ["run_cell", "zoneout_masks"]


def run_cell(cell, sequences, states, constants, plan, *, mask=None, training=False,
             go_backwards=False, return_sequences=True, zero_output_for_mask=False,
             wrap=None, scanned=(), output_size=None):
    """Runs `cell` over the time axis of `sequences` as `plan` says.

    The fused kernel of the plan, or `kerasrnn.ops.unroll` of the cell's `step`: with
    the input projection hoisted or inside the step, the dropout masks that
    `constants` holds (one per sequence) and a zoneout mask per step (in training),
    scanned with the inputs.

    Args:
        cell: a kerasrnn cell.
        sequences: `(batch, time, features)`, the cell's inputs.
        states: the initial states, a list of `(batch, size)` tensors.
        constants: the cell's `loop_constants(sequences, training)`.
        plan: the call's `kerasrnn.ops.plan.Plan`.
        mask, go_backwards, return_sequences, zero_output_for_mask: as for
            `kerasrnn.ops.unroll`.
        training: whether zoneout masks are drawn (dropout is in `constants`).
        wrap: optional `wrap(step) -> new_step`, to put something around the cell's
            step: `step(x_t, states, constants_t)` runs the cell on this call's input
            at one step (projected when hoisted), and
            `new_step(x_t, states, constants_t, *scanned_t)` returns
            `(output, new_states)`. The diagnostics record and probe through it, the
            attention decoder computes the step's input from the state.
        scanned: more `(batch, time, ...)` tensors scanned with the inputs and handed
            to `new_step` (the diagnostics' probes).
        output_size: the size of `new_step`'s output (default `cell.output_size`).

    Returns:
        `(last_output, outputs, final_states)`; `outputs` is `None` without
        `return_sequences`.
    """
    if plan.fused is not None:
        # The kernel multiplies the inputs by its own weights: the input dropout mask
        # (one per sequence) goes on before it, as in `project_inputs`.
        return run_fused(
            plan.fused, constants.drop_inputs(sequences), states, lengths=plan.lengths,
            go_backwards=go_backwards, return_sequences=return_sequences,
            zero_output_for_mask=zero_output_for_mask,
        )
    if plan.hoist:
        inputs = cell.project_inputs(sequences, constants)

        def cell_step(z_t, states, constants_t):
            return cell.step(z_t, states, constants_t)

    else:
        inputs = sequences

        def cell_step(x_t, states, constants_t):
            return cell.step(cell.project_inputs(x_t, constants_t), states, constants_t)

    step = cell_step if wrap is None else wrap(cell_step)
    per_step = zoneout_masks(cell, constants, sequences, training)
    names, scanned = list(per_step), list(scanned)
    if not names and not scanned:

        def step_fn(x_t, states):
            return step(x_t, states, constants)

        seqs = inputs
    else:
        count = len(names)

        def step_fn(inputs_t, states):
            x_t, *rest = inputs_t
            constants_t = constants.at_step(**dict(zip(names, rest[:count])))
            return step(x_t, states, constants_t, *rest[count:])

        seqs = (inputs, *per_step.values(), *scanned)
    return unroll(
        step_fn, seqs, states, mask=mask, go_backwards=go_backwards,
        return_sequences=return_sequences, zero_output_for_mask=zero_output_for_mask,
        output_size=output_size or cell.output_size, remat=plan.remat, xla=plan.xla,
    )


def zoneout_masks(cell, constants, inputs, training):
    """This sequence's (or step's) zoneout masks `{"zoneout_<i>": d}` for the states
    whose zoneout probability is positive, in training; `{}` otherwise (inference
    uses the expectation, no random numbers).

    For a sequence `inputs (batch, time, features)` each mask is `(batch, time, size)`
    and the layer scans it with the inputs; for one step `(batch, features)` it is
    `(batch, size)`.
    """
    if not training:
        return {}
    leading = tuple(ops.shape(inputs)[:-1])
    masks = {}
    for i, (rate, size) in enumerate(zip(constants["zoneout_rates"], _sizes(cell.state_size))):
        if rate > 0:
            masks[f"zoneout_{i}"] = zoneout_mask(
                leading + (size,), rate, cell.seed_generator, cell.compute_dtype
            )
    return masks


def _sizes(size):
    return list(size) if isinstance(size, (list, tuple)) else [size]
