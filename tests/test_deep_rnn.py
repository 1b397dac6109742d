"""DeepRNN: stacked layers against the composition of NumPy references, residual and
bidirectional layers, non-recurrent dropout, masks, the torch multi-layer kernel."""

import keras
import numpy as np
import pytest
from conftest import BACKEND, fused_tolerance, to_numpy
from extension_utils import (
    GRAD_DTYPE,
    check_gradients,
    numpy,
    random_weights,
    save_and_load,
    weighted_sum,
)

import kerasrnn
from kerasrnn.testing import reference as ref

B, T, I, U = 3, 6, 5, 4


def _reference_step(cell, w):
    if isinstance(cell, kerasrnn.LSTMCell):
        return lambda x, s: ref.lstm_step(x, s, w["kernel"], w["recurrent_kernel"], w["bias"])
    if isinstance(cell, kerasrnn.GRUCell):
        return lambda x, s: ref.gru_step(x, s, w["kernel"], w["recurrent_kernel"], w["bias"], cell.reset_after)
    return lambda x, s: ref.simple_rnn_step(x, s, w["kernel"], w["recurrent_kernel"], w["bias"])


def _randomize(deep, rng):
    """Random weights for every direction of every layer; returns, per layer, the
    `(reference step, state sizes)` of each direction (forward first)."""
    steps = []
    for layer in deep.rnn_layers:
        directions = [layer.forward_layer, layer.backward_layer] if hasattr(layer, "forward_layer") else [layer]
        steps.append([(_reference_step(d.cell, random_weights(d.cell, rng)), d.state_size) for d in directions])
    return steps


def _reference_stack(steps, x, mask=None, residual=False, merge="concat"):
    """The stack's equations on NumPy: returns (top sequence, flat final states)."""
    states = []
    for i, directions in enumerate(steps):
        outputs = []
        for d, (step, sizes) in enumerate(directions):
            init = [np.zeros((x.shape[0], s)) for s in sizes]
            out, final = ref.run_sequence(
                step, x, init, mask=mask, go_backwards=d == 1, zero_output_for_mask=len(directions) == 2
            )
            outputs.append(out[:, ::-1] if d == 1 else out)
            states += final
        if len(outputs) == 2:
            h = {"concat": np.concatenate(outputs, -1), "sum": outputs[0] + outputs[1]}[merge]
        else:
            h = outputs[0]
        x = h + x if residual and i > 0 else h
    return x, states


def test_mixed_residual_stack_golden(rng):
    deep = kerasrnn.DeepRNN(
        [kerasrnn.LSTM(U), kerasrnn.GRU(U, reset_after=False), kerasrnn.SimpleRNN(U)],
        residual=True, return_sequences=True, return_state=True,
    )
    deep.build((None, None, I))
    steps = _randomize(deep, rng)
    x = rng.uniform(0.1, 1.0, (B, T, I))
    y, *states = deep(x.astype("float32"))
    expected, expected_states = _reference_stack(steps, x, residual=True)
    tol = fused_tolerance("stack", deep, *deep.rnn_layers, atol=1e-5)  # the LSTM (and on torch the SimpleRNN) on cuDNN
    np.testing.assert_allclose(to_numpy(y), expected, **tol)
    assert len(states) == 4  # [h, c] + [h] + [h]
    for got, want in zip(states, expected_states):
        np.testing.assert_allclose(to_numpy(got), want, **tol)


@pytest.mark.parametrize("merge", ["concat", "sum"])
def test_bidirectional_stack_golden(merge, rng):
    mask = np.ones((B, T), bool)
    mask[0, 4:] = False
    deep = kerasrnn.DeepRNN.repeat(
        kerasrnn.GRU(3), 2, bidirectional=True, merge_mode=merge, return_sequences=True, return_state=True
    )
    deep.build((None, None, I))
    steps = _randomize(deep, rng)
    x = rng.uniform(0.1, 1.0, (B, T, I))
    y, *states = deep(x.astype("float32"), mask=mask)
    expected, expected_states = _reference_stack(steps, x, mask=mask, merge=merge)
    np.testing.assert_allclose(to_numpy(y), expected, atol=1e-5)
    assert len(states) == 4  # forward, backward per layer
    for got, want in zip(states, expected_states):
        np.testing.assert_allclose(to_numpy(got), want, atol=1e-5)


def test_last_output_with_mask_and_residual(rng):
    """return_sequences=False picks each row's last valid step (after the residual)."""
    mask = np.ones((B, T), bool)
    mask[0, 3:] = False
    mask[1, 5:] = False
    x = rng.uniform(size=(B, T, I)).astype("float32")
    full = kerasrnn.DeepRNN.repeat(kerasrnn.LSTM(U), 2, residual=True, return_sequences=True)
    last = kerasrnn.DeepRNN.repeat(kerasrnn.LSTM(U), 2, residual=True)
    for deep in (full, last):
        deep.build((None, None, I))
    random_weights(full, rng)
    last.set_weights(full.get_weights())
    sequence = to_numpy(full(x, mask=mask))
    expected = sequence[np.arange(B), mask.sum(1) - 1]
    np.testing.assert_allclose(to_numpy(last(x, mask=mask)), expected, atol=1e-6)


def test_masks_propagate_through_the_stack(rng):
    tokens = np.array([[3, 1, 4, 1, 0, 0], [5, 9, 2, 6, 5, 3]])
    inputs = keras.Input((None,), dtype="int32")
    embedded = keras.layers.Embedding(10, I, mask_zero=True)(inputs)
    deep = kerasrnn.DeepRNN.repeat(kerasrnn.GRU(U), 2, return_sequences=True)
    pooled = keras.layers.GlobalAveragePooling1D()(deep(embedded))
    model = keras.Model(inputs, pooled)
    sequence = to_numpy(keras.Model(inputs, deep(embedded))(tokens))
    expected = np.stack([sequence[0, :4].mean(0), sequence[1].mean(0)])
    np.testing.assert_allclose(to_numpy(model(tokens)), expected, atol=1e-6)
    # The padded row equals the unpadded sequence run alone.
    alone = to_numpy(keras.Model(inputs, deep(embedded))(tokens[:1, :4]))
    # A packed batch against a full one: two cuDNN calls that may round differently.
    np.testing.assert_allclose(sequence[0, :4], alone[0], **fused_tolerance("outputs", deep, *deep.rnn_layers, atol=1e-6))
    mask = np.ones((2, 6), bool)
    assert deep.compute_mask(None, mask) is mask


def test_dropout_spares_the_recurrence_and_is_identity_at_inference(rng):
    x = rng.uniform(size=(B, T, I)).astype("float32")
    deep = kerasrnn.DeepRNN.repeat(kerasrnn.LSTM(U), 2, dropout=0.5, output_dropout=0.5, return_state=True, seed=3)
    plain = kerasrnn.DeepRNN.repeat(kerasrnn.LSTM(U), 2, return_state=True)
    for d in (deep, plain):
        d.build((None, None, I))
    random_weights(deep, rng)
    plain.set_weights(deep.get_weights())
    for a, b in zip(deep(x), plain(x)):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))
    y, h1, c1, h2, _ = deep(x, training=True)
    _, e_h1, e_c1, e_h2, _ = plain(x)
    # Layer 1's recurrence never sees the dropout between layers (on a GPU each stack
    # runs its own cuDNN call, which may round differently).
    tol = fused_tolerance("outputs", deep, plain, *deep.rnn_layers, *plain.rnn_layers, atol=1e-6)
    np.testing.assert_allclose(to_numpy(h1), to_numpy(e_h1), **tol)
    np.testing.assert_allclose(to_numpy(c1), to_numpy(e_c1), **tol)
    assert np.abs(to_numpy(h2) - to_numpy(e_h2)).max() > 1e-3
    dropped = to_numpy(y) == 0  # output dropout
    assert 0.2 < dropped.mean() < 0.8


@pytest.mark.parametrize("per_sequence", [False, True])
def test_inter_layer_dropout_statistics(per_sequence, rng):
    """Layer 2 copies its input (W_x = I, no recurrence, linear), so the output is the
    dropped-out layer-1 sequence: unbiased, and one mask per step or per sequence."""
    n = 3000
    second = kerasrnn.SimpleRNN(U, activation="linear", use_bias=False,
                                kernel_initializer="identity", recurrent_initializer="zeros")
    deep = kerasrnn.DeepRNN([kerasrnn.SimpleRNN(U), second], dropout=0.4, per_sequence_dropout=per_sequence,
                            return_sequences=True, seed=9)
    x = np.broadcast_to(rng.uniform(0.2, 1.0, (1, T, I)), (n, T, I)).astype("float32")
    clean = to_numpy(deep(x[:1]))[0]
    noisy = to_numpy(deep(x, training=True))
    zero = noisy == 0
    assert abs(zero.mean() - 0.4) < 4 * np.sqrt(0.24 / zero.size)
    np.testing.assert_allclose(noisy.mean(0), clean, atol=6 * np.abs(clean).max() / np.sqrt(n) + 1e-6)
    same_over_time = (zero == zero[:, :1]).all()
    assert same_over_time == per_sequence


def test_keras_layers_and_cells_stack_too(rng):
    """Any recurrent layer: a keras.layers.GRU and a bare kerasrnn cell (wrapped in RNN)."""
    x = rng.uniform(size=(B, T, I)).astype("float32")
    deep = kerasrnn.DeepRNN([keras.layers.GRU(U), kerasrnn.layers.LSTMCell(U)], return_sequences=True)
    deep.build((None, None, I))
    random_weights(deep, rng)
    first, second = deep.rnn_layers
    assert isinstance(second, kerasrnn.layers.RNN)
    expected = second(first(x)[0])[0]
    np.testing.assert_allclose(to_numpy(deep(x)), to_numpy(expected), atol=1e-6)


def test_initial_state_is_the_flat_list(rng):
    x = rng.uniform(size=(B, T, I)).astype("float32")
    deep = kerasrnn.DeepRNN([kerasrnn.LSTM(U), kerasrnn.GRU(U)], return_state=True)
    deep.build((None, None, I))
    random_weights(deep, rng)
    init = [rng.normal(size=(B, U)).astype("float32") for _ in range(3)]
    y, *states = deep(x, initial_state=init)
    first = deep.rnn_layers[0](x, initial_state=init[:2])
    second = deep.rnn_layers[1](first[0], initial_state=init[2:])
    np.testing.assert_allclose(to_numpy(y), to_numpy(second[0]), atol=1e-6)
    for got, want in zip(states, [*first[1:], *second[1:]]):
        np.testing.assert_allclose(to_numpy(got), to_numpy(want), atol=1e-6)
    with pytest.raises(ValueError, match="initial_state"):
        deep(x, initial_state=init[:2])


@pytest.mark.skipif(BACKEND != "torch", reason="torch's multi-layer kernel")
@pytest.mark.parametrize("padded", [False, True], ids=["full", "right-padded"])
@pytest.mark.parametrize("make", [
    lambda **kw: kerasrnn.DeepRNN.repeat(kerasrnn.LSTM(U, proj_size=2), 3, bidirectional=True, **kw),
    lambda **kw: kerasrnn.DeepRNN.repeat(kerasrnn.GRU(U), 2, **kw),
], ids=["lstm-proj-bidirectional", "gru"])
def test_torch_multi_layer_kernel_matches_the_loop(make, padded, rng):
    import torch

    mask = None
    if padded:
        mask = np.ones((B, T), bool)
        mask[0, 4:] = False
        mask[2, 1:] = False
    fused = make(return_sequences=True, return_state=True)
    loop = make(return_sequences=True, return_state=True, fused=False)
    for deep in (fused, loop):
        deep.build((None, None, I))
        for layer in deep.rnn_layers:  # the reference: every layer on kerasrnn.ops.unroll
            for sub in getattr(layer, "forward_layer", None), getattr(layer, "backward_layer", None), layer:
                if isinstance(sub, kerasrnn.layers.RNN) and deep is loop:
                    sub.fused = False
    random_weights(fused, rng)
    loop.set_weights(fused.get_weights())
    x = torch.tensor(rng.uniform(size=(B, T, I)).astype("float32"), requires_grad=True)
    results = []
    for deep in (fused, loop):
        outputs = deep(x, mask=mask)
        loss = sum((o * torch.linspace(-1, 1, o.numel(), device=o.device).reshape(o.shape)).sum() for o in outputs)
        grads = torch.autograd.grad(loss, [x] + [v.value for v in deep.trainable_weights])
        results.append([numpy(o) for o in outputs] + [numpy(g) for g in grads])
    assert fused.last_path.startswith("fused:torch._VF.")
    assert "num_layers" in fused.last_path
    assert loop.last_path == "per-layer"
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, **fused_tolerance("gradients", atol=1e-5))


@pytest.mark.skipif(BACKEND != "torch", reason="torch's multi-layer kernel")
def test_torch_multi_layer_kernel_is_refused_where_inexact():
    x = np.ones((2, 4, I), "float32")
    cases = [
        ({"dropout": 0.3}, {"training": True}, "dropout"),
        ({"residual": True}, {}, "residual"),
        ({}, {"mask": np.array([[1, 0, 1, 0], [1, 1, 1, 1]], bool)}, "right-padded"),
    ]
    for options, call, reason in cases:
        deep = kerasrnn.DeepRNN.repeat(kerasrnn.LSTM(U), 2, **options)
        deep(x, **call)
        assert deep.last_path == "per-layer" and reason in deep.last_path_reason
    deep = kerasrnn.DeepRNN.repeat(kerasrnn.LSTM(U), 2, dropout=0.3)
    deep(x)  # inference: dropout is inactive, the kernel is exact
    assert deep.last_path.startswith("fused:")
    with pytest.raises(ValueError, match="residual"):
        kerasrnn.DeepRNN.repeat(kerasrnn.LSTM(U), 2, residual=True, fused=True)(x)


@pytest.mark.parametrize("fused", ["auto", False])
def test_the_stack_dtype_is_its_inputs_and_output_each_layer_keeps_its_own(fused, rng):
    # As keras.layers.Bidirectional(dtype=...): the layers stay float32. On torch the
    # multi-layer kernel got float64 sequences and states for float32 weights and failed
    # ("expected m1 and m2 to have the same dtype").
    x = rng.uniform(size=(B, T, I)).astype("float32")
    plain = kerasrnn.DeepRNN.repeat(kerasrnn.LSTM(U), 2, return_state=True, fused=fused)
    wide = kerasrnn.DeepRNN.repeat(kerasrnn.LSTM(U), 2, return_state=True, fused=fused, dtype="float64")
    plain.build((None, None, I))
    random_weights(plain, rng)
    wide.build((None, None, I))
    wide.set_weights(plain.get_weights())
    expected, *states = plain(x)
    output, *wide_states = wide(x)
    wrapper = keras.layers.Bidirectional(keras.layers.LSTM(U), dtype="float64")(x)
    assert keras.backend.standardize_dtype(output.dtype) == keras.backend.standardize_dtype(wrapper.dtype)
    assert {w.dtype for w in wide.weights} == {"float32"}
    assert wide.last_path == plain.last_path
    np.testing.assert_allclose(numpy(output), numpy(expected), rtol=1e-6, atol=1e-7)
    for a, b in zip(wide_states, states):
        np.testing.assert_allclose(numpy(a), numpy(b), rtol=1e-6, atol=1e-7)


def test_bidirectional_layers_keep_their_dtype(rng):
    # The Bidirectional wrapper was made with the default policy and cast a float64
    # layer's output to float32.
    deep = kerasrnn.DeepRNN([kerasrnn.GRU(U, dtype="float64"), kerasrnn.GRU(U, dtype="float64")],
                            bidirectional=True, dtype="float64")
    output = deep(rng.uniform(size=(B, T, I)))
    assert [layer.dtype_policy.name for layer in deep.rnn_layers] == ["float64", "float64"]
    assert keras.backend.standardize_dtype(output.dtype) == keras.backend.standardize_dtype(
        keras.ops.zeros((), "float64").dtype)  # float32 on JAX without x64


def test_layers_of_different_dtypes(rng):
    x = rng.uniform(size=(B, T, I)).astype("float32")
    deep = kerasrnn.DeepRNN([kerasrnn.GRU(U, dtype="float64"), kerasrnn.GRU(U), kerasrnn.GRU(U)], residual=True)
    output = deep(x)
    assert keras.backend.standardize_dtype(output.dtype) == "float32"
    if BACKEND == "torch":
        deep = kerasrnn.DeepRNN([kerasrnn.GRU(U, dtype="float64"), kerasrnn.GRU(U)])
        deep(x)
        assert deep.last_path == "per-layer" and "one dtype" in deep.last_path_reason


def test_gradients(rng, float64):
    layers = [kerasrnn.GRU(U, dtype=GRAD_DTYPE), kerasrnn.LSTM(U, dtype=GRAD_DTYPE)]
    deep = kerasrnn.DeepRNN(layers, residual=True, dtype=GRAD_DTYPE)
    deep.build((None, None, I))
    random_weights(deep, rng)
    x = rng.uniform(0.1, 1.0, (2, 4, I))
    weights = [rng.normal(size=(2, U))]
    check_gradients(lambda x: weighted_sum(deep(x), weights), [x])


def test_fit_and_save_load(rng, tmp_path):
    inputs = keras.Input((None,), dtype="int32")
    embedded = keras.layers.Embedding(20, I, mask_zero=True)(inputs)
    deep = kerasrnn.DeepRNN(
        [kerasrnn.GRU(U, zoneout=0.1), kerasrnn.SimpleRNN(U, layer_norm=True)],
        dropout=0.2, residual=True, bidirectional=[True, False], merge_mode="sum",
    )
    model = keras.Model(inputs, keras.layers.Dense(1)(deep(embedded)))
    model.compile("adam", "mse")
    tokens = rng.integers(1, 20, (8, T))
    tokens[:3, 4:] = 0
    history = model.fit(tokens, rng.normal(size=(8, 1)), epochs=1, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    loaded = save_and_load(model, tmp_path)
    np.testing.assert_allclose(to_numpy(loaded(tokens)), to_numpy(model(tokens)), atol=1e-5)
    config = loaded.layers[2].get_config()
    assert config["bidirectional"] == [True, False] and config["residual"] is True
    assert [c["class_name"] for c in config["layers"]] == ["GRU", "SimpleRNN"]


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: kerasrnn.DeepRNN([]), ValueError, "layers"),
        (lambda: kerasrnn.DeepRNN(kerasrnn.LSTM(4)), ValueError, "list"),
        (lambda: kerasrnn.DeepRNN([keras.layers.Bidirectional(kerasrnn.LSTM(4))]), TypeError, "bidirectional=True"),
        (lambda: kerasrnn.DeepRNN([keras.layers.Dense(4)]), TypeError, "recurrent layer"),
        (lambda: kerasrnn.DeepRNN([kerasrnn.LSTM(4)] * 1, bidirectional=[True, False]), ValueError, "bidirectional"),
        (lambda: kerasrnn.DeepRNN([kerasrnn.LSTM(4)], merge_mode="max"), ValueError, "merge_mode"),
        (lambda: kerasrnn.DeepRNN([kerasrnn.LSTM(4)], dropout=1.0), ValueError, "dropout"),
        (lambda: kerasrnn.DeepRNN([kerasrnn.LSTM(4), kerasrnn.LSTM(4)], residual=True, bidirectional=True),
         ValueError, "residual"),
        (lambda: kerasrnn.DeepRNN([kerasrnn.LSTM(4), kerasrnn.LSTM(6)], residual=True).build((None, None, 3)),
         ValueError, "residual"),
        (lambda: kerasrnn.DeepRNN.repeat(kerasrnn.LSTM(4), 0), ValueError, "num_layers"),
    ],
)
def test_bad_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_reset_states_of_a_stack_of_stateful_layers(rng):
    x = rng.normal(size=(2, 4, 3)).astype("float32")
    deep = kerasrnn.layers.DeepRNN([kerasrnn.GRU(4, stateful=True), kerasrnn.LSTM(4, stateful=True)])
    deep.build(x.shape)
    first = to_numpy(deep(x))
    second = to_numpy(deep(x))
    assert np.abs(second - first).max() > 1e-4  # the second call went on from the first
    deep.reset_states()
    np.testing.assert_allclose(to_numpy(deep(x)), first, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("return_sequences", [True, False])
def test_a_deep_rnn_inside_keras_bidirectional(return_sequences, tmp_path):
    """`keras.layers.Bidirectional(DeepRNN(...))` failed ("Unrecognized keyword arguments
    passed to DeepRNN: {'go_backwards': True}"), where keras.layers.RNN(StackedRNNCells)
    runs: two whole stacks, merged at the top. The backward copy is the stack on the
    reversed sequence (over each sentence's valid steps), its output flipped back."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 5, 2)).astype("float32")
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], bool)
    wrapped = keras.layers.Bidirectional(kerasrnn.DeepRNN([kerasrnn.LSTM(4), kerasrnn.GRU(3)],
                                                          return_sequences=return_sequences))
    got = to_numpy(wrapped(x, mask=mask))
    assert wrapped.backward_layer.go_backwards and not wrapped.forward_layer.go_backwards
    plain = kerasrnn.DeepRNN([kerasrnn.LSTM(4), kerasrnn.GRU(3)], return_sequences=True)
    plain.build(x.shape)
    plain.set_weights(wrapped.backward_layer.get_weights())
    forward = to_numpy(wrapped.forward_layer(x, mask=mask))
    for row, valid in enumerate(mask.sum(axis=1)):
        backward = to_numpy(plain(np.ascontiguousarray(x[row : row + 1, :valid][:, ::-1])))[0]
        if return_sequences:
            np.testing.assert_allclose(got[row, :valid, :3], forward[row, :valid], atol=1e-6)
            np.testing.assert_allclose(got[row, :valid, 3:], backward[::-1], atol=1e-6)
        else:
            np.testing.assert_allclose(got[row, :3], forward[row], atol=1e-6)
            np.testing.assert_allclose(got[row, 3:], backward[-1], atol=1e-6)
    model = keras.Sequential([keras.Input((5, 2)), wrapped])
    model.save(tmp_path / "m.keras")
    np.testing.assert_allclose(to_numpy(keras.saving.load_model(tmp_path / "m.keras")(x)), to_numpy(model(x)),
                               atol=1e-6)
