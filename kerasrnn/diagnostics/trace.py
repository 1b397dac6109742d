"""One instrumented pass through a model's recurrent layers: gates out, probes in.

Everything in `kerasrnn.diagnostics` that looks inside the time loop goes through
`traced(model)`: while it is active, each kerasrnn recurrent layer runs its own cell's
`project_inputs` and `step` through the loop (`kerasrnn.ops.run.run_cell`, never a fused
kernel; the same dropout and zoneout masks as the layer), and

- records what the step hands to `RecurrentCell.record` (the gates) and the output `h_t`;
- optionally adds a probe tensor `p_t` to each `h_t` *inside* the recurrence,
  `h_t ← h_t + p_t`, so that the next step, and everything after it, sees the probed
  state. With `p = 0` the forward pass is unchanged, and `∂L/∂p_t` is the total
  derivative `dL/dh_t`: the error signal that back-propagation through time delivers
  to `h_t`.

The equations are never written twice: the cell's own `step` does the work.
"""

import contextlib

import keras
import numpy as np
from keras import ops

from kerasrnn.layers.rnn import RNN, prepare_call
from kerasrnn.ops.plan import plan_call
from kerasrnn.ops.run import run_cell

__all__ = ["as_tensor", "recurrent_layers", "traced"]


def as_tensor(value):
    """A batch as backend tensors; float64 NumPy arrays become `floatx` (float32)."""
    if isinstance(value, (list, tuple, dict)):
        return keras.tree.map_structure(as_tensor, value)
    if isinstance(value, np.ndarray) and value.dtype == np.float64:
        value = value.astype(keras.config.floatx())
    return ops.convert_to_tensor(value)


def recurrent_layers(model, layers=None):
    """The kerasrnn recurrent layers of `model` (nested models included), in order.

    Args:
        model: a Keras model or layer.
        layers: optional names or layer objects to select (one name or layer, or a
            list of them); `None` selects all.

    Example:

    >>> import keras, kerasrnn
    >>> from kerasrnn.diagnostics import recurrent_layers
    >>> model = keras.Sequential([keras.Input((5, 2)), kerasrnn.GRU(3, name="gru"),
    ...                           keras.layers.Dense(1)])
    >>> [layer.name for layer in recurrent_layers(model)]
    ['gru']
    """
    found, seen = [], set()

    def walk(layer):
        if id(layer) in seen:
            return
        seen.add(id(layer))
        if isinstance(layer, RNN):
            found.append(layer)
        # Keras models and wrappers, and `DeepRNN` (its `rnn_layers`).
        for attr in ("layers", "rnn_layers", "forward_layer", "backward_layer", "layer"):
            child = getattr(layer, attr, None)
            for c in child if isinstance(child, (list, tuple)) else [child]:
                if isinstance(c, keras.layers.Layer):
                    walk(c)

    walk(model)
    if layers is None:
        if not found:
            raise ValueError(
                "The model has no kerasrnn recurrent layer (kerasrnn.SimpleRNN, IRNN, "
                "LSTM, GRU or kerasrnn.layers.RNN); diagnostics need one."
            )
        return _distinct_names(found)
    if isinstance(layers, (str, keras.layers.Layer)):  # one layer, not its letters
        layers = [layers]
    wanted = [w if isinstance(w, str) else getattr(w, "name", w) for w in layers]
    by_name = {layer.name: layer for layer in found}
    missing = [w for w in wanted if w not in by_name]
    if missing:
        raise ValueError(
            f"`layers`: no kerasrnn recurrent layer named {missing} in the model; "
            f"its recurrent layers are {sorted(by_name)}."
        )
    return _distinct_names([layer for layer in found if layer.name in wanted],
                           [by_name[w] for w in dict.fromkeys(wanted)])


def _distinct_names(found, selected=None):
    """`selected` (default `found`), unless two layers of `found` that it names share
    a name: the diagnostics key their results by name, and Keras allows the same name
    in two nested models."""
    names = [layer.name for layer in found]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(
            f"The model has several kerasrnn recurrent layers named {repeated} (in nested "
            "models); the diagnostics key their results by layer name. Give the layers "
            "distinct names (e.g. kerasrnn.GRU(64, name='encoder_gru'))."
        )
    return found if selected is None else selected


@contextlib.contextmanager
def traced(layers, probes=None, records=None):
    """Runs `layers` through the instrumented pass while the context is active.

    Args:
        layers: kerasrnn `RNN` layers (see `recurrent_layers`).
        probes: optional dict `layer.name -> tensor (batch, time, units)` added to
            `h_t` inside the recurrence (zeros for a gradient probe). Time is in
            processing order (reversed for `go_backwards=True`).
        records: optional dict; after a call it holds `layer.name -> {value name:
            tensor (batch, time, units)}`: the output `"h"` and every value the
            cell's `step` recorded (`"i", "f", "g", "o", "c"` for LSTM, ...).

    The layers' `call` is replaced on the instances (not the class) and restored on
    exit; weights and states are never written.
    """
    probes = {} if probes is None else probes
    saved = []
    try:
        for layer in layers:
            saved.append((layer, vars(layer).get("call")))
            object.__setattr__(
                layer, "call", _traced_call(layer, probes.get(layer.name), records)
            )
        yield
    finally:
        for layer, previous in saved:
            if previous is None:
                vars(layer).pop("call", None)
            else:
                object.__setattr__(layer, "call", previous)


def _traced_call(layer, probe, records):
    cell = layer.cell

    def call(sequences, initial_state=None, mask=None, training=False):
        sequences, states, mask = prepare_call(layer, sequences, initial_state, mask)
        constants = cell.loop_constants(sequences, training)
        # The loop, never a fused kernel, with the projection hoisted, as the layer
        # would run it otherwise (the same dropout and zoneout masks).
        plan = plan_call(cell, sequences, mask, training, constants, fused=False,
                         hoist_inputs=True, remat=False, xla=False, name=layer.name)
        names, sizes = _recorded_names(cell, sequences, states, constants)
        units = cell.output_size
        # With a probe, the mask is applied in the step, before the probe is added: at a
        # masked step the state is carried, `h_t = h_{t-1} + p_t`, so `∂L/∂p_t` is still
        # `dL/dh_t` (the loop's own masking would drop the probe there: a norm of 0).
        mask_in_step = probe is not None and mask is not None

        def wrap(cell_step):
            def step(z_t, states, constants_t, *scanned_t):
                observer = {}
                output, new_states = cell_step(z_t, states, constants_t.at_step(observer=observer))
                values = [observer[n] for n in names]
                if mask_in_step:
                    m_t = scanned_t[1]
                    new_states = [ops.where(m_t, n, s) for n, s in zip(new_states, states)]
                    values = [ops.where(m_t, v, ops.zeros_like(v)) for v in values]
                    output = new_states[0]  # the output repeats h where masked
                if scanned_t:
                    # The cell's output is its first state (h); the next step sees h + p.
                    output = output + scanned_t[0]
                    new_states = [output, *new_states[1:]]
                if mask_in_step and layer.zero_output_for_mask:
                    output = ops.where(m_t, output, ops.zeros_like(output))
                return ops.concatenate([output, *values], axis=-1), new_states

            return step

        scanned = ()
        if probe is not None:
            # The loop reverses what it scans with the sequence for `go_backwards`; the
            # probe's time is processing order already (as the records' is), so it is
            # flipped first: p[:, 0] is then added to the first step processed.
            cast = ops.cast(probe, sequences.dtype)
            scanned = (ops.flip(cast, axis=1) if layer.go_backwards else cast,)
            if mask_in_step:  # in input order, reversed with the sequence
                scanned += (mask[:, :, None],)
        last, outputs, final = run_cell(
            cell, sequences, states, constants, plan, mask=None if mask_in_step else mask,
            training=training, go_backwards=layer.go_backwards, return_sequences=True,
            zero_output_for_mask=layer.zero_output_for_mask, wrap=wrap, scanned=scanned,
            output_size=units + sum(sizes),
        )
        cuts = [units + sum(sizes[:i]) for i in range(len(sizes))]  # h, then each value
        pieces = ops.split(outputs, cuts, axis=-1) if cuts else [outputs]
        if records is not None:
            records[layer.name] = {"h": pieces[0], **dict(zip(names, pieces[1:]))}
        output = pieces[0] if layer.return_sequences else last[..., :units]
        output = ops.cast(output, layer.compute_dtype)
        if layer.return_state:
            return (output, *[ops.cast(s, layer.compute_dtype) for s in final])
        return output

    return call


def _recorded_names(cell, sequences, states, constants):
    """The names the cell's `step` records, in a fixed order, and the size of each
    (one traced step to see: an LSTM with a projection records gates wider than h)."""
    observer = {}
    projected = cell.project_inputs(sequences[:, 0], constants)
    cell.step(projected, states, constants.at_step(observer=observer))
    names = sorted(n for n in observer if n != "h")
    return names, [int(observer[n].shape[-1]) for n in names]
