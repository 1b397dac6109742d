"""kerasrnn.diagnostics on tiny cases whose answers are known in closed form."""

import glob
import importlib.util
import os

import keras
import numpy as np
import pytest
from conftest import fused_tolerance, to_numpy

import kerasrnn
from kerasrnn import diagnostics
from kerasrnn.testing import reference


def linear_rnn(a, time, units=3, features=2):
    """`h_t = x_t W_x + h_{t-1} (a·I)`, then a Dense head: `dL/dh_t = a^(T−t) dL/dh_T`."""
    return keras.Sequential([
        keras.Input((time, features)),
        kerasrnn.SimpleRNN(
            units, activation="linear", use_bias=False, name="rnn",
            recurrent_initializer=keras.initializers.Identity(a),
        ),
        keras.layers.Dense(1),
    ])


@pytest.mark.parametrize("a", [2.0, 0.5])
def test_linear_rnn_gradient_is_a_power_of_the_recurrent_weight(a, rng):
    time = 12
    model = linear_rnn(a, time)
    x = rng.uniform(0.5, 1.5, (4, time, 2)).astype("float32")
    y = rng.normal(size=(4, 1)).astype("float32")
    norms = diagnostics.gradient_norms(model, x, y, loss="mse")["rnn"]
    assert norms.shape == (4, time)
    expected = a ** (time - np.arange(1, time + 1))  # a^(T−t), t = 1..T
    np.testing.assert_allclose(norms / norms[:, -1:], np.broadcast_to(expected, norms.shape), rtol=1e-5)
    # The last step: dL/dh_T = 2 (ŷ − y) w_dense for the per-example MSE of one output.
    w_dense = to_numpy(model.layers[-1].kernel)[:, 0]
    y_pred = to_numpy(model(x))
    np.testing.assert_allclose(norms[:, -1], 2 * np.abs(y_pred[:, 0] - y[:, 0]) * np.linalg.norm(w_dense), rtol=1e-5)
    assert diagnostics.log10_ratio(norms) == pytest.approx((time - 1) * np.log10(a), rel=1e-5)


def test_lstm_gradient_matches_finite_differences_of_the_numpy_reference(rng):
    """The probe measures the total derivative dL/dh_t (through c_t and every later step)."""
    time, units, features = 6, 3, 2
    layer = kerasrnn.LSTM(units, name="lstm")
    model = keras.Sequential([keras.Input((time, features)), layer, keras.layers.Dense(1)])
    x = rng.uniform(-1, 1, (2, time, features)).astype("float32")
    y = rng.normal(size=(2, 1)).astype("float32")
    norms = diagnostics.gradient_norms(model, x, y, loss="mse")["lstm"]

    kernel, recurrent, bias = (np.asarray(to_numpy(w), "float64") for w in layer.get_weights())
    w_out, b_out = (np.asarray(to_numpy(w), "float64") for w in model.layers[-1].get_weights())

    def loss(b, t, delta):
        states = [np.zeros((1, units)), np.zeros((1, units))]
        for s in range(time):
            _h, states = reference.lstm_step(x[b : b + 1, s], states, kernel, recurrent, bias)
            if s == t:
                states = [states[0] + delta, states[1]]
        return float(((states[0] @ w_out + b_out - y[b]) ** 2).sum())

    eps = 1e-6
    for b in range(2):
        for t in (0, 2, time - 1):
            grad = [
                (loss(b, t, eps * e) - loss(b, t, -eps * e)) / (2 * eps) for e in np.eye(units)
            ]
            assert norms[b, t] == pytest.approx(np.linalg.norm(grad), rel=2e-3)


def test_probe_differs_from_the_gradient_of_the_returned_sequence(rng):
    """A many-to-one model: only h_T reaches the loss directly, yet dL/dh_1 ≠ 0."""
    model = linear_rnn(0.9, 5)
    norms = diagnostics.gradient_norms(
        model, rng.uniform(size=(2, 5, 2)), rng.normal(size=(2, 1)), loss="mse"
    )["rnn"]
    assert np.all(norms[:, 0] > 0.5 * norms[:, -1])


@pytest.mark.parametrize(
    "layer",
    [
        lambda: kerasrnn.SimpleRNN(4, return_sequences=True, go_backwards=True, name="rnn"),
        lambda: kerasrnn.LSTM(4, return_state=True, name="rnn"),
        lambda: kerasrnn.GRU(4, reset_after=False, name="rnn"),
    ],
)
def test_traced_pass_computes_the_same_function_and_restores_the_layer(layer, rng):
    layer = layer()
    x = rng.normal(size=(3, 6, 2)).astype("float32")
    before = keras.tree.map_structure(to_numpy, layer(x))
    tol = fused_tolerance("outputs", layer, atol=1e-6)  # `before` ran a fused kernel where one exists
    records = {}
    with diagnostics.traced([layer], records=records):
        traced = keras.tree.map_structure(to_numpy, layer(x))
    keras.tree.map_structure(lambda a, b: np.testing.assert_allclose(a, b, **tol), before, traced)
    assert "call" not in vars(layer)
    assert records["rnn"]["h"].shape == (3, 6, 4)
    h = to_numpy(records["rnn"]["h"])
    if layer.return_sequences:
        np.testing.assert_allclose(h, before, **tol)


@pytest.mark.parametrize("cell_dtype, layer_dtype, rtol", [
    ("float64", None, 1e-5), ("float32", "mixed_float16", 2e-2)])
def test_a_cell_of_another_dtype_than_its_rnn_is_traced_in_its_dtype(cell_dtype, layer_dtype, rtol, rng):
    """`gradient_norms` of `RNN(GRUCell(4, dtype="float64"))` failed on TensorFlow
    ("expected a double tensor but is a float tensor"): the traced pass gave the cell
    the layer's float32 inputs and states, where the layer's own call casts them to the
    cell's dtype. The norms equal those of the same weights in a float32 cell."""
    x = rng.uniform(-1, 1, (3, 5, 2)).astype("float32")
    y = rng.normal(size=(3, 1)).astype("float32")

    def model(cell_dtype, layer_dtype):
        extra = {} if layer_dtype is None else {"dtype": layer_dtype}
        layer = kerasrnn.layers.RNN(kerasrnn.GRUCell(4, dtype=cell_dtype), name="rnn", **extra)
        return keras.Sequential([keras.Input((5, 2)), layer, keras.layers.Dense(1, dtype="float32")])

    plain = model("float32", None)
    other = model(cell_dtype, layer_dtype)
    other.set_weights(plain.get_weights())
    want = diagnostics.gradient_norms(plain, x, y, loss="mse")["rnn"]
    norms = diagnostics.gradient_norms(other, x, y, loss="mse")["rnn"]
    assert norms.shape == want.shape == (3, 5)
    np.testing.assert_allclose(norms, want, rtol=rtol, atol=rtol * want.max())
    layer = other.layers[0]
    with diagnostics.traced([layer]):
        traced = layer(x)
    assert keras.backend.standardize_dtype(traced.dtype) == layer.compute_dtype
    np.testing.assert_allclose(to_numpy(traced).astype("float32"),
                               to_numpy(layer(x)).astype("float32"), atol=1e-6)


def test_saturation_fraction_of_known_values():
    sigmoid_limits = diagnostics.activation_limits("sigmoid")
    values = np.array([0.001, 0.0105, 0.5, 0.989, 0.995])
    assert diagnostics.saturation_fraction(values, sigmoid_limits) == pytest.approx(0.4)
    assert diagnostics.saturation_fraction(values, sigmoid_limits, tol=0.2) == pytest.approx(0.8)
    relu = np.array([0.0, 0.0, 0.0, 1.0, 100.0])
    assert diagnostics.saturation_fraction(relu, diagnostics.activation_limits("relu")) == pytest.approx(0.6)
    assert diagnostics.saturation_fraction(relu, diagnostics.activation_limits("linear")) is None
    with pytest.raises(ValueError, match="unknown|Unknown"):
        diagnostics.activation_limits("no_such_activation")


def test_lstm_gate_statistics_with_constant_gates():
    """Zero weights and a bias fixing each gate: i = σ(10), f = σ(0), g = 0, o = σ(−10)."""
    units = 3
    layer = kerasrnn.LSTM(units, name="lstm", unit_forget_bias=False,
                          kernel_initializer="zeros", recurrent_initializer="zeros")
    model = keras.Sequential([keras.Input((5, 2)), layer])
    bias = np.concatenate([np.full(units, 10.0), np.zeros(units), np.zeros(units), np.full(units, -10.0)])
    layer.cell.bias.assign(bias.astype("float32"))
    stats = diagnostics.activation_statistics(model, np.ones((2, 5, 2), "float32"))["lstm"]
    assert stats["i"]["saturation"] == 1.0 and stats["o"]["saturation"] == 1.0
    assert stats["f"]["saturation"] == 0.0 and stats["g"]["saturation"] == 0.0
    assert stats["f"]["mean"] == pytest.approx(0.5) and stats["f"]["var"] == pytest.approx(0.0, abs=1e-12)
    assert stats["i"]["mean"] == pytest.approx(1 / (1 + np.exp(-10.0)), rel=1e-6)
    assert stats["c"]["saturation"] is None and stats["c"]["mean"] == 0.0
    np.testing.assert_array_equal(stats["i"]["saturation_by_step"], np.ones(5))


def test_tanh_and_relu_saturation_of_a_simple_rnn(rng):
    x = rng.uniform(0.5, 1.0, (4, 6, 2)).astype("float32")
    big = keras.Sequential([keras.Input((6, 2)), kerasrnn.SimpleRNN(
        5, name="rnn", kernel_initializer=keras.initializers.Constant(50.0))])
    stats = diagnostics.activation_statistics(big, x)["rnn"]
    assert stats["h"]["saturation"] == 1.0 and stats["h"]["mean"] == pytest.approx(1.0)
    irnn = kerasrnn.IRNN(4, name="irnn")
    model = keras.Sequential([keras.Input((6, 2)), irnn])
    irnn.cell.kernel.assign(np.array([[1.0, -1.0, 1.0, -1.0]] * 2, "float32"))
    stats = diagnostics.activation_statistics(model, x)["irnn"]
    assert stats["h"]["saturation"] == pytest.approx(0.5)  # two of four ReLUs stay at 0


def test_spectrum_of_known_matrices():
    theta = 0.3
    rotation = 0.9 * np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    s = diagnostics.spectrum_of(rotation)
    assert s["spectral_radius"] == pytest.approx(0.9)
    np.testing.assert_allclose(s["singular_values"], [0.9, 0.9])
    # Non-normal: radius 1 but singular values 2 and 0.5.
    s = diagnostics.spectrum_of(np.array([[0.0, 2.0], [0.5, 0.0]]))
    assert s["spectral_radius"] == pytest.approx(1.0)
    np.testing.assert_allclose(s["singular_values"], [2.0, 0.5])
    assert diagnostics.spectrum_of(np.ones((2, 3)))["spectral_radius"] is None


def test_spectrum_of_a_diverged_matrix_is_nan_not_an_error():
    # A training run whose weights overflowed stopped in the diagnostics callback with
    # LAPACK's "Array must not contain infs or NaNs".
    square = diagnostics.spectrum_of(np.array([[1.0, np.inf], [0.0, 1.0]]))
    assert np.isnan(square["spectral_radius"]) and np.isnan(square["singular_values"]).all()
    assert square["singular_values"].shape == (2,)
    wide = diagnostics.spectrum_of(np.array([[np.nan, 0.0, 1.0], [0.0, 1.0, 0.0]]))
    assert wide["spectral_radius"] is None and wide["singular_values"].shape == (2,)


def test_recurrent_spectrum_per_gate_block():
    units = 3
    layer = kerasrnn.LSTM(units)
    layer.build((None, 4, 2))
    blocks = [scale * np.eye(units) for scale in (0.5, 2.0, 1.0, 3.0)]
    layer.cell.recurrent_kernel.assign(np.concatenate(blocks, axis=1).astype("float32"))
    spectrum = diagnostics.recurrent_spectrum(layer)
    assert sorted(spectrum) == ["all", "f", "g", "i", "o"]
    for name, scale in zip("ifgo", (0.5, 2.0, 1.0, 3.0)):
        assert spectrum[name]["spectral_radius"] == pytest.approx(scale)
    # The whole (3, 12) matrix: each singular value is sqrt(0.25 + 4 + 1 + 9).
    np.testing.assert_allclose(spectrum["all"]["singular_values"], np.sqrt(14.25) * np.ones(units), rtol=1e-6)
    assert spectrum["all"]["spectral_radius"] is None
    with pytest.raises(ValueError, match="recurrent_kernel"):
        diagnostics.recurrent_spectrum(keras.layers.Dense(2))


def test_callback_writes_csv_rows_and_tensorboard_events(tmp_path, rng):
    model = keras.Sequential([
        keras.Input((7, 2)), kerasrnn.GRU(3, return_sequences=True, name="gru1"),
        kerasrnn.LSTM(2, name="lstm2"), keras.layers.Dense(1),
    ])
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    x = rng.uniform(size=(16, 7, 2)).astype("float32")
    y = rng.uniform(size=(16, 1)).astype("float32")
    csv_path, log_dir = tmp_path / "diag.csv", tmp_path / "tb"
    callback = diagnostics.RecurrentDiagnostics(x[:4], y[:4], csv_path=str(csv_path), log_dir=str(log_dir), every=2)
    model.fit(x, y, epochs=3, batch_size=8, verbose=0, callbacks=[callback])

    header = csv_path.read_text().splitlines()[0].split(",")
    for column in ["epoch", "layer", "grad_log10_ratio", "grad_norm_first", "grad_norm_last",
                   "grad_norm_1", "grad_norm_7", "z_saturation", "i_mean", "c_var",
                   "g_spectral_radius", "all_max_singular"]:
        assert column in header
    rows = diagnostics.read_csv(csv_path)
    # Epoch 0 (before training), 2 (every=2) and 3 (the last), one row per layer.
    assert [(r["epoch"], r["layer"]) for r in rows] == [
        (e, name) for e in (0, 2, 3) for name in ("gru1", "lstm2")
    ]
    last = callback.history[-1][1]["lstm2"]
    np.testing.assert_allclose(rows[-1]["grad_norms"], last["grad_norms"].mean(axis=0), rtol=1e-6)
    assert rows[-1]["grad_log10_ratio"] == pytest.approx(last["grad_log10_ratio"])
    assert rows[-1]["i_saturation"] == pytest.approx(last["activations"]["i"]["saturation"])
    assert rows[-1]["c_saturation"] is None
    assert rows[-1]["f_spectral_radius"] == pytest.approx(last["spectrum"]["f"]["spectral_radius"])
    assert rows[0]["z_mean"] is not None and rows[1]["z_mean"] is None  # GRU vs LSTM columns

    if not any(importlib.util.find_spec(m) for m in ("tensorflow", "tensorboard", "tensorboardX")):
        pytest.skip("none of tensorflow, tensorboard or tensorboardX: no event files")
    events = glob.glob(os.path.join(log_dir, "events.out.tfevents*"))
    assert events and os.path.getsize(events[0]) > 0
    tags = {value.tag for event in read_events(events[0]) for value in event.summary.value}
    assert {"lstm2/grad_log10_ratio", "gru1/z_saturation", "lstm2/grad_norm_log10_profile"} <= tags


def read_events(path):
    """The `Event` records of one event file, with whichever reader is installed."""
    if importlib.util.find_spec("tensorboard"):
        from tensorboard.backend.event_processing.event_file_loader import (
            EventFileLoader,
        )

        return list(EventFileLoader(path).Load())
    from tensorflow.core.util import event_pb2
    from tensorflow.data import TFRecordDataset

    return [event_pb2.Event.FromString(r) for r in TFRecordDataset(path).as_numpy_iterator()]


@pytest.mark.parametrize("writer", ["_TFWriter", "_TensorBoardWriter", "_TensorBoardXWriter"])
def test_every_event_writer_writes_the_same_records(writer, tmp_path):
    """The three writers (TensorFlow, the `tensorboard` package alone, tensorboardX)
    leave records TensorBoard reads alike: the scalars' values and the histograms'
    `[left, right, count]` rows, under the same tags and steps."""
    from kerasrnn.diagnostics import callback

    pytest.importorskip("tensorboard")  # the reader
    try:
        chosen = getattr(callback, writer)(str(tmp_path))
    except ImportError as error:
        pytest.skip(f"{writer}: {error}")
    report = {"grad_norms": np.array([[1.0, 10.0, 100.0]]),
              "spectrum": {"h": {"singular_values": np.array([0.5, 1.5, 2.5])}}}
    chosen.write(3, "lstm", {"epoch": 3, "layer": "lstm", "grad_log10_ratio": -2.0, "h_mean": 0.25}, report)
    chosen.scalars(4, {"epoch_loss": 0.125})
    chosen.flush()
    from tensorboard.util import tensor_util

    found, plugins = {}, {}
    events = [e for path in sorted(glob.glob(str(tmp_path / "events.out.tfevents*"))) for e in read_events(path)]
    for event in events:
        for value in event.summary.value:
            if value.HasField("tensor"):
                found[(event.step, value.tag)] = tensor_util.make_ndarray(value.tensor)
                plugins[value.tag] = value.metadata.plugin_data.plugin_name
            else:
                found[(event.step, value.tag)] = np.float32(value.simple_value)
    assert float(found[(3, "lstm/grad_log10_ratio")]) == -2.0
    assert float(found[(3, "lstm/h_mean")]) == 0.25
    assert float(found[(4, "epoch_loss")]) == 0.125
    profile, singular = found[(3, "lstm/grad_norm_log10_profile")], found[(3, "lstm/h_singular_values")]
    if writer == "_TensorBoardXWriter":  # its own bins: the count and the range
        for rows, (low, high) in ((profile, (0.0, 2.0)), (singular, (0.5, 2.5))):
            assert rows[:, 2].sum() == 3 and rows[0, 0] == low and rows[-1, 1] == pytest.approx(high)
        return
    assert plugins == {"lstm/grad_log10_ratio": "scalars", "lstm/h_mean": "scalars", "epoch_loss": "scalars",
                       "lstm/grad_norm_log10_profile": "histograms", "lstm/h_singular_values": "histograms"}
    np.testing.assert_allclose(profile, callback._buckets([0.0, 1.0, 2.0]))
    np.testing.assert_allclose(singular, callback._buckets([0.5, 1.5, 2.5]))
    assert sorted(found) == [(3, "lstm/grad_log10_ratio"), (3, "lstm/grad_norm_log10_profile"),
                             (3, "lstm/h_mean"), (3, "lstm/h_singular_values"), (4, "epoch_loss")]


def test_callback_resumed_fit_labels_epochs(tmp_path, rng):
    model = linear_rnn(1.0, 4)
    model.compile("sgd", "mse")
    x, y = rng.uniform(size=(8, 4, 2)).astype("float32"), rng.uniform(size=(8, 1)).astype("float32")
    path = str(tmp_path / "d.csv")
    model.fit(x, y, epochs=1, verbose=0, callbacks=[diagnostics.RecurrentDiagnostics(x, y, csv_path=path)])
    resumed = diagnostics.RecurrentDiagnostics(x, y, csv_path=path, record_initial=False)
    model.fit(x, y, epochs=3, initial_epoch=1, verbose=0, callbacks=[resumed])
    assert [r["epoch"] for r in diagnostics.read_csv(path)] == [0, 1, 2, 3]


@pytest.mark.parametrize("stop_first", [True, False], ids=["stopper-first", "stopper-last"])
def test_callback_records_the_last_epoch_of_a_fit_stopped_early(stop_first, rng):
    # `every=2`, stopped after epoch 3 of 10 (what EarlyStopping does): [0, 2] was
    # recorded, without the last epoch the docstring promises.
    class StopAfter3(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch + 1 == 3:
                self.model.stop_training = True

    model = linear_rnn(1.0, 4)
    model.compile("sgd", "mse")
    x, y = rng.uniform(size=(8, 4, 2)).astype("float32"), rng.uniform(size=(8, 1)).astype("float32")
    recorder = diagnostics.RecurrentDiagnostics(x, y, every=2)
    callbacks = [StopAfter3(), recorder] if stop_first else [recorder, StopAfter3()]
    model.fit(x, y, epochs=10, verbose=0, callbacks=callbacks)
    assert [epoch for epoch, _ in recorder.history] == [0, 2, 3]
    model.fit(x, y, epochs=4, verbose=0, callbacks=[recorder])  # a full fit: no epoch twice
    assert [epoch for epoch, _ in recorder.history] == [0, 2, 3, 0, 2, 4]


def test_two_layers_of_one_name_in_nested_models_are_a_clear_error(rng):
    # Keras allows it; the results are keyed by name: gradient_norms returned one
    # profile matching neither layer (JAX), or failed inside scan for other lengths.
    def branch():
        return keras.Sequential([keras.Input((4, 2)), kerasrnn.GRU(3, name="rnn")])

    a, b = branch(), branch()
    inputs = keras.Input((4, 2))
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.concatenate([a(inputs), b(inputs)])))
    x, y = rng.uniform(size=(2, 4, 2)), rng.uniform(size=(2, 1))
    for call in (lambda: diagnostics.gradient_norms(model, x, y, loss="mse"),
                 lambda: diagnostics.diagnose(model, x, y, loss="mse", layers="rnn")):
        with pytest.raises(ValueError, match=r"several kerasrnn recurrent layers named \['rnn'\].*distinct names"):
            call()


def test_plots_write_pngs(tmp_path, rng):
    pytest.importorskip("matplotlib")
    model = keras.Sequential([keras.Input((5, 2)), kerasrnn.LSTM(3, name="lstm"), keras.layers.Dense(1)])
    report = diagnostics.diagnose(model, rng.uniform(size=(4, 5, 2)), rng.uniform(size=(4, 1)), loss="mse")
    paths = [
        diagnostics.plot_gradient_norms({"epoch 0": report["lstm"]["grad_norms"]}, str(tmp_path / "a.png")),
        diagnostics.plot_gradient_heatmap({"0": report["lstm"]["grad_norms"], "1": report["lstm"]["grad_norms"]},
                                          str(tmp_path / "b.png")),
        diagnostics.plot_saturation_heatmap(report["lstm"]["activations"], str(tmp_path / "c.png")),
    ]
    for path in paths:
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_clear_errors(rng):
    plain = keras.Sequential([keras.Input((4, 2)), keras.layers.LSTM(2), keras.layers.Dense(1)])
    with pytest.raises(ValueError, match="no kerasrnn recurrent layer"):
        diagnostics.gradient_norms(plain, np.ones((1, 4, 2)), np.ones((1, 1)), loss="mse")
    model = linear_rnn(1.0, 4)
    with pytest.raises(ValueError, match="`layers`"):
        diagnostics.recurrent_layers(model, ["nope"])
    with pytest.raises(ValueError, match="`loss` is required"):
        diagnostics.gradient_norms(model, np.ones((1, 4, 2)), np.ones((1, 1)))
    with pytest.raises(ValueError, match="`every`"):
        diagnostics.RecurrentDiagnostics(None, None, every=0)
    assert diagnostics.RecurrentDiagnostics(None, None, every=np.int64(2)).every == 2
    # `tol` is a band from each limit: outside [0, 0.5) every value (or none) is "saturated".
    for tol in (-1, 0.5, 5):
        with pytest.raises(ValueError, match=r"`tol` must be in \[0, 0.5\)"):
            diagnostics.activation_statistics(model, np.ones((1, 4, 2)), tol=tol)
        with pytest.raises(ValueError, match="`tol`"):
            diagnostics.RecurrentDiagnostics(None, None, tol=tol)
    with pytest.raises(ValueError, match="`tol`"):
        diagnostics.diagnose(model, np.ones((1, 4, 2)), np.ones((1, 1)), loss="mse", tol=-0.1)
    # A model with two outputs (which loss?) is refused in words, not a backend's stack error.
    a = keras.Input((4, 2))
    two = keras.Model(a, [linear_rnn(1.0, 4)(a), kerasrnn.SimpleRNN(3)(a)])
    with pytest.raises(TypeError, match="the model has 2 outputs"):
        diagnostics.gradient_norms(two, np.ones((1, 4, 2)), np.ones((1, 1)), loss="mse")


def test_one_layer_named_by_a_string_is_one_layer():
    """`layers="gru_b"` looked for the layers 'g', 'r', 'u', '_', 'b'."""
    model = keras.Sequential([keras.Input((5, 3)), kerasrnn.GRU(2, name="gru_b", return_sequences=True),
                              kerasrnn.GRU(2, name="other")])
    (found,) = diagnostics.recurrent_layers(model, "gru_b")
    assert found.name == "gru_b"
    assert diagnostics.recurrent_layers(model, found) == [found]
    norms = diagnostics.gradient_norms(model, np.ones((2, 5, 3)), np.zeros((2, 2)), loss="mse", layers="gru_b")
    assert list(norms) == ["gru_b"] and norms["gru_b"].shape == (2, 5)


def test_plots_explain_a_missing_matplotlib(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now fails
    with pytest.raises(ImportError, match=r"kerasrnn\[recipes\]"):
        diagnostics.plot_gradient_norms({"a": [1.0, 2.0]}, "unused.png")


@pytest.mark.parametrize("profiles", [np.ones((3, 2)), np.ones((3, 5)), np.ones(5), [[0.1, 0.2], [0.3, 0.4]]],
                         ids=["batch-by-2", "batch-by-5", "one-profile", "nested-list"])
def test_plots_need_labelled_profiles(profiles, tmp_path):
    # The array itself, not {label: array}: (3, 2) plotted a one-point line per row,
    # labelled by its first number; other shapes failed in unpacking ("too many values").
    for plot in (diagnostics.plot_gradient_norms, diagnostics.plot_gradient_heatmap):
        with pytest.raises(TypeError, match=r"`profiles` must be a dict `\{label: norms\}`"):
            plot(profiles, str(tmp_path / "x.png"))
    with pytest.raises(ValueError, match=r"profiles\['a'\]. must be \(batch, time\)"):
        diagnostics.plot_gradient_norms({"a": np.ones((2, 3, 4))}, str(tmp_path / "x.png"))
    assert os.path.exists(diagnostics.plot_gradient_norms([(0, np.ones(4)), (5, np.ones(4))],
                                                          str(tmp_path / "pairs.png")))


@pytest.mark.parametrize("go_backwards", [False, True])
def test_the_profile_is_in_processing_order_for_a_backward_layer(go_backwards):
    """A linear RNN with recurrent matrix 0.5·I: the loss (on the last output processed)
    sees the k-th step processed through 0.5^(T-k) of the recurrence. A backward layer's
    probes were indexed in input time, so its profile came out reversed and its
    log10 ratio with the wrong sign (+1.5: "exploding" for a vanishing signal)."""
    from kerasrnn.diagnostics import gradient_norms, log10_ratio

    model = keras.Sequential([
        keras.Input((6, 1)),
        kerasrnn.SimpleRNN(2, activation="linear", use_bias=False, go_backwards=go_backwards, name="rnn",
                           recurrent_initializer=keras.initializers.Identity(0.5)),
        keras.layers.Dense(1),
    ])
    norms = np.asarray(gradient_norms(model, np.ones((3, 6, 1)), np.zeros((3, 1)), loss="mse")["rnn"])
    np.testing.assert_allclose(norms / norms.max(axis=1, keepdims=True), np.tile(0.5 ** np.arange(5, -1, -1), (3, 1)),
                               rtol=1e-5)
    assert log10_ratio(norms) == pytest.approx(-5 * np.log10(2), abs=1e-4)


@pytest.mark.parametrize("go_backwards", [False, True])
def test_a_masked_step_carries_the_gradient(go_backwards):
    """At a masked step the state is carried (h_t = h_{t-1}), so dL/dh_t is that of the
    next valid step: with recurrent matrix 0.5·I, dL/dh_t = 0.5^(valid steps after t)
    dL/dh_T. The probe was dropped with the step's output there: norms of 0 at padded
    steps and log10 ratios of +38 (post-padded) or -38 (pre-padded)."""
    from kerasrnn.diagnostics import gradient_norms, log10_ratio

    model = keras.Sequential([
        keras.Input((6, 1)),
        keras.layers.Masking(0.0),
        kerasrnn.SimpleRNN(2, activation="linear", use_bias=False, go_backwards=go_backwards, name="rnn",
                           recurrent_initializer=keras.initializers.Identity(0.5)),
        keras.layers.Dense(1),
    ])
    valid = np.array([[1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1], [1, 1, 0, 1, 0, 1]], bool)
    norms = np.asarray(gradient_norms(model, valid[..., None].astype("float32"), np.zeros((3, 1)), loss="mse")["rnn"])
    processed = valid[:, ::-1] if go_backwards else valid  # the profile is in processing order
    after = processed[:, ::-1].cumsum(axis=1)[:, ::-1] - processed  # valid steps after t
    np.testing.assert_allclose(norms / norms[:, -1:], 0.5 ** after, rtol=1e-5)
    assert np.all(norms > 0)
    assert abs(log10_ratio(norms)) < 2


@pytest.mark.parametrize("bidirectional", [False, True], ids=["forward", "bidirectional"])
def test_the_layers_of_a_deep_rnn_are_found_and_traced(bidirectional, rng):
    # recurrent_layers did not look inside a DeepRNN ("no kerasrnn recurrent layer"),
    # and on torch the stack ran torch's multi-layer kernel, which no trace sees.
    time = 5
    x = rng.uniform(-1, 1, (3, time, 2)).astype("float32")
    y = rng.normal(size=(3, 1)).astype("float32")
    deep = kerasrnn.layers.DeepRNN([kerasrnn.LSTM(4, name="a"), kerasrnn.GRU(4, name="b")],
                                   bidirectional=bidirectional)
    model = keras.Sequential([keras.Input((time, 2)), deep, keras.layers.Dense(1)])
    names = [layer.name for layer in diagnostics.recurrent_layers(model)]
    assert names == (["forward_a", "backward_a", "forward_b", "backward_b"] if bidirectional else ["a", "b"])
    norms = diagnostics.gradient_norms(model, x, y, loss="mse")
    assert set(norms) == set(names)
    # The same stack as separate layers with the same weights: the same profiles.
    def plain(layer):
        return keras.layers.Bidirectional(layer) if bidirectional else layer

    by_hand = keras.Sequential([
        keras.Input((time, 2)),
        plain(kerasrnn.LSTM(4, return_sequences=True, name="a")), plain(kerasrnn.GRU(4, name="b")),
        keras.layers.Dense(1),
    ])
    by_hand.set_weights(model.get_weights())
    np.testing.assert_allclose(to_numpy(by_hand(x)), to_numpy(model(x)), rtol=1e-5, atol=1e-6)
    expected = diagnostics.gradient_norms(by_hand, x, y, loss="mse")
    assert set(expected) == set(norms)
    for name in names:
        assert np.abs(norms[name]).max() > 0
        np.testing.assert_allclose(norms[name], expected[name], rtol=1e-4, atol=1e-7)
    records = {}
    with diagnostics.traced([deep.base_layer(0), deep.base_layer(1)], records=records):
        deep(x)
    assert sorted(records) == sorted([deep.base_layer(0).name, deep.base_layer(1).name])
    assert deep.last_path == "per-layer"
