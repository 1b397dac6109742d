"""`keras.ops` that keep float64 and skip Keras's per-call overhead in the time loop.

Keras narrows some 64-bit results to 32 bits on some backends ("to be aligned with JAX's
default behaviour"): on torch `keras.ops.matmul` of two float64 tensors returns float32,
and on JAX `keras.ops.tanh` of a float64 tensor returns float32 even with
`jax_enable_x64`. A `dtype="float64"` layer (what finite-difference gradient checks use)
must compute in float64 throughout, so the cells call these instead.

On torch the loop runs eagerly, so the Python around each `keras.ops` call is paid at
every step: measured per call on a `(64, 512)` tensor, `keras.ops.reshape` 31 µs
against 0.9 µs for `Tensor.reshape`, `keras.ops.matmul` 18 µs against 5 µs,
`keras.ops.layer_normalization` 45 µs against 32 µs. For torch tensors of one float
dtype these call torch directly; everything else goes through `keras.ops`.
"""

import keras
from keras import activations, ops

__all__ = ["activate", "layer_normalization", "matmul", "reshape", "rms_scale"]


def _is_float64(x):
    return str(getattr(x, "dtype", "")).endswith("float64")


def _torch_float(*xs):
    """True for torch tensors of one dtype, float32 or float64 (on the torch backend)."""
    if keras.backend.backend() != "torch":
        return False
    import torch

    if not all(isinstance(x, torch.Tensor) for x in xs):
        return False
    dtypes = {x.dtype for x in xs}
    return dtypes == {torch.float32} or dtypes == {torch.float64}


def matmul(a, b):
    """`keras.ops.matmul(a, b)`, but float64 stays float64 on torch.

    Example:

    >>> import numpy as np, keras
    >>> from kerasrnn.ops.math import matmul
    >>> y = matmul(np.ones((2, 3), "float32"), np.full((3, 1), 2.0, "float32"))
    >>> keras.ops.convert_to_numpy(y).ravel().tolist()
    [6.0, 6.0]
    """
    if _torch_float(a, b):
        import torch

        return torch.matmul(a, b)
    if keras.backend.backend() == "torch" and _is_float64(a) and _is_float64(b):
        import torch

        return torch.matmul(ops.convert_to_tensor(a), ops.convert_to_tensor(b))
    return ops.matmul(a, b)


def reshape(x, shape):
    """`keras.ops.reshape(x, shape)`, without its per-call cost for torch tensors.

    Example:

    >>> import numpy as np, keras
    >>> from kerasrnn.ops.math import reshape
    >>> tuple(reshape(np.zeros((2, 6), "float32"), (2, 3, 2)).shape)
    (2, 3, 2)
    """
    if _torch_float(x):
        return x.reshape(tuple(shape))
    return ops.reshape(x, shape)


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


def layer_normalization(x, gamma=None, beta=None, epsilon=1e-3):
    """`keras.ops.layer_normalization` over the last axis, but float64 stays float64.

    Keras computes the statistics in `result_type(x.dtype, "float32")`, which is
    float32 for float64 inputs on torch and JAX.

    Example:

    >>> import numpy as np, keras
    >>> from kerasrnn.ops.math import layer_normalization
    >>> y = layer_normalization(np.array([[1.0, 3.0]], "float32"), epsilon=0.0)
    >>> keras.ops.convert_to_numpy(y).tolist()
    [[-1.0, 1.0]]
    """
    backend = keras.backend.backend()
    if backend == "torch" and (_is_float64(x) or _torch_float(x, *[v for v in (gamma, beta) if v is not None])):
        import torch

        x = ops.convert_to_tensor(x)
        return torch.nn.functional.layer_norm(x, x.shape[-1:], gamma, beta, epsilon)
    if _is_float64(x) and backend == "jax":
        import jax
        import jax.numpy as jnp

        centered = x - jnp.mean(x, axis=-1, keepdims=True)
        x = centered * jax.lax.rsqrt(jnp.mean(jnp.square(centered), axis=-1, keepdims=True) + epsilon)
        return x if gamma is None else x * gamma + beta
    return ops.layer_normalization(x, gamma, beta, epsilon=epsilon)


def rms_scale(x, epsilon):
    r"""`x / sqrt(mean(x²) + ε)` over the last axis, with a short backward pass.

    ```
    y = x · s,   s = 1 / sqrt(mean(x²) + ε)
    ∂L/∂x = s · (∂L/∂y − y · mean(y ⊗ ∂L/∂y))
    ```

    `x` must have mean zero along the last axis (a cell's product with
    centered weights, `kerasrnn.layers.cell.center_blocks`). On TensorFlow the
    gradient above is the whole backward pass (one reduction; autodiff of the forward
    would store and replay every elementwise step); JAX's compiler gets there from the
    forward alone; torch runs its fused layer-norm kernel, the same for such an `x`
    (and faster than anything composed of smaller ops). float16/bfloat16 inputs are
    computed in float32 (forward and backward), float64 stays float64.

    Example:

    >>> import numpy as np, keras
    >>> from kerasrnn.ops.math import rms_scale
    >>> y = rms_scale(np.array([[3.0, -3.0]], "float32"), epsilon=0.0)
    >>> keras.ops.convert_to_numpy(y).tolist()
    [[1.0, -1.0]]
    """
    x = ops.convert_to_tensor(x)
    dtype = keras.backend.standardize_dtype(x.dtype)
    if dtype in ("float16", "bfloat16"):  # forward and backward in float32
        return ops.cast(rms_scale(ops.cast(x, "float32"), epsilon), dtype)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return _rms_scale_tf(x, epsilon)
    if backend == "torch":
        # torch's fused layer-norm kernel (forward and backward) is faster than any
        # composition here; for a mean-zero `x` it computes the same.
        return layer_normalization(x, epsilon=epsilon)
    return _rms_scale_forward(x, epsilon)[0]


def _rms_scale_forward(x, epsilon):
    # A sum, scaled: `keras.ops.mean` computes float64 in float32 on JAX and torch.
    mean_square = ops.sum(ops.square(x), axis=-1, keepdims=True) * (1.0 / x.shape[-1])
    scale = ops.rsqrt(mean_square + epsilon)
    return x * scale, scale


def _rms_scale_backward(y, scale, upstream):
    dot = ops.sum(y * upstream, axis=-1, keepdims=True) * (1.0 / y.shape[-1])
    return scale * (upstream - y * dot)


def _rms_scale_tf(x, epsilon):
    import tensorflow as tf

    @tf.custom_gradient
    def scaled(x):
        y, scale = _rms_scale_forward(x, epsilon)
        return y, lambda upstream: _rms_scale_backward(y, scale, upstream)

    return scaled(x)

