"""Bad input raises a clear ValueError/TypeError that names the argument."""

import importlib.util
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

import kerasrnn

LAYERS = [kerasrnn.SimpleRNN, kerasrnn.IRNN, kerasrnn.LSTM, kerasrnn.GRU]
ids = [c.__name__ for c in LAYERS]
x = np.ones((2, 5, 3), "float32")


@pytest.mark.parametrize("layer_class", LAYERS, ids=ids)
@pytest.mark.parametrize("shape", [(2, 3), (2, 5, 3, 1)], ids=["rank2", "rank4"])
def test_input_rank(layer_class, shape):
    expected = r"rank 3 \(batch, time, features\).*" + re.escape(str(shape))
    with pytest.raises(ValueError, match=expected):
        layer_class(4)(np.ones(shape, "float32"))


@pytest.mark.parametrize("layer_class", [kerasrnn.SimpleRNN, kerasrnn.LSTM], ids=["SimpleRNN", "LSTM"])
def test_feature_size_changed_after_build(layer_class):
    layer = layer_class(4)
    layer(x)
    with pytest.raises(ValueError, match="feature size changed.*expected 3, received 7"):
        layer(np.ones((2, 5, 7), "float32"))


@pytest.mark.parametrize(
    "layer_class, count", [(kerasrnn.LSTM, 2), (kerasrnn.GRU, 1), (kerasrnn.SimpleRNN, 1)]
)
def test_initial_state_count(layer_class, count):
    layer = layer_class(4)
    wrong = [np.zeros((2, 4), "float32")] * (count + 1)
    with pytest.raises(ValueError, match=f"`initial_state` must be a list of {count} tensor"):
        layer(x, initial_state=wrong)
    if count == 2:  # one state for an LSTM
        with pytest.raises(ValueError, match="`initial_state` must be a list of 2"):
            layer(x, initial_state=[np.zeros((2, 4), "float32")])


@pytest.mark.parametrize(
    "shape", [(2, 5), (3, 4), (2, 4, 1), (4,)], ids=["units", "batch", "rank3", "rank1"]
)
@pytest.mark.parametrize("layer_class", [kerasrnn.LSTM, kerasrnn.GRU], ids=["LSTM", "GRU"])
def test_initial_state_shape(layer_class, shape):
    layer = layer_class(4)
    states = [np.zeros((2, 4), "float32") for _ in range(2 if layer_class is kerasrnn.LSTM else 1)]
    states[-1] = np.zeros(shape, "float32")
    index = len(states) - 1
    with pytest.raises(ValueError, match=rf"`initial_state\[{index}\]` must have shape \(batch=2, 4\)"):
        layer(x, initial_state=states)


@pytest.mark.parametrize(
    "shape", [(2, 6), (3, 5), (2, 5, 1), (2,)], ids=["time", "batch", "rank3", "rank1"]
)
def test_mask_shape(shape):
    with pytest.raises(ValueError, match=r"`mask` must have shape \(batch, time\) = \(2, 5\)"):
        kerasrnn.GRU(4)(x, mask=np.ones(shape, bool))


@pytest.mark.parametrize(
    "layer_class", [*LAYERS, kerasrnn.LSTMCell, kerasrnn.GRUCell, kerasrnn.SimpleRNNCell]
)
@pytest.mark.parametrize(
    "units, error",
    [(0, ValueError), (-3, ValueError), (2.5, TypeError), ("8", TypeError), (True, TypeError),
     (None, TypeError)],
)
def test_units(layer_class, units, error):
    with pytest.raises(error, match="`units` must be a positive integer"):
        layer_class(units)


@pytest.mark.parametrize("argument", ["dropout", "recurrent_dropout"])
@pytest.mark.parametrize(
    "value, error",
    [(-0.1, ValueError), (1.0, ValueError), (1.5, ValueError), ("0.5", TypeError), (None, TypeError)],
)
@pytest.mark.parametrize("layer_class", [kerasrnn.LSTM, kerasrnn.GRUCell], ids=["LSTM", "GRUCell"])
def test_dropout_range(layer_class, argument, value, error):
    with pytest.raises(error, match=rf"`{argument}` must be"):
        layer_class(4, **{argument: value})
    layer_class(4, **{argument: 0.0})
    layer_class(4, **{argument: 0.999})


@pytest.mark.parametrize("argument", ["activation", "recurrent_activation"])
@pytest.mark.parametrize("layer_class", [kerasrnn.LSTM, kerasrnn.GRU], ids=["LSTM", "GRU"])
def test_unknown_activation(layer_class, argument):
    with pytest.raises(ValueError, match=rf"Unknown activation for `{argument}`: 'tanhh'"):
        layer_class(4, **{argument: "tanhh"})


def test_activation_not_callable():
    with pytest.raises(ValueError, match="Unknown activation for `activation`: 3"):
        kerasrnn.SimpleRNN(4, activation=3)
    # None means linear, as in Keras.
    assert kerasrnn.SimpleRNN(4, activation=None).activation is keras.activations.linear


@pytest.mark.parametrize("argument", ["fused", "hoist_inputs", "remat", "xla"])
@pytest.mark.parametrize("value", ["yes", "always", 1.5, None])
def test_fused_and_hoist_inputs(argument, value):
    with pytest.raises(ValueError, match=rf"`{argument}` must be one of \('auto', True, False\)"):
        kerasrnn.LSTM(4, **{argument: value})


@pytest.mark.parametrize(
    "cell", [keras.layers.LSTMCell(4), keras.layers.Dense(4), "lstm"], ids=["keras_cell", "dense", "string"]
)
def test_rnn_needs_a_kerasrnn_cell(cell):
    with pytest.raises(TypeError, match="`cell` must be a kerasrnn cell.*keras.layers.RNN"):
        kerasrnn.RNN(cell)


@pytest.mark.parametrize("layer_class", [kerasrnn.SimpleRNN, kerasrnn.LSTM, kerasrnn.GRU], ids=["SimpleRNN", "LSTM", "GRU"])
def test_time_major_points_to_a_transpose(layer_class):
    with pytest.raises(TypeError, match=r"no option `time_major`.*swapaxes"):
        layer_class(4, time_major=True)


@pytest.mark.parametrize("make", [lambda: kerasrnn.SimpleRNN(4, implementation=1),
                                  lambda: kerasrnn.RNN(kerasrnn.LSTMCell(4), implementation=1)],
                         ids=["SimpleRNN", "RNN"])
def test_implementation_only_where_keras_takes_it(make):
    # keras.layers.SimpleRNN and keras.layers.RNN reject it too.
    with pytest.raises(TypeError, match="no option `implementation`"):
        make()


def test_unroll_is_accepted_kept_and_ignored():
    # Kept as given (keras.layers's config and attribute: test_keras_dropin.py); the
    # loop is never unrolled, and the function is the same.
    x = np.random.default_rng(0).normal(size=(2, 5, 3)).astype("float32")
    unrolled, plain = kerasrnn.LSTM(4, unroll=True), kerasrnn.LSTM(4)
    unrolled.build(x.shape)
    plain.build(x.shape)
    plain.set_weights(unrolled.get_weights())
    assert unrolled.get_config()["unroll"] is True and unrolled.unroll is True
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(unrolled(x)), keras.ops.convert_to_numpy(plain(x)))


# A child process imports kerasrnn with one backend made uninstallable.
IMPORT_WITHOUT = """
import sys
sys.modules[{blocked!r}] = None  # as if it were not installed
try:
    import kerasrnn
except ImportError as error:
    print(type(error).__name__, error)
else:
    print("imported")
"""


@pytest.mark.parametrize("chosen", ["tensorflow", "jax", "torch", None], ids=str)
def test_import_without_the_backend_keras_chose_says_what_to_do(chosen, tmp_path):
    """Keras's own error was `No module named 'tensorflow'` from inside Keras, for a user
    who installed kerasrnn[jax] and set no backend."""
    blocked = chosen or "tensorflow"  # no KERAS_BACKEND and no keras.json: TensorFlow
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env["KERAS_HOME"] = str(tmp_path)
    if chosen:
        env["KERAS_BACKEND"] = chosen
    run = subprocess.run([sys.executable, "-c", IMPORT_WITHOUT.format(blocked=blocked)], env=env,
                         capture_output=True, text=True, timeout=300, check=False)
    message = run.stdout
    assert message.startswith("ImportError kerasrnn could not import Keras"), run.stdout + run.stderr
    assert f"its backend, {blocked!r}" in message
    assert ("(from KERAS_BACKEND)" if chosen else "KERAS_BACKEND is not set") in message
    assert f"pip install 'kerasrnn[{blocked}]'" in message
    installed = [b for b in ("jax", "torch", "tensorflow") if b != blocked and importlib.util.find_spec(b)]
    if installed:
        assert f"os.environ['KERAS_BACKEND'] = {installed[0]!r}" in message
