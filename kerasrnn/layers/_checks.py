"""Argument checks shared by the cells and layers: clear errors that name the argument."""

import numbers

from keras import activations, constraints, initializers, regularizers

from kerasrnn.initializers import Identity

ZONEOUT_MEANING = "the probability that a unit keeps its previous value"


def positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be a positive integer; received {value!r}.")
    if value <= 0:
        raise ValueError(f"`{name}` must be a positive integer; received {value}.")
    return int(value)


def rate(name, value, allow_one=False, meaning="a fraction of units to drop"):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a float in [0, 1); received {value!r}.")
    value = float(value)
    upper_ok = value <= 1.0 if allow_one else value < 1.0
    if not (value >= 0.0 and upper_ok):
        bound = "[0, 1]" if allow_one else "[0, 1)"
        raise ValueError(
            f"`{name}` must be in {bound} ({meaning}); received {value}."
        )
    return value


def activation(name, value):
    try:
        fn = activations.get(value)
    except (ValueError, TypeError) as err:
        raise ValueError(
            f"Unknown activation for `{name}`: {value!r}. Use a name such as 'tanh', "
            f"'sigmoid', 'relu', or a callable."
        ) from err
    if fn is None:
        raise ValueError(f"`{name}` must not be None; use 'linear' for no activation.")
    return fn


def choice(name, value, options):
    # By type too: `1 == True`, but `fused=1` is a mistake, not `fused=True`.
    for option in options:
        if type(value) is type(option) and value == option:
            return option
    raise ValueError(f"`{name}` must be one of {options}; received {value!r}.")


def positive_float(name, value, meaning="it keeps the division finite"):
    """A finite real number > 0 (infinity is refused: an infinite epsilon or gain makes
    a constant or non-finite output, not an error)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a positive float; received {value!r}.")
    if not 0 < value < float("inf"):
        raise ValueError(f"`{name}` must be a finite number > 0 ({meaning}); received {value}.")
    return float(value)


def non_negative_float(name, value, meaning):
    """A finite real number >= 0 (NaN and infinity are refused: they pass `< 0`)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a number >= 0 ({meaning}); received {value!r}.")
    if not 0 <= value < float("inf"):
        raise ValueError(f"`{name}` must be a finite number >= 0 ({meaning}); received {value}.")
    return float(value)


def non_negative_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be a non-negative integer; received {value!r}.")
    if value < 0:
        raise ValueError(f"`{name}` must be >= 0; received {value}.")
    return int(value)


#: What `keras_object` looks names up with, and what it suggests, by kind.
_KERAS_OBJECTS = {
    "initializer": (
        initializers.get,
        "a name such as 'glorot_uniform', 'orthogonal', 'zeros', or a keras.initializers.Initializer",
    ),
    "regularizer": (
        regularizers.get,
        "'l1', 'l2', a keras.regularizers.Regularizer (e.g. L1L2(0.01, 0.01)), or None",
    ),
    "constraint": (
        constraints.get,
        "'max_norm', 'non_neg', 'unit_norm', a keras.constraints.Constraint, or None",
    ),
}


def keras_object(name, value):
    """The initializer, regularizer or constraint `value` of the argument `name`
    (its kind is the name's last word: `kernel_initializer` is an initializer)."""
    kind = name.rsplit("_", 1)[-1]
    get, examples = _KERAS_OBJECTS[kind]
    try:
        value = get(value)
    except (ValueError, TypeError) as err:
        raise ValueError(f"Unknown {kind} for `{name}`: {value!r}. Use {examples}.") from err
    if type(value) is initializers.Identity:
        # Keras's Identity forgets its gain in get_config(); ours keeps it.
        value = Identity(gain=value.gain)
    return value


#: `implementation` of keras.layers.LSTM/GRU: 1 runs one small matrix product per gate,
#: 2 one fused product for all gates (0 is an older name of 2). It groups the same sums,
#: so it changes no result; kerasrnn always runs the fused products.
IMPLEMENTATIONS = (0, 1, 2)


def implementation(value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`implementation` must be 1 or 2 (as in keras.layers); received {value!r}.")
    if value not in IMPLEMENTATIONS:
        raise ValueError(f"`implementation` must be 1 or 2 (as in keras.layers); received {value}.")
    return int(value)


#: keras.layers options that a kerasrnn layer cannot honour, and what to do instead.
_KERAS_ONLY_OPTIONS = {
    "time_major": "Keras 3 has no `time_major` either: inputs are (batch, time, "
    "features); transpose time-major data first, e.g. `keras.ops.swapaxes(x, 0, 1)`",
    "implementation": "keras.layers.LSTM and GRU take it (how their gate products are "
    "grouped, never the result); keras.layers.SimpleRNN and RNN do not",
}


def keras_layer_options(layer_class, kwargs, fused):
    """Takes keras.layers's implementation options out of `kwargs`; returns `fused`.

    `unroll` is accepted and ignored (the loop is never unrolled; the same function).
    `use_cudnn` maps onto `fused`: `"auto"` → `"auto"`, `True` → `True` (a fused
    kernel, or an error saying why none computes the call), `False` → `False`.
    The options in `_KERAS_ONLY_OPTIONS` raise a TypeError that says what to do.
    """
    kwargs.pop("unroll", None)
    for key, instead in _KERAS_ONLY_OPTIONS.items():
        if key in kwargs:
            raise TypeError(
                f"{layer_class.__name__} has no option `{key}`: {instead}. Remove it; "
                "see docs/migrating.md."
            )
    if "use_cudnn" not in kwargs:
        return fused
    use_cudnn = choice("use_cudnn", kwargs.pop("use_cudnn"), ("auto", True, False))
    fused = choice("fused", fused, ("auto", True, False))
    if fused != "auto" and use_cudnn != "auto" and fused is not use_cudnn:
        raise ValueError(
            f"`use_cudnn={use_cudnn!r}` (keras.layers's name for `fused`) contradicts "
            f"`fused={fused!r}`; pass only `fused`."
        )
    return use_cudnn if fused == "auto" else fused


def distinct_layers(layers):
    """ValueError if the same layer (or cell) object is at two places of a stack."""
    seen = {}
    for i, layer in enumerate(layers):
        for obj in (layer, getattr(layer, "cell", None)):
            if obj is None:
                continue
            if id(obj) in seen:
                kind = "layer" if obj is layer else "cell"
                raise ValueError(
                    f"`layers[{seen[id(obj)]}]` and `layers[{i}]` are the same {kind} "
                    f"object ({obj.name}); a stack needs its own layer at each place. "
                    "Build a new layer for each, or use DeepRNN.repeat(layer, n)."
                )
            seen[id(obj)] = i
