r"""Spectrum of the recurrent matrices: does `W^t` grow or shrink?

The linear part of one step back in time multiplies the error signal by `W_hᵀ` (and by
the activation's derivative). Over `t` steps, `‖(W_hᵀ)^t v‖` behaves like `ρ(W_h)^t`,
where `ρ` is the spectral radius (the largest `|eigenvalue|`), and is bounded by
`σ_max(W_h)^t`: `ρ > 1` lets the signal explode (`2^50 ≈ 1.1·10^15`), `ρ < 1` makes it
vanish (`0.5^50 ≈ 8.9·10^-16`). An orthogonal or identity `W_h` has every singular
value 1.

Gated cells have one square block per gate in `recurrent_kernel (units, G·units)`
(LSTM `i, f, g, o`; GRU `z, r, g`); each block is analysed on its own, and the whole
non-square matrix by its singular values.
"""

import numpy as np
from keras import ops

__all__ = ["recurrent_spectrum", "spectrum_of"]


def spectrum_of(matrix):
    """`{"spectral_radius", "singular_values"}` of a matrix (radius `None` if not square;
    NaN, as every singular value, if the matrix holds a NaN or an infinity).

    Args:
        matrix: a 2-D array or tensor.

    Example:

    >>> import numpy as np
    >>> from kerasrnn.diagnostics import spectrum_of
    >>> s = spectrum_of(np.array([[0.0, 2.0], [0.5, 0.0]]))
    >>> round(s["spectral_radius"], 6), s["singular_values"].tolist()
    (1.0, [2.0, 0.5])
    """
    w = np.asarray(ops.convert_to_numpy(matrix), "float64")
    if w.ndim != 2:
        raise ValueError(f"`matrix` must be 2-D; received shape {w.shape}.")
    square = w.shape[0] == w.shape[1]
    if not np.isfinite(w).all():
        # A diverged training run's weights: no spectrum, which the numbers say (NaN)
        # instead of LAPACK's error in the middle of a diagnostics callback.
        return {"spectral_radius": float("nan") if square else None,
                "singular_values": np.full(min(w.shape), np.nan)}
    radius = float(np.max(np.abs(np.linalg.eigvals(w)))) if square else None
    return {"spectral_radius": radius, "singular_values": np.linalg.svd(w, compute_uv=False)}


def recurrent_spectrum(layer):
    """Spectrum of each gate block of a recurrent layer's `recurrent_kernel`.

    Args:
        layer: a built kerasrnn recurrent layer (`SimpleRNN`, `LSTM`, `GRU`, `RNN`)
            or cell.

    Returns:
        dict `block name -> {"spectral_radius", "singular_values"}`, one block per
        gate (`cell.gate_names`), plus `"all"` (the whole matrix) for gated cells.

    Example:

    >>> import keras, kerasrnn
    >>> from kerasrnn.diagnostics import recurrent_spectrum
    >>> layer = kerasrnn.IRNN(4, gain=0.5)
    >>> layer.build((None, 3, 2))
    >>> recurrent_spectrum(layer)["h"]["spectral_radius"]
    0.5
    """
    cell = getattr(layer, "cell", layer)
    kernel = getattr(cell, "recurrent_kernel", None)
    if kernel is None:
        raise ValueError(
            f"`layer` must be a built kerasrnn recurrent layer or cell with a "
            f"`recurrent_kernel`; received {layer!r} (call it or `build` it first)."
        )
    w = np.asarray(ops.convert_to_numpy(kernel), "float64")
    names = tuple(getattr(cell, "gate_names", ())) or ("h",)
    if w.shape[1] % len(names):
        names = ("all",)
    blocks = np.split(w, len(names), axis=1)
    out = {name: spectrum_of(block) for name, block in zip(names, blocks)}
    if len(names) > 1:
        out["all"] = spectrum_of(w)
    return out
