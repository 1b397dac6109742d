r"""Regularization that spares the recurrence: variational, non-recurrent and zoneout.

Three ways to regularize a recurrent network without cutting the path that carries
information through time:

- **Variational dropout** (Gal & Ghahramani 2016): one dropout mask per sequence,
  shared by every time step, on the inputs and on the state fed back
  (`dropout`/`recurrent_dropout` of every kerasrnn cell use `dropout_mask`).
- **Non-recurrent dropout** (Pham et al. 2014): dropout only on the connections
  between layers, never on `h_{t-1} → h_t` (`sequence_dropout`, used by
  `kerasrnn.layers.DeepRNN`).
- **Zoneout** (Krueger et al. 2016): each unit keeps its previous value with
  probability `p` at each step during training (`zoneout_mask` draws the per-step
  masks before the time loop; `zoneout` mixes), and the expectation at inference:

  ```
  training:   u_t = d_t ⊗ u_{t-1} + (1 − d_t) ⊗ ũ_t,   d_t ~ Bernoulli(p) per unit and step
  inference:  u_t = p · u_{t-1} + (1 − p) · ũ_t
  ```

  where `ũ_t` is the cell's ordinary update of the state `u` (`h`, or `c` of an LSTM).

References:
    Gal & Ghahramani, "A Theoretically Grounded Application of Dropout in Recurrent
    Neural Networks", NeurIPS 2016. Pham, Bluche, Kermorvant & Louradour, "Dropout
    improves Recurrent Neural Networks for Handwriting Recognition", ICFHR 2014.
    Krueger et al., "Zoneout: Regularizing RNNs by Randomly Preserving Hidden
    Activations", ICLR 2017 (arXiv:1606.01305, 2016).
"""

import keras
from keras import ops

__all__ = ["dropout_mask", "sequence_dropout", "zoneout", "zoneout_mask"]


def dropout_mask(shape, rate, seed=None, dtype=None):
    """An inverted-dropout mask: 0 with probability `rate`, else `1 / (1 − rate)`.

    Drawn once and multiplied into every time step, it is the variational dropout of
    Gal & Ghahramani (2016).

    Args:
        shape: the mask's shape, e.g. `(batch, features)`.
        rate: fraction of units dropped, in [0, 1).
        seed: an int or a `keras.random.SeedGenerator`.
        dtype: the mask's dtype (default: Keras's float type).

    Example:

    >>> import numpy as np, keras
    >>> from kerasrnn.regularizers import dropout_mask
    >>> m = keras.ops.convert_to_numpy(dropout_mask((1000,), 0.5, seed=0))
    >>> sorted(set(m.tolist()))
    [0.0, 2.0]
    """
    ones = ops.ones(shape, dtype=dtype or keras.config.floatx())
    return _dropout(ones, _rate("rate", rate), None, seed)


def sequence_dropout(x, rate, seed=None, per_sequence=False):
    """Dropout on a `(batch, time, features)` tensor between recurrent layers.

    With `per_sequence=False` each step and unit gets its own mask (Pham et al. 2014,
    and what `torch.nn.LSTM(dropout=...)` does between layers); with `True` one mask
    per sequence is shared by all steps (Gal & Ghahramani 2016). Either way the
    recurrent connections are untouched: this is applied to a layer's output sequence.

    Args:
        x: `(batch, time, features)`.
        rate: fraction dropped, in [0, 1); 0 returns `x`.
        seed: an int or a `keras.random.SeedGenerator`.
        per_sequence: share the mask over the time axis.

    Example:

    >>> import numpy as np, keras
    >>> from kerasrnn.regularizers import sequence_dropout
    >>> y = sequence_dropout(np.ones((2, 5, 3), "float32"), 0.5, seed=1, per_sequence=True)
    >>> y = keras.ops.convert_to_numpy(y)
    >>> bool((y == y[:, :1]).all())   # the same mask at every step
    True
    """
    x = ops.convert_to_tensor(x)
    if _rate("rate", rate) == 0:
        return x
    noise_shape = (None, 1, None) if per_sequence and len(x.shape) == 3 else None
    return _dropout(x, rate, noise_shape, seed)


def zoneout_mask(shape, rate, seed=None, dtype=None):
    """Zoneout masks `d_t`: 1 where a unit keeps its previous value (probability `rate`).

    Drawn before the time loop for every step at once (`shape = (batch, time, units)`),
    so the loop body stays stateless; the time loop scans them with the inputs.

    Args:
        shape: `(batch, time, units)` (or `(batch, units)` for one step).
        rate: zoneout probability `p` in [0, 1).
        seed: an int or a `keras.random.SeedGenerator`.
        dtype: the mask's dtype (default: Keras's float type).

    Example:

    >>> import keras
    >>> from kerasrnn.regularizers import zoneout_mask
    >>> d = keras.ops.convert_to_numpy(zoneout_mask((100, 50, 20), 0.3, seed=0))
    >>> round(float(d.mean()), 2)
    0.3
    """
    rate = _rate("rate", rate, zoneout=True)
    return ops.cast(ops.less(_uniform(shape, seed), rate), dtype or keras.config.floatx())


def _rate(name, value, zoneout=False):
    """`value` as a float in [0, 1), else a clear error naming `name`."""
    from kerasrnn.layers import _checks  # the layers import this module

    if zoneout:
        return _checks.rate(name, value, meaning=_checks.ZONEOUT_MEANING)
    return _checks.rate(name, value)


def zoneout(previous, candidate, keep):
    """`u_t = keep ⊗ u_{t-1} + (1 − keep) ⊗ ũ_t` (Krueger et al. 2016).

    Args:
        previous: `u_{t-1}`.
        candidate: `ũ_t`, the cell's ordinary update.
        keep: a 0/1 mask `d_t` (training) or the rate `p` (inference: the expectation).

    Example:

    >>> import numpy as np
    >>> from kerasrnn.regularizers import zoneout
    >>> zoneout(np.array([1.0, 1.0]), np.array([3.0, 3.0]), np.array([1.0, 0.0])).tolist()
    [1.0, 3.0]
    >>> float(zoneout(1.0, 3.0, 0.25))
    2.5
    """
    # The same mix in three operations (four as written above), and two fewer in
    # the backward pass: on torch's eager loop every operation counts.
    return candidate + keep * (previous - candidate)


# ------------------------------------------------------------------ random numbers
# On TensorFlow, `keras.random.uniform`/`dropout` call the stateless random ops with
# their default algorithm ("auto_select"). Compiled by XLA on a CPU (a model compiled
# with `jit_compile=True`) that algorithm draws 819,200 uniforms, one zoneout mask of
# a (64, 100, 128) sequence, in 350 ms, against 2.5 ms for the same op with "philox":
# the zoneout layer's training step went from 14 ms to 365 ms. Outside XLA "philox"
# is what "auto_select" picks on a CPU: the same numbers, at the same speed.


def _uniform(shape, seed, dtype=None):
    """Uniform [0, 1) floats of `shape` from `seed`, as `keras.random.uniform` draws them."""
    dtype = dtype or keras.config.floatx()
    if keras.backend.backend() != "tensorflow" or seed is None:
        return keras.random.uniform(shape, seed=seed, dtype=dtype)
    import tensorflow as tf

    if isinstance(seed, keras.random.SeedGenerator):
        seed = seed.next()
    elif isinstance(seed, int):
        # Keras's reading of an int seed on TensorFlow: [seed, 0] as int64 (its seed
        # dtype there), reduced below as a SeedGenerator's state is.
        seed = tf.constant([seed, 0], tf.int64)
    else:
        raise ValueError(  # noqa: TRY004 - the error Keras raises on the other backends
            f"`seed` must be an int or a keras.random.SeedGenerator, got {seed!r} "
            f"(of type {type(seed).__name__})."
        )
    if seed.dtype != tf.int32:  # a SeedGenerator's state is int64 on TensorFlow
        seed = tf.cast(tf.math.floormod(seed, tf.int32.max - 1), tf.int32)
    return tf.random.stateless_uniform(shape, seed=seed, dtype=dtype, alg="philox")


def _dropout(x, rate, noise_shape, seed):
    """`keras.random.dropout(x, rate, noise_shape, seed)`, with `_uniform`'s numbers."""
    if keras.backend.backend() != "tensorflow" or seed is None or rate == 0:
        return keras.random.dropout(x, rate=rate, noise_shape=noise_shape, seed=seed)
    shape = ops.shape(x)
    if noise_shape is not None:
        shape = tuple(s if n is None else n for s, n in zip(shape, noise_shape))
    # As TensorFlow's stateless dropout: uniforms of x's dtype, kept where >= rate.
    keep = ops.cast(ops.greater_equal(_uniform(shape, seed, x.dtype), rate), x.dtype)
    return x * ops.convert_to_tensor(1.0 / (1.0 - rate), dtype=x.dtype) * keep
