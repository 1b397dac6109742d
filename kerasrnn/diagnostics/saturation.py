r"""Saturation and statistics of a recurrent layer's gates and activations.

Glorot & Bengio (2010) watched how many units sit at the flat ends of their
activation: a sigmoid near 0 or 1 or a tanh near ±1 passes almost no gradient
(`σ'(z) = σ(1 − σ)`, `tanh'(z) = 1 − tanh²`), and a ReLU at 0 passes none. Here a
value `a` of an activation with limits `[lo, hi]` counts as saturated when

```
a ≤ lo + tol·(hi − lo)   or   a ≥ hi − tol·(hi − lo)
```

(`tol = 0.01`: a sigmoid below 0.01 or above 0.99, a tanh beyond ±0.98). A ReLU has
only the lower limit and counts exact zeros (inactive units); a linear or unknown
activation, or an unbounded value such as LSTM's cell state `c_t`, gets no saturation,
only its mean and variance.
"""

import numbers

import numpy as np
from keras import activations, ops

from kerasrnn.diagnostics.trace import as_tensor, recurrent_layers, traced

__all__ = ["activation_limits", "activation_statistics", "saturation_fraction"]

_LIMITS = {
    "tanh": (-1.0, 1.0),
    "sigmoid": (0.0, 1.0),
    "hard_sigmoid": (0.0, 1.0),
    "softsign": (-1.0, 1.0),
    "hard_tanh": (-1.0, 1.0),
    "relu": (0.0, None),
    "relu6": (0.0, 6.0),
}


def activation_limits(activation):
    """`(lo, hi)` limits of a Keras activation (`None` where unbounded).

    Args:
        activation: a name or a Keras activation function.

    Example:

    >>> from kerasrnn.diagnostics import activation_limits
    >>> activation_limits("sigmoid"), activation_limits("relu"), activation_limits("linear")
    ((0.0, 1.0), (0.0, None), (None, None))
    """
    if activation is None:
        return (None, None)
    try:
        fn = activations.get(activation)
    except (ValueError, TypeError) as err:
        raise ValueError(
            f"`activation`: unknown activation {activation!r}; use a Keras activation "
            "name such as 'tanh' or 'sigmoid', or the function itself."
        ) from err
    for name, limits in _LIMITS.items():
        if getattr(activations, name, None) is fn:
            return limits
    return (None, None)


def check_tol(tol):
    """`tol` as a float in [0, 0.5) (a band from each limit), else a clear error."""
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real):
        raise TypeError(f"`tol` must be a float in [0, 0.5); received {tol!r}.")
    if not 0.0 <= tol < 0.5:
        raise ValueError(
            f"`tol` must be in [0, 0.5) (the band near each limit, as a fraction of the "
            f"range; 0.01 by default); received {tol}."
        )
    return float(tol)


def saturation_fraction(values, limits, tol=0.01, axis=None):
    """Fraction of `values` within `tol·(hi − lo)` of a limit (a ReLU: `≤ 0`).

    Args:
        values: array of activation outputs.
        limits: `(lo, hi)` from `activation_limits`; `(None, None)` gives `None`.
        tol: the band near each limit, as a fraction of the range (default 0.01).
        axis: axes to average over (default all).

    Example:

    >>> import numpy as np
    >>> from kerasrnn.diagnostics import saturation_fraction
    >>> float(saturation_fraction(np.tanh([-5.0, -0.1, 0.0, 0.5, 3.0]), (-1.0, 1.0)))
    0.4
    """
    check_tol(tol)
    lo, hi = limits
    if lo is None and hi is None:
        return None
    values = np.asarray(values)
    if lo is not None and hi is not None:
        band = tol * (hi - lo)
        near = (values <= lo + band) | (values >= hi - band)
    elif lo is not None:
        near = values <= lo
    else:
        near = values >= hi
    return near.mean(axis=axis)


def activation_statistics(model, x, layers=None, tol=0.01):
    """Mean, variance and saturation of every recorded value of each recurrent layer.

    Runs one forward pass (inference mode) through the layers' own `step` (see
    `kerasrnn.diagnostics.trace`) and reads back the output `h` and the gates the
    cell records (`i, f, g, o, c` for LSTM; `z, r, g` for GRU; `h` for SimpleRNN).

    Args:
        model: a Keras model containing kerasrnn recurrent layers.
        x: a batch of inputs.
        layers: names of the layers to inspect (default: all).
        tol: saturation band (see `saturation_fraction`).

    Returns:
        dict `layer name -> {value name -> {"mean", "var", "saturation",
        "saturation_by_step"}}`; `saturation` is `None` for unbounded values and
        `saturation_by_step` is the `(time,)` profile.

    Example:

    >>> import numpy as np, keras, kerasrnn
    >>> from kerasrnn.diagnostics import activation_statistics
    >>> model = keras.Sequential([keras.Input((4, 3)), kerasrnn.LSTM(5, name="lstm")])
    >>> stats = activation_statistics(model, np.ones((2, 4, 3), "float32"))
    >>> sorted(stats["lstm"])
    ['c', 'f', 'g', 'h', 'i', 'o']
    >>> stats["lstm"]["c"]["saturation"] is None
    True
    """
    check_tol(tol)
    selected = recurrent_layers(model, layers)
    records = {}
    with traced(selected, records=records):
        model(as_tensor(x), training=False)
    out = {}
    for layer in selected:
        cell = layer.cell
        limits = {
            name: activation_limits(getattr(cell, attr) if attr else None)
            for name, attr in cell.recorded_values.items()
        }
        stats = {}
        for name, value in records[layer.name].items():
            value = np.asarray(ops.convert_to_numpy(value), "float64")
            lim = limits.get(name, (None, None))
            sat = saturation_fraction(value, lim, tol)
            stats[name] = {
                "mean": float(value.mean()),
                "var": float(value.var()),
                "saturation": None if sat is None else float(sat),
                "saturation_by_step": saturation_fraction(value, lim, tol, axis=(0, 2)),
            }
        out[layer.name] = stats
    return out
