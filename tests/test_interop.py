"""kerasrnn.interop: parity with torch.nn.RNN/LSTM/GRU (multi-layer, bidirectional,
projection) and keras.layers after copying weights, and the round trips back."""

import keras
import numpy as np
import pytest
import torch
from conftest import BACKEND, to_numpy
from extension_utils import (
    random_weights,
    value_and_grads,
)

import kerasrnn
from kerasrnn import interop

B, T, I, H = 3, 7, 5, 6

# torch.nn.LSTM(proj_size=...) itself says this on CPU.
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported")


def _torch_outputs(module, x):
    """`[output, h_n[0], (c_n[0]), h_n[1], ...]` on batch-first `x`, layer by layer."""
    with torch.no_grad():
        xt = torch.from_numpy(x)
        if not module.batch_first:
            xt = xt.transpose(0, 1)
        out, states = module(xt)
        if not module.batch_first:
            out = out.transpose(0, 1)
    if isinstance(states, tuple):
        flat = [s for pair in zip(states[0], states[1]) for s in pair]
    else:
        flat = list(states)
    return [out.numpy()] + [s.numpy() for s in flat]


MODULES = {
    "lstm": lambda: torch.nn.LSTM(I, H, batch_first=True),
    "lstm-2-bi-proj": lambda: torch.nn.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=3, batch_first=True),
    "lstm-3-nobias": lambda: torch.nn.LSTM(I, H, num_layers=3, bias=False),
    "gru-3": lambda: torch.nn.GRU(I, H, num_layers=3),
    "gru-bi-nobias": lambda: torch.nn.GRU(I, H, bidirectional=True, bias=False, batch_first=True),
    "rnn-relu-2": lambda: torch.nn.RNN(I, H, nonlinearity="relu", num_layers=2, batch_first=True),
    "rnn-tanh-2-bi": lambda: torch.nn.RNN(I, H, num_layers=2, bidirectional=True, batch_first=True),
}


@pytest.mark.parametrize("fused", ["auto", False] if BACKEND == "torch" else ["auto"])
@pytest.mark.parametrize("name", list(MODULES))
def test_from_torch_computes_the_same_function(name, fused, rng):
    torch.manual_seed(0)
    module = MODULES[name]()
    x = rng.normal(size=(B, T, I)).astype("float32")
    layer = interop.from_torch(module, return_state=True, fused=fused)
    ours = [to_numpy(t) for t in layer(x)]
    theirs = _torch_outputs(module, x)
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, atol=1e-5)
    if BACKEND == "torch" and fused == "auto" and module.num_layers > 1:
        assert layer.last_path.startswith("fused:") and "num_layers" in layer.last_path
    # The round trip back to torch is the same module's function.
    back = interop.to_torch(layer)
    assert back.batch_first and back.num_layers == module.num_layers
    for a, b in zip(_torch_outputs(back, x), theirs):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_round_trip_parameters(rng):
    torch.manual_seed(1)
    module = torch.nn.GRU(I, H, num_layers=2, bidirectional=True)
    back = interop.to_torch(interop.from_torch(module))
    for name, param in module.named_parameters():
        if name.startswith("weight") or isinstance(module, torch.nn.GRU):  # GRU keeps both biases
            np.testing.assert_allclose(getattr(back, name).detach().numpy(), param.detach().numpy(), atol=1e-7)
    lstm = torch.nn.LSTM(I, H)
    back = interop.to_torch(interop.from_torch(lstm))  # b_ih + b_hh summed, then in b_ih
    np.testing.assert_allclose(
        (back.bias_ih_l0 + back.bias_hh_l0).detach().numpy(),
        (lstm.bias_ih_l0 + lstm.bias_hh_l0).detach().numpy(), atol=1e-6,
    )


def test_gradients_match_torch(rng):
    """d Σ(out ⊗ r) / dx through our layer equals torch's autograd through the module."""
    torch.manual_seed(2)
    module = torch.nn.LSTM(I, H, num_layers=2, proj_size=3, batch_first=True)
    layer = interop.from_torch(module, fused=False)
    x = rng.normal(size=(B, T, I)).astype("float32")
    r = rng.normal(size=(B, T, 3)).astype("float32")
    _, (ours,) = value_and_grads(lambda x: keras.ops.sum(layer(x) * keras.ops.convert_to_tensor(r)), [x])
    xt = torch.tensor(x, requires_grad=True)
    (module(xt)[0] * torch.from_numpy(r)).sum().backward()
    np.testing.assert_allclose(ours, xt.grad.numpy(), atol=1e-5)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["one-way", "bidirectional"])
def test_float64_module(bidirectional, rng, float64):
    # The bidirectional wrapper was float32 around float64 layers: 3e-8 off the module.
    module = torch.nn.GRU(I, H, batch_first=True, bidirectional=bidirectional).double()
    layer = interop.from_torch(module)
    assert layer.compute_dtype == "float64"
    x = rng.normal(size=(B, T, I))
    np.testing.assert_allclose(to_numpy(layer(x)), _torch_outputs(module, x)[0], atol=1e-12)
    assert interop.to_torch(layer).weight_ih_l0.dtype == torch.float64


def test_inter_layer_dropout_is_carried():
    module = torch.nn.LSTM(I, H, num_layers=2, dropout=0.3)
    layer = interop.from_torch(module)
    assert isinstance(layer, kerasrnn.DeepRNN) and layer.dropout == 0.3
    assert interop.to_torch(layer).dropout == 0.3


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: kerasrnn.LSTM(H, layer_norm=True), "layer_norm"),
        (lambda: kerasrnn.LSTM(H, use_peepholes=True), "peephole"),
        (lambda: kerasrnn.LSTM(H, zoneout=0.1), "zoneout"),
        (lambda: kerasrnn.GRU(H, reset_after=False), "reset_after"),
        (lambda: kerasrnn.LSTM(H, activation="relu"), "activation"),
        (lambda: kerasrnn.SimpleRNN(H, activation="sigmoid"), "activation"),
        (lambda: kerasrnn.LSTM(H, go_backwards=True), "go_backwards"),
        (lambda: keras.layers.Bidirectional(kerasrnn.GRU(H), merge_mode="sum"), "merge_mode"),
        (lambda: kerasrnn.DeepRNN.repeat(kerasrnn.GRU(H), 2, residual=True), "residual"),
        (lambda: kerasrnn.DeepRNN([kerasrnn.GRU(H), kerasrnn.LSTM(H)]), "same kind"),
        # torch.nn has one `bias` and one `proj_size`: the first layer's were taken, and
        # the other layers lost their bias or kept torch's random one (0.35 off).
        (lambda: kerasrnn.DeepRNN([kerasrnn.LSTM(H), kerasrnn.LSTM(H, use_bias=False)]), "use_bias"),
        (lambda: kerasrnn.DeepRNN([kerasrnn.LSTM(H, use_bias=False), kerasrnn.LSTM(H)]), "use_bias"),
        (lambda: keras.layers.Bidirectional(
            kerasrnn.GRU(H), backward_layer=kerasrnn.GRU(H, go_backwards=True, use_bias=False)), "use_bias"),
        (lambda: kerasrnn.DeepRNN([kerasrnn.LSTM(H, proj_size=2), kerasrnn.LSTM(H)]), "proj_size"),
    ],
)
def test_to_torch_refuses_what_torch_cannot_compute(make, match):
    layer = make()
    layer.build((None, None, I))
    with pytest.raises(ValueError, match=match):
        interop.to_torch(layer)


@pytest.mark.parametrize("kwargs, match", [
    ({"activation": "relu"}, "activation"),
    ({"recurrent_activation": "hard_sigmoid"}, "recurrent_activation"),
    ({"layer_norm": True}, "layer_norm"),
    ({"zoneout": 0.5}, "zoneout"),
    ({"go_backwards": True}, "go_backwards"),
])
def test_from_torch_refuses_options_that_change_the_function(kwargs, match):
    # They were accepted, and the layer computed something else (layer_norm: 0.68 off).
    for module in (torch.nn.LSTM(I, H, batch_first=True), torch.nn.LSTM(I, H, num_layers=2, bidirectional=True)):
        with pytest.raises(ValueError, match=f"from_torch: .*{match}"):
            interop.from_torch(module, **kwargs)


def test_from_torch_options_that_keep_the_function(rng):
    module = torch.nn.LSTM(I, H, num_layers=2, batch_first=True).eval()
    x = rng.normal(size=(B, T, I)).astype("float32")
    layer = interop.from_torch(module, unit_forget_bias=True, dropout=0.2, recurrent_dropout=0.1, fused=False,
                               name="encoder")
    assert layer.name == "encoder" and len({sub.name for sub in layer.rnn_layers}) == 2
    np.testing.assert_allclose(to_numpy(layer(x)), _torch_outputs(module, x)[0], atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_module(dtype, rng):
    # bfloat16: "Got unsupported ScalarType BFloat16" from `.numpy()`.
    module = torch.nn.GRU(I, H, batch_first=True).to(dtype)
    layer = interop.from_torch(module)
    assert layer.compute_dtype == "float32"
    x = rng.normal(size=(B, T, I)).astype("float32")
    np.testing.assert_allclose(to_numpy(layer(x)), _torch_outputs(module.float(), x)[0], atol=1e-5)


def test_from_torch_rejects_other_modules():
    with pytest.raises(TypeError, match="torch.nn.RNN"):
        interop.from_torch(torch.nn.Linear(3, 4))


KERAS_LAYERS = {
    "lstm": lambda: keras.layers.LSTM(H, return_sequences=True, return_state=True),
    "gru-after": lambda: keras.layers.GRU(H, go_backwards=True),
    "gru-cho": lambda: keras.layers.GRU(H, reset_after=False, return_sequences=True),
    "simple-relu": lambda: keras.layers.SimpleRNN(H, activation="relu", return_state=True),
    "bidirectional": lambda: keras.layers.Bidirectional(keras.layers.LSTM(H, return_sequences=True), merge_mode="ave"),
}


def _as_list(outputs):
    return [to_numpy(o) for o in (outputs if isinstance(outputs, (list, tuple)) else [outputs])]


@pytest.mark.parametrize("name", list(KERAS_LAYERS))
def test_keras_round_trip(name, rng):
    theirs = KERAS_LAYERS[name]()
    x = rng.normal(size=(B, T, I)).astype("float32")
    mask = np.ones((B, T), bool)
    mask[0, 5:] = False
    theirs.build((None, None, I))
    for sub in ([theirs.forward_layer, theirs.backward_layer] if name == "bidirectional" else [theirs]):
        random_weights(sub.cell, rng)
    expected = _as_list(theirs(x, mask=mask))
    ours = interop.from_keras(theirs)
    inner = ours.forward_layer if name == "bidirectional" else ours
    assert isinstance(inner, kerasrnn.layers.RNN)
    for a, b in zip(_as_list(ours(x, mask=mask)), expected):
        np.testing.assert_allclose(a, b, atol=1e-5)
    back = interop.to_keras(ours)
    inner = back.forward_layer if name == "bidirectional" else back
    assert type(inner).__module__.startswith("keras")
    for a, b in zip(_as_list(back(x, mask=mask)), expected):
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("wrap", [False, True], ids=["plain", "bidirectional"])
def test_keras_round_trip_of_a_stateful_layer(wrap, rng):
    # It was built for batch None, which a stateful layer refuses; the states carry over.
    def make():
        layer = keras.layers.GRU(H, stateful=True, return_sequences=True)
        return keras.layers.Bidirectional(layer) if wrap else layer

    theirs = make()
    x = rng.normal(size=(B, T, I)).astype("float32")
    theirs(x)  # the states are now nonzero
    ours = interop.from_keras(theirs)
    inner = ours.forward_layer if wrap else ours
    assert inner.stateful and np.abs(to_numpy(inner.states[0])).max() > 1e-3
    np.testing.assert_array_equal(to_numpy(inner.states[0]), to_numpy((theirs.forward_layer if wrap else theirs).states[0]))
    back = interop.to_keras(ours)
    expected = to_numpy(theirs(x))
    np.testing.assert_allclose(to_numpy(ours(x)), expected, atol=1e-5)
    np.testing.assert_allclose(to_numpy(back(x)), expected, atol=1e-5)


def test_keras_round_trip_of_a_float64_bidirectional(rng, float64):
    # The converted wrapper was float32 around float64 layers (its output cast down).
    theirs = keras.layers.Bidirectional(keras.layers.GRU(H, dtype="float64"), dtype="float64")
    x = rng.normal(size=(B, T, I))
    expected = to_numpy(theirs(x))
    for converted in (interop.from_keras(theirs), interop.to_keras(interop.from_keras(theirs))):
        assert converted.dtype_policy.name == "float64"
        out = converted(x)
        assert keras.backend.standardize_dtype(out.dtype) == "float64"
        # Not to float64's precision: keras.layers.GRU(dtype="float64") on JAX is 3.5e-8
        # off the float64 NumPy reference here (kerasrnn's: 6e-17).
        np.testing.assert_allclose(to_numpy(out), expected, rtol=1e-5, atol=1e-7)


def test_to_keras_of_a_subclass(rng):
    # getattr(keras.layers, "IRNN"): AttributeError.
    class MyLSTM(kerasrnn.LSTM):
        pass

    x = rng.normal(size=(B, T, I)).astype("float32")
    for layer, keras_class in ((kerasrnn.IRNN(H), keras.layers.SimpleRNN), (MyLSTM(H), keras.layers.LSTM)):
        expected = to_numpy(layer(x))
        theirs = interop.to_keras(layer)
        assert type(theirs) is keras_class
        np.testing.assert_allclose(to_numpy(theirs(x)), expected, atol=1e-6)


def test_overrides_are_checked():
    # A misspelled override vanished with the Keras-only settings; one that changes the
    # weights failed in set_weights with Keras's words ("a weight list of length 3").
    theirs = keras.layers.LSTM(H)
    theirs.build((None, None, I))
    ours = kerasrnn.LSTM(H)
    ours.build((None, None, I))
    for convert, layer in ((interop.from_keras, theirs), (interop.to_keras, ours)):
        with pytest.raises(TypeError, match=r"retrun_sequences"):
            convert(layer, retrun_sequences=True)
        with pytest.raises(ValueError, match="`units` decides which weights"):
            convert(layer, units=H + 1)
        assert convert(layer, return_sequences=True).return_sequences
    for key, value in (("layer_norm", True), ("use_peepholes", True), ("proj_size", 2), ("use_bias", False)):
        with pytest.raises(ValueError, match=f"`{key}` decides which weights"):
            interop.from_keras(theirs, **{key: value})
    assert interop.from_keras(theirs, fused=False).fused is False


def test_to_keras_refuses_extensions():
    layer = kerasrnn.LSTM(H, proj_size=2)
    layer.build((None, None, I))
    with pytest.raises(ValueError, match="proj_size"):
        interop.to_keras(layer)
    with pytest.raises(TypeError, match="keras.layers.SimpleRNN"):
        interop.from_keras(keras.layers.Dense(3))
