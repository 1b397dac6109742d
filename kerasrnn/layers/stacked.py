"""`DeepRNN`: stacked recurrent layers, dropout between them (never on the recurrence),
residual connections and bidirectional layers."""

import keras
from keras import ops

from kerasrnn import regularizers as rnn_regularizers
from kerasrnn.layers import _checks, _inputs
from kerasrnn.layers.cell import RecurrentCell
from kerasrnn.layers.rnn import RNN
from kerasrnn.ops.device import BuildsOutsideInferenceMode
from kerasrnn.ops.fused import run_fused
from kerasrnn.ops.plan import plan_stack

_register = keras.saving.register_keras_serializable(package="kerasrnn")

MERGE_MODES = ("concat", "sum", "ave", "mul")


@_register
class DeepRNN(BuildsOutsideInferenceMode, keras.layers.Layer):
    r"""A stack of recurrent layers: each layer's output sequence is the next one's input.

    With layers `l = 1 … N`, input `x^(1) = x` and `D`, `D_out` dropout (training only):

    ```
    h^(l)_t = RNN_l(x^(l))_t                                    each layer's own time loop
    x^(l+1) = D(h^(l)) + x^(l)·[residual and l > 1]             l = 1 … N−1
    y       = D_out(h^(N) + x^(N)·[residual and N > 1])
    ```

    Dropout acts only on the connections between layers (Pham et al. 2014), never on
    `h^(l)_{t-1} → h^(l)_t`: a new mask per step and unit (as `torch.nn.LSTM(dropout=…)`),
    or one mask per sequence with `per_sequence_dropout=True` (Gal & Ghahramani 2016).
    A residual connection (Wu et al. 2016, GNMT) skips each layer after the first,
    which then must keep the feature size. A bidirectional layer runs its layer
    forward and backward (`keras.layers.Bidirectional`) and merges both outputs.

    Args:
        layers: the layers, bottom first: kerasrnn layers (`kerasrnn.LSTM(64)`, any
            `kerasrnn.layers.RNN`), kerasrnn cells (wrapped in `RNN`), `keras.layers`
            recurrent layers, or their serialized configs. Their
            `return_sequences`/`return_state` are set by the stack. Pass them
            unwrapped and use `bidirectional` for bidirectional layers.
        dropout: rate of the dropout between layers, in [0, 1) (default 0).
        per_sequence_dropout: one dropout mask per sequence instead of per step.
        output_dropout: rate of the dropout on the stack's output (default 0).
        residual: add each layer's input to its output, from the second layer on.
        bidirectional: a bool for every layer, or one bool per layer.
        merge_mode: how a bidirectional layer merges its two directions:
            `"concat"` (default), `"sum"`, `"ave"` or `"mul"`.
        return_sequences: return the top layer's whole output sequence.
        return_state: also return the final states of every layer, bottom first,
            each layer's `[h]` or `[h, c]` (forward, then backward).
        go_backwards: the whole stack reads the sequence from its last step to its
            first, and returns its sequence in that order (as a keras.layers layer
            does); `keras.layers.Bidirectional(DeepRNN(...))` sets it for its backward
            copy: two whole stacks, merged at the top, where `bidirectional=True`
            merges the two directions at every layer.
        fused: `"auto"`: on torch, run the whole stack in torch's multi-layer kernel
            when it computes exactly this stack (see Notes); `True` requires it;
            `False` never. Each layer may still use its own fused kernel.
        seed: seed of the dropout masks.
        **kwargs: `keras.layers.Layer` arguments (`name`, `dtype`, ...). As for
            `keras.layers.Bidirectional`, the stack's `dtype` is that of its inputs
            and output; each layer computes in its own (give the layers `dtype=` for
            float64 or mixed precision; `interop.from_torch` does).

    Call arguments:
        sequences: `(batch, time, features)`.
        initial_state: the flat list of every layer's initial states, in the order
            `return_state` returns them.
        mask: boolean `(batch, time)`, passed to every layer (and propagated).
        training: whether dropout is active.

    After a call, `last_path` is `"fused:torch._VF.<kernel>(num_layers=…)"` or
    `"per-layer"`, and `last_path_reason` says why the stack was not fused.

    Example:

    >>> import numpy as np, keras, kerasrnn
    >>> deep = kerasrnn.layers.DeepRNN(
    ...     [kerasrnn.LSTM(8), kerasrnn.LSTM(8), kerasrnn.LSTM(8)],
    ...     dropout=0.2, residual=True, return_state=True)
    >>> y, *states = deep(np.ones((2, 5, 3), "float32"))
    >>> tuple(y.shape), len(states)
    ((2, 8), 6)
    >>> bi = kerasrnn.layers.DeepRNN.repeat(kerasrnn.GRU(4), 2, bidirectional=True,
    ...                                     return_sequences=True)
    >>> tuple(bi(np.ones((2, 5, 3), "float32")).shape)
    (2, 5, 8)

    Reference:
        Pham et al., "Dropout improves Recurrent Neural Networks for Handwriting
        Recognition", ICFHR 2014. Gal & Ghahramani, "A Theoretically Grounded
        Application of Dropout in Recurrent Neural Networks", NeurIPS 2016. Graves,
        Mohamed & Hinton, "Speech Recognition with Deep Recurrent Neural Networks",
        ICASSP 2013 (deep bidirectional stacks). Wu et al., "Google's Neural Machine
        Translation System", arXiv:1609.08144, 2016 (residual stacks).

    Notes:
        torch's multi-layer kernel (`torch._VF.lstm(..., num_layers, ...)`) draws its
        own dropout masks between layers, from torch's generator and not from
        `seed`; the stack uses it only when no dropout is active (rate 0 or
        inference), without residual connections or input dropout, with no mask or
        a right-padded one (packed), with every layer a kerasrnn layer whose own
        fused kernel is exact, all of the same units, and all bidirectional with
        `merge_mode="concat"` or none.
    """

    def __init__(
        self,
        layers,
        dropout=0.0,
        per_sequence_dropout=False,
        output_dropout=0.0,
        residual=False,
        bidirectional=False,
        merge_mode="concat",
        return_sequences=False,
        return_state=False,
        fused="auto",
        seed=None,
        go_backwards=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.go_backwards = bool(go_backwards)
        if isinstance(layers, (keras.layers.Layer, dict, str)) or not layers:
            raise ValueError(
                "`layers` must be a non-empty list of recurrent layers (bottom first), "
                f"e.g. [kerasrnn.LSTM(64), kerasrnn.LSTM(64)]; received {layers!r}."
            )
        layers = [_as_recurrent_layer(layer, i) for i, layer in enumerate(layers)]
        _checks.distinct_layers(layers)
        n = len(layers)
        self.dropout = _checks.rate("dropout", dropout)
        self.per_sequence_dropout = bool(per_sequence_dropout)
        self.output_dropout = _checks.rate("output_dropout", output_dropout)
        self.residual = bool(residual)
        if isinstance(bidirectional, (list, tuple)):
            if len(bidirectional) != n:
                raise ValueError(
                    f"`bidirectional` has {len(bidirectional)} entries for {n} layers; "
                    "give one bool per layer or a single bool."
                )
            self.bidirectional = [bool(b) for b in bidirectional]
        else:
            self.bidirectional = [bool(bidirectional)] * n
        self.merge_mode = _checks.choice("merge_mode", merge_mode, MERGE_MODES)
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.fused = _checks.choice("fused", fused, ("auto", True, False))
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed=seed)
        # The top layer returns its sequence if the stack does, or if a residual
        # connection must be added before the last valid step is picked.
        self._top_sequence = self.return_sequences or (self.residual and n > 1)
        if self._top_sequence and not self.return_sequences and self.bidirectional[-1]:
            raise ValueError(
                "residual=True with return_sequences=False is ambiguous for a "
                "bidirectional top layer (its backward output ends at time 0): use "
                "return_sequences=True and pick the steps you need."
            )
        wrapped = []
        for i, layer in enumerate(layers):
            if self.bidirectional[i] and getattr(layer, "stateful", False):
                raise ValueError(
                    f"DeepRNN: layers[{i}] is stateful and bidirectional. Keras 3.15's "
                    "Bidirectional cannot return the states of stateful layers (its "
                    "compute_mask fails, for keras.layers.GRU too), and the stack needs "
                    "them: make that layer one-directional, or carry the states yourself "
                    "(return_state=True, initial_state=)."
                )
            layer.return_state = True
            layer.return_sequences = i < n - 1 or self._top_sequence
            if self.bidirectional[i]:  # in the layer's dtype (its default would be float32)
                layer = keras.layers.Bidirectional(layer, merge_mode=self.merge_mode, dtype=layer.dtype_policy)
            wrapped.append(layer)
        self.rnn_layers = wrapped
        self.supports_masking = True
        self.last_path = None
        self.last_path_reason = None

    @classmethod
    def repeat(cls, layer, num_layers, **kwargs):
        """A stack of `num_layers` fresh copies of `layer` (its config, new weights).

        Example:

        >>> import kerasrnn
        >>> deep = kerasrnn.layers.DeepRNN.repeat(kerasrnn.LSTM(16, layer_norm=True), 3)
        >>> [type(l).__name__ for l in deep.rnn_layers]
        ['LSTM', 'LSTM', 'LSTM']
        """
        num_layers = _checks.positive_int("num_layers", num_layers)
        config = keras.saving.serialize_keras_object(layer)
        config["config"].pop("name", None)
        return cls([keras.saving.deserialize_keras_object(config) for _ in range(num_layers)], **kwargs)

    # ------------------------------------------------------------------ structure
    def reset_states(self):
        """Zero the states of every stateful layer of the stack, as `reset_states()` of
        one layer does."""
        for layer in self.rnn_layers:
            if getattr(layer, "stateful", False):
                layer.reset_states()

    reset_state = reset_states

    @property
    def stateful(self):
        """Whether a layer of the stack is stateful (keras.layers.Bidirectional asks)."""
        return any(getattr(self.base_layer(i), "stateful", False) for i in range(len(self.rnn_layers)))

    def base_layer(self, i):
        """Layer `i` without its `Bidirectional` wrapper (its forward layer)."""
        layer = self.rnn_layers[i]
        return layer.forward_layer if self.bidirectional[i] else layer

    def _output_size(self, i):
        size = self.base_layer(i).cell.output_size
        return 2 * size if self.bidirectional[i] and self.merge_mode == "concat" else size

    def _state_sizes(self, i):
        sizes = self.base_layer(i).cell.state_size
        sizes = list(sizes) if isinstance(sizes, (list, tuple)) else [sizes]
        return sizes * (2 if self.bidirectional[i] else 1)

    def build(self, sequences_shape, initial_state_shape=None):
        shape = tuple(sequences_shape)
        if len(shape) != 3:
            raise ValueError(
                f"{self.name}: expected inputs of rank 3 (batch, time, features); "
                f"received shape {shape}."
            )
        for i, layer in enumerate(self.rnn_layers):
            if not layer.built:
                layer.build(shape)
            size = self._output_size(i)
            if self.residual and i > 0 and size != shape[-1]:
                raise ValueError(
                    f"{self.name}: residual=True needs layer {i} to keep the feature size, "
                    f"but it maps {shape[-1]} features to {size}. Give the layers after "
                    "the first the same output size as their input."
                )
            shape = (shape[0], shape[1], size)

    def compute_output_shape(self, sequences_shape, initial_state_shape=None):
        batch, time = sequences_shape[0], sequences_shape[1]
        size = self._output_size(len(self.rnn_layers) - 1)
        output_shape = (batch, time, size) if self.return_sequences else (batch, size)
        if not self.return_state:
            return output_shape
        states = [(batch, s) for i in range(len(self.rnn_layers)) for s in self._state_sizes(i)]
        return (output_shape, *states)

    def compute_mask(self, inputs, mask=None):
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        output_mask = mask if self.return_sequences else None
        if self.return_state:
            count = sum(len(self._state_sizes(i)) for i in range(len(self.rnn_layers)))
            return [output_mask] + [None] * count
        return output_mask

    # ----------------------------------------------------------------------- call
    def __call__(self, *args, **kwargs):
        # Before Keras converts NumPy arguments (see `RNN.__call__`).
        _inputs.check_call_dtypes(self, args, kwargs)
        return super().__call__(*args, **kwargs)

    def call(self, sequences, initial_state=None, mask=None, training=False):
        sequences = _inputs.sequences(self, sequences)
        mask = _inputs.check_mask(self, mask, sequences)
        # Each layer computes in its own dtype (the stack's `dtype` is that of its
        # inputs and outputs, as for keras.layers.Bidirectional): the bottom layer's input.
        sequences = ops.cast(sequences, self.base_layer(0).compute_dtype)
        sequences = _inputs.zero_masked_steps(sequences, mask)
        if self.go_backwards:  # the stack reads, and returns, the reversed sequence
            sequences = ops.flip(sequences, axis=1)
            mask = None if mask is None else ops.flip(mask, axis=1)
        per_layer_states = self._split_initial_state(initial_state, sequences)
        plan = plan_stack(self, sequences, mask, training)
        self.last_path, self.last_path_reason = plan.path, plan.reason
        if plan.fused is not None:
            output, final_states = self._call_fused(plan.fused, sequences, per_layer_states, plan.lengths)
        else:
            output, final_states = self._call_layers(sequences, per_layer_states, mask, training)
        output = ops.cast(output, self.compute_dtype)
        if training and self.output_dropout > 0:
            output = self._drop(output, self.output_dropout)
        if self.return_state:
            return (output, *final_states)
        return output

    def _call_layers(self, x, per_layer_states, mask, training):
        n = len(self.rnn_layers)
        final_states = []
        for i, layer in enumerate(self.rnn_layers):
            initial = per_layer_states[i] if per_layer_states is not None else None
            h, *states = layer(x, initial_state=initial, mask=mask, training=training)
            final_states += states
            if i < n - 1 and training and self.dropout > 0:
                h = self._drop(h, self.dropout)
            x = h + ops.cast(x, h.dtype) if self.residual and i > 0 else h
        if self._top_sequence and not self.return_sequences:
            x = _last_valid_step(x, mask)
        return x, final_states

    def _drop(self, x, rate):
        return rnn_regularizers.sequence_dropout(
            x, rate, self.seed_generator, per_sequence=self.per_sequence_dropout
        )

    def _split_initial_state(self, initial_state, sequences):
        if initial_state is None:
            return None
        if not isinstance(initial_state, (list, tuple)):
            initial_state = [initial_state]
        counts = [len(self._state_sizes(i)) for i in range(len(self.rnn_layers))]
        if len(initial_state) != sum(counts):
            raise ValueError(
                f"{self.name}: `initial_state` must be the flat list of every layer's "
                f"states ({sum(counts)} tensors: {counts} per layer); received "
                f"{len(initial_state)}."
            )
        sizes = [size for i in range(len(self.rnn_layers)) for size in self._state_sizes(i)]
        initial_state = [
            _inputs.check_state(self, f"initial_state[{j}]", state, size, sequences.shape[0])
            for j, (state, size) in enumerate(zip(initial_state, sizes))
        ]
        split, start = [], 0
        for count in counts:
            split.append(initial_state[start : start + count])
            start += count
        return split

    # ------------------------------------------------------------------ fused path
    def _call_fused(self, spec, sequences, per_layer_states, lengths):
        batch = ops.shape(sequences)[0]
        states = []
        for i in range(len(self.rnn_layers)):
            if per_layer_states is not None:  # in the layers' dtype (one for the kernel)
                states += [ops.cast(s, sequences.dtype) for s in per_layer_states[i]]
            else:
                directions = 2 if self.bidirectional[i] else 1
                initial = self.base_layer(i).cell.get_initial_state(batch)
                states += [ops.cast(s, sequences.dtype) for s in initial] * directions
        top = self.base_layer(len(self.rnn_layers) - 1)
        last, outputs, final_states = run_fused(
            spec, sequences, states, lengths=lengths, return_sequences=self.return_sequences,
            zero_output_for_mask=top.zero_output_for_mask,
        )
        return (outputs if self.return_sequences else last), final_states

    # --------------------------------------------------------------------- config
    def get_config(self):
        layers = []
        for i in range(len(self.rnn_layers)):
            config = keras.saving.serialize_keras_object(self.base_layer(i))
            if self.bidirectional[i]:  # Bidirectional renamed its copy "forward_<name>"
                name = config["config"].get("name", "")
                config["config"]["name"] = name.removeprefix("forward_")
            layers.append(config)
        config = {
            "layers": layers,
            "dropout": self.dropout,
            "per_sequence_dropout": self.per_sequence_dropout,
            "output_dropout": self.output_dropout,
            "residual": self.residual,
            "bidirectional": list(self.bidirectional),
            "merge_mode": self.merge_mode,
            "return_sequences": self.return_sequences,
            "return_state": self.return_state,
            "fused": self.fused,
            "seed": self.seed,
            "go_backwards": self.go_backwards,
        }
        return {**super().get_config(), **config}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        layers = [
            keras.saving.deserialize_keras_object(c, custom_objects=custom_objects)
            for c in config.pop("layers")
        ]
        return cls(layers, **config)


def _as_recurrent_layer(layer, index):
    if isinstance(layer, dict):
        layer = keras.saving.deserialize_keras_object(layer)
    if isinstance(layer, RecurrentCell):
        return RNN(layer, dtype=layer.dtype_policy)  # the cell's dtype, as a layer given would have
    if isinstance(layer, keras.layers.Bidirectional):
        raise TypeError(
            f"layers[{index}] is a keras.layers.Bidirectional: pass the layer it wraps "
            "and bidirectional=True (or a list of bools, one per layer) instead."
        )
    if isinstance(layer, (RNN, keras.layers.RNN)):
        return layer
    raise TypeError(
        f"layers[{index}] must be a recurrent layer (kerasrnn.LSTM, kerasrnn.layers.RNN, "
        f"keras.layers.GRU, ...) or a kerasrnn cell; received {layer!r}."
    )


def _last_valid_step(sequence, mask):
    """`sequence[b, t_b]` with `t_b` the last step where `mask[b]` is true (the last
    step without a mask; step 0 for a row with no valid step)."""
    if mask is None:
        return sequence[:, -1]
    mask = ops.cast(mask, "bool")
    steps = ops.arange(ops.shape(sequence)[1])
    last = ops.max(ops.where(mask, steps[None, :], 0), axis=1)
    pick = ops.cast(ops.equal(steps[None, :], last[:, None]), sequence.dtype)
    return ops.sum(pick[:, :, None] * sequence, axis=1)
