"""Helpers shared by the test files: cell forms, random weights and inputs, the NumPy
reference for a layer, and gradients of a layer on every backend."""

import functools
import inspect

import keras
import numpy as np
import pytest

import kerasrnn
from kerasrnn.testing import reference

BACKEND = keras.backend.backend()

#: Shapes shared by the test files, so that on JAX one test's compiled programs (the
#: persistent compilation cache, see conftest.py) serve the others.
BATCH, TIME, FEATURES, UNITS = 4, 6, 3, 5

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
    """2 for an LSTM (`[h, c]`), else 1; `layer` is a layer, a cell, or a layer class."""
    if isinstance(layer, type):
        return 2 if issubclass(layer.cell_class, kerasrnn.LSTMCell) else 1
    cell = getattr(layer, "cell", layer)
    return 2 if isinstance(cell, kerasrnn.LSTMCell) else 1


#: `go_backwards` both ways, as a parametrize decorator.
both_directions = pytest.mark.parametrize("go_backwards", [False, True], ids=["forward", "backward"])


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


def output_shapes(layer, input_shape):
    """The shapes of `layer(x)`'s outputs (a list, also without `return_state`)."""
    shapes = layer.compute_output_shape(input_shape)
    return list(shapes) if getattr(layer, "return_state", False) else [shapes]


def gradient_fn(layer, cotangents, **call_kwargs):
    """`f(weights, x) -> (loss, d_inputs, [d_weight, ...])` by the backend's autodiff, for
    `loss = Σ_k Σ outputs_k · cotangents_k` of `layer.stateless_call(weights, x)` (the
    trainable weights replaced by `weights`). NumPy in and out, float64 out; on JAX
    compiled once, so calling it again (finite differences) is cheap.
    """
    dtype = layer.compute_dtype
    non_trainable = [v.value for v in layer.non_trainable_variables]
    cot = [keras.ops.convert_to_tensor(c, dtype=dtype) for c in cotangents]

    def loss_fn(weights, x):
        out, _ = layer.stateless_call(weights, non_trainable, x, **call_kwargs)
        out = _flatten(out)
        assert len(out) == len(cot), (len(out), len(cot))
        return sum(keras.ops.sum(keras.ops.cast(o, dtype) * c) for o, c in zip(out, cot))

    if BACKEND == "jax":
        import jax

        jax_grad = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1)))

        def backend_grad(w, x):
            loss, (gw, gx) = jax_grad(w, x)
            return loss, gx, gw

    elif BACKEND == "tensorflow":
        import tensorflow as tf

        def backend_grad(w, x):
            with tf.GradientTape() as tape:
                tape.watch(w)
                tape.watch(x)
                loss = loss_fn(w, x)
            gx, *gw = tape.gradient(loss, [x, *w])
            return loss, gx, gw

    elif BACKEND == "torch":
        import torch

        def backend_grad(w, x):
            w = [t.detach().clone().requires_grad_(True) for t in w]
            x = x.detach().clone().requires_grad_(True)
            loss = loss_fn(w, x)
            gx, *gw = torch.autograd.grad(loss, [x, *w])
            return loss, gx, gw

    else:  # pragma: no cover
        raise NotImplementedError(BACKEND)

    def to64(t):
        return keras.ops.convert_to_numpy(t).astype("float64")

    def f(weights, x):
        w = [keras.ops.convert_to_tensor(v, dtype=dtype) for v in weights]
        loss, gx, gw = backend_grad(w, keras.ops.convert_to_tensor(x, dtype=dtype))
        return float(to64(loss)), to64(gx), [to64(g) for g in gw]

    return f


def loss_and_grads(layer, x, cotangents, weights=None, **call_kwargs):
    """`gradient_fn(layer, cotangents)(weights, x)`; `weights` defaults to the layer's."""
    if weights is None:
        weights = [keras.ops.convert_to_numpy(v) for v in layer.trainable_variables]
    return gradient_fn(layer, cotangents, **call_kwargs)(weights, x)


def jax_cudnn_stand_in():
    """`jax.experimental.rnn.lstm_fwd` and `lstm_bwd` as they are on a GPU, computed on a
    CPU: each half binds one primitive (computed by the reference `lstm_ref`) that, as
    cuDNN's `rnn_fwd` and `rnn_bwd`, has no batching rule, and checks the precision first
    as the kernel does (it raises NotImplementedError under 'bfloat16')."""
    import jax
    import jax.numpy as jnp
    from jax.experimental import rnn
    from jax.extend.core import Primitive
    from jax.interpreters import mlir

    def reference(x, h_0, c_0, weights, seq_lengths, *, input_size, hidden_size,
                  num_layers, dropout, bidirectional):
        unpacked = rnn.unpack_lstm_weights(weights, input_size, hidden_size, num_layers, bidirectional)
        return rnn.lstm_ref(x, h_0, c_0, *unpacked, seq_lengths, input_size, hidden_size,
                            num_layers, dropout, bidirectional)

    def gradients(dy, dh_n, dc_n, x, h_0, c_0, weights, seq_lengths, **static):
        _, vjp = jax.vjp(lambda *a: reference(*a, seq_lengths, **static), x, h_0, c_0, weights)
        return vjp((dy, dh_n, dc_n))

    def primitive(name, impl):
        p = Primitive(name)
        p.multiple_results = True
        p.def_impl(impl)
        p.def_abstract_eval(lambda *avals, **static: [
            jax.core.ShapedArray(o.shape, o.dtype)
            for o in jax.eval_shape(lambda *a: impl(*a, **static), *avals)])
        mlir.register_lowering(p, mlir.lower_fun(impl, multiple_results=True))
        return p

    def statics(input_size, hidden_size, num_layers, dropout, bidirectional):
        return {"input_size": input_size, "hidden_size": hidden_size, "num_layers": num_layers,
                "dropout": dropout, "bidirectional": bidirectional}

    fwd_p = primitive("stand_in_rnn_fwd", reference)
    bwd_p = primitive("stand_in_rnn_bwd", gradients)
    fwd_signature = inspect.signature(rnn.lstm_fwd)
    bwd_signature = inspect.signature(rnn.lstm_bwd)

    def lstm_fwd(x, h_0, c_0, w, seq_lengths, input_size, hidden_size, num_layers, dropout,
                 bidirectional, precision):
        # The call must fit the installed kernel's signature, not only this stand-in's.
        fwd_signature.bind(x, h_0, c_0, w, seq_lengths, input_size, hidden_size, num_layers,
                           dropout, bidirectional, precision)
        rnn._lstm_cudnn_allow_tf32(precision)
        static = statics(input_size, hidden_size, num_layers, dropout, bidirectional)
        y, h_n, c_n = fwd_p.bind(x, h_0, c_0, w, seq_lengths, **static)
        return (y, h_n, c_n), (x, h_0, c_0, w, seq_lengths)

    def lstm_bwd(input_size, hidden_size, num_layers, dropout, bidirectional, precision,
                 residuals, gradients):
        bwd_signature.bind(input_size, hidden_size, num_layers, dropout, bidirectional,
                           precision, residuals, gradients)
        rnn._lstm_cudnn_allow_tf32(precision)
        static = statics(input_size, hidden_size, num_layers, dropout, bidirectional)
        grads = bwd_p.bind(*gradients, *residuals, **static)
        return (*grads, jnp.zeros_like(residuals[-1]))

    return lstm_fwd, lstm_bwd
