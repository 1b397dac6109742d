"""A model written for `keras.layers` runs unchanged with kerasrnn's layers: Keras's
implementation options (`implementation`, `use_cudnn`, `unroll`) are accepted, and
every Keras config loads."""

import keras
import numpy as np
import pytest
from conftest import BACKEND, FUSED_LSTM, to_numpy

import kerasrnn

x = np.random.default_rng(0).normal(size=(3, 6, 4)).astype("float32")
GATED = [kerasrnn.LSTM, kerasrnn.GRU]


def _same_function(ours, theirs, inputs=x, atol=1e-5):
    ours.build(inputs.shape)
    theirs.build(inputs.shape)
    ours.set_weights(theirs.get_weights())
    np.testing.assert_allclose(to_numpy(ours(inputs)), to_numpy(theirs(inputs)), atol=atol)


@pytest.mark.parametrize("implementation", [0, 1, 2])
@pytest.mark.parametrize("layer_class", GATED, ids=lambda c: c.__name__)
def test_implementation_is_accepted_and_changes_nothing(layer_class, implementation):
    ours = layer_class(5, implementation=implementation, return_sequences=True)
    theirs = getattr(keras.layers, layer_class.__name__)(
        5, implementation=implementation, return_sequences=True
    )
    _same_function(ours, theirs)
    assert ours.implementation == ours.cell.implementation == implementation
    assert layer_class.from_config(ours.get_config()).implementation == implementation


def test_implementation_reaches_the_cells():
    cell = kerasrnn.LSTMCell(4, implementation=1)
    assert kerasrnn.LSTMCell.from_config(cell.get_config()).implementation == 1
    assert kerasrnn.GRUCell(4, implementation=1).implementation == 1


@pytest.mark.parametrize("layer_class", [kerasrnn.SimpleRNN, *GATED], ids=lambda c: c.__name__)
def test_use_cudnn_false_never_fuses(layer_class):
    layer = layer_class(5, use_cudnn=False)
    assert layer.fused is False and "use_cudnn" not in layer.get_config()
    layer(x)
    assert layer.last_path == "kerasrnn.ops.unroll" and layer.last_path_reason.startswith("fused=False")


@pytest.mark.parametrize("layer_class", GATED, ids=lambda c: c.__name__)
def test_use_cudnn_auto_is_fused_auto(layer_class):
    layer = layer_class(5, use_cudnn="auto")
    assert layer.fused == "auto"
    layer(x)
    fused = FUSED_LSTM if layer_class is kerasrnn.LSTM else BACKEND == "torch"
    assert layer.last_path.startswith("fused:") == fused


@pytest.mark.parametrize("layer_class", GATED, ids=lambda c: c.__name__)
def test_use_cudnn_true_fuses_or_says_why_not(layer_class):
    layer = layer_class(5, use_cudnn=True)
    assert layer.fused is True
    if BACKEND == "torch" or (FUSED_LSTM and layer_class is kerasrnn.LSTM):
        layer(x)
        assert layer.last_path.startswith("fused:torch._VF." if BACKEND == "torch" else "fused:jax.")
    else:  # on a CPU only torch has fused kernels (as Keras, which then raises too)
        with pytest.raises(ValueError, match=rf"fused=True, but no fused kernel.*{BACKEND}"):
            layer(x)


def test_use_cudnn_true_names_what_stops_the_kernel():
    layer = kerasrnn.LSTM(5, use_cudnn=True, use_peepholes=True)
    expected = "use_peepholes=True" if FUSED_LSTM else BACKEND  # else: no kernel on this backend here
    with pytest.raises(ValueError, match=f"no fused kernel computes this configuration: .*{expected}"):
        layer(x)


@pytest.mark.parametrize("use_cudnn, fused", [(True, False), (False, True)])
def test_use_cudnn_contradicting_fused(use_cudnn, fused):
    with pytest.raises(ValueError, match=r"`use_cudnn=.*contradicts `fused="):
        kerasrnn.GRU(4, use_cudnn=use_cudnn, fused=fused)
    assert kerasrnn.GRU(4, use_cudnn=use_cudnn, fused=use_cudnn).fused is use_cudnn
    assert kerasrnn.GRU(4, use_cudnn="auto", fused=fused).fused is fused


#: Every option of keras.layers.SimpleRNN/LSTM/GRU, none at its default.
KERAS_OPTIONS = {
    "activation": "relu", "use_bias": True, "kernel_initializer": "he_normal",
    "recurrent_initializer": "glorot_normal", "bias_initializer": "ones",
    "kernel_regularizer": "l2", "recurrent_regularizer": "l1", "bias_regularizer": keras.regularizers.L1L2(0.01, 0.02),
    "activity_regularizer": "l2", "kernel_constraint": "non_neg",
    "recurrent_constraint": "max_norm", "bias_constraint": "unit_norm", "dropout": 0.25,
    "recurrent_dropout": 0.125, "seed": 7, "return_sequences": True, "return_state": True,
    "go_backwards": True, "stateful": True, "unroll": True, "zero_output_for_mask": True,
    "name": "from_keras_config", "trainable": False,
}
GATED_OPTIONS = {"recurrent_activation": "hard_sigmoid", "use_cudnn": False}
SPECIFIC = {
    "SimpleRNN": {},
    "LSTM": {**GATED_OPTIONS, "unit_forget_bias": False},
    "GRU": {**GATED_OPTIONS, "reset_after": False},
}


@pytest.mark.parametrize("name", list(SPECIFIC))
def test_from_config_of_every_keras_option(name):
    theirs = getattr(keras.layers, name)(3, **KERAS_OPTIONS, **SPECIFIC[name])
    keras_config = theirs.get_config()
    ours = getattr(kerasrnn, name).from_config(keras_config)
    our_config = ours.get_config()
    for key, value in keras_config.items():
        if key in ("unroll", "dtype"):  # unroll is ignored; dtype is the same policy
            continue
        assert our_config.get(key) == value, key  # (Layer leaves out a None activity_regularizer)
    # The same function as Keras's loop (`unroll=False`). Keras's unrolled loop, with a
    # mask, disagrees with its own loop (zero_output_for_mask, on JAX and TensorFlow)
    # or fails (go_backwards, on torch), in Keras 3.15.
    theirs = getattr(keras.layers, name).from_config({**keras_config, "unroll": False})
    batch = x[:2]  # stateful: a fixed batch
    mask = np.array([[True] * 6, [True] * 4 + [False] * 2])
    ours.build(batch.shape)
    theirs.build(batch.shape)
    ours.set_weights(theirs.get_weights())
    for a, b in zip(ours(batch, mask=mask), theirs(batch, mask=mask)):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), atol=1e-5)


def test_legacy_implementation_in_a_saved_config():
    config = keras.layers.GRU(3).get_config()
    config["implementation"] = 0
    assert kerasrnn.GRU.from_config(config).implementation == 0


def test_a_keras_model_runs_with_kerasrnn_in_its_imports():
    def build(layers):
        """Written for keras.layers, with its implementation options."""
        return keras.Sequential([
            keras.Input((None, 4)),
            layers.LSTM(6, implementation=1, use_cudnn="auto", unroll=False, return_sequences=True),
            layers.GRU(5, implementation=2, use_cudnn=False, return_sequences=True),
            layers.SimpleRNN(4, unroll=True),
            keras.layers.Dense(1),
        ])

    theirs, ours = build(keras.layers), build(kerasrnn)
    for a, b in zip(ours.layers, theirs.layers):
        a.set_weights(b.get_weights())
    np.testing.assert_allclose(to_numpy(ours(x)), to_numpy(theirs(x)), atol=1e-5)
    ours.compile("adam", "mse")
    history = ours.fit(x, np.zeros((3, 1), "float32"), epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


@pytest.mark.parametrize("name", ["SimpleRNN", "LSTM", "GRU"])
def test_weight_paths_are_those_of_keras_layers(name):
    """The cell inside was named "lstmcell", keras.layers' "lstm_cell": a layout map or
    a regex over `weight.path` written for keras.layers matched none of ours."""
    ours = getattr(kerasrnn, name)(3, name="rnn")
    theirs = getattr(keras.layers, name)(3, name="rnn")
    for layer in (ours, theirs):
        layer.build((None, 4, 2))
    assert [w.path for w in ours.weights] == [w.path for w in theirs.weights]


@pytest.mark.parametrize("name", ["SimpleRNN", "LSTM", "GRU"])
def test_keras_options_read_back_as_keras_layers_gives_them(name):
    """`layer.unroll` and `layer.use_cudnn` raised AttributeError, and "unroll" was
    missing from the config, where a script written for keras.layers reads them."""
    options = [{}, {"unroll": True}] + ([{"unroll": True, "use_cudnn": False}, {"use_cudnn": True}]
                                       if name != "SimpleRNN" else [])  # keras.layers.SimpleRNN has none
    for kwargs in options:
        ours, theirs = getattr(kerasrnn, name)(3, **kwargs), getattr(keras.layers, name)(3, **kwargs)
        assert ours.unroll == theirs.unroll
        assert ours.get_config()["unroll"] == theirs.get_config()["unroll"]
        assert type(ours).from_config(ours.get_config()).unroll == ours.unroll
        if hasattr(theirs, "use_cudnn"):
            assert ours.use_cudnn == theirs.use_cudnn
    wrapped = keras.layers.Bidirectional(getattr(kerasrnn, name)(3, fused=False))  # sets use_cudnn on copies
    assert wrapped.forward_layer.fused is False and wrapped.backward_layer.use_cudnn is False
