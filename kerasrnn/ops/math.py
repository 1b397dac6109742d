"""Two `keras.ops` that keep float64, for the cells' equations.

Keras narrows some 64-bit results to 32 bits on some backends ("to be aligned with JAX's
default behaviour"): on torch `keras.ops.matmul` of two float64 tensors returns float32,
and on JAX `keras.ops.tanh` of a float64 tensor returns float32 even with
`jax_enable_x64`. A `dtype="float64"` layer (what finite-difference gradient checks use)
must compute in float64 throughout, so the cells call these two instead.
"""

import keras
from keras import activations, ops

__all__ = ["activate", "matmul"]


def _is_float64(x):
    return str(getattr(x, "dtype", "")).endswith("float64")


def matmul(a, b):
    """`keras.ops.matmul(a, b)`, but float64 stays float64 on torch.

    Example:

    >>> import numpy as np, keras
    >>> from kerasrnn.ops.math import matmul
    >>> y = matmul(np.ones((2, 3), "float32"), np.full((3, 1), 2.0, "float32"))
    >>> keras.ops.convert_to_numpy(y).ravel().tolist()
    [6.0, 6.0]
    """
    if keras.backend.backend() == "torch" and _is_float64(a) and _is_float64(b):
        import torch

        return torch.matmul(ops.convert_to_tensor(a), ops.convert_to_tensor(b))
    return ops.matmul(a, b)


def activate(fn, x):
    """`fn(x)` for a Keras activation `fn`, but `tanh` of float64 stays float64 on JAX.

    Example:

    >>> import numpy as np, keras
    >>> from kerasrnn.ops.math import activate
    >>> y = activate(keras.activations.tanh, np.zeros((1, 2), "float32"))
    >>> keras.ops.convert_to_numpy(y).tolist()
    [[0.0, 0.0]]
    """
    if fn is activations.tanh and keras.backend.backend() == "jax" and _is_float64(x):
        import jax.numpy as jnp

        return jnp.tanh(x)
    return fn(x)
