"""`kerasrnn.ops.unroll`, the one time loop, on its own: masking semantics, reverse,
structured sequences, eager == compiled, and a loop that stays linear in T on torch."""

import numpy as np
import pytest
from _util import (
    BATCH,
    FEATURES,
    TIME,
    UNITS,
    both_directions,
    nonzero_uniform,
    random_mask,
)
from conftest import BACKEND, to_numpy
from keras import ops

from kerasrnn.ops import unroll
from kerasrnn.ops.unroll import _unroll_generic
from kerasrnn.testing import reference


@pytest.fixture
def weights(rng):
    return nonzero_uniform(rng, (FEATURES, UNITS)), nonzero_uniform(rng, (UNITS, UNITS))


def make_step(weights):
    """An Elman step with two states (h and a running sum of h), as keras.ops and NumPy."""
    w, u = (ops.convert_to_tensor(a.astype("float32")) for a in weights)

    def step(x_t, states):
        h, total = states
        h = ops.tanh(ops.matmul(x_t, w) + ops.matmul(h, u))
        return h, [h, total + h]

    def numpy_step(x_t, states):
        h, total = states
        h = np.tanh(x_t @ weights[0] + h @ weights[1])
        return h, [h, total + h]

    return step, numpy_step


def zeros_states():
    return [ops.zeros((BATCH, UNITS)), ops.zeros((BATCH, UNITS))]


def run(step, x, mask=None, **kwargs):
    last, outputs, states = unroll(
        step, ops.convert_to_tensor(x), zeros_states(),
        mask=None if mask is None else ops.convert_to_tensor(mask),
        output_size=UNITS, **kwargs,
    )
    return to_numpy(last), None if outputs is None else to_numpy(outputs), [to_numpy(s) for s in states]


MASKS = [None, "right", "arbitrary"]


@pytest.mark.parametrize("zero_output", [False, True], ids=["repeat_output", "zero_output"])
@both_directions
@pytest.mark.parametrize("mask_kind", MASKS, ids=str)
def test_matches_reference(mask_kind, go_backwards, zero_output, weights, rng):
    step, numpy_step = make_step(weights)
    x = nonzero_uniform(rng, (BATCH, TIME, FEATURES)).astype("float32")
    mask = None if mask_kind is None else random_mask(rng, BATCH, TIME, mask_kind)
    last, outputs, states = run(
        step, x, mask, go_backwards=go_backwards, zero_output_for_mask=zero_output
    )
    want, want_states = reference.run_sequence(
        numpy_step, x, [np.zeros((BATCH, UNITS))] * 2, mask=mask, go_backwards=go_backwards,
        zero_output_for_mask=zero_output,
    )
    np.testing.assert_allclose(outputs, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(last, want[:, -1], rtol=1e-5, atol=1e-6)
    for got, w in zip(states, want_states):
        np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-5)
    last_only, none, _ = run(
        step, x, mask, go_backwards=go_backwards, zero_output_for_mask=zero_output,
        return_sequences=False,
    )
    assert none is None
    np.testing.assert_allclose(last_only, want[:, -1], rtol=1e-5, atol=1e-6)


def test_masked_steps_carry_state_and_repeat_output(weights, rng):
    """The semantics spelled out on one row: [valid, masked, masked, valid, masked, masked]."""
    step, _ = make_step(weights)
    x = nonzero_uniform(rng, (BATCH, TIME, FEATURES)).astype("float32")
    mask = np.ones((BATCH, TIME), bool)
    mask[0] = [True, False, False, True, False, False]
    mask[1] = [False, False, True, True, True, True]
    _, outputs, (h, total) = run(step, x, mask)
    np.testing.assert_array_equal(outputs[0, 1], outputs[0, 0])
    np.testing.assert_array_equal(outputs[0, 2], outputs[0, 0])
    np.testing.assert_array_equal(outputs[0, 5], outputs[0, 3])
    np.testing.assert_array_equal(h[0], outputs[0, 3])
    np.testing.assert_allclose(total[0], outputs[0, 0] + outputs[0, 3], rtol=1e-6)
    np.testing.assert_array_equal(outputs[1, :2], 0.0)  # zeros before the first valid step
    # The first valid step of row 1 starts from the initial (zero) state.
    _, fresh, _ = run(step, x[:, 2:], None)
    np.testing.assert_allclose(outputs[1, 2:], fresh[1], rtol=1e-6)


@pytest.mark.parametrize("mask_kind", MASKS, ids=str)
def test_reverse_is_flipped_forward(mask_kind, weights, rng):
    step, _ = make_step(weights)
    x = nonzero_uniform(rng, (BATCH, TIME, FEATURES)).astype("float32")
    mask = None if mask_kind is None else random_mask(rng, BATCH, TIME, mask_kind)
    flipped_mask = None if mask is None else mask[:, ::-1].copy()
    backward = run(step, x, mask, go_backwards=True)
    forward = run(step, x[:, ::-1].copy(), flipped_mask)
    np.testing.assert_array_equal(backward[1], forward[1])
    for a, b in zip(backward[2], forward[2]):
        np.testing.assert_array_equal(a, b)


def test_structured_sequences(weights, rng):
    """A tuple of sequences reaches the step as a tuple, each with its time axis removed."""
    w, u = (ops.convert_to_tensor(a.astype("float32")) for a in weights)
    x = nonzero_uniform(rng, (BATCH, TIME, FEATURES)).astype("float32")
    gate = nonzero_uniform(rng, (BATCH, TIME, 1)).astype("float32")

    def step(inputs, states):
        x_t, g_t = inputs
        assert tuple(x_t.shape) == (BATCH, FEATURES) and tuple(g_t.shape) == (BATCH, 1)
        h = g_t * ops.tanh(ops.matmul(x_t, w) + ops.matmul(states[0], u))
        return h, [h]

    mask = random_mask(rng, BATCH, TIME, "arbitrary")
    _, outputs, _ = unroll(
        step, (ops.convert_to_tensor(x), ops.convert_to_tensor(gate)), [ops.zeros((BATCH, UNITS))],
        mask=ops.convert_to_tensor(mask), output_size=UNITS, go_backwards=True,
    )

    def numpy_step(xg, states):
        h = xg[:, -1:] * np.tanh(xg[:, :-1] @ weights[0] + states[0] @ weights[1])
        return h, [h]

    want, _ = reference.run_sequence(
        numpy_step, np.concatenate([x, gate], -1), [np.zeros((BATCH, UNITS))], mask=mask,
        go_backwards=True,
    )
    np.testing.assert_allclose(to_numpy(outputs), want, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(
    BACKEND == "tensorflow",
    reason="keras.ops.scan on TensorFlow needs per-step outputs shaped like the carry",
)
@pytest.mark.parametrize("mask_kind", MASKS, ids=str)
def test_backend_loop_matches_keras_ops_scan(mask_kind, weights, rng):
    """The per-backend loop against the generic `keras.ops.scan` loop (for other backends)."""
    step, _ = make_step(weights)
    x = ops.convert_to_tensor(nonzero_uniform(rng, (BATCH, TIME, FEATURES)).astype("float32"))
    mask = None if mask_kind is None else ops.convert_to_tensor(random_mask(rng, BATCH, TIME, mask_kind))
    got = unroll(step, x, zeros_states(), mask=mask, output_size=UNITS)

    def call_step(xs_t, states):
        out, new = step(xs_t[0], list(states))
        return out, list(new)

    want = _unroll_generic(
        call_step, [x], zeros_states(), None if mask is None else ops.expand_dims(mask, -1),
        True, False, ops.zeros((BATCH, UNITS)),
    )
    np.testing.assert_allclose(to_numpy(got[1]), to_numpy(want[1]), rtol=1e-6, atol=1e-7)
    for a, b in zip(got[2], want[2]):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-6, atol=1e-7)


def test_output_size_required_with_mask(weights):
    step, _ = make_step(weights)
    with pytest.raises(ValueError, match="`output_size` is required"):
        unroll(step, ops.ones((BATCH, TIME, FEATURES)), zeros_states(), mask=ops.ones((BATCH, TIME), "bool"))


@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
def test_output_size_must_be_the_steps(masked):
    # With a mask, an output of size 1 for output_size=5 broadcast against the
    # (batch, 5) previous output: (2, 4, 5) outputs and no error.
    def step(x_t, states):
        h = states[0] + ops.sum(x_t, axis=-1, keepdims=True)
        return h, [h]

    x = np.ones((2, 4, 3), "float32")
    with pytest.raises(ValueError, match=r"returned outputs of shape \(2, 1\), but `output_size` is 5"):
        unroll(step, x, [np.zeros((2, 1), "float32")], mask=np.ones((2, 4), bool) if masked else None,
               return_sequences=False, output_size=5)


@pytest.mark.parametrize("shape", [(2, 3), (3, 4), (2, 4, 1), (8,)])
def test_mask_shape_is_checked(shape):
    # A (2, 3) mask for 4 steps: JAX "scan got values with different leading axis
    # sizes", torch IndexError, TensorFlow OutOfRangeError.
    def step(x_t, states):
        return states[0], states

    with pytest.raises(ValueError, match=r"`mask` must be a \(batch, time\) = \(2, 4\) tensor"):
        unroll(step, np.ones((2, 4, 3), "float32"), [np.zeros((2, 1), "float32")], mask=np.ones(shape, bool),
               output_size=1)


@pytest.mark.skipif(BACKEND == "torch", reason="torch runs eagerly (no compiled variant to compare)")
@pytest.mark.parametrize("mask_kind", [None, "arbitrary"], ids=str)
def test_eager_equals_compiled(mask_kind, weights, rng):
    step, _ = make_step(weights)
    x = ops.convert_to_tensor(nonzero_uniform(rng, (BATCH, TIME, FEATURES)).astype("float32"))
    mask = None if mask_kind is None else ops.convert_to_tensor(random_mask(rng, BATCH, TIME, mask_kind))

    def f(x, mask):
        last, outputs, states = unroll(
            step, x, zeros_states(), mask=mask, go_backwards=True, output_size=UNITS
        )
        return last, outputs, states[1]

    eager = f(x, mask)
    if BACKEND == "jax":
        import jax

        compiled = jax.jit(f)(x, mask)
    else:
        import tensorflow as tf

        compiled = tf.function(f, jit_compile=False)(x, mask)
    for a, b in zip(eager, compiled):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-6, atol=1e-7)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="unknown time length is a graph-mode case")
def test_tensorflow_unknown_time_length(weights, rng):
    import tensorflow as tf

    step, numpy_step = make_step(weights)
    x = nonzero_uniform(rng, (BATCH, TIME, FEATURES)).astype("float32")
    f = tf.function(
        lambda x: unroll(step, x, zeros_states(), output_size=UNITS)[1],
        input_signature=[tf.TensorSpec((BATCH, None, FEATURES), tf.float32)],
    )
    want, _ = reference.run_sequence(numpy_step, x, [np.zeros((BATCH, UNITS))] * 2)
    np.testing.assert_allclose(f(x).numpy(), want, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ torch: linear in T
def _autograd_nodes(root):
    seen, stack, nodes = set(), [root], []
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        nodes.append(node)
        stack.extend(next_fn for next_fn, _ in node.next_functions)
    return nodes


def _indexes_time_axis(nodes, time):
    """Select/Index nodes whose input has the sequence's time axis (`time` steps)."""
    return [
        node for node in nodes
        if type(node).__name__.startswith(("SelectBackward", "IndexBackward"))
        and len(node._saved_self_sym_sizes) >= 2 and node._saved_self_sym_sizes[1] == time
    ]


@pytest.mark.skipif(BACKEND != "torch", reason="the torch loop's autograd graph")
def test_torch_loop_never_indexes_the_sequence(weights, rng):
    """Indexing `x[:, t]` would put one Select node per step in the graph, and each one's
    backward allocates a full-sequence gradient (quadratic in T). `torch.unbind` makes a
    single Unbind node whose backward is one stack."""
    import torch

    step, _ = make_step(weights)
    x = torch.tensor(nonzero_uniform(rng, (BATCH, 40, FEATURES)), dtype=torch.float32, requires_grad=True)
    mask = torch.tensor(random_mask(rng, BATCH, 40, "arbitrary"))
    _last, outputs, states = unroll(step, x, zeros_states(), mask=mask, output_size=UNITS)
    nodes = _autograd_nodes((outputs.sum() + states[1].sum()).grad_fn)
    assert [type(n).__name__ for n in nodes].count("UnbindBackward0") == 1
    assert not _indexes_time_axis(nodes, 40)
    assert [type(n).__name__ for n in nodes].count("TanhBackward0") == 40  # one per step


@pytest.mark.skipif(BACKEND != "torch", reason="the torch loop's autograd graph")
@pytest.mark.parametrize("layer_name", ["LSTM", "GRU", "SimpleRNN"])
def test_torch_layers_never_index_the_sequence(layer_name, rng):
    import torch

    import kerasrnn

    layer = getattr(kerasrnn, layer_name)(UNITS, fused=False, return_sequences=True)
    x = torch.tensor(nonzero_uniform(rng, (BATCH, 30, FEATURES)), dtype=torch.float32, requires_grad=True)
    for hoist in (True, False):
        layer.hoist_inputs = hoist
        nodes = _autograd_nodes(layer(x).sum().grad_fn)
        assert not _indexes_time_axis(nodes, 30)
        assert [type(n).__name__ for n in nodes].count("UnbindBackward0") == 1


# A wall-clock check (T=400 backward within ~8x of T=50) is left out: on this shared
# 2-core machine timings vary by more than the linear/quadratic gap at sizes a unit test
# can afford. The graph tests above pin down the cause of the quadratic loop instead.


def test_numpy_inputs_states_and_mask():
    """NumPy arrays in, backend tensors out, on every backend (no backend-specific TypeError)."""
    x = np.ones((2, 3, 4), "float32")
    h0 = np.zeros((2, 4), "float32")
    mask = np.array([[True, True, False], [True, False, False]])
    last, outputs, (h,) = unroll(
        lambda x_t, s: (x_t + s[0], [x_t + s[0]]), x, [h0], mask=mask, output_size=4
    )
    np.testing.assert_allclose(to_numpy(last)[:, 0], [2.0, 1.0])
    np.testing.assert_allclose(to_numpy(outputs)[:, :, 0], [[1.0, 2.0, 2.0], [1.0, 1.0, 1.0]])
    np.testing.assert_allclose(to_numpy(h), to_numpy(last))


@pytest.mark.parametrize("remat", [False, True], ids=["stored", "remat"])
@pytest.mark.parametrize("output_is_state", [True, False], ids=["output_is_h", "output_is_not_a_state"])
def test_last_output_only(output_is_state, remat, weights, rng):
    """Without a mask and `return_sequences`, the last output comes from the final
    states when the step outputs one of them, and is carried when it does not; both
    agree with NumPy. On JAX the loop then carries the states alone (no copy of the
    output per step, no sum of its two gradients in the backward pass)."""
    step, numpy_step = make_step(weights)
    if not output_is_state:
        step_h, numpy_h = step, numpy_step

        def step(x_t, states):
            h, new = step_h(x_t, states)
            return 2.0 * h, new

        def numpy_step(x_t, states):
            h, new = numpy_h(x_t, states)
            return 2.0 * h, new

    x = nonzero_uniform(rng, (BATCH, TIME, FEATURES)).astype("float32")
    last, none, states = run(step, x, return_sequences=False, remat=remat)
    want, want_states = reference.run_sequence(numpy_step, x, [np.zeros((BATCH, UNITS))] * 2)
    assert none is None
    np.testing.assert_allclose(last, want[:, -1], rtol=1e-5, atol=1e-6)
    for got, w in zip(states, want_states):
        np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-5)
    if BACKEND != "jax":
        return
    import jax

    def loss(x):
        last, _, states = unroll(step, x, zeros_states(), return_sequences=False, output_size=UNITS, remat=remat)
        return (last**2).sum() + states[1].sum()

    def loss_from_sequences(x):
        _, outputs, states = unroll(step, x, zeros_states(), output_size=UNITS, remat=remat)
        return (outputs[:, -1] ** 2).sum() + states[1].sum()

    x = jax.numpy.asarray(x)
    np.testing.assert_allclose(jax.grad(loss)(x), jax.grad(loss_from_sequences)(x), rtol=1e-5, atol=1e-6)

    def scan_inputs(step):
        def last_only(x):
            return unroll(step, x, zeros_states(), return_sequences=False, output_size=UNITS, remat=remat)[0]

        (scan,) = [e for e in jax.make_jaxpr(last_only)(x).eqns if e.primitive.name == "scan"]
        return len(scan.invars)  # constants, carried values, scanned inputs

    h_step, _ = make_step(weights)

    def doubled(x_t, states):
        h, new = h_step(x_t, states)
        return 2.0 * h, new

    # The output is carried only when it is not one of the states.
    assert scan_inputs(doubled) == scan_inputs(h_step) + 1
