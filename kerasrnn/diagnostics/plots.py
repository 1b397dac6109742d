"""Matplotlib pictures of the diagnostics, written as PNG files.

matplotlib is imported inside each function (with the non-interactive `Agg` backend),
so `kerasrnn.diagnostics` works without it; install it with the `recipes` extra
(`pip install "kerasrnn[recipes]"`).
"""

import numpy as np

from kerasrnn.diagnostics.gradients import NORM_FLOOR

__all__ = ["plot_gradient_heatmap", "plot_gradient_norms", "plot_saturation_heatmap"]


def _pyplot():
    try:
        import matplotlib
    except ImportError as err:
        raise ImportError(
            "kerasrnn.diagnostics plots need matplotlib: pip install 'kerasrnn[recipes]' "
            "(or pip install matplotlib)."
        ) from err
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _profiles(profiles):
    """`{label: (time,) array}` from a dict of arrays or `(label, array)` pairs."""
    if isinstance(profiles, dict):
        items = list(profiles.items())
    elif isinstance(profiles, (list, tuple)) and all(
        isinstance(pair, (list, tuple)) and len(pair) == 2 and isinstance(pair[0], (str, int, np.integer))
        for pair in profiles
    ):
        items = list(profiles)
    else:  # an array of norms itself (one of `gradient_norms`'s values, say) has no labels
        raise TypeError(
            "`profiles` must be a dict `{label: norms}` or a list of `(label, norms)` pairs, "
            f"labels strings or integers; received {type(profiles).__name__}"
            f"{f' of shape {np.shape(profiles)}' if hasattr(profiles, 'shape') else ''}. For one "
            "profile: {'my model': norms}."
        )
    out = {}
    for label, norms in items:
        norms = np.asarray(norms, "float64")
        if norms.ndim not in (1, 2):
            raise ValueError(f"`profiles[{label!r}]` must be (batch, time) or (time,); received shape {norms.shape}.")
        out[str(label)] = norms.mean(axis=0) if norms.ndim == 2 else norms
    if not out:
        raise ValueError("`profiles` is empty: nothing to plot.")
    return out


def plot_gradient_norms(profiles, path, title="Gradient norm through time", styles=None):
    """Line plot of `‖dL/dh_t‖` against the time step `t`, one line per label.

    Args:
        profiles: `{label: norms}` (or `(label, norms)` pairs), `norms` of shape
            `(batch, time)` (averaged over the batch) or `(time,)`. Labels are, e.g.,
            epochs (`"epoch 3"`) or models.
        path: the PNG file to write.
        title: the figure title.
        styles: optional `{label: dict}` of matplotlib line options (`color`,
            `linestyle`, ...) for some of the lines.

    Returns:
        `path`.

    Example:

    >>> import os, tempfile, numpy as np
    >>> from kerasrnn.diagnostics import plot_gradient_norms
    >>> path = os.path.join(tempfile.mkdtemp(), "g.png")
    >>> _ = plot_gradient_norms({"W=2": 2.0 ** -np.arange(10)[::-1]}, path)
    >>> os.path.getsize(path) > 0
    True
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, profile in _profiles(profiles).items():
        steps = np.arange(1, len(profile) + 1)
        style = (styles or {}).get(label, {})
        ax.semilogy(steps, np.maximum(profile, NORM_FLOOR), label=label, **style)
    ax.set_xlabel("time step t")
    ax.set_ylabel("‖∂L/∂h_t‖ (batch mean)")
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_gradient_heatmap(profiles, path, title="log10 ‖∂L/∂h_t‖"):
    """Heat map of `log10 ‖dL/dh_t‖`: one row per label (e.g. epoch), time across.

    Args:
        profiles: as for `plot_gradient_norms`; every profile has the same length.
        path: the PNG file to write.
        title: the figure title.

    Returns:
        `path`.
    """
    profiles = _profiles(profiles)
    grid = np.log10(np.maximum(np.stack(list(profiles.values())), NORM_FLOOR))
    return _heatmap(grid, list(profiles), path, title, cmap="viridis")


def plot_saturation_heatmap(statistics, path, title="Fraction of saturated units"):
    """Heat map of saturation per recorded value (rows) and time step (columns).

    Args:
        statistics: one layer's entry of `activation_statistics` (or of a `diagnose`
            report's `"activations"`): `{value name: {"saturation_by_step": ...}}`;
            unbounded values are left out.
        path: the PNG file to write.
        title: the figure title.

    Returns:
        `path`.
    """
    rows = {
        name: s["saturation_by_step"] for name, s in statistics.items()
        if s.get("saturation_by_step") is not None
    }
    if not rows:
        raise ValueError("`statistics` has no bounded activation to show.")
    grid = np.stack([np.asarray(v, "float64") for v in rows.values()])
    return _heatmap(grid, list(rows), path, title, cmap="magma", vmin=0.0, vmax=1.0)


def _heatmap(grid, row_labels, path, title, **imshow):
    """One row per label, time steps 1..T across, a colour bar; written to `path`."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.35 * len(row_labels)))
    image = ax.imshow(grid, aspect="auto", interpolation="nearest",
                      extent=(0.5, grid.shape[1] + 0.5, len(row_labels) - 0.5, -0.5), **imshow)
    ax.set_yticks(range(len(row_labels)), row_labels)
    ax.set_xlabel("time step t")
    ax.set_title(title)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
