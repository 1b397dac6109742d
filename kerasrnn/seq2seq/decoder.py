"""`Decoder`: a kerasrnn cell that writes the target sentence, attending to the encoder memory."""

import keras
from keras import ops

from kerasrnn.layers import _checks
from kerasrnn.layers.rnn import RNN
from kerasrnn.ops.device import BuildsOutsideInferenceMode
from kerasrnn.ops.plan import plan_call
from kerasrnn.ops.run import run_cell
from kerasrnn.seq2seq.attention import BahdanauAttention, LuongAttention
from kerasrnn.seq2seq.encoder import deserialize_cell, make_cell, serialize_cell

__all__ = ["Decoder"]

_register = keras.saving.register_keras_serializable(package="kerasrnn")

ATTENTIONS = ("bahdanau", "luong", "none")


@_register
class Decoder(BuildsOutsideInferenceMode, keras.layers.Layer):
    r"""Target-side RNN with Bahdanau or Luong attention, for teacher forcing and decoding.

    The initial state comes from the encoder summary, `s_0 = tanh(W_b summary + b_b)`
    (split into `[h, c]` for an LSTM). With the previous target token embedded as
    `e_t = E y_{t-1}`:

    `attention="bahdanau"` (Bahdanau et al. 2015) — attention inside the recurrence:

    ```
    c_t, α_t = attend(s_{t-1}, h_1..h_S)           additive score, see BahdanauAttention
    s_t      = cell([e_t ; c_t], s_{t-1})
    logits_t = W_o [s_t ; c_t ; e_t] + b_o          ("deep output")
    ```

    `attention="luong"` (Luong et al. 2015, global attention without input feeding) —
    attention after the recurrence, so the RNN runs over all target steps as one kerasrnn
    layer (one fused kernel on torch) and attention over all steps is one matrix product:

    ```
    s_t      = cell(e_t, s_{t-1})
    c_t, α_t = attend(s_t, h_1..h_S)                 "general" or "dot" score, see LuongAttention
    s̃_t      = tanh(W_c [c_t ; s_t])
    logits_t = W_o s̃_t + b_o
    ```

    `attention="none"`: `logits_t = W_o s_t + b_o` (the encoder speaks only through `s_0`;
    Sutskever et al. 2014, Cho et al. 2014).

    Attention weights are exactly 0 at padded source positions and sum to 1 over the
    others. Teacher forcing (`call`) and decoding (`step`) use the same functions.

    Args:
        vocab_size: target vocabulary size.
        units: units of the decoder cell.
        embedding_dim: size of the target embeddings.
        cell: `"gru"` (default), `"lstm"`, `"simple"` or a kerasrnn cell template.
        attention: `"bahdanau"`, `"luong"` (default) or `"none"`.
        score: Luong score, `"general"` (default) or `"dot"`.
        attention_units: hidden size of the Bahdanau score (default `units`).
        dropout: dropout on the embeddings and before the output projection.

    Call arguments:
        targets: `(batch, target)` int, the target shifted right (starting with BOS).
        memory: `(batch, source, memory_dim)` encoder outputs.
        summary: `(batch, summary_dim)` encoder summary.
        memory_mask: boolean `(batch, source)`, True at real source tokens.
        training: whether dropout is active.
        return_attention: also return the weights `(batch, target, source)`.

    Returns:
        `logits (batch, target, vocab_size)` (and the attention weights).

    Example:

    >>> import numpy as np, keras
    >>> dec = Decoder(vocab_size=11, units=8, embedding_dim=4, attention="bahdanau")
    >>> memory, summary = np.ones((2, 5, 6), "float32"), np.ones((2, 6), "float32")
    >>> mask = np.arange(5) < np.array([[2], [5]])
    >>> logits, weights = dec(np.ones((2, 3), "int32"), memory, summary, memory_mask=mask,
    ...                       return_attention=True)
    >>> tuple(logits.shape), float(keras.ops.convert_to_numpy(weights)[0, :, 2:].max())
    ((2, 3, 11), 0.0)

    Reference:
        Bahdanau, Cho & Bengio, ICLR 2015; Luong, Pham & Manning, EMNLP 2015.
    """

    def __init__(
        self,
        vocab_size,
        units,
        embedding_dim=256,
        cell="gru",
        attention="luong",
        score="general",
        attention_units=None,
        dropout=0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.vocab_size = _checks.positive_int("vocab_size", vocab_size)
        self.units = _checks.positive_int("units", units)
        self.embedding_dim = _checks.positive_int("embedding_dim", embedding_dim)
        self.attention = _checks.choice("attention", attention, ATTENTIONS)
        self.score = _checks.choice("score", score, ("general", "dot"))
        self.attention_units = None if attention_units is None else _checks.positive_int("attention_units", attention_units)
        self.dropout = _checks.rate("dropout", dropout)
        self.cell = deserialize_cell(cell)
        dtype = self.dtype_policy  # every part computes in the decoder's policy
        self.embedding = keras.layers.Embedding(self.vocab_size, self.embedding_dim, name="embedding", dtype=dtype)
        self.rnn = RNN(make_cell(self.cell, self.units, name="cell", dtype=dtype), return_sequences=True, name="rnn",
                       dtype=dtype)
        if self.attention == "bahdanau":
            self.attention_layer = BahdanauAttention(self.attention_units or self.units, name="attention", dtype=dtype)
        elif self.attention == "luong":
            self.attention_layer = LuongAttention(self.score, name="attention", dtype=dtype)
            self.combine = keras.layers.Dense(self.units, activation="tanh", use_bias=False, name="combine",
                                              dtype=dtype)
        sizes = self.rnn.state_size
        self.state_sizes = list(sizes)
        self.bridge = keras.layers.Dense(sum(self.state_sizes), activation="tanh", name="bridge", dtype=dtype)
        self.drop = keras.layers.Dropout(self.dropout, dtype=dtype)
        self.output_layer = keras.layers.Dense(self.vocab_size, name="output", dtype=dtype)

    @property
    def output_size(self):
        """The size of the cell's output, the attention's query: `units`, or an LSTM
        template's `proj_size`."""
        return self.rnn.cell.output_size

    def build(self, targets_shape, memory_shape, summary_shape):
        memory_dim, summary_dim = memory_shape[-1], summary_shape[-1]
        self.embedding.build((None, None))
        self.bridge.build((None, summary_dim))
        cell_input = self.embedding_dim
        features = self.units if self.attention == "luong" else self.output_size  # `combine`'s, or the cell's
        if self.attention == "bahdanau":
            cell_input += memory_dim
            features += memory_dim + self.embedding_dim
        if self.attention != "none":
            self.attention_layer.build(self.output_size, memory_dim)
        if self.attention == "luong":
            self.combine.build((None, memory_dim + self.output_size))
        self.rnn.build((None, None, cell_input))
        self.output_layer.build((None, features))
        self.built = True

    # ------------------------------------------------------------- shared parts
    def initial_state(self, summary):
        """Decoder states `s_0 = tanh(W_b summary + b_b)`, split per cell state."""
        s0 = self.bridge(summary)
        if len(self.state_sizes) == 1:
            return [s0]
        cuts = [sum(self.state_sizes[: i + 1]) for i in range(len(self.state_sizes) - 1)]
        return list(ops.split(s0, cuts, axis=-1))

    def prepare(self, memory, memory_mask=None):
        """Per-sentence attention constants (memory, mask, projected keys), or `{}`."""
        if self.attention == "none":
            return {}
        return self.attention_layer.prepare(memory, memory_mask, query_dim=self.output_size)

    def cell_constants(self, batch_inputs, training=False):
        """The cell's loop constants; `batch_inputs` gives the batch size for dropout masks."""
        return self.rnn.cell.loop_constants(batch_inputs, training)

    def _cell_step(self, x_t, states, cell_constants):
        cell = self.rnn.cell
        return cell.step(cell.project_inputs(x_t, cell_constants), states, cell_constants)

    def _bahdanau_sequence(self, embedded, states, prepared, training, return_attention):
        """Teacher forcing with attention inside the recurrence: the cell's input at each
        step is `[e_t ; c_t]`, `c_t` attending from `s_{t-1}`, so the projection cannot
        be hoisted; dropout and zoneout masks as in any kerasrnn layer."""
        cell = self.rnn.cell
        batch = ops.shape(embedded)[0]
        constants = self.cell_constants(ops.zeros((batch, cell.input_dim), embedded.dtype), training)
        plan = plan_call(cell, embedded, None, training, constants, fused=False, hoist_inputs=False,
                         remat=False, xla=False, name=self.name)

        def wrap(cell_step):
            def step(e_t, states, constants_t):
                context, weights = self.attention_layer.attend(states[0], prepared)
                output, states = cell_step(ops.concatenate([e_t, context], axis=-1), states, constants_t)
                parts = [output, context] + ([weights] if return_attention else [])
                return ops.concatenate(parts, axis=-1), states

            return step

        # Unmasked and returning every step: the loop needs no output size.
        _, outputs, _ = run_cell(cell, embedded, states, constants, plan, training=training, wrap=wrap)
        return outputs

    def _bahdanau_step(self, e_t, states, prepared, cell_constants):
        context, weights = self.attention_layer.attend(states[0], prepared)
        output, states = self._cell_step(ops.concatenate([e_t, context], axis=-1), states, cell_constants)
        return output, context, weights, states

    def _luong_features(self, output, prepared):
        context, weights = self.attention_layer.attend(output, prepared)
        return self.combine(ops.concatenate([context, output], axis=-1)), weights

    # ---------------------------------------------------------- teacher forcing
    def call(self, targets, memory, summary, memory_mask=None, training=False, return_attention=False):
        embedded = self.drop(self.embedding(targets), training=training)
        states = self.initial_state(summary)
        prepared = self.prepare(memory, memory_mask)
        weights = None
        if self.attention == "bahdanau":
            outputs = self._bahdanau_sequence(embedded, states, prepared, training, return_attention)
            memory_dim = prepared["memory"].shape[-1]
            size = self.output_size
            output = outputs[..., :size]
            context = outputs[..., size : size + memory_dim]
            if return_attention:
                weights = outputs[..., size + memory_dim :]
            features = ops.concatenate([output, context, embedded], axis=-1)
        else:
            output = self.rnn(embedded, initial_state=states, training=training)
            if self.attention == "luong":
                features, weights = self._luong_features(output, prepared)
            else:
                features = output
        logits = self.output_layer(self.drop(features, training=training))
        return (logits, weights) if return_attention else logits

    # ----------------------------------------------------------------- decoding
    def step(self, tokens, states, prepared, cell_constants):
        """One decoding step: `(logits (batch, vocab), new_states, weights (batch, source) or None)`.

        Args:
            tokens: `(batch,)` the previous target tokens.
            states: the decoder states (from `initial_state`, then from `step`).
            prepared: `prepare(memory, memory_mask)`.
            cell_constants: `cell_constants(...)` (inference: `training=False`).
        """
        embedded = self.embedding(tokens)
        weights = None
        if self.attention == "bahdanau":
            output, context, weights, states = self._bahdanau_step(embedded, states, prepared, cell_constants)
            features = ops.concatenate([output, context, embedded], axis=-1)
        else:
            output, states = self._cell_step(embedded, states, cell_constants)
            features = output
            if self.attention == "luong":
                features, weights = self._luong_features(output, prepared)
        return self.output_layer(features), states, weights

    def get_config(self):
        config = {
            "vocab_size": self.vocab_size,
            "units": self.units,
            "embedding_dim": self.embedding_dim,
            "cell": serialize_cell(self.cell),
            "attention": self.attention,
            "score": self.score,
            "attention_units": self.attention_units,
            "dropout": self.dropout,
        }
        return {**super().get_config(), **config}
