"""LSTM peepholes (Gers & Schmidhuber 2000) and projection (Sak et al. 2014, torch's
proj_size): golden values, equivalences, the fused torch path, gradients, errors."""

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

B, T, I, U, P = 3, 6, 5, 6, 3


def _reference(w, layer):
    cell = layer.cell
    peepholes = tuple(w["peephole_kernel"]) if cell.use_peepholes else None
    projection = w["projection_kernel"] if cell.proj_size else None
    norms = None
    if cell.layer_norm:
        norms = {n: (w[f"{n}_norm_gamma"], w[f"{n}_norm_beta"]) for n in ("kernel", "recurrent", "state")}
    return lambda x, s: ref.lstm_extended_step(
        x, s, w["kernel"], w["recurrent_kernel"], w.get("bias"),
        peepholes=peepholes, projection=projection, norms=norms,
    )


OPTIONS = [
    {"use_peepholes": True},
    {"proj_size": P},
    {"use_peepholes": True, "proj_size": P},
    {"use_peepholes": True, "proj_size": P, "layer_norm": True},
    {"proj_size": P, "use_bias": False},
]


@pytest.mark.parametrize("hoist", [True, False])
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(o))
def test_golden_values(options, hoist, rng):
    x = rng.uniform(0.1, 1.0, (B, T, I))
    mask = np.ones((B, T), bool)
    mask[0, 4:] = False
    layer = kerasrnn.LSTM(U, return_sequences=True, return_state=True, hoist_inputs=hoist, **options)
    layer.build((None, None, I))
    w = random_weights(layer, rng)
    h0, c0 = rng.normal(0, 0.5, (B, layer.state_size[0])), rng.normal(0, 0.5, (B, U))
    out, h, c = layer(x.astype("float32"), initial_state=[h0.astype("float32"), c0.astype("float32")], mask=mask)
    expected, (eh, ec) = ref.run_sequence(_reference(w, layer), x, [h0, c0], mask=mask)
    tol = fused_tolerance("stack", atol=1e-5)  # projection alone runs on cuDNN
    np.testing.assert_allclose(to_numpy(out), expected, **tol)
    np.testing.assert_allclose(to_numpy(h), eh, **tol)
    np.testing.assert_allclose(to_numpy(c), ec, **tol)
    assert out.shape == (B, T, P if options.get("proj_size") else U)


def test_zero_peepholes_are_the_plain_lstm(rng):
    x = rng.uniform(size=(B, T, I)).astype("float32")
    plain = kerasrnn.LSTM(U, return_sequences=True)
    peep = kerasrnn.LSTM(U, return_sequences=True, use_peepholes=True)
    plain.build((None, None, I))
    peep.build((None, None, I))
    random_weights(plain, rng)
    peep.set_weights(plain.get_weights() + [np.zeros((3, U), "float32")])  # the initial value
    expected = to_numpy(plain(x))  # fused where a kernel exists: cuDNN's rounding on a GPU
    np.testing.assert_allclose(to_numpy(peep(x)), expected, **fused_tolerance("outputs", plain, atol=1e-6))
    # Each peephole row acts on its own gate: the output gate's w_co moves the output.
    peep.cell.peephole_kernel.assign(np.stack([np.zeros(U), np.zeros(U), np.full(U, 3.0)]).astype("float32"))
    assert np.abs(to_numpy(peep(x)) - to_numpy(plain(x))).max() > 1e-2


def test_projection_shapes_and_state():
    layer = kerasrnn.LSTM(U, proj_size=P, return_state=True)
    out, h, c = layer(np.ones((B, T, I), "float32"))
    assert (out.shape, h.shape, c.shape) == ((B, P), (B, P), (B, U))
    cell = layer.cell
    assert cell.state_size == [P, U] and cell.output_size == P
    assert [tuple(w.shape) for w in layer.weights] == [(I, 4 * U), (P, 4 * U), (4 * U,), (U, P)]
    assert layer.compute_output_shape((B, T, I)) == ((B, P), (B, P), (B, U))
    with pytest.raises(ValueError, match=r"initial_state\[0\]"):
        layer(np.ones((B, T, I), "float32"), initial_state=[np.zeros((B, U), "float32")] * 2)


def test_cell_in_keras_rnn(rng):
    """The Keras cell protocol with the new options: keras.layers.RNN gives the same."""
    cell = kerasrnn.layers.LSTMCell(U, proj_size=P, use_peepholes=True, layer_norm=True)
    theirs = keras.layers.RNN(cell, return_sequences=True)
    x = rng.uniform(size=(B, T, I)).astype("float32")
    expected = to_numpy(theirs(x))
    ours = kerasrnn.layers.RNN(cell, return_sequences=True)
    np.testing.assert_allclose(to_numpy(ours(x)), expected, atol=1e-6)


@pytest.mark.skipif(BACKEND != "torch", reason="torch's fused kernel")
def test_projection_runs_on_the_fused_torch_kernel(rng):
    import torch

    layer = kerasrnn.LSTM(U, proj_size=P, return_sequences=True, return_state=True)
    reference = kerasrnn.LSTM(U, proj_size=P, return_sequences=True, return_state=True, fused=False)
    for lay in (layer, reference):
        lay.build((None, None, I))
    random_weights(layer, rng)
    reference.set_weights(layer.get_weights())
    x = torch.tensor(rng.uniform(size=(B, T, I)).astype("float32"), requires_grad=True)
    weights = [torch.tensor(rng.normal(size=s).astype("float32")) for s in [(B, T, P), (B, P), (B, U)]]
    results = []
    for lay in (layer, reference):
        outputs = lay(x)
        loss = sum((o * w.to(o.device)).sum() for o, w in zip(outputs, weights))
        grads = torch.autograd.grad(loss, [x] + [v.value for v in lay.trainable_weights])
        results.append(([numpy(o) for o in outputs], [numpy(g) for g in grads]))
    assert layer.last_path == "fused:torch._VF.lstm"
    assert reference.last_path == "kerasrnn.ops.unroll"
    for a, b in zip(results[0][0] + results[0][1], results[1][0] + results[1][1]):
        np.testing.assert_allclose(a, b, **fused_tolerance("gradients", atol=1e-5))


def test_peepholes_are_never_fused():
    layer = kerasrnn.LSTM(U, use_peepholes=True)
    layer(np.ones((2, 3, I), "float32"))
    assert layer.last_path == "kerasrnn.ops.unroll"
    if BACKEND == "torch":
        assert "peephole" in layer.last_path_reason
        with pytest.raises(ValueError, match="peephole"):
            kerasrnn.LSTM(U, use_peepholes=True, fused=True)(np.ones((2, 3, I), "float32"))


@pytest.mark.parametrize("options", [OPTIONS[2], OPTIONS[3]], ids=["peep,proj", "peep,proj,ln"])
def test_gradients(options, rng, float64):
    layer = kerasrnn.LSTM(U, return_sequences=True, return_state=True, dtype=GRAD_DTYPE, **options)
    layer.build((None, None, I))
    random_weights(layer, rng)
    x = rng.uniform(0.1, 1.0, (2, 4, I))
    c0 = rng.normal(0, 0.5, (2, U))
    weights = [rng.normal(size=(2, 4, P)), rng.normal(size=(2, P)), rng.normal(size=(2, U))]

    def loss(x, c0):
        h0 = keras.ops.zeros((2, P), GRAD_DTYPE)
        return weighted_sum(layer(x, initial_state=[h0, c0]), weights)

    check_gradients(loss, [x, c0])


def test_save_and_load(rng, tmp_path):
    inputs = keras.Input((None, I))
    outputs = kerasrnn.LSTM(U, use_peepholes=True, proj_size=P, return_sequences=True)(inputs)
    model = keras.Model(inputs, kerasrnn.LSTM(U, proj_size=2)(outputs))
    for layer in model.layers[1:]:
        random_weights(layer, rng)
    x = rng.uniform(size=(2, T, I)).astype("float32")
    loaded = save_and_load(model, tmp_path)
    np.testing.assert_allclose(to_numpy(loaded(x)), to_numpy(model(x)), atol=1e-6)
    config = loaded.layers[1].get_config()
    assert config["use_peepholes"] is True and config["proj_size"] == P


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: kerasrnn.LSTM(4, proj_size=4), ValueError, "proj_size"),
        (lambda: kerasrnn.LSTM(4, proj_size=7), ValueError, "proj_size"),
        (lambda: kerasrnn.LSTM(4, proj_size=-1), ValueError, "proj_size"),
        (lambda: kerasrnn.LSTM(4, proj_size=1.5), TypeError, "proj_size"),
        (lambda: kerasrnn.GRU(4, use_peepholes=True), TypeError, "use_peepholes.*LSTMCell"),
        (lambda: kerasrnn.SimpleRNN(4, proj_size=2), TypeError, "proj_size.*LSTMCell"),
        (lambda: kerasrnn.GRU(4, zoneout_cell=0.1), TypeError, "zoneout_cell"),
    ],
)
def test_bad_options(make, error, match):
    with pytest.raises(error, match=match):
        make()
