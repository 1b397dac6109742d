r"""Weights from and to `torch.nn.RNN/LSTM/GRU` and `keras.layers.SimpleRNN/LSTM/GRU`.

`from_torch(module)` returns a built kerasrnn layer computing the same function as
the torch module on `batch_first` input (`(batch, time, features)`, whatever the
module's own `batch_first`); `to_torch(layer)` returns the `torch.nn` module (with
`batch_first=True`). `from_keras`/`to_keras` do the same for `keras.layers`.
torch must be importable for the torch functions; the Keras backend may be any.

The mapping, per layer and direction (torch's `W` is `(G·units, inputs)`, ours is its
transpose, `(inputs, G·units)`):

```
kernel            = W_ih^T                 recurrent_kernel = W_hh^T
bias (LSTM, RNN)  = b_ih + b_hh            bias (GRU)       = [b_ih; b_hh]  (2, 3·units)
projection_kernel = W_hr^T                 (LSTM with proj_size)
```

Gate order: LSTM `i, f, g, o` in both; GRU torch `r, z, n` ↔ ours/Keras `z, r, h`
(blocks reordered). torch's GRU is the reset-after form with two biases,
`n_t = tanh(W_in x_t + b_in + r_t ⊗ (W_hn h_{t-1} + b_hn))`,
`h_t = (1 − z_t) ⊗ n_t + z_t ⊗ h_{t-1}`: exactly `GRU(reset_after=True)`.
torch's LSTM and RNN add two biases where Keras has one: they are summed on the way
in, and on the way out `b_ih` gets the bias and `b_hh` zeros (the same function).

Example:

>>> import numpy as np, torch, keras
>>> from kerasrnn import interop
>>> module = torch.nn.GRU(3, 4, num_layers=2, bidirectional=True, batch_first=True)
>>> layer = interop.from_torch(module)
>>> x = np.random.default_rng(0).normal(size=(2, 5, 3)).astype("float32")
>>> ours = keras.ops.convert_to_numpy(layer(x))
>>> theirs = module(torch.from_numpy(x))[0].detach().numpy()
>>> bool(np.allclose(ours, theirs, atol=1e-5))
True
>>> type(interop.to_torch(layer)).__name__
'GRU'
"""

import inspect

import keras
import numpy as np

from kerasrnn.layers.gru import GRU
from kerasrnn.layers.lstm import LSTM
from kerasrnn.layers.rnn import RNN, _cell_arguments
from kerasrnn.layers.simple_rnn import SimpleRNN
from kerasrnn.layers.stacked import DeepRNN
from kerasrnn.ops.fused import permute_gates

__all__ = ["from_keras", "from_torch", "to_keras", "to_torch"]

_KERAS_TO_OURS = {"SimpleRNN": SimpleRNN, "LSTM": LSTM, "GRU": GRU}
_TORCH_MODES = {"RNN_TANH": "RNN", "RNN_RELU": "RNN", "LSTM": "LSTM", "GRU": "GRU"}


# ------------------------------------------------------------------------- torch
def from_torch(module, return_sequences=True, return_state=False, **kwargs):
    """A built kerasrnn layer computing what `module` (`torch.nn.RNN/LSTM/GRU`) computes.

    One layer gives `SimpleRNN`/`LSTM`/`GRU` (in `keras.layers.Bidirectional`, merge
    `"concat"`, if bidirectional); `num_layers > 1` gives a `DeepRNN` with the module's
    inter-layer `dropout`. The weights are copied (see the module docstring).

    Args:
        module: a `torch.nn.RNN`, `torch.nn.LSTM` or `torch.nn.GRU` (any
            `num_layers`, `bidirectional`, `bias`, `proj_size`, `nonlinearity`).
        return_sequences: return every step (default True, like torch).
        return_state: also return the final states, layer by layer (forward, then
            backward): `h` (and `c`) of each, the slices of torch's `h_n` (`c_n`).
        **kwargs: more arguments of every kerasrnn layer that keep the function
            (`fused=False`, `name`, training-only `dropout`/`recurrent_dropout`).

    Returns:
        The built layer; its dtype is `"float64"` for a double-precision module,
        float32 for a float16 or bfloat16 one.

    Raises:
        ValueError: for `kwargs` that would make the layer compute something else
            (`layer_norm`, `zoneout`, another activation, `go_backwards`, or the
            module's own `units`, `use_bias`, `proj_size` with other values).
    """
    import torch

    kind = _torch_kind(module)
    directions = 2 if module.bidirectional else 1
    _check_torch_shapes(module, kind)
    if next(module.parameters()).dtype == torch.float64:
        kwargs.setdefault("dtype", "float64")
    from_module = {"units": module.hidden_size, "use_bias": module.bias}
    if kind == "RNN":
        layer_class, from_module["activation"] = SimpleRNN, module.nonlinearity
    elif kind == "LSTM":
        layer_class, from_module["proj_size"] = LSTM, module.proj_size
    else:
        layer_class, from_module["reset_after"] = GRU, True
    for key, value in from_module.items():
        if key in kwargs and kwargs[key] != value:
            raise ValueError(
                f"from_torch: `{key}` is read from the module ({key}={value!r}); received "
                f"{key}={kwargs[key]!r}. Remove it, or change the module."
            )
    if kwargs.get("go_backwards"):  # before keras.layers.Bidirectional refuses it in its own words
        raise ValueError(
            "from_torch: the layer must compute what the module computes, but go_backwards=True "
            "reverses it (torch.nn runs backwards only as a bidirectional module's second direction). "
            "Remove it, or reverse the inputs."
        )
    options = {**kwargs, **from_module}
    units = options.pop("units")
    if module.num_layers == 1:
        layer = layer_class(
            units, return_sequences=return_sequences, return_state=return_state, **options
        )
        if directions == 2:
            name = options.get("name")
            layer = keras.layers.Bidirectional(layer, merge_mode="concat", dtype=layer.dtype_policy,
                                               **({"name": name} if name else {}))
    else:
        name = options.pop("name", None)  # the stack's name, not each layer's
        layer = DeepRNN(
            [layer_class(units, **options) for _ in range(module.num_layers)],
            dropout=module.dropout,
            bidirectional=directions == 2,
            return_sequences=return_sequences,
            return_state=return_state,
            dtype=kwargs.get("dtype"),
            name=name,
        )
    layer.build((None, None, module.input_size))
    _check_torch_computes(layer, kwargs)
    for (index, suffix), cell in zip(_torch_slots(module.num_layers, directions), _cells(layer)):
        params = {
            name: _numpy(getattr(module, f"{name}_l{index}{suffix}"))
            for name in _torch_param_names(module.bias, kind == "LSTM" and module.proj_size > 0)
        }
        _load_torch_params(cell, params)
    return layer


def _numpy(parameter):
    """A torch parameter as a NumPy array: float64 kept, float16/bfloat16 (which NumPy
    lacks) widened to float32, the dtype of the layer they are loaded into."""
    import torch

    value = parameter.detach().cpu()
    return value.numpy() if value.dtype == torch.float64 else value.float().numpy()


def _check_torch_computes(layer, kwargs):
    """ValueError if `kwargs` made `layer` compute something else than torch.nn does
    (`layer_norm`, `zoneout`, other gate activations, `go_backwards`, ...): the layer
    that `from_torch` returns must be one `to_torch` turns back into the module."""
    layers, _, _ = _stack_of(layer)
    for sub in layers:
        for j, direction in enumerate(_directions(sub)):
            try:
                _torch_spec(direction, "the layer", backward=j == 1)
            except ValueError as err:
                given = ", ".join(f"{k}={v!r}" for k, v in kwargs.items() if k != "dtype") or "none"
                reason = str(err).removeprefix("to_torch: ")
                raise ValueError(
                    f"from_torch: the layer must compute what the module computes, but with the "
                    f"options given ({given}) it would not: {reason} Remove the option that "
                    "changes the function (training-only ones such as dropout are fine)."
                ) from None


def to_torch(layer):
    """The `torch.nn` module (`batch_first=True`) computing what `layer` computes.

    `layer` is a kerasrnn `SimpleRNN`/`LSTM`/`GRU` (or `RNN` of their cells), a
    `keras.layers.Bidirectional` of one (merge `"concat"`), or a `DeepRNN` of
    layers of one kind and size, all bidirectional or none, without residual
    connections, with one `use_bias` (and `proj_size`) for all. Only what torch can compute converts: `tanh`/`sigmoid` gates
    (`tanh` or `relu` for `SimpleRNN`), GRU with `reset_after=True`, no layer norm,
    peepholes or zoneout. Training-time options (dropout inside the cells, a
    `DeepRNN`'s `output_dropout` and `per_sequence_dropout`) are not carried; a
    `DeepRNN`'s `dropout` becomes the module's `dropout`.

    Raises:
        ValueError: with the reason, for a layer torch cannot compute.
    """
    import torch

    layers, bidirectional, dropout = _stack_of(layer)
    directions = 2 if bidirectional else 1
    specs = []
    for i, sub in enumerate(layers):
        for j, direction in enumerate(_directions(sub)):
            specs.append(_torch_spec(direction, f"layer {i}", backward=j == 1))
    first = _directions(layers[0])[0].cell
    mode = specs[0][0].mode
    if any(s.mode != mode for s, _ in specs) or len({c.units for _, c in specs}) != 1:
        raise ValueError("to_torch: every layer must be the same kind of cell with the same units.")
    # torch.nn has one `bias` and one `proj_size` for all its layers and directions.
    for option in ("use_bias", "proj_size"):
        values = [getattr(c, option, 0) for _, c in specs]
        if len(set(values)) != 1:
            raise ValueError(
                f"to_torch: torch.nn takes one `{option}` for every layer and direction; these "
                f"have {option}={values} (layer by layer, forward first). Give them all the same."
            )
    kind = _TORCH_MODES[mode]
    options = {
        "input_size": first.input_dim, "hidden_size": first.units, "num_layers": len(layers),
        "bias": first.use_bias, "batch_first": True, "dropout": dropout,
        "bidirectional": bidirectional,
    }
    if kind == "RNN":
        options["nonlinearity"] = "tanh" if mode == "RNN_TANH" else "relu"
    if kind == "LSTM":
        options["proj_size"] = first.proj_size
    dtype = torch.float64 if first.compute_dtype == "float64" else torch.float32
    module = getattr(torch.nn, kind)(**options).to(dtype)
    names = _torch_param_names(first.use_bias, kind == "LSTM" and first.proj_size > 0)
    with torch.no_grad():
        for (index, suffix), (spec, _) in zip(_torch_slots(len(layers), directions), specs):
            for name, value in zip(names, spec.params):
                param = getattr(module, f"{name}_l{index}{suffix}")
                param.copy_(torch.as_tensor(keras.ops.convert_to_numpy(value), dtype=dtype))
    return module


def _torch_kind(module):
    import torch

    for kind in ("LSTM", "GRU", "RNN"):
        if isinstance(module, getattr(torch.nn, kind)):
            return kind
    raise TypeError(
        f"from_torch: expected a torch.nn.RNN, torch.nn.LSTM or torch.nn.GRU; received "
        f"{type(module).__name__}."
    )


def _check_torch_shapes(module, kind):
    """ValueError if a parameter's shape is not what the module's sizes say (a
    parameter replaced, or `input_size`/`hidden_size` changed after construction)."""
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[kind]
    hidden, proj = module.hidden_size, getattr(module, "proj_size", 0)
    out = proj or hidden
    directions = 2 if module.bidirectional else 1
    for index, suffix in _torch_slots(module.num_layers, directions):
        inputs = module.input_size if index == 0 else out * directions
        expected = {
            "weight_ih": (gates * hidden, inputs),
            "weight_hh": (gates * hidden, out),
            "bias_ih": (gates * hidden,),
            "bias_hh": (gates * hidden,),
            "weight_hr": (proj, hidden),
        }
        for name in _torch_param_names(module.bias, kind == "LSTM" and proj > 0):
            shape = tuple(getattr(module, f"{name}_l{index}{suffix}").shape)
            if shape != expected[name]:
                raise ValueError(
                    f"from_torch: `{name}_l{index}{suffix}` has shape {shape}, but the "
                    f"module's sizes (input_size={module.input_size}, hidden_size={hidden}"
                    f"{f', proj_size={proj}' if proj else ''}) need {expected[name]}."
                )


def _torch_slots(num_layers, directions):
    """`(layer index, name suffix)` in torch's order: layer by layer, forward first."""
    return [(i, suffix) for i in range(num_layers) for suffix in ("", "_reverse")[:directions]]


def _torch_param_names(bias, projection):
    names = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if bias else [])
    return names + (["weight_hr"] if projection else [])


def _load_torch_params(cell, params):
    """Assigns torch-layout `params` (numpy, by torch name) to a kerasrnn cell."""
    order = cell._torch_gate_order or tuple(range(cell.gates))
    ours = [order.index(k) for k in range(len(order))]  # the inverse permutation

    def keras_order(w):
        return keras.ops.convert_to_numpy(permute_gates(w, ours, cell.units))

    cell.kernel.assign(keras_order(params["weight_ih"].T))
    cell.recurrent_kernel.assign(keras_order(params["weight_hh"].T))
    if cell.use_bias:
        b_ih, b_hh = keras_order(params["bias_ih"]), keras_order(params["bias_hh"])
        cell.bias.assign(np.stack([b_ih, b_hh]) if len(cell.bias.shape) == 2 else b_ih + b_hh)
    if "weight_hr" in params:
        cell.projection_kernel.assign(params["weight_hr"].T)


def _torch_spec(layer, where, backward=False):
    """The torch-layout parameters of one direction, via the cell's fused spec."""
    if not isinstance(layer, RNN):
        raise TypeError(f"to_torch: {where} is {type(layer).__name__}, not a kerasrnn layer.")
    _check_built("to_torch", layer)
    if layer.go_backwards != backward:
        raise ValueError(
            f"to_torch: {where} has go_backwards={layer.go_backwards}; torch.nn runs a layer "
            "backwards only as the second direction of a bidirectional one."
        )
    cell = layer.cell
    constants = cell.loop_constants(keras.ops.zeros((1, 1, cell.input_dim), cell.compute_dtype), False)
    spec = cell.fused_spec(constants, training=False)
    if isinstance(spec, str) or spec is None:
        raise ValueError(f"to_torch: torch.nn cannot compute {where}: {spec}.")
    return spec, cell


def _stack_of(layer):
    """`(layers, bidirectional, dropout)` of a layer, a Bidirectional or a DeepRNN."""
    if isinstance(layer, DeepRNN):
        if layer.residual:
            raise ValueError("to_torch: torch.nn has no residual connections (residual=True).")
        if len(set(layer.bidirectional)) != 1:
            raise ValueError("to_torch: torch.nn needs every layer bidirectional, or none.")
        layers = layer.rnn_layers
        if layer.bidirectional[0]:
            for sub in layers:
                _check_bidirectional(sub)
        return layers, layer.bidirectional[0], layer.dropout
    if isinstance(layer, keras.layers.Bidirectional):
        _check_bidirectional(layer)
        return [layer], True, 0.0
    return [layer], False, 0.0


def _check_bidirectional(layer):
    if layer.merge_mode != "concat":
        raise ValueError(
            f"to_torch: torch.nn concatenates the two directions; merge_mode={layer.merge_mode!r}."
        )


def _directions(layer):
    if isinstance(layer, keras.layers.Bidirectional):
        return [layer.forward_layer, layer.backward_layer]
    return [layer]


def _cells(layer):
    """Every cell of a layer, in torch's order (layer by layer, forward first)."""
    if isinstance(layer, DeepRNN):
        return [d.cell for sub in layer.rnn_layers for d in _directions(sub)]
    return [d.cell for d in _directions(layer)]


# ------------------------------------------------------------------------- keras
def from_keras(layer, **overrides):
    """The kerasrnn layer (built, same weights) of a `keras.layers.SimpleRNN/LSTM/GRU`.

    `keras.layers.Bidirectional` of one gives `keras.layers.Bidirectional` of ours.
    Every setting is carried (`return_sequences`, `go_backwards`, `reset_after`, ...);
    `overrides` replace settings (e.g. `fused=False`). A misspelled override is a
    `TypeError`; one that changes the weights (`units`, `use_bias`, `reset_after`,
    `layer_norm`, `use_peepholes`, `proj_size`) a `ValueError`, as they are copied.

    Notes:
        With `recurrent_dropout > 0`, `keras.layers.LSTM/GRU` draw one recurrent mask
        per gate and kerasrnn one shared by the gates: the same function at
        inference, a slightly different noise in training.
    """
    if isinstance(layer, keras.layers.Bidirectional):
        return _convert_bidirectional(layer, from_keras, overrides)
    name = type(layer).__name__
    if name not in _KERAS_TO_OURS or not isinstance(layer, keras.layers.RNN):
        raise TypeError(
            f"from_keras: expected keras.layers.SimpleRNN, LSTM, GRU or Bidirectional; "
            f"received {name}."
        )
    _check_built("from_keras", layer)
    target = _KERAS_TO_OURS[name]
    config = layer.get_config()
    _check_overrides("from_keras", target, config, overrides)
    ours = target(**_accepted(target, {**config, **overrides}))
    return _copy_cell_weights(layer, ours)


def to_keras(layer, **overrides):
    """The `keras.layers.SimpleRNN/LSTM/GRU` (built, same weights) of a kerasrnn layer.

    A `keras.layers.Bidirectional` of ours gives one of Keras's. Layers with an
    option `keras.layers` lacks (layer norm, peepholes, projection, zoneout) raise a
    `ValueError` naming it; kerasrnn's `fused`/`hoist_inputs`/`remat`/`xla` are dropped.
    A subclass (`IRNN`, your own) becomes its base class (`keras.layers.SimpleRNN`).
    `overrides` are checked as in `from_keras`.
    """
    if isinstance(layer, keras.layers.Bidirectional):
        return _convert_bidirectional(layer, to_keras, overrides)
    base = next((c for c in (SimpleRNN, LSTM, GRU) if isinstance(layer, c)), None)
    config = layer.get_config() if base is not None else None
    if config is None:
        raise TypeError(
            f"to_keras: expected a kerasrnn SimpleRNN, LSTM, GRU (or a Bidirectional of "
            f"one); received {type(layer).__name__}."
        )
    _check_built("to_keras", layer)
    plain = {"layer_norm": False, "use_peepholes": False, "proj_size": 0, "zoneout": 0.0, "zoneout_cell": 0.0}
    for key, default in plain.items():
        if config.get(key, default) != default:
            raise ValueError(
                f"to_keras: keras.layers.{type(layer).__name__} has no `{key}` "
                f"(this layer has {key}={config[key]!r})."
            )
    target = getattr(keras.layers, base.__name__)  # IRNN and other subclasses: their base
    _check_overrides("to_keras", target, config, overrides)
    theirs = target(**_accepted(target, {**config, **overrides}))
    return _copy_cell_weights(layer, theirs)


def _check_built(function, layer):
    """ValueError if `layer` has no weights yet (nothing to convert)."""
    if not layer.built:
        raise ValueError(
            f"{function}: {layer.name} is not built, so it has no weights to convert. "
            "Call it on data, or `layer.build((None, None, features))`, first."
        )


#: Options that change which weights a layer has: an override cannot change them,
#: since the weights are copied (the defaults: what a layer without the option has).
_WEIGHT_OPTIONS = {"units": None, "use_bias": True, "reset_after": True, "layer_norm": False,
                   "use_peepholes": False, "proj_size": 0}


def _check_overrides(function, target, config, overrides):
    """TypeError for an override `target` does not take (a typo would vanish with the
    Keras-only settings `_accepted` leaves out); ValueError for one that changes the
    weights, which are copied as they are."""
    unknown = sorted(set(overrides) - set(_accepted(target, dict.fromkeys(overrides))))
    if unknown:
        raise TypeError(f"{function}: {target.__name__} takes no argument(s) {unknown}; check the spelling.")
    for key, default in _WEIGHT_OPTIONS.items():
        if key in overrides and overrides[key] != config.get(key, default):
            raise ValueError(
                f"{function}: `{key}` decides which weights the layer has, and the weights are copied: "
                f"it stays {config.get(key, default)!r} (received {key}={overrides[key]!r}). Remove it, "
                "or build the other layer yourself."
            )


def _accepted(target, config):
    """The entries of `config` that the layer class `target` takes."""
    if issubclass(target, RNN):  # our cell arguments reach the layer through **kwargs
        names = _cell_arguments(target.cell_class) | set(inspect.signature(RNN.__init__).parameters)
    else:
        names = set(inspect.signature(target.__init__).parameters)
    names = (names | {"name", "dtype", "trainable"}) - {"self", "cell", "kwargs"}
    return {k: v for k, v in config.items() if k in names}


def _state_batch(layer):
    """The batch size of a stateful layer's states (`None` if it has none yet)."""
    states = getattr(layer, "states", None) if getattr(layer, "stateful", False) else None
    return keras.tree.flatten(states)[0].shape[0] if states else None


def _copy_states(source, target):
    """A stateful layer's current states, into its converted twin."""
    if _state_batch(source) is not None and target.states:
        for theirs, ours in zip(keras.tree.flatten(source.states), keras.tree.flatten(target.states)):
            ours.assign(keras.ops.cast(theirs, ours.dtype))


def _copy_cell_weights(source, target):
    input_dim = source.cell.kernel.shape[0]
    target.build((_state_batch(source), None, input_dim))  # a stateful layer needs the batch
    target.cell.set_weights(source.cell.get_weights())
    _copy_states(source, target)
    return target


def _convert_bidirectional(layer, convert, overrides):
    # Bidirectional rebuilds its forward layer from the config: weights go in after.
    forward = convert(layer.forward_layer, **overrides)
    backward = convert(layer.backward_layer, **overrides)
    wrapped = keras.layers.Bidirectional(
        forward, backward_layer=backward, merge_mode=layer.merge_mode, dtype=layer.dtype_policy
    )
    input_dim = layer.forward_layer.cell.kernel.shape[0]
    wrapped.build((_state_batch(layer.forward_layer), None, input_dim))
    for built, converted in ((wrapped.forward_layer, forward), (wrapped.backward_layer, backward)):
        built.cell.set_weights(converted.cell.get_weights())
        _copy_states(converted, built)
    return wrapped

