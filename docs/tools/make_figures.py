"""The figures of the Concepts pages, computed by kerasrnn itself.

    python docs/tools/make_figures.py [OUT_DIR]      # default docs/assets/figures

The docs build runs this through the `figures` hook whenever a figure is missing or
older than this script or the package's sources, so the pictures always show what the
current code computes. It uses whatever `KERAS_BACKEND` says (JAX if unset) and takes a
few seconds on a CPU.
"""

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "..", "assets", "figures")

#: file name -> function(path); the figures hook checks these names.
FIGURES = {}


def figure(name):
    def register(fn):
        FIGURES[name] = fn
        return fn

    return register


def _numpy(x):
    import keras

    return keras.ops.convert_to_numpy(x)


# ----------------------------------------------------------------- drawing helpers
def _box(ax, x, y, text, color="#e8eaf6", edge="#3949ab", w=0.8, h=0.55, alpha=1.0, size=9):
    ax.add_patch(
        FancyBboxPatch(
            (x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.08",
            facecolor=color, edgecolor=edge, linewidth=1.2, alpha=alpha,
        )
    )
    ax.text(x, y, text, ha="center", va="center", fontsize=size, alpha=max(alpha, 0.35))


def _arrow(ax, start, end, color="#3949ab", alpha=1.0, style="-|>", rad=0.0):
    ax.add_patch(
        FancyArrowPatch(
            start, end, arrowstyle=style, mutation_scale=10, color=color, alpha=alpha,
            linewidth=1.1, connectionstyle=f"arc3,rad={rad}",
        )
    )


def _bare(ax):
    ax.set_aspect("equal")
    ax.axis("off")


def _plot_labels(ax, xlabel, ylabel, title):
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)


def _save(fig, path, tight=True):
    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------- figures
@figure("unrolling.png")
def unrolling(path):
    """A memory cell, folded and unrolled, and the states of a real SimpleRNN."""
    import keras

    import kerasrnn

    keras.utils.set_random_seed(0)
    steps, units = 30, 8
    impulse = np.zeros((1, steps, 1), "float32")
    impulse[0, 2, 0] = 1.0
    layer = kerasrnn.SimpleRNN(units, return_sequences=True, kernel_initializer="ones")
    states = _numpy(layer(impulse))[0]  # (time, units)

    fig = plt.figure(figsize=(9, 4.4))
    ax = fig.add_axes([0.02, 0.53, 0.96, 0.45])
    _bare(ax)
    # Folded: one cell whose output comes back to itself.
    _box(ax, 0.5, 1.0, "cell")
    _arrow(ax, (0.5, 0.2), (0.5, 0.72))
    _arrow(ax, (0.5, 1.28), (0.5, 1.8))
    _arrow(ax, (0.9, 1.1), (0.1, 1.1), rad=-1.6)
    ax.text(0.5, 0.08, r"$x_t$", ha="center", va="top")
    ax.text(0.5, 1.9, r"$h_t$", ha="center", va="bottom")
    ax.text(1.45, 1.0, "=", ha="center", va="center", fontsize=16)
    # Unrolled over five steps: the same weights at every step.
    for k in range(5):
        x = 2.3 + 1.35 * k
        label = "t" if k == 4 else f"{k + 1}"
        _box(ax, x, 1.0, "cell")
        _arrow(ax, (x, 0.2), (x, 0.72))
        _arrow(ax, (x, 1.28), (x, 1.8))
        ax.text(x, 0.08, rf"$x_{{{label}}}$", ha="center", va="top")
        ax.text(x, 1.9, rf"$h_{{{label}}}$", ha="center", va="bottom")
        if k < 4:
            _arrow(ax, (x + 0.4, 1.0), (x + 0.95, 1.0))
    ax.text(8.5, 1.0, r"$h_t = \phi(x_t W_x + h_{t-1} W_h + b)$", ha="left", va="center", fontsize=10)
    ax.set_xlim(-0.2, 12.6)
    ax.set_ylim(-0.3, 2.3)

    ax2 = fig.add_axes([0.08, 0.1, 0.84, 0.34])
    image = ax2.imshow(states.T, aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1)
    ax2.set_xlabel("time step t")
    ax2.set_ylabel("unit of $h_t$")
    ax2.set_title(
        f"kerasrnn.SimpleRNN({units}) fed one impulse at t = 2: the state keeps it for many steps",
        fontsize=9,
    )
    fig.colorbar(image, ax=ax2, fraction=0.03, pad=0.01)
    _save(fig, path, tight=False)


@figure("shapes.png")
def shapes(path):
    """The four input/output shapes, labelled with the shapes kerasrnn returns."""
    import keras

    import kerasrnn

    batch, steps, features, units = 32, 6, 3, 16
    x = np.ones((batch, steps, features), "float32")
    seq2seq = tuple(kerasrnn.SimpleRNN(units, return_sequences=True)(x).shape)
    seq2vec = tuple(kerasrnn.LSTM(units)(x).shape)
    vector = np.ones((batch, features), "float32")
    repeated = keras.layers.RepeatVector(steps)(vector)  # the same vector at every step
    vec2seq = tuple(kerasrnn.GRU(units, return_sequences=True)(repeated).shape)
    half = steps // 2
    source, target = x[:, :half], np.ones((batch, half, features), "float32")
    _, h, c = kerasrnn.LSTM(units, return_state=True)(source)
    encdec = tuple(kerasrnn.LSTM(units, return_sequences=True)(target, initial_state=[h, c]).shape)

    def inputs_of(kind, k):
        """The label under step k, or None where the step has no input."""
        if kind == "vec2seq":
            return "$x$"
        if kind == "encdec" and k >= half:
            return r"$\langle s\rangle$" if k == half else f"$y_{{{k - half}}}$"
        return f"$x_{{{k + 1}}}$"

    def outputs_of(kind, k):
        if kind == "seq2vec" and k < steps - 1 or kind == "encdec" and k < half:
            return None
        return f"$y_{{{k + 1 - (half if kind == 'encdec' else 0)}}}$"

    panels = [
        ("seq2seq", "sequence → sequence", f"{(batch, steps, features)} → {seq2seq}"),
        ("seq2vec", "sequence → vector", f"{(batch, steps, features)} → {seq2vec}"),
        ("vec2seq", "vector → sequence", f"{(batch, features)} → {vec2seq}"),
        ("encdec", "encoder → decoder", f"{(batch, half, features)} → {encdec}"),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(10, 5.6))
    for ax, (kind, title, shape_text) in zip(axes.flat, panels):
        _bare(ax)
        for k in range(steps):
            x0 = 0.9 * k
            decoder = kind == "encdec" and k >= half
            _box(ax, x0, 1.0, "", color="#fff3e0" if decoder else "#e8eaf6",
                 edge="#ef6c00" if decoder else "#3949ab", w=0.55, h=0.45)
            if k < steps - 1:
                _arrow(ax, (x0 + 0.28, 1.0), (x0 + 0.62, 1.0))
            _arrow(ax, (x0, 0.2), (x0, 0.76))
            ax.text(x0, 0.12, inputs_of(kind, k), ha="center", va="top", fontsize=9)
            label = outputs_of(kind, k)
            alpha = 1.0 if label else 0.18
            _arrow(ax, (x0, 1.23), (x0, 1.78), alpha=alpha)
            ax.text(x0, 1.85, label or "ignored", ha="center", va="bottom",
                    fontsize=9 if label else 7, alpha=alpha)
        ax.set_xlim(-0.5, 0.9 * (steps - 1) + 0.5)
        ax.set_ylim(-0.35, 2.35)
        ax.set_title(f"{title}\n{shape_text}", fontsize=10)
    fig.suptitle("Shapes as kerasrnn layers return them (batch, time, features)", fontsize=11)
    _save(fig, path)


def backprop_norms(states, recurrent_kernel, derivative):
    """‖∂L/∂h_t‖ for t = 1..T from a layer's states, by the BPTT recursion.

    With `a_t = x_t W_x + h_{t-1} W_h + b` and `h_t = φ(a_t)`, the error signal at step
    `t-1` is `(∂L/∂h_t ⊙ φ'(a_t)) W_hᵀ`. `L` is the sum of `h_T`'s units.
    """
    grad = np.ones_like(states[-1])
    norms = [np.linalg.norm(grad)]
    for t in range(len(states) - 1, 0, -1):
        grad = (grad * derivative(states[t])) @ recurrent_kernel.T
        norms.append(np.linalg.norm(grad))
    return np.array(norms[::-1])


@figure("bptt_gradients.png")
def bptt_gradients(path):
    """W^k for a scalar W, then ‖∂L/∂h_t‖ in real kerasrnn layers."""
    import keras

    import kerasrnn

    keras.utils.set_random_seed(0)
    steps, units, features = 50, 32, 4
    x = np.random.default_rng(0).uniform(-1, 1, (1, steps, features)).astype("float32")
    tanh_grad = lambda h: 1.0 - h**2
    relu_grad = lambda h: (h > 0).astype(h.dtype)
    layers = {
        "SimpleRNN, orthogonal W_h (default)": (kerasrnn.SimpleRNN(units, return_sequences=True), tanh_grad),
        "SimpleRNN, W_h ~ N(0, 1)": (
            kerasrnn.SimpleRNN(units, return_sequences=True,
                               recurrent_initializer=keras.initializers.RandomNormal(stddev=1.0)),
            tanh_grad,
        ),
        "IRNN, W_h = I": (kerasrnn.IRNN(units, return_sequences=True, input_stddev=0.1), relu_grad),
    }

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    k = np.arange(steps + 1)
    for w, color in ((2.0, "#c62828"), (1.0, "#616161"), (0.5, "#1565c0")):
        ax1.semilogy(k, w**k, color=color, label=f"W = {w:g}: W^50 = {w**50:.3g}")
    _plot_labels(ax1, "steps back through time", "factor on the error signal",
                 "One weight, 50 steps: explode or vanish")

    for label, (layer, derivative) in layers.items():
        states = _numpy(layer(x))[0].astype("float64")
        kernel = _numpy(layer.cell.recurrent_kernel).astype("float64")
        norms = backprop_norms(states, kernel, derivative)
        ax2.semilogy(np.arange(1, steps + 1), norms / norms[-1], label=label)
    _plot_labels(ax2, "time step t (loss on the last step, t = 50)",
                 r"$\|\partial L / \partial h_t\|$ (relative)",
                 "Error signal through time in kerasrnn layers (at init)")
    _save(fig, path)


@figure("lstm_memory.png")
def lstm_memory(path):
    """How long an LSTM's long-term state remembers, by its forget-gate bias."""
    import keras

    import kerasrnn
    from kerasrnn.initializers import ForgetGateBias

    steps, units, features = 60, 32, 4
    x = np.random.default_rng(1).normal(size=(1, steps, features)).astype("float32")
    delta = np.random.default_rng(2).normal(size=(1, units)).astype("float32")
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for forget_bias, style in ((0.0, ":"), (1.0, "-"), (3.0, "--")):
        keras.utils.set_random_seed(0)
        cell = kerasrnn.LSTMCell(
            units, unit_forget_bias=False, bias_initializer=ForgetGateBias(forget_bias=forget_bias)
        )
        cell.build((None, features))
        zeros = np.zeros((1, units), "float32")
        runs = []
        for c0 in (zeros, delta):
            states, cs = [zeros, c0], []
            for t in range(steps):
                _, states = cell(x[:, t], states)
                cs.append(_numpy(states[1])[0])
            runs.append(np.array(cs))
        gap = np.linalg.norm(runs[1] - runs[0], axis=1) / np.linalg.norm(delta)
        default = " (unit_forget_bias=True, default)" if forget_bias == 1.0 else ""
        ax.semilogy(np.arange(1, steps + 1), gap, style, label=f"forget-gate bias {forget_bias:g}{default}")
    _plot_labels(ax, "time step t", r"$\|c_t - c'_t\| \,/\, \|c_0 - c'_0\|$",
                 "What is left at step t of a change to the initial long-term state")
    _save(fig, path)


def main(out_dir=DEFAULT_OUT):
    os.makedirs(out_dir, exist_ok=True)
    for name, make in FIGURES.items():
        make(os.path.join(out_dir, name))
        print(f"wrote {os.path.join(out_dir, name)}")


if __name__ == "__main__":
    sys.path.insert(0, os.path.abspath(os.path.join(HERE, "..", "..")))  # this checkout first
    main(*sys.argv[1:2])
