"""`Seq2Seq`: embeddings + `Encoder` + `Decoder`, trained with teacher forcing, decoded by search."""

import numbers

import keras
import numpy as np
from keras import ops

from kerasrnn.layers import _checks
from kerasrnn.ops.compiled import compiled
from kerasrnn.ops.device import BuildsOutsideInferenceMode
from kerasrnn.seq2seq.decoder import Decoder
from kerasrnn.seq2seq.encoder import Encoder, deserialize_cell, serialize_cell
from kerasrnn.seq2seq.search import (
    _check_alpha,
    beam_search,
    greedy_search,
    kept_steps,
    strip_after_eos,
)

__all__ = ["MaskedAccuracy", "MaskedSequenceLoss", "Seq2Seq", "masked_accuracy"]

_register = keras.saving.register_keras_serializable(package="kerasrnn")

# `translate` pads the source to a multiple of this, for few compiled shapes.
SOURCE_MULTIPLE = 8


@_register
class Seq2Seq(BuildsOutsideInferenceMode, keras.Model):
    r"""Encoder–decoder translation model (Sutskever et al. 2014; Cho et al. 2014).

    `Seq2Seq((source, target_in))` returns the teacher-forced logits
    `(batch, target, target_vocab)`: `P(y_t | y_{<t}, x)` with the true previous tokens
    fed in (`target_in` = BOS followed by the target). `translate` decodes new sentences
    greedily or with beam search, one decoder-cell step per token.

    Token id conventions: `pad_id` (default 0) pads both sides and is masked out of the
    attention; every target starts with `bos_id` and ends with `eos_id`.

    Args:
        source_vocab_size, target_vocab_size: vocabulary sizes.
        embedding_dim: size of both embeddings.
        encoder_units: units of each encoder RNN (per direction).
        decoder_units: units of the decoder cell.
        cell: `"gru"` (default), `"lstm"`, `"simple"` or a kerasrnn cell template, for
            both the encoder and the decoder.
        num_layers: stacked encoder layers.
        bidirectional: bidirectional encoder (default True).
        attention: `"luong"` (default), `"bahdanau"` or `"none"`; see `Decoder`.
        score: Luong score, `"general"` or `"dot"`.
        dropout: dropout on the embeddings, between encoder layers and before the output.
        pad_id, bos_id, eos_id: special token ids.

    Example:

    >>> import numpy as np
    >>> model = Seq2Seq(20, 20, embedding_dim=8, encoder_units=8, decoder_units=8)
    >>> source = np.array([[5, 6, 7, 3], [8, 9, 3, 0]])
    >>> logits = model((source, np.full((2, 4), 2)))
    >>> tuple(logits.shape)
    (2, 4, 20)
    >>> tokens, weights = model.translate(source, beam_size=3, max_length=6)
    >>> len(tokens), weights[1].shape[1]
    (2, 4)

    Reference:
        Sutskever, Vinyals & Le, "Sequence to Sequence Learning with Neural Networks",
        NeurIPS 2014; Cho et al., EMNLP 2014; Bahdanau et al., ICLR 2015; Luong et al.,
        EMNLP 2015.
    """

    def __init__(
        self,
        source_vocab_size,
        target_vocab_size,
        embedding_dim=256,
        encoder_units=256,
        decoder_units=512,
        cell="gru",
        num_layers=1,
        bidirectional=True,
        attention="luong",
        score="general",
        dropout=0.0,
        pad_id=0,
        bos_id=2,
        eos_id=3,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.source_vocab_size = _checks.positive_int("source_vocab_size", source_vocab_size)
        self.target_vocab_size = _checks.positive_int("target_vocab_size", target_vocab_size)
        self.embedding_dim = _checks.positive_int("embedding_dim", embedding_dim)
        self.cell_spec = deserialize_cell(cell)
        self.dropout_rate = _checks.rate("dropout", dropout)
        self.pad_id, self.bos_id, self.eos_id = (
            _token_id(name, value, self.target_vocab_size)
            for name, value in (("pad_id", pad_id), ("bos_id", bos_id), ("eos_id", eos_id)))
        if self.pad_id >= self.source_vocab_size:  # the source is padded with it too
            raise ValueError(f"`pad_id` ({self.pad_id}) must be below `source_vocab_size` "
                             f"({self.source_vocab_size}): it pads the source too.")
        dtype = self.dtype_policy  # every part computes in the model's policy
        self.source_embedding = keras.layers.Embedding(source_vocab_size, embedding_dim, name="source_embedding",
                                                       dtype=dtype)
        self.drop = keras.layers.Dropout(self.dropout_rate, dtype=dtype)
        self.encoder = Encoder(
            encoder_units, cell=self.cell_spec, num_layers=num_layers, bidirectional=bidirectional,
            dropout=self.dropout_rate, name="encoder", dtype=dtype,
        )
        self.decoder = Decoder(
            target_vocab_size, decoder_units, embedding_dim=embedding_dim, cell=self.cell_spec,
            attention=attention, score=score, dropout=self.dropout_rate, name="decoder", dtype=dtype,
        )

    def build(self, input_shape=None):
        self.source_embedding.build((None, None))
        self.encoder.build((None, None, self.embedding_dim))
        dim = self.encoder.output_dim
        self.decoder.build((None, None), (None, None, dim), (None, dim))
        self.built = True

    def encode(self, source, training=False):
        """`(memory, mask, summary)` for int `source (batch, source_len)`."""
        source = ops.convert_to_tensor(source, "int32")
        mask = ops.not_equal(source, self.pad_id)
        embedded = self.drop(self.source_embedding(source), training=training)
        memory, summary = self.encoder(embedded, mask=mask, training=training)
        return memory, mask, summary

    def call(self, inputs, training=False):
        source, target_in = inputs
        memory, mask, summary = self.encode(source, training=training)
        target_in = ops.convert_to_tensor(target_in, "int32")
        return self.decoder(target_in, memory, summary, memory_mask=mask, training=training)

    def compute_output_shape(self, input_shape):
        """`(batch, target_len, target_vocab_size)` for `((batch, source_len), (batch, target_len))`."""
        _source_shape, target_shape = input_shape
        return (*tuple(target_shape)[:2], self.target_vocab_size)

    def check_source(self, source, caller="translate"):
        """`source` as a NumPy int array `(batch, source_len)` of ids below
        `source_vocab_size`, or a `ValueError` naming it (an id out of range is an
        error on TensorFlow and torch, and a silent wrong answer on JAX)."""
        source = np.asarray(ops.convert_to_numpy(source))
        if source.ndim != 2 or not np.issubdtype(source.dtype, np.integer):
            raise ValueError(
                f"{self.name}.{caller}: `source` must be integer token ids of shape "
                f"(batch, source_len); received dtype {source.dtype}, shape {source.shape}. "
                "Tokenize and pad the sentences first (`kerasrnn.datasets.translation.pad_batch`)."
            )
        if source.shape[1] == 0 and source.shape[0]:
            raise ValueError(f"{self.name}.{caller}: `source` has no tokens (shape {source.shape}); "
                             "each sentence needs at least its end token.")
        bad = (source < 0) | (source >= self.source_vocab_size)
        if bad.any():
            row, column = np.argwhere(bad)[0]
            raise ValueError(
                f"{self.name}.{caller}: `source` holds the id {source[row, column]} (row {row}, "
                f"position {column}), outside the source vocabulary [0, {self.source_vocab_size}).")
        return source.astype("int32")

    def translate(self, source, beam_size=1, max_length=None, alpha=0.6):
        """Decodes int `source (batch, source_len)`, one decoder step per token.

        The search runs in Python, its top-k on the device; each step (embedding, cell, attention, output
        layer) runs as one compiled program on JAX and TensorFlow, compiled once per
        batch shape and reused across calls; set `model.run_eagerly = True` to run it
        op by op (debugging). The source is padded to a multiple of 8 tokens (as
        `kerasrnn.datasets.TranslationBatches` pads training batches), so that batches
        of varying length share a few compiled shapes; padding is masked out, and the
        attention weights returned are cut back to `source_len`.

        Args:
            source: padded source ids (NumPy or tensor), each below `source_vocab_size`;
                no rows gives `([], [])`.
            beam_size: 1 for greedy search, more for beam search.
            max_length: most target tokens (default `2 · source_len + 10`).
            alpha: length-penalty exponent of the beam search (`length_penalty`).

        Returns:
            `(tokens, weights)`: a list of token-id lists (without BOS/EOS/padding) and a
            list of attention arrays, one row per token and one for EOS:
            `(len(tokens[i]) + 1, source_len)`, or `(len(tokens[i]), source_len)` for a
            sentence that reached `max_length` without EOS; `None` entries without
            attention.
        """
        source = self.check_source(source)
        batch, source_len = source.shape
        beam_size = _checks.positive_int("beam_size", beam_size)
        if beam_size > 1:  # before the encoder runs, not at the first step of the search
            _check_alpha(alpha)
        max_length = 2 * source_len + 10 if max_length is None else _checks.positive_int("max_length", max_length)
        if batch == 0:  # no sentences, no translations (the encoder is not run on nothing)
            return [], []
        if not self.built:  # every weight's shape follows from the configuration
            self.build()
        padded = np.full((batch, -(-source_len // SOURCE_MULTIPLE) * SOURCE_MULTIPLE), self.pad_id, source.dtype)
        padded[:, :source_len] = source
        memory, mask, summary = compiled(self, "encode")(padded)
        states = self.decoder.initial_state(summary)
        prepared = self.decoder.prepare(memory, mask)
        step_fn = compiled(self, "_decode_step")
        common = {"batch_size": batch, "bos_id": self.bos_id, "eos_id": self.eos_id, "max_length": max_length, "pad_id": self.pad_id}
        if beam_size == 1:
            tokens, weights = greedy_search(step_fn, states, prepared, **common)
        else:
            tokens, weights, _ = beam_search(step_fn, states, prepared, beam_size=beam_size, alpha=alpha, **common)
        ids = strip_after_eos(tokens, self.eos_id, self.pad_id)
        if weights is None:
            return ids, [None] * batch
        rows = kept_steps(tokens, self.eos_id, self.pad_id)
        return ids, [weights[i, rows[i], :source_len] for i in range(batch)]

    def _decode_step(self, tokens, states, prepared):
        """One decoding step, `(log_probs (batch, vocab) float32, states, weights)`;
        `translate` runs it compiled (`kerasrnn.ops.compiled`)."""
        cell_constants = self.decoder.cell_constants(states[0], training=False)
        logits, states, weights = self.decoder.step(tokens, states, prepared, cell_constants)
        return ops.log_softmax(ops.cast(logits, "float32"), axis=-1), states, weights

    @classmethod
    def from_config(cls, config):
        # Every weight's shape follows from the configuration: build now, so that a
        # saved model's weights load whether or not it was ever called on data.
        model = cls(**config)
        model.build()
        return model

    def get_config(self):
        config = {
            "source_vocab_size": self.source_vocab_size,
            "target_vocab_size": self.target_vocab_size,
            "embedding_dim": self.embedding_dim,
            "encoder_units": self.encoder.units,
            "decoder_units": self.decoder.units,
            "cell": serialize_cell(self.cell_spec),
            "num_layers": self.encoder.num_layers,
            "bidirectional": self.encoder.bidirectional,
            "attention": self.decoder.attention,
            "score": self.decoder.score,
            "dropout": self.dropout_rate,
            "pad_id": self.pad_id,
            "bos_id": self.bos_id,
            "eos_id": self.eos_id,
        }
        return {**super().get_config(), **config}


@_register
class MaskedSequenceLoss(keras.losses.Loss):
    r"""Token cross-entropy averaged over the non-padding target tokens.

    `L = Σ_{t: y_t ≠ pad} [(1 − ε)(−log p(y_t)) + ε · mean_v(−log p(v))] / #{t: y_t ≠ pad}`,
    with label smoothing `ε` (Szegedy et al. 2016); `ε = 0` is the negative log-likelihood
    whose exponential is the perplexity. A sample weight (per sequence or per token)
    scales each token's term; a row whose target is all padding adds nothing.

    Under a `tf.distribute` strategy each replica holds part of the batch: the count of
    tokens is summed over the replicas, so that the replicas' losses (whose gradients
    the strategy adds up) sum to the loss of the whole batch. On JAX a distributed batch
    is one array and nothing changes.

    Args:
        label_smoothing: `ε` in [0, 1).
        pad_id: the padding id, left out of the average.

    Example:

    >>> import numpy as np
    >>> loss = MaskedSequenceLoss()
    >>> logits = np.log(np.array([[[0.5, 0.5], [0.9, 0.1]]], "float32"))
    >>> round(float(loss(np.array([[1, 0]]), logits)), 4)  # only the first token counts
    0.6931
    """

    def __init__(self, label_smoothing=0.0, pad_id=0, name="masked_sequence_loss", reduction="sum", **kwargs):
        # `call` returns each token's share of the mean, so the reduction is a sum.
        # Keras's default `sum_over_batch_size`, which saved configs name, means the same here.
        if reduction not in ("sum", "sum_over_batch_size"):
            raise ValueError(f"MaskedSequenceLoss averages over the non-padding tokens itself; `reduction` "
                             f"cannot be changed (received {reduction!r}).")
        super().__init__(name=name, reduction="sum", **kwargs)
        self.label_smoothing = _checks.rate("label_smoothing", label_smoothing)
        self.pad_id = int(pad_id)

    def __call__(self, y_true, y_pred, sample_weight=None):
        if sample_weight is not None:
            sample_weight = ops.convert_to_tensor(sample_weight)
            if len(sample_weight.shape) == 1:
                # One weight per sequence: Keras would broadcast a (batch,) weight
                # against the (batch, time) token losses along time, or fail.
                sample_weight = ops.expand_dims(sample_weight, -1)
        return super().__call__(y_true, y_pred, sample_weight=sample_weight)

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "int32")
        log_p = ops.log_softmax(ops.cast(y_pred, "float32"), axis=-1)
        nll = -ops.squeeze(ops.take_along_axis(log_p, ops.expand_dims(y_true, -1), axis=-1), -1)
        if self.label_smoothing:
            nll = (1.0 - self.label_smoothing) * nll - self.label_smoothing * ops.mean(log_p, axis=-1)
        mask = ops.cast(ops.not_equal(y_true, self.pad_id), "float32")
        tokens, _ = _over_replicas(ops.sum(mask))
        return nll * mask / ops.maximum(tokens, 1.0)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing, "pad_id": self.pad_id}


@_register
def masked_accuracy(y_true, y_pred, pad_id=0):
    """Fraction of non-padding target tokens predicted exactly (argmax of the logits).

    Example:

    >>> import numpy as np
    >>> float(masked_accuracy(np.array([[1, 2, 0]]), np.eye(3)[None, [1, 0, 0]]))
    0.5
    """
    y_true = ops.cast(y_true, "int32")
    mask = ops.cast(ops.not_equal(y_true, pad_id), "float32")
    hit = ops.cast(ops.equal(ops.cast(ops.argmax(y_pred, axis=-1), "int32"), y_true), "float32")
    # Keras averages a metric's values over the replicas of a tf.distribute strategy:
    # each replica's hits, over the whole batch's tokens, times the replicas.
    tokens, replicas = _over_replicas(ops.sum(mask))
    return replicas * ops.sum(hit * mask) / ops.maximum(tokens, 1.0)


def _token_id(name, value, vocab_size):
    """A special token id: an integer in `[0, vocab_size)` (an `eos_id` the model cannot
    emit would make every sentence run to `max_length`)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be an integer token id; received {value!r}.")
    if not 0 <= value < vocab_size:
        raise ValueError(f"`{name}` must be in [0, target_vocab_size) = [0, {vocab_size}); received {value}.")
    return int(value)


@_register
class MaskedAccuracy(keras.metrics.Metric):
    """Fraction of the non-padding target tokens predicted exactly, over every batch seen.

    `accuracy = Σ_b hits_b / Σ_b tokens_b` (argmax of the logits against targets other
    than `pad_id`): each token counts once, whatever batch it came in, where
    `masked_accuracy` as a metric is a mean of per-batch fractions (a short batch
    weighing as much as a full one). Rows whose targets are all padding (the filler
    rows of an evenly split batch) add nothing. As a weighted metric a sample weight
    (per sequence or per token) scales each token's count; as an unweighted one
    (`metrics=[...]`) it needs none, so the weights a loss is given do not change it.

    Args:
        pad_id: the padding id, left out.
        name: the metric's name.
        dtype: the dtype of its sums.

    Example:

    >>> import numpy as np
    >>> metric = MaskedAccuracy()
    >>> metric.update_state(np.array([[1, 2, 0]]), np.eye(3)[None, [1, 0, 0]])  # 1 of 2
    >>> metric.update_state(np.array([[2, 0, 0]]), np.eye(3)[None, [2, 0, 0]])  # 1 of 1
    >>> round(float(metric.result()), 4)
    0.6667
    """

    def __init__(self, pad_id=0, name="masked_accuracy", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.pad_id = int(pad_id)
        self.hits = self.add_variable((), initializer="zeros", dtype=self.dtype, name="hits")
        self.tokens = self.add_variable((), initializer="zeros", dtype=self.dtype, name="tokens")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.cast(y_true, "int32")
        mask = ops.cast(ops.not_equal(y_true, self.pad_id), self.dtype)
        if sample_weight is not None:
            weight = ops.cast(ops.convert_to_tensor(sample_weight), self.dtype)
            if len(weight.shape) == 1:  # one weight per sequence
                weight = ops.expand_dims(weight, -1)
            mask = mask * weight
        hit = ops.cast(ops.equal(ops.cast(ops.argmax(y_pred, axis=-1), "int32"), y_true), self.dtype)
        self.hits.assign_add(ops.sum(hit * mask))
        self.tokens.assign_add(ops.sum(mask))

    def result(self):
        return self.hits / ops.maximum(self.tokens, 1.0)

    def get_config(self):
        return {**super().get_config(), "pad_id": self.pad_id}


def _over_replicas(value):
    """`(value summed over the replicas, number of replicas)` inside a `tf.distribute`
    strategy's step on TensorFlow; `(value, 1)` everywhere else."""
    if keras.backend.backend() != "tensorflow":
        return value, 1
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value, 1
    return context.all_reduce("SUM", value), context.num_replicas_in_sync
