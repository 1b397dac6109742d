"""Helpers shared by the test files: cell forms, random weights and inputs, the NumPy
reference for a layer, and gradients of a layer on every backend."""

import functools

import keras
import numpy as np

import kerasrnn
from kerasrnn.testing import reference

BACKEND = keras.backend.backend()

#: Every cell form the core has, as `(layer class, keyword arguments)`. The names are
#: test ids.
CELL_FORMS = {
    "simple_tanh": (kerasrnn.SimpleRNN, {}),
    "simple_relu": (kerasrnn.SimpleRNN, {"activation": "relu"}),
    "irnn": (kerasrnn.IRNN, {}),
    "lstm": (kerasrnn.LSTM, {}),
    "gru_after": (kerasrnn.GRU, {"reset_after": True}),
    "gru_before": (kerasrnn.GRU, {"reset_after": False}),
    "simple_nobias": (kerasrnn.SimpleRNN, {"use_bias": False}),
    "lstm_nobias": (kerasrnn.LSTM, {"use_bias": False}),
    "gru_after_nobias": (kerasrnn.GRU, {"reset_after": True, "use_bias": False}),
    "gru_before_nobias": (kerasrnn.GRU, {"reset_after": False, "use_bias": False}),
}


def nonzero_uniform(rng, shape, low=0.1, high=1.0):
    """Values with |v| in [low, high] and random signs: no zeros, which would hide a
    dropped term."""
    return (rng.uniform(low, high, shape) * rng.choice([-1.0, 1.0], shape)).astype("float64")


def random_weights(layer, rng, scale=0.6):
    """Gives an already built layer random weights without zeros; returns them (float64)."""
    weights = [nonzero_uniform(rng, w.shape, 0.05, scale) for w in layer.get_weights()]
    layer.set_weights([w.astype(v.dtype) for w, v in zip(weights, layer.get_weights())])
    return weights


def build(layer, input_dim, time=None, batch=None):
    layer.build((batch, time, input_dim))
    return layer


def reference_step(layer, weights):
    """The NumPy step of `layer`'s cell (a kerasrnn layer or cell) with these weights."""
    cell = getattr(layer, "cell", layer)
    kernel, recurrent = weights[0], weights[1]
    bias = weights[2] if len(weights) > 2 else None
    if isinstance(cell, kerasrnn.LSTMCell):
        return functools.partial(
            reference.lstm_step, kernel=kernel, recurrent_kernel=recurrent, bias=bias
        )
    if isinstance(cell, kerasrnn.GRUCell):
        return functools.partial(
            reference.gru_step, kernel=kernel, recurrent_kernel=recurrent, bias=bias,
            reset_after=cell.reset_after,
        )
    activation = {"tanh": np.tanh, "relu": reference.relu}[cell.activation.__name__]
    return functools.partial(
        reference.simple_rnn_step, kernel=kernel, recurrent_kernel=recurrent, bias=bias,
        activation=activation,
    )


def n_states(layer):
    cell = getattr(layer, "cell", layer)
    return 2 if isinstance(cell, kerasrnn.LSTMCell) else 1


def random_mask(rng, batch, time, kind):
    """A boolean `(batch, time)` mask: `"right"` padded (each row a valid prefix of a
    different length) or `"arbitrary"` (holes anywhere, including a leading masked step
    in each direction); every row keeps a valid step, one row is all valid (batch >= 3)."""
    if kind == "right":
        lengths = np.linspace(1, time, batch).round().astype(int)
        rng.shuffle(lengths)
        lengths[0] = time
        return np.arange(time)[None, :] < lengths[:, None]
    mask = rng.random((batch, time)) < 0.6
    mask[np.arange(batch), rng.integers(0, time, batch)] = True
    mask[0] = True
    # Leading masked steps, forward (row 1) and backward (row 2): the output before
    # any valid step.
    mask[1, 0], mask[1, -1] = False, True
    mask[2, -1], mask[2, 0] = False, True
    return mask


# ----------------------------------------------------------------------- gradients
def _flatten(outputs):
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def functional(layer, **call_kwargs):
    """`f(weights, x) -> list of outputs` as NumPy, through `layer.stateless_call`
    (the trainable weights replaced by `weights`; on JAX compiled once)."""
    non_trainable = [v.value for v in layer.non_trainable_variables]

    def f(weights, x):
        out, _ = layer.stateless_call(weights, non_trainable, x, **call_kwargs)
        return _flatten(out)

    if BACKEND == "jax":
        import jax

        f = jax.jit(f)
    dtype = layer.compute_dtype

    def numpy_f(weights, x):
        weights = [keras.ops.convert_to_tensor(w, dtype=dtype) for w in weights]
        out = f(weights, keras.ops.convert_to_tensor(x, dtype=dtype))
        return [keras.ops.convert_to_numpy(o).astype("float64") for o in out]

    return numpy_f


def loss_and_grads(layer, x, cotangents, weights=None, **call_kwargs):
    """`loss = Σ_k Σ outputs_k · cotangents_k` of `layer.stateless_call(weights, x)` and its
    gradients w.r.t. the inputs and every trainable weight, by the backend's autodiff.

    Returns `(loss, d_inputs, [d_weight, ...])` as float64 NumPy arrays; `weights`
    defaults to the layer's trainable weights.
    """
    dtype = layer.compute_dtype
    if weights is None:
        weights = [keras.ops.convert_to_numpy(v) for v in layer.trainable_variables]
    non_trainable = [v.value for v in layer.non_trainable_variables]
    cot = [keras.ops.convert_to_tensor(c, dtype=dtype) for c in cotangents]

    def loss_fn(weights, x):
        out, _ = layer.stateless_call(weights, non_trainable, x, **call_kwargs)
        out = _flatten(out)
        assert len(out) == len(cot), (len(out), len(cot))
        return sum(keras.ops.sum(keras.ops.cast(o, dtype) * c) for o, c in zip(out, cot))

    w = [keras.ops.convert_to_tensor(v, dtype=dtype) for v in weights]
    xt = keras.ops.convert_to_tensor(x, dtype=dtype)
    if BACKEND == "jax":
        import jax

        loss, (gw, gx) = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1)))(w, xt)
    elif BACKEND == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(w)
            tape.watch(xt)
            loss = loss_fn(w, xt)
        gx, *gw = tape.gradient(loss, [xt, *w])
    elif BACKEND == "torch":
        import torch

        w = [t.detach().clone().requires_grad_(True) for t in w]
        xt = xt.detach().clone().requires_grad_(True)
        loss = loss_fn(w, xt)
        gx, *gw = torch.autograd.grad(loss, [xt, *w])
    else:  # pragma: no cover
        raise NotImplementedError(BACKEND)
    to64 = lambda t: keras.ops.convert_to_numpy(t).astype("float64")  # noqa: E731
    return float(to64(loss)), to64(gx), [to64(g) for g in gw]
