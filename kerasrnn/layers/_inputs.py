"""What a sequence layer is called with, checked before any backend sees it.

Bad sequences, masks and initial states get a ValueError/TypeError that names the
argument, the same on every backend, instead of the backend's own error (or, for a
fused torch kernel, a crash).
"""

import keras
import numpy as np
from keras import ops

#: The dtypes each call argument may have (`keras.backend.standardize_dtype` names,
#: by prefix). Integer and boolean sequences are cast to the compute dtype, as
#: `keras.layers.LSTM` does; masks of any of these kinds mean "nonzero is valid".
_ALLOWED_DTYPES = {
    "sequences": ("float", "bfloat", "int", "uint", "bool"),
    "mask": ("bool", "int", "uint", "float", "bfloat"),
    "initial_state": ("float", "bfloat", "int", "uint"),
}
#: What each argument should be, for the error message.
_EXPECTED = {
    "sequences": "float, or int/bool cast to the layer's compute dtype",
    "mask": "bool, or numbers where nonzero marks a valid step",
    "initial_state": "float",
}


def dtype_name(x):
    """The dtype of `x` as Keras names it (`"float32"`, `"string"`, ...), or `None`."""
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        return None
    if isinstance(dtype, np.dtype) and dtype.kind in "USO":
        return {"U": "string", "S": "bytes", "O": "object"}[dtype.kind]
    try:
        return keras.backend.standardize_dtype(dtype)
    except (ValueError, TypeError):
        return str(dtype)


def check_dtype(layer, argument, x):
    """TypeError naming `argument` when `x` has a dtype the layer cannot compute with."""
    for item in keras.tree.flatten(x) if isinstance(x, (list, tuple)) else [x]:
        name = dtype_name(item)
        if name is not None and not name.startswith(_ALLOWED_DTYPES[argument]):
            raise TypeError(
                f"{layer.name}: `{argument}` must be a numeric tensor ("
                f"{_EXPECTED[argument]}); received dtype {name}."
            )


def check_call_dtypes(layer, args, kwargs):
    """`check_dtype` of the sequences, mask and initial state of a layer's `__call__`:
    before Keras converts NumPy arguments to tensors, which fails differently on each
    backend for strings."""
    if args:
        check_dtype(layer, "sequences", args[0])
    elif "sequences" in kwargs:
        check_dtype(layer, "sequences", kwargs["sequences"])
    for argument in ("mask", "initial_state"):
        if kwargs.get(argument) is not None:
            check_dtype(layer, argument, kwargs[argument])


def check_rank(layer, shape):
    if len(shape) != 3:
        raise ValueError(
            f"{layer.name}: expected inputs of rank 3 (batch, time, features); received "
            f"shape {shape}. For one time step add a time axis, e.g. "
            "`x[:, None, :]`; for a cell step call the cell directly."
        )


def sequences(layer, x):
    """`x` as a tensor of the layer's compute dtype, checked: numeric, rank 3, and at
    least one time step where the length is known.

    A sequence of no steps is an error on every backend (as in `keras.layers`, whose
    loops index step 0): it has no last output, and it is almost always an empty
    batch of data gone wrong. Where the length is only known when the graph runs (a
    TensorFlow graph traced with `time=None`), the loop fails then.
    """
    check_dtype(layer, "sequences", x)
    # On the device Keras computes on (a torch tensor may arrive from the CPU).
    x = ops.convert_to_tensor(x)
    shape = tuple(x.shape)
    check_rank(layer, shape)
    if shape[1] == 0:
        raise ValueError(
            f"{layer.name}: the sequences have no time steps (shape {shape}); a "
            "recurrent layer needs at least one. Drop empty sequences before the layer, "
            "or pad them to one step and mask it."
        )
    # `Layer.__call__` casts float inputs to the compute dtype; `stateless_call` and a
    # direct `call` do not, and the loop carries states of the compute dtype.
    if dtype_name(x) != layer.compute_dtype:
        x = ops.cast(x, layer.compute_dtype)
    return x


def zero_masked_steps(x, mask):
    """`x` with zeros at the masked steps.

    Those steps' results are discarded (the state is carried), but the step still
    runs: an infinite or NaN input there would reach the gradients as `0 · NaN`.
    Zeroed before the input projection, it reaches nothing, and the gradient of the
    input at a masked step is exactly zero.
    """
    if mask is None:
        return x
    return ops.where(ops.expand_dims(mask, -1), x, ops.zeros_like(x))


def check_mask(layer, mask, sequences):
    """The mask as a boolean `(batch, time)` tensor (or `None`), checked."""
    if mask is None:
        return None
    if isinstance(mask, (list, tuple)) and not _is_nested_values(mask):
        mask = mask[0]  # Keras passes one mask per input; the sequences' comes first
        if mask is None:
            return None
    if isinstance(mask, (list, tuple)):
        mask = np.asarray(mask)
    check_dtype(layer, "mask", mask)
    shape = tuple(mask.shape)
    expected = tuple(sequences.shape[:2])
    compatible = len(shape) == 2 and all(
        a is None or b is None or a == b for a, b in zip(shape, expected)
    )
    if not compatible:
        raise ValueError(
            f"{layer.name}: `mask` must have shape (batch, time) = {expected}; "
            f"received {shape}."
        )
    # `call` may get a NumPy mask (from `stateless_call`, or called directly); the loop
    # and the fused path's length check take backend tensors.
    mask = ops.convert_to_tensor(mask)
    return mask if dtype_name(mask) == "bool" else ops.cast(mask, "bool")


def static_call_arguments(mask, training):
    """`(mask, training)` with Python values made concrete before a compiled call.

    On JAX an eager call runs as one compiled program (`kerasrnn.ops.compiled`), which
    traces numbers: `training=1` (accepted by keras.layers), a NumPy bool or a concrete
    scalar array would reach `if training:` as a tracer, and a mask given as nested
    Python numbers would be a list of tracers. So a concrete `training` becomes a
    Python bool (a traced one, inside `jax.jit` or `tf.function`, stays as it is) and a
    nested-list mask a NumPy array.
    """
    if isinstance(mask, (list, tuple)) and _is_nested_values(mask):
        mask = np.asarray(mask)
    if training is not None and not isinstance(training, bool):
        if isinstance(training, (int, float, np.generic)):
            training = bool(training)
        elif tuple(getattr(training, "shape", (None,))) == ():
            try:
                training = bool(training)
            except (TypeError, ValueError):  # a symbolic or traced flag: decided when it runs
                return mask, training
    return mask, training


def _is_nested_values(mask):
    """Whether a list `mask` is the mask itself as nested Python values
    (`[[True, False], ...]`) rather than a list of masks, one per input."""
    return len(mask) > 0 and isinstance(mask[0], (list, tuple, bool, int, float))


def check_state(layer, where, state, size, batch):
    """`state` as a `(batch, size)` tensor of the layer's compute dtype, checked.

    `where` names it in the error (`"initial_state[1]"`); `batch` is the sequences'
    static batch size (`None` if unknown). A fused torch kernel given states of
    another batch size than its inputs may crash the process, not raise.
    """
    check_dtype(layer, "initial_state", state)
    state = ops.convert_to_tensor(state, dtype=layer.compute_dtype)
    shape = tuple(state.shape)
    ok = len(shape) == 2 and shape[1] in (None, size)
    if ok and shape[0] is not None and batch is not None:
        ok = shape[0] == batch
    if not ok:
        raise ValueError(
            f"{layer.name}: `{where}` must have shape (batch={batch}, {size}); "
            f"received {shape}."
        )
    return state


def check_stateful_batch(layer, states, sequences):
    """A stateful layer keeps states for the batch size it was built with."""
    batch, kept = sequences.shape[0], states[0].shape[0]
    if batch is not None and kept is not None and batch != kept:
        raise ValueError(
            f"{layer.name}: stateful=True keeps states for batches of {kept}; received "
            f"a batch of {batch}. Feed batches of {kept} (pad the last one, or drop it "
            "with `drop_remainder=True`), or build the layer again for the new size."
        )
