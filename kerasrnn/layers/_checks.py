"""Argument checks shared by the cells and layers: clear errors that name the argument."""

import numbers

from keras import activations

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
    if value not in options:
        raise ValueError(f"`{name}` must be one of {options}; received {value!r}.")
    return value


def positive_float(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a positive float; received {value!r}.")
    if not value > 0:
        raise ValueError(f"`{name}` must be > 0 (it keeps the division finite); received {value}.")
    return float(value)


def non_negative_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be a non-negative integer; received {value!r}.")
    if value < 0:
        raise ValueError(f"`{name}` must be >= 0; received {value}.")
    return int(value)
