r"""Gradient norms through time: how far the error signal travels back.

For a recurrent layer with states `h_1 … h_T` and a loss `L`, back-propagation through
time delivers to each `h_t` the total derivative

```
dL/dh_t = ∂L/∂h_t (direct) + dL/dh_{t+1} · ∂h_{t+1}/∂h_t
        = Σ_{k ≥ t} ∂L/∂h_k (direct) · ∏_{j=t+1..k} ∂h_j/∂h_{j-1}
```

For a many-to-one model (only `h_T` reaches the loss) this is
`∂L/∂h_T ∏_{j=t+1..T} J_j`: a product of `T − t` recurrent Jacobians, which explodes or
vanishes geometrically (the unstable gradients problem). For a linear RNN with
`W_h = a·I`, `‖dL/dh_t‖ = a^(T−t) ‖dL/dh_T‖` exactly.

How it is measured: a zero probe `p_t` is added to every `h_t` inside the recurrence
(`h_t ← h_t + p_t`, seen by step `t + 1`; see `kerasrnn.diagnostics.trace`), the loss
is summed over the batch, and `∂L/∂p_t` is taken with the backend's own autodiff
(`jax.grad`, `tf.GradientTape`, `torch.autograd.grad`). Because the examples of a
batch are independent, row `b` of the result is `dL_b/dh_t` of example `b` alone.
Taking the gradient with respect to the *returned* output sequence instead would miss
the recurrence: it gives only the direct term, zero for every `t < T` in a
many-to-one model.
"""

import keras
import numpy as np
from keras import ops

from kerasrnn.diagnostics.trace import as_tensor, recurrent_layers, traced

__all__ = ["gradient_norms", "log10_ratio"]

#: Norms are clamped here before taking logs: float32 gradients that underflow to 0
#: read as 1e-38 ("vanished below float32"), not as -inf.
NORM_FLOOR = 1e-38


def gradient_norms(model, x, y, loss=None, layers=None):
    r"""`‖dL_b/dh_t‖` for every example `b` and time step `t` of a batch.

    Args:
        model: a Keras model with one output, containing kerasrnn recurrent layers.
        x: a batch of inputs (anything `model(x)` accepts).
        y: the matching targets.
        loss: the per-example loss: a Keras loss name, function or `keras.losses.Loss`
            (its unreduced `call` is used). Default: the loss `model` was compiled with.
        layers: names of the recurrent layers to probe (default: all of them).

    Returns:
        dict `layer name -> np.ndarray (batch, time)` of L2 norms over the units;
        time runs in processing order (step 1 is the first step the layer runs).

    With a mask (padded rows), a step a row skips passes its state through unchanged,
    and its norm says so: after the end of a post-padded row the norms repeat the one
    of the row's last real step; before the start of a pre-padded row they are the
    derivative carried on to the initial state, one recurrent Jacobian beyond the
    first real step. `log10_ratio` compares the first and the last column, so for a
    batch of mixed lengths it describes the padded arrays, not each row's own
    sequence: compare rows of one length for a per-length figure.

    Example:

    >>> import numpy as np, keras, kerasrnn
    >>> from kerasrnn.diagnostics import gradient_norms
    >>> model = keras.Sequential([
    ...     keras.Input((6, 1)),
    ...     kerasrnn.SimpleRNN(2, activation="linear", use_bias=False, name="rnn",
    ...                        recurrent_initializer=keras.initializers.Identity(0.5)),
    ...     keras.layers.Dense(1)])
    >>> norms = gradient_norms(model, np.ones((3, 6, 1)), np.zeros((3, 1)), loss="mse")
    >>> tuple(norms["rnn"].shape)
    (3, 6)
    >>> np.round(norms["rnn"][0] / norms["rnn"][0, -1], 5).tolist()  # 0.5^(T-t)
    [0.03125, 0.0625, 0.125, 0.25, 0.5, 1.0]
    """
    selected = recurrent_layers(model, layers)
    loss_fn = _per_example_loss(model, loss)
    x = as_tensor(x)
    y = as_tensor(y)

    # A forward pass to learn each layer's (batch, time, units): the probe's shape.
    records = {}
    with traced(selected, records=records):
        outputs = model(x, training=False)
    if isinstance(outputs, (list, tuple, dict)):
        raise TypeError(
            f"gradient_norms: the model has {len(outputs)} outputs; the diagnostics take a "
            "model with one output (one loss). Build a model from the inputs to the output "
            "whose loss to follow, e.g. keras.Model(model.inputs, model.outputs[0])."
        )
    shapes = {name: tuple(rec["h"].shape) for name, rec in records.items()}
    names = list(shapes)

    def total_loss(*probe_list):
        with traced(selected, probes=dict(zip(names, probe_list))):
            y_pred = model(x, training=False)
        return ops.sum(loss_fn(y, y_pred))

    grads = _grad(total_loss, [np.zeros(shapes[n], "float32") for n in names])
    return {
        n: np.linalg.norm(np.asarray(ops.convert_to_numpy(g), "float64"), axis=-1)
        for n, g in zip(names, grads)
    }


def log10_ratio(norms):
    """One number for a gradient profile: `log10(‖dL/dh_1‖ / ‖dL/dh_T‖)`.

    The norms are averaged over the batch first and clamped at `NORM_FLOOR`. Zero means
    the signal reaches the first step undiminished; `-k` means it arrives `10^k` times
    weaker (vanishing), `+k` `10^k` times stronger (exploding).

    Args:
        norms: `(batch, time)` or `(time,)` array, e.g. from `gradient_norms`.

    Example:

    >>> import numpy as np
    >>> from kerasrnn.diagnostics import log10_ratio
    >>> round(log10_ratio(np.array([[1e-3, 1e-2, 1.0], [1e-3, 1e-1, 1.0]])), 6)
    -3.0
    """
    profile = np.asarray(norms, "float64")
    if profile.ndim == 2:
        profile = profile.mean(axis=0)
    if profile.ndim != 1 or profile.size == 0:
        raise ValueError(f"`norms` must be (batch, time) or (time,); received shape {np.shape(norms)}.")
    first, last = np.maximum(profile[[0, -1]], NORM_FLOOR)
    return float(np.log10(first) - np.log10(last))


# ------------------------------------------------------------------------ helpers
def _per_example_loss(model, loss):
    if loss is None:
        loss = getattr(model, "loss", None)
        if loss is None:
            raise ValueError(
                "`loss` is required: the model was not compiled with a loss. Pass e.g. "
                "loss='mse'."
            )
    if isinstance(loss, (list, tuple, dict)):
        raise TypeError(
            "`loss`: one loss for one output is supported; received "
            f"{type(loss).__name__}. Pass the loss of the output to diagnose."
        )
    if isinstance(loss, keras.losses.Loss):
        return loss.call  # unreduced: one value per example
    fn = keras.losses.get(loss)
    if fn is None:
        raise ValueError(f"`loss`: unknown loss {loss!r}.")
    return fn


def _grad(fn, zeros):
    """Gradients of the scalar `fn(*args)` at `args = zeros` (NumPy arrays)."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.grad(fn, argnums=tuple(range(len(zeros))))(*[jax.numpy.asarray(z) for z in zeros])
    if backend == "tensorflow":
        import tensorflow as tf

        args = [tf.constant(z) for z in zeros]
        with tf.GradientTape() as tape:
            for a in args:
                tape.watch(a)
            value = fn(*args)
        return tape.gradient(value, args)
    if backend == "torch":
        import torch

        # convert_to_tensor places the probes on Keras's device (CPU or GPU).
        args = [ops.convert_to_tensor(z).requires_grad_(True) for z in zeros]
        value = fn(*args)
        return [g.detach() for g in torch.autograd.grad(value, args)]
    raise NotImplementedError(
        f"Gradient diagnostics need the jax, tensorflow or torch backend; the "
        f"{backend!r} backend has no autodiff."
    )
