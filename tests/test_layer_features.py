"""Layer features as `keras.layers.LSTM` has them: dropout, regularizers, constraints,
mixed precision, training with `fit`, stateful layers, configs and initializers."""

import inspect

import keras
import numpy as np
import pytest
from _util import (
    BATCH,
    CELL_FORMS,
    FEATURES,
    TIME,
    UNITS,
    n_states,
    nonzero_uniform,
    random_weights,
    reference_step,
)
from conftest import to_numpy

import kerasrnn
from kerasrnn.testing import reference

BACKEND = keras.backend.backend()


def built(layer, input_dim=FEATURES, batch=None):
    layer.build((batch, TIME, input_dim))
    return layer


# ------------------------------------------------------------------------ dropout
def test_dropout_one_mask_per_sequence_linear():
    """With `h_t = x_t W_x + (h_{t-1} ⊙ m_r) W_h`, `W_x = W_h = I` and `x_t = 1`, a unit
    whose recurrent mask is 0 stays at 1; a kept one grows as 1 + s + s² + … (s = 1/(1−p)).
    A mask redrawn per step would mix the two. The input mask zeroes whole units of
    `x_t` at every step."""
    units = 64
    layer = built(
        kerasrnn.SimpleRNN(
            units, activation="linear", use_bias=False, kernel_initializer="identity",
            recurrent_initializer="identity", dropout=0.25, recurrent_dropout=0.5, seed=7,
            return_sequences=True,
        ),
        input_dim=units,
    )
    h = to_numpy(layer(np.ones((BATCH, TIME, units), "float32"), training=True))
    x_mask = h[:, 0] != 0  # step 1: h_1 = x_1 ⊙ m_x
    np.testing.assert_allclose(h[:, 0][x_mask], 1 / 0.75, rtol=1e-6)
    assert 0.5 < x_mask.mean() < 0.95
    kept = h[:, 1] != h[:, 0]  # recurrent mask kept the unit
    assert 0.25 < kept.mean() < 0.75
    x = np.where(x_mask, 1 / 0.75, 0.0)[:, None, :]
    s = np.where(kept, 2.0, 0.0)[:, None, :]  # 1 / (1 - 0.5)
    expected = np.cumsum(x * s ** np.arange(TIME)[None, :, None], axis=1)
    np.testing.assert_allclose(h, expected, rtol=1e-5)
    # Different rows of the batch draw different masks.
    assert len({tuple(row) for row in x_mask}) > 1 and len({tuple(row) for row in kept}) > 1


DROPOUT_FORMS = ["simple_tanh", "lstm", "gru_after", "gru_before"]


@pytest.mark.parametrize("form", DROPOUT_FORMS)
@pytest.mark.parametrize(
    "rates, hoist", [((0.3, 0.0), True), ((0.3, 0.4), False)],
    ids=["input_hoisted", "input_recurrent_in_loop"],
)
def test_dropout_masks_match_reference(form, rates, hoist, rng):
    """Training output = the reference run on `x ⊙ m_x` with `h_{t-1} ⊙ m_h` in every
    recurrent product, where `(m_x, m_h)` are the masks that `loop_constants` draws
    with the same seed (one per sequence). Input dropout alone runs the torch kernel."""
    layer_class, kwargs = CELL_FORMS[form]
    dropout, recurrent_dropout = rates

    def make():
        layer = layer_class(
            UNITS, dropout=dropout, recurrent_dropout=recurrent_dropout, seed=3,
            return_sequences=True, hoist_inputs=hoist, **kwargs,
        )
        return built(layer)

    layer, twin = make(), make()
    weights = random_weights(layer, rng)
    twin.set_weights(layer.get_weights())
    x = nonzero_uniform(rng, (BATCH, TIME, FEATURES)).astype("float32")
    got = to_numpy(layer(x, training=True))
    constants = twin.cell.loop_constants(x, training=True)
    m_x = to_numpy(constants["input_mask"])
    np.testing.assert_allclose(np.unique(m_x), [0.0, 1 / (1 - dropout)], rtol=1e-6)
    m_h = np.ones((BATCH, UNITS))
    if recurrent_dropout:
        m_h = to_numpy(constants["recurrent_mask"])
        np.testing.assert_allclose(np.unique(m_h), [0.0, 1 / (1 - recurrent_dropout)], rtol=1e-6)
    zeros = [np.zeros((1, UNITS))] * n_states(layer)
    for b in range(BATCH):
        # (h ⊙ m) W_h = h (diag(m) W_h): scale the recurrent kernel's rows per row of the batch.
        row_weights = list(weights)
        row_weights[1] = m_h[b][:, None] * weights[1]
        want, _ = reference.run_sequence(reference_step(layer, row_weights), x[b : b + 1] * m_x[b], zeros)
        np.testing.assert_allclose(got[b], want[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("form", DROPOUT_FORMS)
def test_dropout_inactive_at_inference_and_seeded(form, rng):
    layer_class, kwargs = CELL_FORMS[form]

    def make(seed, **rates):
        layer = built(layer_class(UNITS, seed=seed, **rates, **kwargs))
        layer.set_weights(weights)
        return layer

    plain = built(layer_class(UNITS, **kwargs))
    weights = [w.astype("float32") for w in random_weights(plain, rng)]
    rates = {"dropout": 0.4, "recurrent_dropout": 0.4}
    a, b, c = make(1, **rates), make(1, **rates), make(2, **rates)
    x = nonzero_uniform(rng, (BATCH, TIME, FEATURES)).astype("float32")
    want = to_numpy(plain(x))
    np.testing.assert_allclose(to_numpy(a(x)), want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(to_numpy(a(x, training=False)), want, rtol=1e-6, atol=1e-6)
    train_a, train_b, train_c = (to_numpy(layer(x, training=True)) for layer in (a, b, c))
    np.testing.assert_allclose(train_a, train_b, rtol=1e-6, atol=1e-6)  # same seed
    assert np.abs(train_a - want).max() > 1e-3  # dropout is active
    assert np.abs(train_a - train_c).max() > 1e-3  # another seed, other masks
    # A second training call draws new masks.
    assert np.abs(to_numpy(a(x, training=True)) - train_a).max() > 1e-3


# --------------------------------------------------------- regularizers, constraints
@pytest.mark.parametrize("form", ["simple_tanh", "lstm", "gru_after"])
def test_regularizers_add_losses(form, rng):
    layer_class, kwargs = CELL_FORMS[form]
    layer = built(
        layer_class(
            UNITS, kernel_regularizer=keras.regularizers.L2(0.1),
            recurrent_regularizer=keras.regularizers.L1(0.2),
            bias_regularizer=keras.regularizers.L2(0.3), **kwargs,
        )
    )
    kernel, recurrent, bias = random_weights(layer, rng)
    layer(nonzero_uniform(rng, (BATCH, TIME, FEATURES)).astype("float32"))
    want = 0.1 * np.sum(kernel**2) + 0.2 * np.sum(np.abs(recurrent)) + 0.3 * np.sum(bias**2)
    got = sum(float(to_numpy(loss)) for loss in layer.losses)
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_constraints_applied_by_fit(rng):
    layer = kerasrnn.LSTM(
        UNITS, kernel_constraint=keras.constraints.NonNeg(),
        recurrent_constraint=keras.constraints.MaxNorm(0.5, axis=0),
        bias_constraint=keras.constraints.NonNeg(),
    )
    model = keras.Sequential([keras.Input((TIME, FEATURES)), layer, keras.layers.Dense(1)])
    random_weights(layer, rng, scale=1.0)  # negative entries, large columns
    assert (layer.get_weights()[0] < 0).any()
    model.compile(keras.optimizers.SGD(0.01), "mse")
    x = nonzero_uniform(rng, (8, TIME, FEATURES)).astype("float32")
    model.fit(x, np.ones((8, 1), "float32"), epochs=1, batch_size=8, verbose=0)
    kernel, recurrent, bias = layer.get_weights()
    assert (kernel >= 0).all() and (bias >= 0).all()
    assert (kernel > 0).any()
    assert np.sqrt((recurrent**2).sum(axis=0)).max() <= 0.5 + 1e-6


# ------------------------------------------------------------------ mixed precision
@pytest.mark.parametrize("policy, tol", [("mixed_float16", 5e-3), ("mixed_bfloat16", 3e-2)])
@pytest.mark.parametrize("form", ["simple_tanh", "lstm", "gru_after", "gru_before"])
def test_mixed_precision(form, policy, tol, rng):
    layer_class, kwargs = CELL_FORMS[form]
    reference_layer = built(layer_class(UNITS, return_sequences=True, return_state=True, **kwargs))
    weights = random_weights(reference_layer, rng, scale=0.5)
    x = nonzero_uniform(rng, (BATCH, TIME, FEATURES)).astype("float32")
    want = reference_layer(x)
    keras.config.set_dtype_policy(policy)  # the conftest fixture restores float32
    layer = built(layer_class(UNITS, return_sequences=True, return_state=True, **kwargs))
    layer.set_weights([w.astype("float32") for w in weights])
    assert all(keras.backend.standardize_dtype(v.dtype) == "float32" for v in layer.weights)
    got = layer(x)
    compute = policy.split("_")[1]
    for g, w in zip(got, want):
        assert keras.backend.standardize_dtype(g.dtype) == compute
        np.testing.assert_allclose(to_numpy(g).astype("float32"), to_numpy(w), atol=tol)


@pytest.mark.parametrize("cell_dtype, layer_dtype, tol", [
    ("float64", None, 1e-6), ("float32", "float64", 1e-6), ("float32", "mixed_float16", 5e-3)])
@pytest.mark.parametrize("cell_class", [kerasrnn.GRUCell, kerasrnn.LSTMCell, kerasrnn.SimpleRNNCell])
def test_a_cell_of_another_dtype_than_its_rnn(cell_class, cell_dtype, layer_dtype, tol, rng):
    """`RNN(GRUCell(4, dtype="float64"))` failed on torch and TensorFlow (the loop got
    the layer's float32 inputs and states for the cell's float64 weights), and so did
    `DeepRNN([GRUCell(4, dtype="float64")], dtype="float64")`. As keras.layers.RNN: the
    cell computes in its own dtype, the output is in the layer's."""
    x = nonzero_uniform(rng, (BATCH, TIME, FEATURES)).astype("float32")
    plain = kerasrnn.layers.RNN(cell_class(UNITS), return_sequences=True, return_state=True)
    plain.build((None, TIME, FEATURES))
    weights = random_weights(plain, rng, scale=0.5)
    want = plain(x)
    extra = {} if layer_dtype is None else {"dtype": layer_dtype}
    layer = kerasrnn.layers.RNN(cell_class(UNITS, dtype=cell_dtype), return_sequences=True, return_state=True,
                                **extra)
    layer.build((None, TIME, FEATURES))
    layer.set_weights(weights)
    keras_cell = {kerasrnn.GRUCell: keras.layers.GRUCell, kerasrnn.LSTMCell: keras.layers.LSTMCell,
                  kerasrnn.SimpleRNNCell: keras.layers.SimpleRNNCell}[cell_class]
    keras_layer = keras.layers.RNN(keras_cell(UNITS, dtype=cell_dtype), return_sequences=True, **extra)
    expected_dtype = keras.backend.standardize_dtype(keras_layer(x).dtype)
    got = layer(x)
    for g, w in zip(got, want):
        assert keras.backend.standardize_dtype(g.dtype) == expected_dtype
        np.testing.assert_allclose(to_numpy(g).astype("float32"), to_numpy(w), atol=tol)
    deep = kerasrnn.DeepRNN([cell_class(UNITS, dtype=cell_dtype)], return_sequences=True,
                            dtype=cell_dtype)
    deep.build((None, TIME, FEATURES))
    deep.set_weights(weights)
    output = deep(x)
    assert deep.rnn_layers[0].dtype_policy.name == cell_dtype
    assert keras.backend.standardize_dtype(output.dtype) == keras.backend.standardize_dtype(
        keras.ops.zeros((), cell_dtype).dtype)  # float32 on JAX without x64
    np.testing.assert_allclose(to_numpy(output).astype("float32"), to_numpy(want[0]), atol=tol)


MIXED_FORMS = {
    **{form: CELL_FORMS[form] for form in ("simple_tanh", "lstm", "gru_after", "gru_before")},
    "simple_ln": (kerasrnn.SimpleRNN, {"layer_norm": True}),
    "lstm_ln_peepholes_proj": (
        kerasrnn.LSTM, {"layer_norm": True, "use_peepholes": True, "proj_size": 3}
    ),
    "gru_after_ln": (kerasrnn.GRU, {"layer_norm": True}),
    "gru_before_ln": (kerasrnn.GRU, {"reset_after": False, "layer_norm": True}),
}


@pytest.mark.parametrize("form", sorted(MIXED_FORMS))
def test_mixed_precision_weights_stay_float32_until_the_step(form, rng):
    """Under mixed_float16 the loop's weights, and what `loop_constants` makes of them
    (centered, split, summed with a norm's shift), are held in float32 and read in
    float16: cast in the step, so that each step's gradient reaches float32."""
    layer_class, kwargs = MIXED_FORMS[form]
    keras.config.set_dtype_policy("mixed_float16")  # the conftest fixture restores float32
    layer = built(layer_class(UNITS, return_sequences=True, fused=False, **kwargs))
    seen = {}  # key -> (stored dtypes, read dtypes), taken while the call runs (traced)
    loop_constants = layer.cell.loop_constants

    def dtypes(value):
        values = value if isinstance(value, tuple) else (value,)
        return [keras.backend.standardize_dtype(v.dtype) for v in values if hasattr(v, "dtype")]

    def spy(*args, **kw):
        constants = loop_constants(*args, **kw)
        for key in constants:
            seen[key] = (dtypes(constants.stored(key)), dtypes(constants[key]))
        return constants

    layer.cell.loop_constants = spy
    out = layer(nonzero_uniform(rng, (BATCH, TIME, FEATURES)).astype("float32"))
    assert keras.backend.standardize_dtype(out.dtype) == "float16"
    weights = {key: v for key, v in seen.items() if v[0]}
    assert {"kernel", "recurrent_kernel"} <= set(weights)
    for key, (stored, read) in weights.items():
        assert set(stored) == {"float32"} and set(read) == {"float16"}, key


def _mixed_gradients(layer, x):
    """The gradients of `Σ outputs²` with respect to `layer.trainable_variables`
    (float32 values), through `layer(x)` (so under the layer's autocast)."""
    variables = layer.trainable_variables

    def loss(outputs):
        return keras.ops.sum(keras.ops.cast(outputs, "float32") ** 2)

    if BACKEND == "jax":
        import jax

        def f(values):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return loss(layer(x))

        grads = jax.grad(f)([v.value for v in variables])
    elif BACKEND == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            value = loss(layer(x))
        grads = tape.gradient(value, variables)
    else:
        import torch

        grads = torch.autograd.grad(loss(layer(x)), [v.value for v in variables])
    return [to_numpy(g).astype("float64") for g in grads]


@pytest.mark.parametrize("form", ["simple_tanh", "lstm", "gru_after", "gru_before"])
def test_mixed_precision_gradient_sums_over_time_in_float32(form, rng):
    """Over 200 steps under mixed_float16 the recurrent kernel's gradient is as close
    to float32's as keras.layers' (error/max ≤ 0.0006 here on the three backends; the
    three cells summed it in float16 when they cast their weights once per sequence,
    0.0010 to 0.0037)."""
    layer_class, kwargs = CELL_FORMS[form]
    time, units = 200, 32
    x = rng.normal(size=(8, time, 16)).astype("float32")
    layer = layer_class(units, return_sequences=True, fused=False, **kwargs)
    layer.build((None, time, 16))
    weights = layer.get_weights()
    want = _mixed_gradients(layer, x)
    keras.config.set_dtype_policy("mixed_float16")  # the conftest fixture restores float32
    mixed = layer_class(units, return_sequences=True, fused=False, **kwargs)
    mixed.build((None, time, 16))
    mixed.set_weights(weights)
    got = _mixed_gradients(mixed, x)
    names = [v.name for v in mixed.trainable_variables]
    g, w = got[names.index("recurrent_kernel")], want[names.index("recurrent_kernel")]
    assert np.max(np.abs(g - w)) / np.max(np.abs(w)) < 8e-4


# ---------------------------------------------------------------------------- fit
def test_fit_trains_every_cell(rng):
    """One model with the three cells stacked (and a mask from Embedding): 25 steps of
    `fit` halve the loss and change every weight."""
    tokens = rng.integers(1, 9, (16, TIME))
    tokens[::2, 3:] = 0
    # A learnable target: the mean of the valid tokens, centred.
    targets = (np.nanmean(np.where(tokens > 0, tokens, np.nan), axis=1, keepdims=True) - 4.5) / 2
    targets = targets.astype("float32")
    rnns = [
        kerasrnn.LSTM(UNITS, return_sequences=True),
        kerasrnn.GRU(UNITS, reset_after=False, return_sequences=True, dropout=0.1),
        kerasrnn.SimpleRNN(UNITS, recurrent_dropout=0.1),
    ]
    model = keras.Sequential(
        [keras.Input((TIME,), dtype="int32"), keras.layers.Embedding(9, FEATURES, mask_zero=True),
         *rnns, keras.layers.Dense(1)]
    )
    model.compile(keras.optimizers.Adam(0.02), "mse")
    before = [layer.get_weights() for layer in rnns]
    loss_before = model.evaluate(tokens, targets, verbose=0)
    model.fit(tokens, targets, epochs=25, batch_size=16, verbose=0)
    assert model.evaluate(tokens, targets, verbose=0) < 0.5 * loss_before
    for layer, old in zip(rnns, before):
        for w_old, w_new in zip(old, layer.get_weights()):
            assert np.abs(w_new - w_old).max() > 1e-4


# ----------------------------------------------------------------------- stateful
def test_stateful_needs_fixed_batch_size():
    layer = kerasrnn.LSTM(UNITS, stateful=True)
    with pytest.raises(ValueError, match="stateful=True.*batch_size"):
        keras.Sequential([keras.Input((TIME, FEATURES)), layer])


def test_stateful_model_carries_state_in_compiled_predict(rng):
    """`predict` (compiled on every backend) carries the states from batch to batch,
    and `reset_states` starts over; the first batch equals a stateless run."""
    rnn = kerasrnn.GRU(UNITS, stateful=True)
    model = keras.Sequential([keras.Input(batch_shape=(BATCH, TIME, FEATURES)), rnn])
    stateless = built(kerasrnn.GRU(UNITS))
    stateless.set_weights(rnn.cell.get_weights())
    x = nonzero_uniform(rng, (BATCH, TIME, FEATURES)).astype("float32")
    first = model.predict(x, batch_size=BATCH, verbose=0)
    np.testing.assert_allclose(first, to_numpy(stateless(x)), rtol=1e-5, atol=1e-6)
    second = model.predict(x, batch_size=BATCH, verbose=0)
    assert np.abs(second - first).max() > 1e-3
    h = [to_numpy(s) for s in rnn.states]
    np.testing.assert_allclose(h[0], second, rtol=1e-6)
    np.testing.assert_allclose(second, to_numpy(stateless(x, initial_state=[first])), rtol=1e-5, atol=1e-6)
    rnn.reset_states()
    assert not np.any(to_numpy(rnn.states[0]))
    np.testing.assert_allclose(model.predict(x, batch_size=BATCH, verbose=0), first, rtol=1e-6)


def test_stateful_states_move_in_compiled_fit(rng):
    # The states are no weights, but JAX's compiled train step must still carry them
    # (through `variables`): after `fit` on one batch they are an eager call's.
    x = nonzero_uniform(rng, (BATCH, TIME, FEATURES)).astype("float32")
    rnn = kerasrnn.GRU(UNITS, stateful=True)
    model = keras.Sequential([keras.Input(batch_shape=(BATCH, TIME, FEATURES)), rnn, keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.0), "mse")
    model.fit(x, np.zeros((BATCH, 1), "float32"), batch_size=BATCH, epochs=1, verbose=0, shuffle=False)
    after_fit = to_numpy(rnn.states[0]).copy()
    assert np.abs(after_fit).max() > 1e-3
    rnn.reset_states()
    model(x)
    np.testing.assert_allclose(after_fit, to_numpy(rnn.states[0]), rtol=1e-5, atol=1e-7)


def _stateful_pair(layer_class, wrap=None):
    """A stateless model and its `stateful=True` twin (same architecture)."""
    def make(stateful):
        rnn = layer_class(UNITS, stateful=stateful, return_sequences=True)
        rnn = wrap(rnn) if wrap else rnn
        return keras.Sequential([keras.Input(batch_shape=(BATCH, TIME, FEATURES)), rnn, keras.layers.Dense(2)])
    return make(False), make(True)


@pytest.mark.parametrize("wrap", [None, keras.layers.Bidirectional], ids=["plain", "bidirectional"])
@pytest.mark.parametrize("layer_class", [kerasrnn.LSTM, kerasrnn.GRU], ids=["lstm", "gru"])
def test_weights_move_between_a_stateless_model_and_its_stateful_twin(layer_class, wrap, rng, tmp_path):
    # As with keras.layers: the states are no weights, so get_weights/set_weights and
    # weight files match a stateless twin's (they held 2 more weights per layer here).
    stateless, stateful = _stateful_pair(layer_class, wrap)
    for model in (stateless, stateful):
        model.set_weights([rng.normal(scale=0.3, size=w.shape).astype("float32") for w in model.get_weights()])
    x = nonzero_uniform(rng, (BATCH, TIME, FEATURES)).astype("float32")
    assert len(stateful.get_weights()) == len(stateless.get_weights())
    stateful.set_weights(stateless.get_weights())
    np.testing.assert_allclose(to_numpy(stateful(x)), to_numpy(stateless(x)), rtol=1e-5, atol=1e-6)
    stateless.set_weights(stateful.get_weights())
    wrapped = stateful.layers[0]
    if wrap:
        wrapped.set_weights(stateless.layers[0].get_weights())  # the wrapper's own set_weights
    for source, target in ((stateless, stateful), (stateful, stateless)):
        path = str(tmp_path / f"{target.layers[0].name}.weights.h5")
        source.save_weights(path)
        target.set_weights([np.zeros_like(w) for w in target.get_weights()])
        target.load_weights(path)
        for a, b in zip(target.get_weights(), source.get_weights()):
            np.testing.assert_array_equal(a, b)
    keras_twin = keras.Sequential([
        keras.Input(batch_shape=(BATCH, TIME, FEATURES)),
        (wrap or (lambda r: r))(getattr(keras.layers, layer_class.__name__)(UNITS, stateful=True, return_sequences=True)),
        keras.layers.Dense(2),
    ])
    assert len(keras_twin.get_weights()) == len(stateful.get_weights())
    keras_twin.set_weights(stateful.get_weights())


def test_a_stateful_layer_keeps_its_states_out_of_its_weights_and_in_its_variables(rng):
    # JAX's compiled steps carry `variables` (non_trainable_variables), so the states
    # stay there; `weights` is what keras.layers lists.
    layer = kerasrnn.LSTM(UNITS, stateful=True)
    layer.build((BATCH, TIME, FEATURES))
    assert len(layer.weights) == 3 and len(layer.states) == 2
    ids = {id(v) for v in layer.non_trainable_variables}
    assert all(id(s) in ids for s in layer.states)
    assert not any(id(s) in {id(w) for w in layer.weights} for s in layer.states)


@pytest.mark.parametrize("policy", ["float32", "mixed_float16"])
def test_get_initial_state_as_keras_layers(policy):
    keras.config.set_dtype_policy(policy)  # the conftest fixture restores float32
    for name in ("SimpleRNN", "LSTM", "GRU"):
        ours, theirs = getattr(kerasrnn, name)(UNITS), getattr(keras.layers, name)(UNITS)
        got, want = ours.get_initial_state(BATCH), theirs.get_initial_state(BATCH)
        assert [(tuple(s.shape), keras.backend.standardize_dtype(s.dtype)) for s in got] == [
            (tuple(s.shape), keras.backend.standardize_dtype(s.dtype)) for s in want
        ]
        assert not any(to_numpy(s).any() for s in got)
    h, c = kerasrnn.LSTM(UNITS, proj_size=2).get_initial_state(BATCH)
    assert tuple(h.shape) == (BATCH, 2) and tuple(c.shape) == (BATCH, UNITS)


def test_stateful_states_update_under_mixed_precision(rng):
    # On torch the states were autocast: the assignment went to a float16 copy and the
    # next batch started from zeros again.
    x = nonzero_uniform(rng, (BATCH, TIME, FEATURES)).astype("float32")
    full = kerasrnn.GRU(UNITS, stateful=True)
    full.build((BATCH, TIME, FEATURES))
    weights = random_weights(full, rng, scale=0.5)
    expected = [to_numpy(full(x)) for _ in range(2)]
    keras.config.set_dtype_policy("mixed_float16")  # the conftest fixture restores float32
    half = kerasrnn.GRU(UNITS, stateful=True)
    half.build((BATCH, TIME, FEATURES))
    half.set_weights([w.astype("float32") for w in weights])
    got = [to_numpy(half(x)).astype("float32") for _ in range(2)]
    assert np.abs(got[1] - got[0]).max() > 1e-2
    np.testing.assert_allclose(got, expected, atol=5e-3)
    np.testing.assert_allclose(to_numpy(half.states[0]), expected[1], atol=5e-3)


# -------------------------------------------------------------------------- config
NON_DEFAULT = {
    "units": 7, "activation": "softsign", "use_bias": False,
    "kernel_initializer": "he_normal", "recurrent_initializer": "glorot_normal",
    "bias_initializer": "ones", "kernel_regularizer": "l2", "recurrent_regularizer": "l1",
    "bias_regularizer": keras.regularizers.L1L2(0.01, 0.02), "kernel_constraint": "non_neg",
    "recurrent_constraint": "max_norm", "bias_constraint": "unit_norm", "dropout": 0.25,
    "recurrent_dropout": 0.125, "seed": 42,
    "return_sequences": True, "return_state": True, "go_backwards": True, "stateful": True,
    "zero_output_for_mask": True, "fused": False, "hoist_inputs": True, "remat": True, "xla": False,
    "name": "custom_name",
}
#: Options of the cell extensions (layer norm, zoneout, peepholes, projection), used for
#: the classes that have them, so that this test keeps covering every argument.
EXTENSIONS = {
    "layer_norm": True, "layer_norm_epsilon": 0.01, "zoneout": 0.1, "use_peepholes": True, "proj_size": 3,
    "zoneout_cell": 0.2,
}
LAYER_SPECIFIC = {
    kerasrnn.SimpleRNN: {},
    kerasrnn.IRNN: {"gain": 0.5, "input_stddev": 0.01},
    kerasrnn.LSTM: {"recurrent_activation": "hard_sigmoid", "unit_forget_bias": False, "implementation": 1},
    kerasrnn.GRU: {"recurrent_activation": "hard_sigmoid", "reset_after": False, "implementation": 1},
}


def _arguments(layer_class):
    names = set()
    for klass in (layer_class, layer_class.cell_class, kerasrnn.RNN, kerasrnn.RecurrentCell):
        for name, p in inspect.signature(klass.__init__).parameters.items():
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and name not in ("self", "cell"):
                names.add(name)
    return names


@pytest.mark.parametrize("layer_class", LAYER_SPECIFIC, ids=lambda c: c.__name__)
def test_config_round_trips_every_argument(layer_class):
    names = _arguments(layer_class)
    extensions = {k: v for k, v in EXTENSIONS.items() if k in names}
    arguments = {**NON_DEFAULT, **extensions, **LAYER_SPECIFIC[layer_class]}
    # Every __init__ argument of the layer, its cell and RNN has a non-default here.
    assert names <= set(arguments), names - set(arguments)
    layer = layer_class(**arguments)
    config = layer.get_config()
    clone = layer_class.from_config(config)
    assert clone.get_config() == config
    for name, value in arguments.items():
        got = getattr(clone, name)
        if name in ("activation", "recurrent_activation"):
            assert got is keras.activations.get(value)
        elif "initializer" in name or "regularizer" in name or "constraint" in name:
            original = getattr(layer, name)
            assert type(got) is type(original) and got.get_config() == original.get_config()
        else:
            assert got == value, name
    # Through the generic serializer too (what Bidirectional and .keras files use).
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(again) is layer_class and again.get_config() == config


@pytest.mark.parametrize("cell_class, kwargs", [
    (kerasrnn.SimpleRNNCell, {"activation": "relu"}),
    (kerasrnn.LSTMCell, {"unit_forget_bias": False}),
    (kerasrnn.GRUCell, {"reset_after": False}),
], ids=["simple", "lstm", "gru"])
def test_rnn_with_cell_config_round_trip(cell_class, kwargs, rng):
    layer = kerasrnn.RNN(cell_class(4, dropout=0.5, seed=1, **kwargs), go_backwards=True, fused=False)
    layer.build((None, TIME, FEATURES))
    random_weights(layer, rng)
    clone = kerasrnn.RNN.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    clone.build((None, TIME, FEATURES))
    clone.set_weights(layer.get_weights())
    x = nonzero_uniform(rng, (BATCH, TIME, FEATURES)).astype("float32")
    np.testing.assert_allclose(to_numpy(clone(x)), to_numpy(layer(x)), rtol=1e-6)


# ---------------------------------------------------------------------- initializers
def test_irnn_initialization():
    layer = built(kerasrnn.IRNN(50, gain=0.5, input_stddev=0.01), input_dim=400)
    kernel, recurrent, bias = layer.get_weights()
    np.testing.assert_array_equal(recurrent, 0.5 * np.eye(50))
    np.testing.assert_array_equal(bias, 0.0)
    assert abs(kernel.std() - 0.01) < 0.0005 and abs(kernel.mean()) < 0.0005
    assert layer.cell.activation is keras.activations.relu
    # With no input, the state is copied (scaled by the gain) from step to step.
    h0 = np.abs(nonzero_uniform(np.random.default_rng(1), (2, 50))).astype("float32")
    out = layer(np.zeros((2, TIME, 400), "float32"), initial_state=[h0])
    np.testing.assert_allclose(to_numpy(out), h0 * 0.5**TIME, rtol=1e-5)


def _recurrent_diagonal(layer):
    layer.build((None, TIME, FEATURES))
    return np.diag(to_numpy(layer.cell.recurrent_kernel)).tolist()


def test_irnn_gain_survives_its_config():
    # Keras's Identity serializes as `{}`, so every copy made from a config (from_config,
    # the backward half of Bidirectional, DeepRNN.repeat, clone_model) was gain 1.
    layer = kerasrnn.IRNN(2, gain=0.5)
    assert _recurrent_diagonal(kerasrnn.IRNN.from_config(layer.get_config())) == [0.5, 0.5]
    backward = keras.layers.Bidirectional(kerasrnn.IRNN(2, gain=0.5)).backward_layer
    assert _recurrent_diagonal(backward) == [0.5, 0.5]
    deep = kerasrnn.layers.DeepRNN.repeat(kerasrnn.IRNN(2, gain=0.25), 2)
    deep.build((None, TIME, FEATURES))
    assert [np.diag(to_numpy(l.cell.recurrent_kernel)).tolist() for l in deep.rnn_layers] == [[0.25] * 2] * 2
    initializer = kerasrnn.initializers.Identity(gain=0.5)
    assert initializer.get_config() == {"gain": 0.5}
    again = keras.initializers.deserialize(keras.initializers.serialize(initializer))
    assert type(again) is kerasrnn.initializers.Identity and again.gain == 0.5
    # A config written before the fix (Keras's Identity, no gain) takes the layer's gain.
    old = layer.get_config()
    old["recurrent_initializer"] = keras.initializers.serialize(keras.initializers.Identity(0.5))
    assert _recurrent_diagonal(kerasrnn.IRNN.from_config(old)) == [0.5, 0.5]
    # A Keras Identity given to any layer keeps its gain too.
    simple = kerasrnn.SimpleRNN(2, recurrent_initializer=keras.initializers.Identity(0.5))
    assert _recurrent_diagonal(kerasrnn.SimpleRNN.from_config(simple.get_config())) == [0.5, 0.5]
    # An initializer the user chose still wins over the recipe's.
    chosen = kerasrnn.IRNN(2, gain=0.5, recurrent_initializer=kerasrnn.initializers.Identity(2.0))
    assert _recurrent_diagonal(kerasrnn.IRNN.from_config(chosen.get_config())) == [2.0, 2.0]


@pytest.mark.parametrize("unit_forget_bias", [True, False])
def test_lstm_forget_bias(unit_forget_bias):
    layer = built(kerasrnn.LSTM(UNITS, unit_forget_bias=unit_forget_bias))
    bias = layer.get_weights()[2]
    forget = 1.0 if unit_forget_bias else 0.0
    np.testing.assert_array_equal(bias, np.repeat([0.0, forget, 0.0, 0.0], UNITS))
    theirs = keras.layers.LSTM(UNITS, unit_forget_bias=unit_forget_bias)
    theirs.build((None, TIME, FEATURES))
    np.testing.assert_array_equal(bias, theirs.get_weights()[2])


def test_forget_gate_bias_of_a_reset_after_gru():
    """A bias of two rows (the reset-after GRU's input and recurrent biases) keeps its
    shape, with the forget block in the first row: it was flattened to the last axis,
    so the GRU got a `(3·units,)` bias (torch failed at the call, `set_weights` from a
    plain GRU everywhere)."""
    init = kerasrnn.initializers.ForgetGateBias(gates=3, forget_index=0, forget_bias=2.0)
    value = to_numpy(init((2, 3 * UNITS)))
    want = np.zeros((2, 3 * UNITS))
    want[0, :UNITS] = 2.0
    np.testing.assert_array_equal(value, want)
    random = kerasrnn.initializers.ForgetGateBias(keras.initializers.RandomNormal(seed=1), gates=3)
    value = to_numpy(random((2, 3, 3 * UNITS)))
    assert value.shape == (2, 3, 3 * UNITS)
    np.testing.assert_array_equal(value[0, 0, UNITS : 2 * UNITS], 1.0)
    assert len(np.unique(value[1:])) == value[1:].size  # the base's draws elsewhere
    # The one-axis bias (LSTM) is what it was.
    lstm = kerasrnn.initializers.ForgetGateBias(keras.initializers.RandomNormal(seed=3))
    np.testing.assert_array_equal(
        to_numpy(lstm((4 * UNITS,))).reshape(4, UNITS)[[0, 2, 3]],
        to_numpy(keras.initializers.RandomNormal(seed=3)((4 * UNITS,))).reshape(4, UNITS)[[0, 2, 3]],
    )
    gru = built(kerasrnn.GRU(UNITS, bias_initializer=init))
    plain = built(kerasrnn.GRU(UNITS))
    assert [w.shape for w in gru.get_weights()] == [w.shape for w in plain.get_weights()]
    np.testing.assert_array_equal(gru.get_weights()[2], want)
    x = nonzero_uniform(np.random.default_rng(0), (BATCH, TIME, FEATURES)).astype("float32")
    assert tuple(gru(x).shape) == (BATCH, UNITS)
    gru.set_weights(plain.get_weights())


@pytest.mark.parametrize("seed", [1, None])
def test_forget_gate_bias_draws_each_gate_its_own_random_bias(seed):
    """With a random base (`bias_initializer=RandomNormal(...)`), the input, cell and
    output gates got identical biases: the base was called once per gate, and a seeded
    (or Keras's per-instance seeded) initializer returns the same values at every call."""
    layer = built(kerasrnn.LSTM(UNITS, bias_initializer=keras.initializers.RandomNormal(stddev=1.0, seed=seed)))
    i, f, c, o = np.split(layer.get_weights()[2], 4)
    np.testing.assert_array_equal(f, np.ones(UNITS))
    assert not np.allclose(i, c) and not np.allclose(i, o) and not np.allclose(c, o)
    assert 0.3 < np.concatenate([i, c, o]).std() < 3  # the base's draws, not a constant


def test_default_initializers_follow_the_seed():
    """Glorot-uniform input kernel, orthogonal recurrent kernel (orthonormal rows), zero biases."""
    layer = built(kerasrnn.GRU(UNITS), input_dim=40)
    kernel, recurrent, bias = layer.get_weights()
    limit = np.sqrt(6 / (40 + 3 * UNITS))
    assert np.abs(kernel).max() <= limit and np.abs(kernel).max() > 0.8 * limit
    np.testing.assert_allclose(recurrent @ recurrent.T, np.eye(UNITS), atol=1e-5)
    np.testing.assert_array_equal(bias, 0.0)
