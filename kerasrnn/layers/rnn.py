"""`RNN`: runs any kerasrnn cell over a sequence through the one time loop."""

import inspect
import re

import keras
from keras import ops

from kerasrnn.layers import _checks, _inputs
from kerasrnn.layers._inputs import check_mask as _check_mask
from kerasrnn.layers._inputs import check_rank as _check_rank
from kerasrnn.layers.cell import RecurrentCell
from kerasrnn.ops.compiled import compiled
from kerasrnn.ops.device import BuildsOutsideInferenceMode
from kerasrnn.ops.plan import plan_call
from kerasrnn.ops.run import run_cell

_register = keras.saving.register_keras_serializable(package="kerasrnn")

@_register
class RNN(BuildsOutsideInferenceMode, keras.layers.Layer):
    """Runs a kerasrnn cell over the time axis of a sequence.

    Each call is planned once (`kerasrnn.ops.plan.plan_call`): a backend kernel where
    one computes the cell exactly (torch's native LSTM/GRU/RNN and cuDNN, JAX's cuDNN
    LSTM on a GPU), otherwise the cell's `step` scanned over time by
    `kerasrnn.ops.unroll`, with the choices below per backend and device
    (`kerasrnn.ops.plan.LOOP_DEFAULTS`).

    Args:
        cell: a kerasrnn cell (`SimpleRNNCell`, `LSTMCell`, `GRUCell`, ...). For a
            plain Keras cell use `keras.layers.RNN`.
        return_sequences: return the output of every step `(batch, time, units)`
            instead of the last one `(batch, units)`.
        return_state: also return the final states (`[h]`, or `[h, c]` for LSTM).
        go_backwards: process the sequence in reverse; with `return_sequences` the
            outputs are in reverse order, as in Keras.
        stateful: keep the final states of a batch as the initial states of the next
            (needs a fixed batch size); `reset_states()` zeroes them.
        zero_output_for_mask: output zeros at masked steps instead of repeating the
            last valid output (`keras.layers.Bidirectional` sets it).
        fused: `"auto"` uses a fused backend kernel when one computes exactly the
            same function, `True` requires it (error otherwise), `False` never.
            `use_cudnn=`, keras.layers's name for it, is accepted with the same
            values (`True`: a fused kernel or an error naming why none runs).
        hoist_inputs: `"auto"` (per backend and device), `True` or `False`: project
            the whole input sequence before the loop.
        remat: `"auto"` (on JAX on a CPU where the cell's step is worth recomputing,
            its `cost_hints()`), `True` or `False`: on JAX, recompute each step in the
            backward pass instead of storing its intermediate values
            (`kerasrnn.ops.unroll(remat=...)`); the same function and gradients, and
            ignored on the other backends.
        xla: `"auto"` (on TensorFlow on a CPU where the cell gains from it, its
            `cost_hints()`), `True` or `False`:
            on TensorFlow, inside a `tf.function` that XLA does not already compile
            (Keras's training step without `jit_compile=True`), run the time loop as
            an XLA-compiled function, whose backward pass recomputes the loop
            (`kerasrnn.ops.unroll(xla=...)`). The same function; gradients agree to
            rounding. Costs a compilation per input shape (about 0.3–2 s on a CPU).
            Gradients of gradients need `xla=False`. Ignored on the other backends.
        **kwargs: `keras.layers.Layer` arguments (`name`, `dtype`, ...). Keras's
            `unroll=` is accepted and ignored (the loop is never unrolled: the
            same function).

    Call arguments:
        sequences: `(batch, time, features)`, at least one time step; integer or
            boolean inputs are cast to the compute dtype.
        initial_state: list of initial states (`[h]` or `[h, c]`), each `(batch, size)`.
        mask: boolean `(batch, time)` (or numbers: nonzero is valid); masked steps
            carry the state unchanged and the output repeats the last valid output
            (zeros before any). Their inputs are never used: even a NaN there puts
            no NaN into the outputs or any gradient.
        training: whether dropout is active.

    After a call, `last_path` says which code path ran (`"fused:torch._VF.lstm"`,
    `"fused:jax.experimental.rnn.lstm"`, `"kerasrnn.ops.unroll"`, or
    `"kerasrnn.ops.unroll:xla"` for the loop compiled by XLA) and `last_path_reason`
    why the fused one was not taken (or, with `xla`, why the loop was not compiled).
    Inside a `tf.function` they describe the last trace.

    Example:

    >>> import numpy as np, kerasrnn
    >>> rnn = kerasrnn.layers.RNN(kerasrnn.layers.GRUCell(4), return_sequences=True)
    >>> tuple(rnn(np.ones((2, 7, 3), "float32")).shape)
    (2, 7, 4)
    """

    def __init__(
        self,
        cell,
        return_sequences=False,
        return_state=False,
        go_backwards=False,
        stateful=False,
        zero_output_for_mask=False,
        fused="auto",
        hoist_inputs="auto",
        remat="auto",
        xla="auto",
        **kwargs,
    ):
        if not isinstance(cell, RecurrentCell):
            raise TypeError(
                "`cell` must be a kerasrnn cell (with `project_inputs` and `step`), "
                f"e.g. kerasrnn.layers.LSTMCell; received {cell!r}. "
                "Plain Keras cells run in keras.layers.RNN."
            )
        unroll = kwargs.get("unroll", False)
        fused = _checks.keras_layer_options(type(self), kwargs, fused)
        super().__init__(**kwargs)
        #: keras.layers's option, kept as given for code and configs that read it; the
        #: loop is never unrolled (the same function).
        self.unroll = bool(unroll)
        self.cell = cell
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.stateful = bool(stateful)
        self.zero_output_for_mask = bool(zero_output_for_mask)
        self.fused = _checks.choice("fused", fused, ("auto", True, False))
        self.hoist_inputs = _checks.choice("hoist_inputs", hoist_inputs, ("auto", True, False))
        self.remat = _checks.choice("remat", remat, ("auto", True, False))
        self.xla = _checks.choice("xla", xla, ("auto", True, False))
        self.supports_masking = True
        self.last_path = None
        self.last_path_reason = None

    @property
    def use_cudnn(self):
        """keras.layers's name for `fused` (`"auto"`, True or False); keras.layers's
        `Bidirectional` sets it on the layers it makes."""
        return self.fused

    @use_cudnn.setter
    def use_cudnn(self, value):
        self.fused = _checks.choice("use_cudnn", value, ("auto", True, False))

    # ------------------------------------------------------------------- shapes
    @property
    def state_size(self):
        size = self.cell.state_size
        return list(size) if isinstance(size, (list, tuple)) else [size]

    def build(self, sequences_shape, initial_state_shape=None):
        sequences_shape = tuple(sequences_shape)
        _check_rank(self, sequences_shape)
        if not self.cell.built:
            self.cell.build((sequences_shape[0], sequences_shape[-1]))
        if self.stateful and self.states is None:
            batch = sequences_shape[0]
            if batch is None:
                raise ValueError(
                    f"{self.name}: `stateful=True` needs a fixed batch size; pass "
                    "`batch_size=` to `keras.Input` (or `batch_shape=`)."
                )
            states = [
                keras.Variable(
                    initializer="zeros", shape=(batch, size), dtype=self.variable_dtype,
                    trainable=False, autocast=False, name=f"state_{i}",
                )
                for i, size in enumerate(self.state_size)
            ]
            # Untracked (Keras's own RNN does the same), so that they are not weights.
            object.__setattr__(self, "_kerasrnn_states", states)
            object.__setattr__(self, "_kerasrnn_saved_states", _SavedStates(states))

    def compute_output_shape(self, sequences_shape, initial_state_shape=None):
        batch, time = sequences_shape[0], sequences_shape[1]
        units = self.cell.output_size
        output_shape = (batch, time, units) if self.return_sequences else (batch, units)
        if self.return_state:
            return (output_shape, *[(batch, s) for s in self.state_size])
        return output_shape

    def compute_mask(self, inputs, mask=None):
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        output_mask = mask if self.return_sequences else None
        if self.return_state:
            return [output_mask] + [None] * len(self.state_size)
        return output_mask

    # ------------------------------------------------------------------- states
    def get_initial_state(self, batch_size):
        """The zero states a call starts from without `initial_state`: `[h]`, or
        `[h, c]` for LSTM, each `(batch_size, size)` in the compute dtype (as
        `keras.layers.RNN.get_initial_state`).

        Example:

        >>> import kerasrnn
        >>> [tuple(s.shape) for s in kerasrnn.LSTM(8, proj_size=3).get_initial_state(2)]
        [(2, 3), (2, 8)]
        """
        return [ops.cast(s, self.compute_dtype) for s in self.cell.get_initial_state(batch_size)]

    @property
    def states(self):
        """The state variables of a stateful layer (`None` before `build` or if not
        stateful).

        As in `keras.layers.RNN` they are not weights: `get_weights`, `set_weights` and
        weight files line up with a stateless twin's and with keras.layers'. They are
        among `variables` (and `non_trainable_variables`), which JAX's compiled steps
        and `stateless_call` carry, and `.keras`/`.weights.h5` files keep them, so a
        reloaded model goes on from where the saved one stopped. They are never
        autocast: under mixed precision the float32 variable itself is assigned.
        """
        return self.__dict__.get("_kerasrnn_states")

    @property
    def variables(self):
        variables = super().variables
        seen = {id(v) for v in variables}
        return variables + [s for s in (self.states or []) if id(s) not in seen]

    def _own_weights(self):
        cell = {id(w) for w in self.cell.weights}
        return [w for w in self.weights if id(w) not in cell]

    def load_own_variables(self, store):
        # The states are saved by `_SavedStates`, in a group of their own; files
        # written before kept them here, after the weights.
        offset = len(self._own_weights())
        extra = len(store.keys()) - offset
        states = self.states or []
        if extra == len(states) and states:
            _load_states(states, [store[f"{offset + i}"] for i in range(extra)])
        elif extra not in (0, len(self.state_size)):
            raise ValueError(
                f"{self.name}: the file holds {len(store.keys())} variables for this layer; "
                f"expected {offset} weights, plus {len(self.state_size)} states if it was "
                "saved from a stateful layer."
            )
        # A file with no states (a stateless twin's, keras.layers', ...) leaves the
        # states as they are; one with states loads into a stateless layer without them.
        super().load_own_variables({f"{i}": store[f"{i}"] for i in range(offset)})

    def reset_states(self):
        """Zero the states of a stateful layer."""
        if self.states is not None:
            for state in self.states:
                state.assign(ops.zeros(state.shape, dtype=state.dtype))

    reset_state = reset_states

    # --------------------------------------------------------------------- call
    def __call__(self, *args, **kwargs):
        # Before Keras converts NumPy arguments: a string array fails there, with a
        # different error on each backend.
        _inputs.check_call_dtypes(self, args, kwargs)
        return super().__call__(*args, **kwargs)

    def call(self, sequences, initial_state=None, mask=None, training=False):
        # Eagerly on JAX, one compiled program per signature: an eager `lax.scan`
        # traces and compiles its body anew at every call, and JAX's caches keep each
        # of those programs (about 250 ms and 2 MB more per call of a small LSTM, for
        # `keras.layers.LSTM` as much as for this loop).
        mask, training = _inputs.static_call_arguments(mask, training)
        run = compiled(self, "_call", backends=("jax",), python_state=("last_path", "last_path_reason"))
        return run(sequences, initial_state, mask, training)

    def _call(self, sequences, initial_state, mask, training):
        sequences, states, mask = prepare_call(self, sequences, initial_state, mask)
        constants = self.cell.loop_constants(sequences, training)
        plan = plan_call(
            self.cell, sequences, mask, training, constants, fused=self.fused,
            hoist_inputs=self.hoist_inputs, remat=self.remat, xla=self.xla, name=self.name,
        )
        self.last_path, self.last_path_reason = plan.path, plan.last_path_reason
        last, outputs, states = run_cell(
            self.cell, sequences, states, constants, plan, mask=mask, training=training,
            go_backwards=self.go_backwards, return_sequences=self.return_sequences,
            zero_output_for_mask=self.zero_output_for_mask,
        )
        if self.stateful:
            for variable, state in zip(self.states, states):
                variable.assign(ops.cast(ops.stop_gradient(state), variable.dtype))
        output = outputs if self.return_sequences else last
        output = ops.cast(output, self.compute_dtype)
        if self.return_state:
            return (output, *[ops.cast(s, self.compute_dtype) for s in states])
        return output

    def _initial_states(self, initial_state, sequences, batch):
        sizes = self.state_size
        if initial_state is None:
            if self.stateful:
                _inputs.check_stateful_batch(self, self.states, sequences)
                # A copy: the variables are overwritten after the loop, and torch's
                # autograd must not see its saved inputs change in place.
                return [ops.copy(ops.cast(v, self.compute_dtype)) for v in self.states]
            return self.get_initial_state(batch)
        if self.stateful:  # before the loop, which would run and fail to assign the states
            _inputs.check_stateful_batch(self, self.states, sequences)
        if not isinstance(initial_state, (list, tuple)):
            initial_state = [initial_state]
        if len(initial_state) != len(sizes):
            raise ValueError(
                f"{self.name}: `initial_state` must be a list of {len(sizes)} tensor(s) "
                f"of shapes {[('batch', s) for s in sizes]}; received "
                f"{len(initial_state)}."
            )
        return [
            _inputs.check_state(self, f"initial_state[{i}]", state, size, sequences.shape[0])
            for i, (state, size) in enumerate(zip(initial_state, sizes))
        ]

    # ------------------------------------------------------------------- config
    def get_config(self):
        config = {
            "return_sequences": self.return_sequences,
            "return_state": self.return_state,
            "go_backwards": self.go_backwards,
            "stateful": self.stateful,
            "zero_output_for_mask": self.zero_output_for_mask,
            "fused": self.fused,
            "hoist_inputs": self.hoist_inputs,
            "remat": self.remat,
            "xla": self.xla,
            "unroll": self.unroll,
            "cell": keras.saving.serialize_keras_object(self.cell),
        }
        return {**super().get_config(), **config}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        cell = keras.saving.deserialize_keras_object(config.pop("cell"), custom_objects=custom_objects)
        return cls(cell, **config)


class _SavedStates(keras.layers.Layer):
    """Where a stateful layer's states go in a `.keras` or `.weights.h5` file: a group of
    their own under the layer's (`.../lstm/_kerasrnn_saved_states/vars`). The layer's
    own group holds its weights only, as a stateless twin's and keras.layers' do, so
    each loads the other's file (keras.layers' RNN has no such child and passes over
    the group). Not a sublayer: it is set untracked, and holds no weights."""

    def __init__(self, states):
        super().__init__(name="saved_states")
        object.__setattr__(self, "_kerasrnn_states", states)

    def save_own_variables(self, store):
        for i, state in enumerate(self._kerasrnn_states):
            store[f"{i}"] = state

    def load_own_variables(self, store):
        # A file without states (a stateless twin's, keras.layers') leaves them as they are.
        if len(store.keys()) == len(self._kerasrnn_states):
            _load_states(self._kerasrnn_states, [store[f"{i}"] for i in range(len(store.keys()))])


def _load_states(states, values):
    """Saved states into a stateful layer's: those of another batch size are left alone."""
    for state, value in zip(states, values):
        if tuple(value.shape) == tuple(state.shape):  # same batch size: go on
            state.assign(value)


class CellLayer(RNN):
    """An `RNN` that builds its own cell from the cell's arguments (base of LSTM, GRU, ...).

    Every keyword that the cell class accepts goes to the cell; the others go to `RNN`.
    The cell's settings are readable on the layer (`layer.units`, `layer.dropout`, ...),
    and `get_config` is flat, as for `keras.layers.LSTM`.
    """

    cell_class = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name in _cell_arguments(cls.cell_class):
            if not hasattr(cls, name):
                setattr(cls, name, property(lambda self, n=name: getattr(self.cell, n)))

    def __init__(self, units, **kwargs):
        cell_args = _cell_arguments(self.cell_class)
        _check_foreign_options(type(self), cell_args, kwargs)
        cell_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in cell_args}
        for shared in ("dtype", "trainable"):
            if shared in kwargs:
                cell_kwargs[shared] = kwargs[shared]
        cell = self.cell_class(units, name=_snake_case(self.cell_class.__name__), **cell_kwargs)
        super().__init__(cell, **kwargs)

    def get_config(self):
        config = super().get_config()
        del config["cell"]
        cell_config = self.cell.get_config()
        for key in ("name", "dtype", "trainable"):
            cell_config.pop(key, None)
        return {**config, **cell_config}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**config)


def _cell_arguments(cell_class):
    names = set()
    for klass in cell_class.__mro__:
        if not (isinstance(klass, type) and issubclass(klass, RecurrentCell)):
            continue
        for name, p in inspect.signature(klass.__init__).parameters.items():
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and name != "self":
                names.add(name)
    return names


def _check_foreign_options(layer_class, cell_args, kwargs):
    """A clear error for an option of another cell family (e.g. peepholes on a GRU)."""
    rnn_args = set(inspect.signature(RNN.__init__).parameters)
    for key in kwargs:
        if key in cell_args or key in rnn_args:
            continue
        owners = sorted(
            klass.__name__
            for klass in _all_subclasses(RecurrentCell)
            if klass.__module__.startswith("kerasrnn") and key in _cell_arguments(klass)
        )
        if owners:
            raise TypeError(
                f"{layer_class.__name__} has no option `{key}`: it is an option of "
                f"{', '.join(owners)}. Remove it, or use that cell's layer."
            )


def _all_subclasses(klass):
    for sub in klass.__subclasses__():
        yield sub
        yield from _all_subclasses(sub)


def _snake_case(name):
    """`"LSTMCell"` → `"lstm_cell"`, `"SimpleRNNCell"` → `"simple_rnn_cell"`: the
    names keras.layers gives its layers' cells, so that the weights' paths are the
    same (`lstm/lstm_cell/kernel`), as layout maps and checkpoints name them."""
    words = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)  # a capitalised word: "LSTM_Cell"
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", words).lower()  # and after a lowercase letter


def prepare_call(layer, sequences, initial_state, mask):
    """`(sequences, states, mask)` of a call of the `RNN` `layer`, checked: the inputs
    on the device Keras computes on (a torch tensor may arrive from the CPU), in the
    layer's compute dtype, with zeros at the masked steps (`_inputs.zero_masked_steps`),
    the initial states (given, the stateful ones, or zeros) and the mask as a boolean
    tensor. A cell of its own dtype policy computes in it: the sequences and states
    come in the cell's compute dtype, and the caller casts the output back to the
    layer's (as in keras.layers.RNN)."""
    sequences = _inputs.sequences(layer, sequences)
    if sequences.shape[-1] != layer.cell.input_dim:
        raise ValueError(
            f"{layer.name}: the input feature size changed after the layer was "
            f"built: expected {layer.cell.input_dim}, received {sequences.shape[-1]} "
            f"(input shape {tuple(sequences.shape)}). Build a new layer for "
            "inputs of another size."
        )
    states = layer._initial_states(initial_state, sequences, ops.shape(sequences)[0])
    mask = _check_mask(layer, mask, sequences)
    sequences = _inputs.zero_masked_steps(sequences, mask)
    dtype = layer.cell.compute_dtype
    if dtype != layer.compute_dtype:
        sequences = ops.cast(sequences, dtype)
        states = [ops.cast(s, dtype) for s in states]
    return sequences, states, mask
