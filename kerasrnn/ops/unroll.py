"""The one time loop of kerasrnn.

Every sequence layer of the package runs its cell through :func:`unroll`. The loop
itself is the only backend-specific code path that is not a fused kernel: it scans a
step function over time with the cheapest control flow each backend has (`jax.lax.scan`,
a `tf.while_loop` over `TensorArray`s, a Python loop over `torch.unbind` views), and
applies Keras's masking semantics.

Why not `keras.ops.scan` everywhere? On torch it indexes `xs[t]` every step, and the
backward of each index allocates a gradient buffer the size of the whole sequence: the
loop becomes quadratic in `T`. `torch.unbind` returns views whose backward is a single
`stack`, so the loop stays linear. On TensorFlow, `keras.ops.scan` keeps the carry in a
`TensorArray` and forces the per-step output to have the carry's shape.
"""

import keras
from keras import ops

__all__ = ["unroll"]


def _as_list(x):
    if isinstance(x, (list, tuple)):
        return list(x)
    return [x]


def unroll(
    step_fn,
    sequences,
    initial_states,
    *,
    mask=None,
    go_backwards=False,
    return_sequences=True,
    zero_output_for_mask=False,
    output_size=None,
    remat=False,
    xla=False,
):
    """Scans `step_fn` over the time axis (axis 1) of `sequences`.

    Args:
        step_fn: `step_fn(inputs_t, states) -> (output_t, new_states)`. `inputs_t`
            has the structure of `sequences` (a tensor, or a tuple of tensors) with
            the time axis removed; `states` and `new_states` are lists of tensors.
            It must be stateless: random masks are drawn before the loop.
        sequences: a `(batch, time, ...)` tensor or a list/tuple of them.
        initial_states: list of `(batch, ...)` tensors.
        mask: optional boolean `(batch, time)` tensor. Where `mask[b, t]` is false the
            states are carried unchanged and the output repeats the previous output
            (zeros before the first valid step), as in `keras.layers.RNN`.
        go_backwards: process the sequence in reverse. As in Keras, the returned
            `outputs` are then in processing order (reversed time).
        return_sequences: whether to collect the output of every step.
        zero_output_for_mask: output zeros at masked steps instead of repeating the
            previous output (what `keras.layers.Bidirectional` asks for).
        output_size: size of the step output (the last axis); needed with a mask
            to form the "previous output" before the first step.
        remat: on JAX, recompute each step's intermediate values in the backward
            pass instead of storing them (`jax.checkpoint` of the step, saving
            nothing but the carried states). Costs a second forward pass of the step;
            on CPUs it is faster for bodies with many elementwise operations (layer
            norm, zoneout, LSTM), because storing and reloading `time` stacks of
            intermediates costs more than recomputing them. Ignored on other backends.
        xla: on TensorFlow, inside a `tf.function` that XLA does not compile (Keras's
            training step on a CPU), compile the loop with XLA: the forward pass, and a
            backward pass that recomputes the loop (a second forward, inside the same
            compiled function) and differentiates it. Where that cannot be done
            (`xla_unavailable_reason()`: called eagerly, or already inside XLA) the
            loop runs as it is. The step must not read variables (read them before
            the loop, as `loop_constants` does). Gradients of gradients through it are
            not supported. Ignored on other backends.

    Returns:
        `(last_output, outputs, final_states)`, with `outputs` of shape
        `(batch, time, output_size)` or `None` when `return_sequences=False`.
    """
    structured = isinstance(sequences, (list, tuple))
    # NumPy arrays (what a user passes to try it out) become backend tensors.
    seqs = [ops.convert_to_tensor(s) for s in _as_list(sequences)]
    states = [ops.convert_to_tensor(s) for s in _as_list(initial_states)]
    if seqs and len(seqs[0].shape) > 1 and seqs[0].shape[1] == 0:  # known now (not a traced None)
        # Every backend the same (JAX's scan and TensorFlow's loop failed while indexing step 0).
        raise ValueError("Cannot run a recurrent layer over a sequence of length 0 (`sequences` has no time steps).")
    if go_backwards:
        seqs = [ops.flip(s, axis=1) for s in seqs]
    if mask is not None:
        mask = ops.cast(ops.convert_to_tensor(mask), "bool")
        _check_mask_shape(tuple(mask.shape), tuple(seqs[0].shape))
        if go_backwards:
            mask = ops.flip(mask, axis=1)
        mask = ops.expand_dims(mask, -1)  # (batch, time, 1) broadcasts over units

    sized = mask is not None or not return_sequences  # the loop carries a previous output

    def pack(xs_t):
        return tuple(xs_t) if structured else xs_t[0]

    def call_step(xs_t, states):
        output, new_states = step_fn(pack(xs_t), list(states))
        # A step may narrow float64 states (some keras.ops compute in float32 on JAX
        # and torch): the loop's carry keeps its dtype.
        new_states = [
            n if n.dtype == s.dtype else ops.cast(n, s.dtype) for n, s in zip(_as_list(new_states), states)
        ]
        if states and output.dtype != states[0].dtype:
            output = ops.cast(output, states[0].dtype)
        if sized and output.shape[-1] not in (None, output_size):
            # It would broadcast against the (batch, output_size) previous output.
            raise ValueError(
                f"`step_fn` returned outputs of shape {tuple(output.shape)}, but `output_size` is "
                f"{output_size}: give the size of the step's output."
            )
        return output, new_states

    if sized:
        if output_size is None:
            raise ValueError(
                "`output_size` is required when a mask is given or "
                "return_sequences=False."
            )
        batch = ops.shape(seqs[0])[0]
        dtype = states[0].dtype if states else seqs[0].dtype
        out0 = ops.zeros((batch, output_size), dtype=dtype)
    else:
        out0 = None

    backend = keras.backend.backend()
    impl = {
        "jax": _unroll_jax,
        "tensorflow": _unroll_tensorflow,
        "torch": _unroll_torch,
    }.get(backend, _unroll_generic)
    if xla and backend == "tensorflow" and xla_unavailable_reason() is None:
        return _unroll_tensorflow_xla(
            call_step, seqs, states, mask, return_sequences, zero_output_for_mask, out0
        )
    if backend == "jax":
        return impl(call_step, seqs, states, mask, return_sequences, zero_output_for_mask, out0, remat)
    return impl(call_step, seqs, states, mask, return_sequences, zero_output_for_mask, out0)


def _check_mask_shape(mask_shape, sequences_shape):
    """ValueError unless the mask is `(batch, time)` of the sequences (where known)."""
    expected = tuple(sequences_shape[:2])
    if len(mask_shape) != 2 or any(m is not None and e is not None and m != e for m, e in zip(mask_shape, expected)):
        raise ValueError(
            f"`mask` must be a (batch, time) = {expected} tensor of the sequences; received shape {mask_shape}."
        )


def _masked(output, new_states, states, prev_output, mask_t, zero_output_for_mask, where):
    """Keras masking: keep the old state, repeat (or zero) the output where masked."""
    if zero_output_for_mask:
        output = where(mask_t, output, ops.zeros_like(output))
    else:
        output = where(mask_t, output, prev_output)
    new_states = [where(mask_t, n, s) for n, s in zip(new_states, states)]
    return output, new_states


# --------------------------------------------------------------------------- torch
def _unroll_torch(call_step, seqs, states, mask, return_sequences, zero_out, out0):
    import torch

    steps = [torch.unbind(s, dim=1) for s in seqs]
    masks = torch.unbind(mask, dim=1) if mask is not None else None
    n_steps = len(steps[0])
    outputs = []
    prev = out0
    for t in range(n_steps):
        output, new_states = call_step([s[t] for s in steps], states)
        if masks is not None:
            output, new_states = _masked(
                output, new_states, states, prev, masks[t], zero_out, torch.where
            )
        states = new_states
        prev = output
        if return_sequences:
            outputs.append(output)
    if n_steps == 0:
        raise ValueError("Cannot run a recurrent layer over a sequence of length 0.")
    stacked = torch.stack(outputs, dim=1) if return_sequences else None
    return prev, stacked, states


# ----------------------------------------------------------------------------- jax
class _OutputIsNotAState(Exception):
    """Raised while tracing a step whose output is not one of its new states."""


def _unroll_jax(call_step, seqs, states, mask, return_sequences, zero_out, out0, remat=False):
    import jax
    import jax.numpy as jnp

    def checkpointed(fn):
        if not remat:
            return fn
        return jax.checkpoint(fn, prevent_cse=False, policy=jax.checkpoint_policies.nothing_saveable)

    xs = [jnp.swapaxes(s, 0, 1) for s in seqs]
    if mask is not None:
        m = jnp.swapaxes(mask, 0, 1)
        step = checkpointed(call_step)

        def body(carry, inp):
            states, prev = carry
            xs_t, mask_t = inp
            output, new_states = step(xs_t, states)
            output, new_states = _masked(
                output, new_states, states, prev, mask_t, zero_out, jnp.where
            )
            return (new_states, output), (output if return_sequences else None)

        (states, last), ys = jax.lax.scan(body, (states, out0), (xs, m))
    elif return_sequences:
        step = checkpointed(call_step)

        def body(states, xs_t):
            output, new_states = step(xs_t, states)
            return new_states, output

        states, ys = jax.lax.scan(body, states, xs)
        last = ys[-1]
    else:
        states, last = _last_output_jax(call_step, checkpointed, xs, states, out0)
        ys = None
    outputs = jnp.swapaxes(ys, 0, 1) if return_sequences else None
    return last, outputs, states


def _last_output_jax(call_step, checkpointed, xs, states, out0):
    """The unmasked loop that returns only the last output.

    Every kerasrnn cell outputs one of its states (`h`). Then the loop carries the
    states alone and the last output is read from the final states: carrying the
    output beside them would copy it at every step and, in the backward pass, add
    the two gradients that reach it (one more kernel per step each way on a GPU).
    Whether the output is a state is seen while tracing the step (the very same
    tensor); a step whose output is not falls back to carrying it.
    """
    import jax

    index = []

    def states_only(xs_t, states):
        output, new_states = call_step(xs_t, states)
        found = [i for i, s in enumerate(new_states) if s is output]
        if not found:
            raise _OutputIsNotAState
        index.append(found[0])
        return new_states

    try:
        step = checkpointed(states_only)
        final, _ = jax.lax.scan(lambda states, xs_t: (step(xs_t, states), None), states, xs)
        return final, final[index[-1]]
    except _OutputIsNotAState:
        pass
    step = checkpointed(call_step)

    def body(carry, xs_t):
        states, _ = carry
        output, new_states = step(xs_t, states)
        return (new_states, output), None

    (final, last), _ = jax.lax.scan(body, (states, out0), xs)
    return final, last


# ---------------------------------------------------------------------- tensorflow
def _unroll_tensorflow(call_step, seqs, states, mask, return_sequences, zero_out, out0):
    import tensorflow as tf

    xs = [tf.transpose(s, [1, 0] + list(range(2, len(s.shape)))) for s in seqs]
    n_steps = xs[0].shape[0]
    if n_steps is None:
        n_steps = tf.shape(xs[0])[0]
    input_tas = [
        tf.TensorArray(x.dtype, size=n_steps, element_shape=x.shape[1:]).unstack(x)
        for x in xs
    ]
    mask_ta = None
    if mask is not None:
        m = tf.transpose(mask, [1, 0, 2])
        mask_ta = tf.TensorArray(tf.bool, size=n_steps, element_shape=m.shape[1:])
        mask_ta = mask_ta.unstack(m)

    # The output's shape and dtype are only known after a step; the first step runs
    # outside the loop, which also gives TensorFlow static shapes for the carry.
    first_out, first_states = call_step([ta.read(0) for ta in input_tas], states)
    if mask_ta is not None:
        first_out, first_states = _masked(
            first_out, first_states, states, out0, mask_ta.read(0), zero_out, tf.where
        )
    out_ta = None
    if return_sequences:
        out_ta = tf.TensorArray(
            first_out.dtype, size=n_steps, element_shape=first_out.shape
        ).write(0, first_out)

    def body(t, prev, states, *maybe_out_ta):
        output, new_states = call_step([ta.read(t) for ta in input_tas], list(states))
        if mask_ta is not None:
            output, new_states = _masked(
                output, new_states, states, prev, mask_ta.read(t), zero_out, tf.where
            )
        output.set_shape(prev.shape)
        for new, old in zip(new_states, states):
            new.set_shape(old.shape)
        written = tuple(ta.write(t, output) for ta in maybe_out_ta)
        return (t + 1, output, new_states) + written

    loop_vars = (tf.constant(1), first_out, first_states)
    if out_ta is not None:
        loop_vars += (out_ta,)
    _, last, states, *maybe_out_ta = tf.while_loop(
        lambda t, *_: t < n_steps,
        body,
        loop_vars,
        maximum_iterations=n_steps,
        swap_memory=True,
        parallel_iterations=32,
    )
    out_ta = maybe_out_ta[0] if maybe_out_ta else None
    outputs = None
    if return_sequences:
        outputs = tf.transpose(out_ta.stack(), [1, 0] + list(range(2, len(first_out.shape) + 1)))
    return last, outputs, list(states)


def xla_unavailable_reason():
    """Why the time loop cannot be compiled with XLA here (`None` if it can): on
    TensorFlow, only inside a `tf.function` that XLA does not already compile."""
    if keras.backend.backend() != "tensorflow":
        return f"not on TensorFlow ({keras.backend.backend()})"
    import tensorflow as tf

    if not tf.inside_function():
        return "called eagerly (outside a tf.function)"
    if _in_xla_context():
        return "the surrounding function is already compiled by XLA"
    return None


def _unroll_tensorflow_xla(call_step, seqs, states, mask, return_sequences, zero_out, out0):
    """`_unroll_tensorflow`, compiled by XLA, with a backward pass that recomputes it.

    XLA cannot hand TensorFlow the per-step values a graph-mode gradient of its while
    loop would read back (they are `TensorList`s, which do not cross the boundary of a
    compiled function), so the gradient is a second compiled function: it runs the
    loop again under a `GradientTape` and differentiates it, all inside XLA. The
    tensors the step closes over (the cell's weights and masks, which
    `loop_constants` made) are found by tracing the loop once, and become inputs of
    the gradient.
    """
    import tensorflow as tf

    n_seqs, n_states = len(seqs), len(states)

    def run(seqs, states):
        last, outputs, final = _unroll_tensorflow(
            call_step, list(seqs), list(states), mask, return_sequences, zero_out, out0
        )
        return [last] + ([outputs] if return_sequences else []) + list(final)

    forward = tf.function(run, jit_compile=True, autograph=False).get_concrete_function(seqs, states)
    captured = forward.captured_inputs
    if any(c.dtype == tf.resource for c in captured):
        # A variable read inside the step would need its own gradient path.
        raise ValueError(
            "unroll(xla=True): the step reads a variable. Read the weights before the "
            "loop (a kerasrnn cell reads them in `loop_constants`) or use xla=False."
        )
    captured = [c for c in captured if c.dtype.is_floating]

    def gradient(seqs, states, upstream):
        graph = tf.compat.v1.get_default_graph()
        inner = [graph.capture(c) for c in captured]  # what the step sees in here
        sources = list(seqs) + list(states) + inner
        with tf.GradientTape() as tape:
            tape.watch(sources)
            results = run(seqs, states)
        return tape.gradient(
            results, sources, output_gradients=upstream,
            unconnected_gradients=tf.UnconnectedGradients.ZERO,
        )

    backward = tf.function(gradient, jit_compile=True, autograph=False)

    @tf.custom_gradient
    def loop(*flat):
        seqs_, states_ = list(flat[:n_seqs]), list(flat[n_seqs : n_seqs + n_states])
        results = forward(seqs_, states_)

        def grad(*upstream):
            upstream = [tf.zeros_like(r) if u is None else u for u, r in zip(upstream, results)]
            return backward(seqs_, states_, upstream)

        return results, grad

    results = loop(*seqs, *states, *captured)
    outputs = results[1] if return_sequences else None
    return results[0], outputs, list(results[2 if return_sequences else 1 :])


def _in_xla_context():
    """Whether the graph being built is already compiled by XLA (`jit_compile=True`)."""
    try:
        import tensorflow as tf
        from tensorflow.python.ops import control_flow_util
    except ImportError:  # pragma: no cover - a TensorFlow without the helper
        return False
    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


# ------------------------------------------------------------------------- generic
def _unroll_generic(call_step, seqs, states, mask, return_sequences, zero_out, out0):
    """`keras.ops.scan` for any other backend (e.g. numpy)."""
    xs = [ops.moveaxis(s, 1, 0) for s in seqs]
    if out0 is None:
        out0 = ops.zeros_like(call_step([x[0] for x in xs], states)[0])
    m = ops.moveaxis(mask, 1, 0) if mask is not None else None

    def body(carry, inp):
        states, prev = carry
        xs_t, mask_t = inp if m is not None else (inp, None)
        output, new_states = call_step(xs_t, states)
        if m is not None:
            output, new_states = _masked(
                output, new_states, states, prev, mask_t, zero_out, ops.where
            )
        return (new_states, output), output

    # Without a mask scan over the inputs alone: `keras.ops.scan` cannot slice a None.
    (states, last), ys = ops.scan(body, (states, out0), (xs, m) if m is not None else xs)
    outputs = ops.moveaxis(ys, 0, 1) if return_sequences else None
    return last, outputs, states
