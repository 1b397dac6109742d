"""The torch fused path (`torch._VF.*`) against the `keras.ops` reference loop, and our
layers against `torch.nn.RNN/LSTM/GRU` after copying weights."""

import keras
import numpy as np
import pytest
from _util import (
    BATCH,
    FEATURES,
    TIME,
    UNITS,
    both_directions,
    loss_and_grads,
    n_states,
    nonzero_uniform,
    random_mask,
    random_weights,
)
from conftest import BACKEND, JAX_CUDNN, fused_tolerance, to_numpy

import kerasrnn

torch = pytest.importorskip("torch")

on_torch = pytest.mark.skipif(BACKEND != "torch", reason="the fused path is torch's")

#: Configurations a torch kernel computes, with the kernel's name in `last_path`.
FUSABLE = {
    "lstm": (kerasrnn.LSTM, {}, "lstm"),
    "gru": (kerasrnn.GRU, {"reset_after": True}, "gru"),
    "simple_tanh": (kerasrnn.SimpleRNN, {}, "rnn_tanh"),
    "simple_relu": (kerasrnn.SimpleRNN, {"activation": "relu"}, "rnn_relu"),
    "irnn": (kerasrnn.IRNN, {}, "rnn_relu"),
    "lstm_nobias": (kerasrnn.LSTM, {"use_bias": False}, "lstm"),
    "gru_nobias": (kerasrnn.GRU, {"use_bias": False}, "gru"),
    "simple_nobias": (kerasrnn.SimpleRNN, {"use_bias": False}, "rnn_tanh"),
}


def fused_and_reference(name, rng, **kwargs):
    """The same layer twice, with the same random weights: fused=True and fused=False."""
    layer_class, form_kwargs, _ = FUSABLE[name]
    layers = []
    for fused in (True, False):
        layer = layer_class(UNITS, fused=fused, **form_kwargs, **kwargs)
        layer.build((None, TIME, FEATURES))
        layers.append(layer)
    layers[1].set_weights(random_weights(layers[0], rng))
    return layers


@on_torch
@pytest.mark.parametrize("initial_state", [False, True], ids=["zero_h0", "given_h0"])
@both_directions
@pytest.mark.parametrize("name", FUSABLE)
def test_fused_matches_reference_values_and_gradients(name, go_backwards, initial_state, rng):
    fused, reference = fused_and_reference(
        name, rng, return_sequences=True, return_state=True, go_backwards=go_backwards
    )
    x = nonzero_uniform(rng, (BATCH, TIME, FEATURES)).astype("float32")
    kwargs = {}
    if initial_state:
        kwargs["initial_state"] = [
            nonzero_uniform(rng, (BATCH, UNITS)).astype("float32")
            for _ in range(n_states(fused))
        ]
    got, want = fused(x, **kwargs), reference(x, **kwargs)
    assert fused.last_path == f"fused:torch._VF.{FUSABLE[name][2]}"
    assert reference.last_path == "kerasrnn.ops.unroll"
    for a, b in zip(got, want):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), **fused_tolerance("outputs", rtol=1e-5, atol=1e-6))

    # Gradients of a loss that weighs every output and final state differently.
    cotangents = [nonzero_uniform(rng, tuple(o.shape)) for o in want]
    loss_f, dx_f, dw_f = loss_and_grads(fused, x, cotangents, **kwargs)
    loss_r, dx_r, dw_r = loss_and_grads(reference, x, cotangents, **kwargs)
    np.testing.assert_allclose(loss_f, loss_r, **fused_tolerance("loss", rtol=1e-5))
    grad_tol = fused_tolerance("gradients", rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dx_f, dx_r, **grad_tol)
    assert len(dw_f) == len(fused.trainable_weights) == len(dw_r)
    for g_f, g_r in zip(dw_f, dw_r):
        assert np.abs(g_r).max() > 1e-3  # every weight gets a gradient
        np.testing.assert_allclose(g_f, g_r, **grad_tol)


@on_torch
@pytest.mark.parametrize("name", ["lstm", "gru", "simple_tanh"])
def test_fused_gradients_reach_the_variables(name, rng):
    """`loss.backward()` on a plain call (what the torch trainer does) fills `.grad` of
    the Keras variables with the reference path's gradients."""
    fused, reference = fused_and_reference(name, rng)
    x = torch.tensor(nonzero_uniform(rng, (BATCH, TIME, FEATURES)), dtype=torch.float32)
    grads = []
    for layer in (fused, reference):
        for v in layer.trainable_variables:
            v.value.grad = None
        (layer(x) ** 2).sum().backward()
        grads.append([to_numpy(v.value.grad.detach()).copy() for v in layer.trainable_variables])
    assert fused.last_path.startswith("fused:")
    for g_f, g_r in zip(*grads):
        np.testing.assert_allclose(g_f, g_r, **fused_tolerance("gradients", rtol=1e-4, atol=1e-6))


class _Counter:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.fn(*args, **kwargs)


@on_torch
@pytest.mark.parametrize(
    "name, kernel",
    [("lstm", "lstm"), ("gru", "gru"), ("simple_tanh", "rnn_tanh"), ("irnn", "rnn_relu")],
)
def test_fused_kernel_is_called(name, kernel, rng, monkeypatch):
    counter = _Counter(getattr(torch._VF, kernel))
    monkeypatch.setattr(torch._VF, kernel, counter)
    fused, reference = fused_and_reference(name, rng)
    fused.fused = "auto"
    x = nonzero_uniform(rng, (BATCH, TIME, FEATURES)).astype("float32")
    fused(x)
    assert counter.calls == 1 and fused.last_path == f"fused:torch._VF.{kernel}"
    reference(x)
    assert counter.calls == 1  # fused=False never calls it
    # A mask with holes (not right-padded): no kernel computes it, "auto" falls back.
    fused(x, mask=random_mask(rng, BATCH, TIME, "arbitrary"))
    assert counter.calls == 1 and fused.last_path == "kerasrnn.ops.unroll"
    assert "mask" in fused.last_path_reason


@on_torch
def test_fit_runs_the_fused_kernel(rng, monkeypatch):
    counter = _Counter(torch._VF.lstm)
    monkeypatch.setattr(torch._VF, "lstm", counter)
    model = keras.Sequential([keras.Input((TIME, FEATURES)), kerasrnn.LSTM(UNITS), keras.layers.Dense(1)])
    model.compile("adam", "mse")
    x = nonzero_uniform(rng, (8, TIME, FEATURES)).astype("float32")
    y = rng.normal(size=(8, 1)).astype("float32")
    before = model.evaluate(x, y, verbose=0)
    model.fit(x, y, epochs=3, batch_size=8, verbose=0)
    assert counter.calls >= 3
    assert model.evaluate(x, y, verbose=0) < before


#: Configurations no kernel computes exactly, and the words the error must contain.
UNFUSABLE = {
    "mask": (kerasrnn.LSTM, {}, "mask"),
    "recurrent_dropout": (kerasrnn.GRU, {"recurrent_dropout": 0.3}, "recurrent dropout"),
    "reset_before": (kerasrnn.GRU, {"reset_after": False}, "reset_after=False"),
    "lstm_relu": (kerasrnn.LSTM, {"activation": "relu"}, "activation"),
    "gru_hard_sigmoid": (kerasrnn.GRU, {"recurrent_activation": "hard_sigmoid"}, "recurrent_activation"),
    "simple_sigmoid": (kerasrnn.SimpleRNN, {"activation": "sigmoid"}, "activation"),
}


@pytest.mark.parametrize("name", UNFUSABLE)
def test_fused_true_on_unfusable_config_raises(name, rng):
    layer_class, kwargs, words = UNFUSABLE[name]
    layer = layer_class(UNITS, fused=True, **kwargs)
    x = nonzero_uniform(rng, (BATCH, TIME, FEATURES)).astype("float32")
    call_kwargs = {"training": True}
    if name == "mask":  # with holes: not a right-padded mask
        call_kwargs["mask"] = random_mask(rng, BATCH, TIME, "arbitrary")
    if BACKEND != "torch" and not JAX_CUDNN:  # no kernel at all: the backend is the reason
        words = f"{BACKEND} backend"
    with pytest.raises(ValueError, match="fused=True") as info:
        layer(x, **call_kwargs)
    assert words in str(info.value)
    # "auto" computes the same configuration through the reference loop.
    auto = layer_class(UNITS, **kwargs)
    auto(x, **call_kwargs)
    assert auto.last_path == "kerasrnn.ops.unroll"


# --------------------------------------------------------------------- torch.nn
def torch_module(layer):
    """`torch.nn.RNN/LSTM/GRU` with `layer`'s weights (torch layout: transposed kernels;
    GRU gates reordered from Keras's z, r, h to torch's r, z, n; LSTM's i, f, g, o as is)."""
    cell = layer.cell
    kernel, recurrent, *bias = layer.get_weights()
    units = cell.units
    if isinstance(cell, kerasrnn.LSTMCell):
        module = torch.nn.LSTM(kernel.shape[0], units, bias=cell.use_bias, batch_first=True)
        b_ih = bias[0] if bias else None
        b_hh = np.zeros_like(b_ih) if bias else None
    elif isinstance(cell, kerasrnn.GRUCell):
        assert cell.reset_after
        module = torch.nn.GRU(kernel.shape[0], units, bias=cell.use_bias, batch_first=True)

        def reorder(w):
            return np.concatenate([w[..., units : 2 * units], w[..., :units], w[..., 2 * units :]], -1)

        kernel, recurrent = reorder(kernel), reorder(recurrent)
        b_ih, b_hh = (reorder(bias[0][0]), reorder(bias[0][1])) if bias else (None, None)
    else:
        nonlinearity = cell.activation.__name__
        module = torch.nn.RNN(
            kernel.shape[0], units, nonlinearity=nonlinearity, bias=cell.use_bias,
            batch_first=True,
        )
        b_ih = bias[0] if bias else None
        b_hh = np.zeros_like(b_ih) if bias else None
    with torch.no_grad():
        module.weight_ih_l0.copy_(torch.tensor(kernel.T))
        module.weight_hh_l0.copy_(torch.tensor(recurrent.T))
        if cell.use_bias:
            module.bias_ih_l0.copy_(torch.tensor(b_ih))
            module.bias_hh_l0.copy_(torch.tensor(b_hh))
    return module


TORCH_NN_CASES = [
    (name, go_backwards, initial_state)
    for name in ("lstm", "gru", "simple_tanh", "simple_relu")
    for go_backwards in (False, True)
    for initial_state in (False, True)
] + [(name, True, True) for name in ("irnn", "lstm_nobias", "gru_nobias", "simple_nobias")]


@pytest.mark.parametrize("name, go_backwards, initial_state", TORCH_NN_CASES)
def test_matches_torch_nn(name, go_backwards, initial_state, rng):
    layer_class, kwargs, _ = FUSABLE[name]
    layer = layer_class(
        UNITS, return_sequences=True, return_state=True, go_backwards=go_backwards, **kwargs
    )
    layer.build((None, TIME, FEATURES))
    random_weights(layer, rng)
    module = torch_module(layer)
    x = nonzero_uniform(rng, (BATCH, TIME, FEATURES)).astype("float32")
    states = [nonzero_uniform(rng, (BATCH, UNITS)).astype("float32") for _ in range(n_states(layer_class))]
    out, *final = layer(x, initial_state=states if initial_state else None)

    x_torch = torch.tensor(x[:, ::-1].copy() if go_backwards else x)
    h0 = [torch.tensor(s)[None] for s in states] if initial_state else None
    with torch.no_grad():
        if h0 is None:
            want, want_final = module(x_torch)
        else:
            want, want_final = module(x_torch, tuple(h0) if len(h0) == 2 else h0[0])
    want_final = want_final if isinstance(want_final, tuple) else (want_final,)
    np.testing.assert_allclose(to_numpy(out), want.numpy(), rtol=1e-5, atol=1e-5)
    for got, w in zip(final, want_final):
        np.testing.assert_allclose(to_numpy(got), w[0].numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["lstm", "gru", "simple_tanh"])
def test_masked_matches_torch_nn_packed(name, rng):
    """A right-padded mask is what `pack_padded_sequence` means in torch."""
    layer_class, kwargs, _ = FUSABLE[name]
    layer = layer_class(UNITS, return_state=True, **kwargs)
    layer.build((None, TIME, FEATURES))
    random_weights(layer, rng)
    module = torch_module(layer)
    x = nonzero_uniform(rng, (BATCH, TIME, FEATURES)).astype("float32")
    mask = random_mask(rng, BATCH, TIME, "right")
    last, *final = layer(x, mask=mask)
    lengths = torch.tensor(mask.sum(1))
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        torch.tensor(x), lengths, batch_first=True, enforce_sorted=False
    )
    with torch.no_grad():
        _, want_final = module(packed)
    want_final = want_final if isinstance(want_final, tuple) else (want_final,)
    np.testing.assert_allclose(to_numpy(last), want_final[0][0].numpy(), rtol=1e-5, atol=1e-5)
    for got, w in zip(final, want_final):
        np.testing.assert_allclose(to_numpy(got), w[0].numpy(), rtol=1e-5, atol=1e-5)
