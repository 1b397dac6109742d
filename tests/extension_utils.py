"""Helpers of the extension tests (layer norm, peepholes, zoneout, DeepRNN, interop)."""

import keras
import numpy as np
from conftest import BACKEND, to_numpy

#: Gradient checks run in float64 (the cells keep it through `kerasrnn.ops.math`, where
#: Keras's type promotion would narrow it to float32 on torch and JAX). JAX needs
#: `jax_enable_x64` for the whole test: request conftest's `float64` fixture.
GRAD_DTYPE = "float64"


def numpy(x):
    """A tensor as NumPy, detached from torch's autograd."""
    if hasattr(x, "detach"):
        x = x.detach()
    return to_numpy(x)


def value_and_grads(fn, arrays):
    """`fn(*tensors) -> scalar tensor`; returns `(value, [d value / d array])` as NumPy."""
    if BACKEND == "jax":
        import jax

        value, grads = jax.jit(jax.value_and_grad(fn, argnums=tuple(range(len(arrays)))))(*arrays)
    elif BACKEND == "tensorflow":
        import tensorflow as tf

        tensors = [tf.constant(a) for a in arrays]
        with tf.GradientTape() as tape:
            for t in tensors:
                tape.watch(t)
            value = fn(*tensors)
        grads = tape.gradient(value, tensors)
    else:
        import torch

        tensors = [torch.tensor(a, requires_grad=True) for a in arrays]
        value = fn(*tensors)
        grads = torch.autograd.grad(value, tensors)
    return float(numpy(value)), [numpy(g) for g in grads]


def check_gradients(fn, arrays, seed=0, before_call=None):
    """Compares autodiff with central finite differences along random directions.

    Arrays are cast to `GRAD_DTYPE` (build the layer with `dtype=GRAD_DTYPE`).
    `before_call` runs before every evaluation (e.g. to replay the same random masks).
    """
    rng = np.random.default_rng(seed)
    eps, rtol = 1e-6, 1e-6
    arrays = [np.asarray(a, dtype=GRAD_DTYPE) for a in arrays]

    def evaluate(*args):
        if before_call is not None:
            before_call()
        return fn(*args)

    if BACKEND == "jax" and before_call is None:
        import jax

        evaluate = jax.jit(evaluate)  # one trace for the five evaluations

    _, grads = value_and_grads(evaluate, arrays)
    for _ in range(2):
        directions = [rng.normal(size=a.shape) for a in arrays]
        step = [(eps * d).astype(GRAD_DTYPE) for d in directions]
        plus = float(numpy(evaluate(*[a + e for a, e in zip(arrays, step)])))
        minus = float(numpy(evaluate(*[a - e for a, e in zip(arrays, step)])))
        numeric = (plus - minus) / (2 * eps)
        analytic = sum(float((g * e).sum()) for g, e in zip(grads, step)) / eps
        np.testing.assert_allclose(analytic, numeric, rtol=rtol, atol=rtol * 1e-2)


def weighted_sum(outputs, weights):
    """A scalar loss that sees every output: `Σ outputs ⊗ weights`."""
    if not isinstance(outputs, (list, tuple)):
        outputs = [outputs]
    return sum(keras.ops.sum(o * keras.ops.convert_to_tensor(w, o.dtype)) for o, w in zip(outputs, weights))


def random_weights(layer, rng, scale=0.5):
    """Random values for every weight of a built layer; gains around 1."""
    values = []
    for w in layer.weights:
        v = rng.normal(0.0, scale, w.shape)
        if w.name.endswith("_gamma"):
            v = 1.0 + v
        values.append(v.astype(w.dtype))
    layer.set_weights(values)
    return {w.name: v.astype("float64") for w, v in zip(layer.weights, values)}


def save_and_load(model, tmp_path):
    path = str(tmp_path / "model.keras")
    model.save(path)
    return keras.saving.load_model(path)
