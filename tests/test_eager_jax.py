"""Eager calls on JAX run as one compiled program, cached per layer and input signature.

Called eagerly, `jax.lax.scan` traces and compiles its body at every call (the step is a
new closure each time) and JAX keeps each compiled program: a layer called in a Python
loop got slower and grew in memory with every call (as `keras.layers.LSTM` does). Here
the step runs in Python only when a new signature is traced.
"""

import jax
import numpy as np
import pytest
from conftest import BACKEND, to_numpy

import kerasrnn

pytestmark = pytest.mark.skipif(BACKEND != "jax", reason="JAX's eager scan")


def counting_steps(layer):
    """The number of times `layer.cell.step` has run in Python (once per trace)."""
    calls = []
    step = layer.cell.step

    def counted(*args, **kwargs):
        calls.append(1)
        return step(*args, **kwargs)

    layer.cell.step = counted
    return calls


@pytest.mark.parametrize("layer_cls", [kerasrnn.LSTM, kerasrnn.GRU, kerasrnn.SimpleRNN])
def test_repeated_eager_calls_trace_once_per_signature(layer_cls, rng):
    layer = layer_cls(4, return_sequences=True)
    x = rng.random((3, 5, 2)).astype("float32")
    first = to_numpy(layer(x))
    calls = counting_steps(layer)
    for _ in range(3):
        np.testing.assert_array_equal(to_numpy(layer(x)), first)
    assert calls == []  # compiled at the first call, reused since
    mask = np.array([[1, 1, 1, 0, 0]] * 3, bool)
    masked = to_numpy(layer(x, mask=mask))
    traced = len(calls)
    assert traced > 0  # a new signature: traced once...
    np.testing.assert_array_equal(to_numpy(layer(x, mask=mask)), masked)
    assert len(calls) == traced  # ...and not again
    np.testing.assert_allclose(masked[:, :3], first[:, :3], rtol=1e-6, atol=1e-7)


def test_last_path_follows_each_call():
    layer = kerasrnn.LSTM(4, fused=False)
    x = np.ones((2, 3, 2), "float32")
    layer(x)
    unmasked = layer.last_path
    layer(x, mask=np.array([[1, 1, 0], [1, 0, 0]], bool))
    layer.last_path = None
    layer(x)
    assert layer.last_path == unmasked


def test_weights_and_states_are_read_and_written_at_every_call(rng):
    layer = kerasrnn.LSTM(4, stateful=True)
    x = rng.random((2, 3, 2)).astype("float32")
    first = to_numpy(layer(x))
    second = to_numpy(layer(x))  # starts from the states the first call left
    assert not np.allclose(first, second)
    layer.reset_states()
    np.testing.assert_array_equal(to_numpy(layer(x)), first)
    layer.set_weights([w * 0 for w in layer.get_weights()])  # the states are no weights
    layer.reset_states()
    np.testing.assert_array_equal(to_numpy(layer(x)), 0)


def test_dropout_draws_new_masks_at_every_training_call(rng):
    layer = kerasrnn.GRU(4, dropout=0.5, recurrent_dropout=0.5, seed=1)
    x = rng.random((2, 3, 2)).astype("float32")
    draws = [to_numpy(layer(x, training=True)) for _ in range(2)]
    assert not np.allclose(draws[0], draws[1])
    np.testing.assert_array_equal(to_numpy(layer(x)), to_numpy(layer(x, training=False)))


def test_calls_inside_a_transformation_are_left_to_it(rng):
    layer = kerasrnn.LSTM(4)
    x = rng.random((2, 3, 2)).astype("float32")
    eager = to_numpy(layer(x))
    compiled = jax.jit(lambda x: layer(x))
    np.testing.assert_allclose(to_numpy(compiled(x)), eager, rtol=1e-6, atol=1e-7)
    gradient = jax.grad(lambda x: layer(x).sum())(x)
    assert gradient.shape == x.shape and np.isfinite(gradient).all()


def test_deep_rnn_runs_each_layer_compiled(rng):
    """A `DeepRNN` called eagerly: each of its layers (a bidirectional one too) traces
    its step once, then reuses its program."""
    stack = kerasrnn.DeepRNN([kerasrnn.LSTM(4), kerasrnn.GRU(4)], bidirectional=[False, True],
                             residual=False, return_sequences=True)
    x = rng.random((3, 5, 2)).astype("float32")
    first = to_numpy(stack(x))
    calls = [counting_steps(layer) for layer in stack.rnn_layers if isinstance(layer, kerasrnn.layers.RNN)]
    calls += [counting_steps(getattr(layer, side)) for layer in stack.rnn_layers
              for side in ("forward_layer", "backward_layer") if hasattr(layer, side)]
    assert len(calls) == 3
    for _ in range(2):
        np.testing.assert_array_equal(to_numpy(stack(x)), first)
    assert all(c == [] for c in calls)
