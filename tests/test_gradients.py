"""Float64 finite-difference checks of the backend's gradients through every cell form.

For a loss `L = Σ outputs · C` (random `C` over the output sequence and final states),
the autodiff gradient `g` of each tensor (inputs and every weight) must give the
directional derivative that central differences measure:
`(L(θ + εv) − L(θ − εv)) / 2ε ≈ g · v` for random directions `v`, plus single entries.
"""

import numpy as np
import pytest
from _util import (
    BACKEND,
    CELL_FORMS,
    gradient_fn,
    n_states,
    nonzero_uniform,
    output_shapes,
    random_mask,
    random_weights,
)

import kerasrnn
from kerasrnn.ops.device import on_accelerator

BATCH, TIME, FEATURES, UNITS = 3, 4, 3, 3
EPS = 1e-6


def check_gradients(layer, x, rng, directions=2, **call_kwargs):
    weights = [np.asarray(w, "float64") for w in layer.get_weights()]
    assert len(weights) == len(layer.trainable_weights)
    cotangents = [nonzero_uniform(rng, s) for s in output_shapes(layer, x.shape)]
    f = gradient_fn(layer, cotangents, **call_kwargs)
    _, dx, dw = f(weights, x)

    def loss(weights, x):
        return f(weights, x)[0]

    def perturbed(index, delta):
        if index is None:
            return weights, x + delta
        ws = list(weights)
        ws[index] = ws[index] + delta
        return ws, x

    tensors = [(None, x, dx)] + [(i, w, g) for i, (w, g) in enumerate(zip(weights, dw))]
    for index, value, grad in tensors:
        assert grad.shape == value.shape
        assert np.abs(grad).max() > 1e-4, f"tensor {index} gets no gradient"
        vs = [rng.normal(size=value.shape) for _ in range(directions)]
        one_hot = np.zeros(value.shape)  # the entry with the largest gradient
        one_hot[np.unravel_index(np.abs(grad).argmax(), grad.shape)] = 1.0
        for v in vs + [one_hot]:
            numeric = (loss(*perturbed(index, EPS * v)) - loss(*perturbed(index, -EPS * v))) / (2 * EPS)
            np.testing.assert_allclose(
                np.sum(grad * v), numeric, rtol=1e-6, atol=1e-8,
                err_msg=f"tensor {index} ({'inputs' if index is None else 'weight'})",
            )


def make(form, rng, **kwargs):
    layer_class, form_kwargs = CELL_FORMS[form]
    layer = layer_class(UNITS, dtype="float64", **form_kwargs, **kwargs)
    layer.build((None, TIME, FEATURES))
    random_weights(layer, rng)
    return layer


WITH_BIAS = [form for form in CELL_FORMS if "nobias" not in form]
WITHOUT_BIAS = [form for form in CELL_FORMS if "nobias" in form]


@pytest.mark.parametrize(
    "form, kind",
    [(form, "arbitrary") for form in WITH_BIAS]
    # Right-padded masks also run torch's kernels on packed sequences.
    + [(form, "right") for form in ("simple_tanh", "lstm", "gru_after")],
)
def test_masked_backward_sequences(form, kind, rng, float64):
    layer = make(form, rng, return_sequences=True, return_state=True, go_backwards=True)
    x = nonzero_uniform(rng, (BATCH, TIME, FEATURES))
    mask = random_mask(rng, BATCH, TIME, kind)
    check_gradients(layer, x, rng, mask=mask)


@pytest.mark.parametrize(
    "form, hoist",
    [(form, True) for form in WITHOUT_BIAS] + [("lstm", False), ("gru_after", False), ("simple_relu", False)],
)
def test_last_output_from_initial_state(form, hoist, rng, float64):
    layer = make(form, rng, hoist_inputs=hoist)
    x = nonzero_uniform(rng, (BATCH, TIME, FEATURES))
    h0 = [nonzero_uniform(rng, (BATCH, UNITS)) for _ in range(n_states(layer))]
    check_gradients(layer, x, rng, initial_state=h0)


# Layer norm runs on weights centered per gate block (`center_blocks`) with its shifts
# folded into the bias; every weight (kernels, gains, shifts, bias) must still get the
# gradient of the normalized cell. Also with the step recomputed in the backward pass
# (`remat`, JAX) and the input projection in or out of the loop.
@pytest.mark.parametrize(
    "form, hoist, remat",
    [
        ("simple_tanh", True, False),
        ("lstm", True, False),
        ("lstm", False, True),
        ("lstm_nobias", False, False),
        ("gru_after", False, True),
        ("gru_before", True, False),
    ],
)
def test_layer_norm_every_weight(form, hoist, remat, rng, float64):
    layer = make(form, rng, layer_norm=True, hoist_inputs=hoist, remat=remat, return_sequences=True)
    x = nonzero_uniform(rng, (BATCH, TIME, FEATURES))
    check_gradients(layer, x, rng)


@pytest.mark.parametrize(
    "form, options",
    [("lstm", {}), ("gru_before", {"layer_norm": True}), ("simple_tanh", {"layer_norm": True})],
)
def test_remat_changes_nothing_but_the_schedule(form, options, rng, float64):
    """`remat=True` (recompute each step in the backward pass, JAX) gives the same loss
    and gradients as storing the steps; on other backends it is ignored."""
    plain = make(form, rng, return_sequences=True, remat=False, **options)
    remat = make(form, rng, return_sequences=True, remat=True, **options)
    remat.set_weights(plain.get_weights())
    x = nonzero_uniform(rng, (BATCH, TIME, FEATURES))
    weights = [np.asarray(w, "float64") for w in plain.get_weights()]
    cotangents = [nonzero_uniform(rng, s) for s in output_shapes(plain, x.shape)]
    want = gradient_fn(plain, cotangents)(weights, x)
    got = gradient_fn(remat, cotangents)(weights, x)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-12)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-10, atol=1e-14)
    for g, w in zip(got[2], want[2]):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-14)


def _loop_plan(layer, x):
    """The loop's choices the planner makes for `layer` on `x` (inside a tf.function on
    TensorFlow, where the loop may be compiled)."""
    import keras

    from kerasrnn.ops.plan import plan_call

    layer.build(tuple(x.shape))

    def plan():
        constants = layer.cell.loop_constants(x)
        return plan_call(layer.cell, x, None, False, constants, fused=False,
                         hoist_inputs=layer.hoist_inputs, remat=layer.remat, xla=layer.xla)

    if keras.backend.backend() != "tensorflow":
        return plan()
    import tensorflow as tf

    plans = []
    tf.function(lambda: plans.append(plan()))()
    return plans[0]


def test_remat_auto_choice():
    """`remat="auto"`: on JAX on a CPU where the step is worth recomputing (measured):
    LSTM always, GRU with layer norm or zoneout, SimpleRNN with layer norm."""
    import keras

    from kerasrnn.ops.plan import LOOP_DEFAULTS, device_kind

    x = keras.ops.zeros((1, 2, FEATURES))
    allowed = LOOP_DEFAULTS[(keras.backend.backend(), device_kind(x))]["remat"] == "cell"
    cases = [
        (kerasrnn.LSTM, {}, True),
        (kerasrnn.GRU, {}, False),
        (kerasrnn.GRU, {"zoneout": 0.1}, True),
        (kerasrnn.GRU, {"layer_norm": True}, True),
        (kerasrnn.SimpleRNN, {}, False),
        (kerasrnn.SimpleRNN, {"zoneout": 0.1}, False),
        (kerasrnn.SimpleRNN, {"layer_norm": True}, True),
    ]
    jax = keras.backend.backend() == "jax"
    for layer_class, options, pays in cases:
        assert _loop_plan(layer_class(UNITS, **options), x).remat is (allowed and pays)
        assert _loop_plan(layer_class(UNITS, remat=True, **options), x).remat is jax
        assert _loop_plan(layer_class(UNITS, remat=False, **options), x).remat is False
    assert allowed is (keras.backend.backend() == "jax" and not on_accelerator(x))


def _graph_gradients(layer, x, cotangents, **call_kwargs):
    """Loss and gradients (inputs, weights) computed inside a `tf.function`, where the
    XLA-compiled loop runs (`xla=True`), and the traced graph."""
    import tensorflow as tf

    weights = [tf.constant(w) for w in layer.get_weights()]
    non_trainable = [v.value for v in layer.non_trainable_variables]

    @tf.function
    def grads(weights, x):
        with tf.GradientTape() as tape:
            tape.watch(weights)
            tape.watch(x)
            out, _ = layer.stateless_call(weights, non_trainable, x, **call_kwargs)
            out = out if isinstance(out, (list, tuple)) else [out]
            loss = sum(tf.reduce_sum(o * c) for o, c in zip(out, cotangents))
        return loss, tape.gradient(loss, [x, *weights])

    x = tf.constant(x)
    loss, gradients = grads(weights, x)
    graph = grads.get_concrete_function(weights, x).graph.as_graph_def()
    return float(loss), [g.numpy() for g in gradients], graph


def _compiled_functions(graph_def):
    return [
        f.signature.name for f in graph_def.library.function
        if f.attr["_XlaMustCompile"].b
    ]


@pytest.mark.skipif(BACKEND != "tensorflow", reason="the XLA-compiled loop is TensorFlow's")
@pytest.mark.parametrize(
    "form, options, masked",
    [
        ("simple_tanh", {}, True),
        ("lstm", {}, True),
        ("lstm", {"layer_norm": True, "use_peepholes": True}, False),
        ("lstm", {"proj_size": 2, "zoneout": 0.3, "zoneout_cell": 0.2}, True),
        ("gru_before", {"layer_norm": True, "hoist_inputs": True}, False),
        ("gru_after_nobias", {"zoneout": 0.2}, True),
        ("simple_relu", {"layer_norm": True}, False),
    ],
)
def test_xla_loop_matches_the_graph_loop(form, options, masked, rng, float64):
    """`xla=True` (TensorFlow: the loop compiled by XLA, its backward pass a compiled
    recomputation) gives the loss and every gradient of the graph-mode loop, with
    masks, `go_backwards` and final states; and it is what runs."""
    plain = make(form, rng, return_sequences=True, return_state=True, go_backwards=True, xla=False, **options)
    compiled = make(form, rng, return_sequences=True, return_state=True, go_backwards=True, xla=True, **options)
    compiled.set_weights(plain.get_weights())
    x = nonzero_uniform(rng, (BATCH, TIME, FEATURES))
    cotangents = [nonzero_uniform(rng, s) for s in output_shapes(plain, x.shape)]
    kwargs = {"mask": random_mask(rng, BATCH, TIME, "arbitrary")} if masked else {}
    want_loss, want, plain_graph = _graph_gradients(plain, x, cotangents, **kwargs)
    got_loss, got, graph = _graph_gradients(compiled, x, cotangents, **kwargs)
    assert _compiled_functions(graph), "the loop did not run compiled"
    assert not _compiled_functions(plain_graph)
    assert compiled.last_path == "kerasrnn.ops.unroll:xla"
    assert plain.last_path == "kerasrnn.ops.unroll"
    np.testing.assert_allclose(got_loss, want_loss, rtol=1e-12)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-13)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="the XLA-compiled loop is TensorFlow's")
def test_xla_loop_inside_a_compiled_training_step(rng):
    """Under Keras's `jit_compile=True` the loop is not compiled a second time, and
    training with zoneout (random masks) gives the same step either way."""
    import keras

    x = nonzero_uniform(rng, (4, 5, 3)).astype("float32")
    y = nonzero_uniform(rng, (4, 1)).astype("float32")
    updates = []
    for xla, jit in [(False, False), (True, False), (True, True)]:
        inputs = keras.Input((5, 3))
        layer = kerasrnn.LSTM(4, layer_norm=True, xla=xla, seed=7)
        model = keras.Model(inputs, keras.layers.Dense(1)(layer(inputs)))
        model.compile(optimizer="sgd", loss="mse", jit_compile=jit)
        model.set_weights([0.1 + 0.01 * np.arange(w.size, dtype="float32").reshape(w.shape) % 0.3 for w in model.get_weights()])
        before = [w.copy() for w in model.get_weights()]
        model.train_on_batch(x, y)
        updates.append([a - b for a, b in zip(model.get_weights(), before)])
        if xla and jit:
            assert layer.last_path == "kerasrnn.ops.unroll"
            assert "already compiled by XLA" in layer.last_path_reason
        elif xla:
            assert layer.last_path == "kerasrnn.ops.unroll:xla"
    layer(x)  # eagerly: the loop as it is
    assert "called eagerly" in layer.last_path_reason
    for other in updates[1:]:
        for got, want in zip(other, updates[0]):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)


def test_xla_auto_choice():
    """`xla="auto"` compiles no loop: measured in a whole training step (wall clock,
    default threads; docs/performance.md), the graph loop is faster for the plain cells
    and most options, so the compiled loop is what `xla=True` asks for."""
    import keras

    from kerasrnn.ops.plan import LOOP_DEFAULTS, device_kind

    x = keras.ops.zeros((1, 2, FEATURES))
    assert LOOP_DEFAULTS[(keras.backend.backend(), device_kind(x))]["xla"] is False
    cases = [
        (kerasrnn.LSTM, {}),
        (kerasrnn.LSTM, {"layer_norm": True}),
        (kerasrnn.LSTM, {"use_peepholes": True}),
        (kerasrnn.GRU, {"zoneout": 0.1}),
        (kerasrnn.SimpleRNN, {}),
    ]
    tf = keras.backend.backend() == "tensorflow"
    for layer_class, options in cases:
        assert _loop_plan(layer_class(UNITS, **options), x).xla is False
        assert _loop_plan(layer_class(UNITS, xla=True, **options), x).xla is tf
        assert _loop_plan(layer_class(UNITS, xla=False, **options), x).xla is False
