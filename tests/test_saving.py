"""`.keras` save/load round trips, on this backend and across backends."""

import importlib.util
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from _util import (
    BATCH,
    CELL_FORMS,
    FEATURES,
    TIME,
    UNITS,
    nonzero_uniform,
    random_weights,
)
from conftest import BACKEND, to_numpy

import kerasrnn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def roundtrip(model, tmp_path):
    path = str(tmp_path / "model.keras")
    model.save(path)
    return keras.saving.load_model(path)


def model_with(rnn, batch=None):
    seq = keras.Input((TIME, FEATURES), batch_size=batch)
    return keras.Model(seq, rnn(seq))


@pytest.mark.parametrize("form", [form for form in CELL_FORMS if "nobias" not in form])
def test_layer_roundtrip(form, rng, tmp_path):
    layer_class, kwargs = CELL_FORMS[form]
    rnn = layer_class(
        UNITS, return_sequences=True, go_backwards=True, dropout=0.2, recurrent_dropout=0.1,
        seed=5, **kwargs,
    )
    model = model_with(rnn)
    random_weights(rnn, rng)
    x = nonzero_uniform(rng, (BATCH, TIME, FEATURES)).astype("float32")
    loaded = roundtrip(model, tmp_path)
    loaded_rnn = loaded.layers[-1]
    assert type(loaded_rnn) is layer_class
    assert loaded_rnn.get_config() == rnn.get_config()
    for a, b in zip(loaded_rnn.get_weights(), rnn.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(to_numpy(loaded(x)), to_numpy(model(x)), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("cell_class", [kerasrnn.LSTMCell, kerasrnn.GRUCell, kerasrnn.SimpleRNNCell])
def test_cells_in_rnn_and_keras_rnn_roundtrip(cell_class, rng, tmp_path):
    seq = keras.Input((TIME, FEATURES))
    ours = kerasrnn.RNN(cell_class(UNITS), return_sequences=True)
    theirs = keras.layers.RNN(cell_class(UNITS), go_backwards=True)
    model = keras.Model(seq, [ours(seq), theirs(seq)])
    random_weights(ours, rng)
    random_weights(theirs, rng)
    x = nonzero_uniform(rng, (BATCH, TIME, FEATURES)).astype("float32")
    loaded = roundtrip(model, tmp_path)
    for a, b in zip(loaded(x), model(x)):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("merge_mode", ["concat", "ave"])
def test_bidirectional_roundtrip_with_mask(merge_mode, rng, tmp_path):
    tokens = rng.integers(1, 10, (BATCH, TIME))
    tokens[1, 3:] = 0
    inp = keras.Input((TIME,), dtype="int32")
    embedded = keras.layers.Embedding(10, FEATURES, mask_zero=True)(inp)
    bi = keras.layers.Bidirectional(kerasrnn.GRU(UNITS, return_sequences=True), merge_mode=merge_mode)
    model = keras.Model(inp, kerasrnn.LSTM(UNITS)(bi(embedded)))
    for layer in model.layers[2:]:
        random_weights(layer, rng)
    loaded = roundtrip(model, tmp_path)
    assert isinstance(loaded.layers[2].forward_layer, kerasrnn.GRU)
    assert loaded.layers[2].backward_layer.go_backwards
    np.testing.assert_allclose(to_numpy(loaded(tokens)), to_numpy(model(tokens)), rtol=1e-6, atol=1e-7)


def test_stateful_roundtrip_keeps_the_states(rng, tmp_path):
    """A stateful layer's states are saved with it (though not weights, as in
    keras.layers): the reloaded model goes on from where the saved one stopped."""
    rnn = kerasrnn.LSTM(UNITS, stateful=True, return_sequences=True)
    model = model_with(rnn, batch=BATCH)
    x = nonzero_uniform(rng, (BATCH, TIME, FEATURES)).astype("float32")
    model(x)  # the states are now nonzero
    loaded = roundtrip(model, tmp_path)
    loaded_rnn = loaded.layers[-1]
    assert loaded_rnn.stateful and loaded_rnn.get_config() == rnn.get_config()
    for a, b in zip(loaded_rnn.states, rnn.states):
        assert np.abs(to_numpy(b)).max() > 1e-3
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))
    np.testing.assert_allclose(to_numpy(loaded(x)), to_numpy(model(x)), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("wrap", [False, True], ids=["plain", "bidirectional"])
def test_a_stateful_weights_file_loads_into_keras_layers(wrap, rng, tmp_path):
    """The states have a group of their own in the file: keras.layers.LSTM (which saves
    none) found 2 more variables than it expected in the layer's group and refused the
    file of a stateful kerasrnn model ("expected 0 variables, but received 2")."""
    def model(layer):
        layer = keras.layers.Bidirectional(layer) if wrap else layer
        inputs = keras.Input(batch_shape=(BATCH, None, FEATURES))
        return keras.Model(inputs, layer(inputs))

    ours = model(kerasrnn.LSTM(UNITS, stateful=True))
    random_weights(ours, rng)
    x = nonzero_uniform(rng, (BATCH, TIME, FEATURES)).astype("float32")
    ours(x)  # the states are now nonzero
    path = str(tmp_path / "stateful.weights.h5")
    ours.save_weights(path)
    for stateful in (False, True):
        theirs = model(keras.layers.LSTM(UNITS, stateful=stateful))
        theirs.load_weights(path)
        for a, b in zip(theirs.get_weights(), ours.get_weights()):
            np.testing.assert_array_equal(a, b)
    twin = model(kerasrnn.LSTM(UNITS, stateful=True))
    twin.load_weights(path)  # and the states come back into a stateful kerasrnn twin
    states = [s for layer in ([twin.layers[-1].forward_layer, twin.layers[-1].backward_layer] if wrap
                              else [twin.layers[-1]]) for s in layer.states]
    saved = [s for layer in ([ours.layers[-1].forward_layer, ours.layers[-1].backward_layer] if wrap
                             else [ours.layers[-1]]) for s in layer.states]
    for a, b in zip(states, saved):
        assert np.abs(to_numpy(b)).max() > 1e-3
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))


def test_states_in_the_layers_own_group_still_load():
    """Files written before kept a stateful layer's states in the layer's own group
    (after its own weights: none, the cell's are in the cell's group): they load."""
    layer = kerasrnn.GRU(UNITS, stateful=True)
    layer.build((BATCH, TIME, FEATURES))
    state = np.full((BATCH, UNITS), 0.25, "float32")
    layer.load_own_variables({"0": state})
    np.testing.assert_array_equal(to_numpy(layer.states[0]), state)
    with pytest.raises(ValueError, match="expected 0 weights, plus 1 states"):
        layer.load_own_variables({"0": state, "1": state})


# ------------------------------------------------------------------- across backends
OTHER_BACKENDS = [
    b for b in ("tensorflow", "jax", "torch")
    if b != BACKEND and importlib.util.find_spec(b) is not None
]

_LOAD_ELSEWHERE = """
import json, sys
import numpy as np, keras
import kerasrnn  # registers the classes
model = keras.saving.load_model(sys.argv[1])
x = np.load(sys.argv[2])
outputs = [keras.ops.convert_to_numpy(o).tolist() for o in model(x["x"], training=False)]
print(json.dumps({"backend": keras.backend.backend(), "outputs": outputs}))
"""


@pytest.mark.skipif(not OTHER_BACKENDS, reason="no other backend is installed")
def test_save_here_load_on_another_backend(rng, tmp_path):
    """One model holding every layer kind, saved on this backend, loaded on the next
    backend in a subprocess (each costs seconds of imports): same outputs."""
    other = OTHER_BACKENDS[(["tensorflow", "jax", "torch"].index(BACKEND)) % len(OTHER_BACKENDS)]
    seq = keras.Input((TIME, FEATURES))
    rnns = [
        kerasrnn.LSTM(UNITS, return_sequences=True),
        kerasrnn.GRU(UNITS, reset_after=False, return_sequences=True, go_backwards=True),
        keras.layers.Bidirectional(kerasrnn.GRU(UNITS, return_sequences=True), merge_mode="sum"),
        kerasrnn.IRNN(UNITS),
    ]
    h = seq
    for rnn in rnns:
        h = rnn(h)
    tail = kerasrnn.SimpleRNN(UNITS, return_state=True)(seq)
    model = keras.Model(seq, [h, *tail])
    for rnn in rnns:
        random_weights(rnn, rng)
    x = nonzero_uniform(rng, (BATCH, TIME, FEATURES)).astype("float32")
    want = [to_numpy(o) for o in model(x)]
    path = str(tmp_path / "model.keras")
    model.save(path)
    np.savez(tmp_path / "x.npz", x=x)
    env = {**os.environ, "KERAS_BACKEND": other, "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-c", _LOAD_ELSEWHERE, path, str(tmp_path / "x.npz")],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["backend"] == other
    assert len(loaded["outputs"]) == len(want)
    for got, w in zip(loaded["outputs"], want):
        np.testing.assert_allclose(np.asarray(got), w, rtol=1e-5, atol=1e-5)
