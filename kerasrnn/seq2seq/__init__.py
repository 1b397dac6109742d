"""Encoder–decoder (sequence-to-sequence) models with attention, and their decoding.

- `Encoder`: stacked, optionally bidirectional kerasrnn layers over the source.
- `Decoder`: a kerasrnn cell over the target with `BahdanauAttention` (inside the
  recurrence) or `LuongAttention` (after it), teacher forcing (`call`) and one-step
  decoding (`step`).
- `Seq2Seq`: embeddings + encoder + decoder as a `keras.Model`, with `translate`.
- `MaskedSequenceLoss`, `MaskedAccuracy` (`masked_accuracy` per batch): over the
  non-padding target tokens.
- `greedy_search`, `beam_search` (GNMT length penalty), `length_penalty`.
- `generate`: keras-hub's samplers (greedy, beam, top-k, top-p, contrastive) driving a
  `Seq2Seq` decoder (keras-hub is optional: `pip install "kerasrnn[hub]"`).
"""

from kerasrnn.seq2seq.attention import BahdanauAttention, LuongAttention, masked_softmax
from kerasrnn.seq2seq.decoder import Decoder
from kerasrnn.seq2seq.encoder import Encoder, make_cell, reverse_padded
from kerasrnn.seq2seq.hub import generate
from kerasrnn.seq2seq.model import (
    MaskedAccuracy,
    MaskedSequenceLoss,
    Seq2Seq,
    masked_accuracy,
)
from kerasrnn.seq2seq.search import (
    beam_search,
    greedy_search,
    kept_steps,
    length_penalty,
    strip_after_eos,
)

__all__ = [
    "BahdanauAttention",
    "Decoder",
    "Encoder",
    "LuongAttention",
    "MaskedAccuracy",
    "MaskedSequenceLoss",
    "Seq2Seq",
    "beam_search",
    "generate",
    "greedy_search",
    "kept_steps",
    "length_penalty",
    "make_cell",
    "masked_accuracy",
    "masked_softmax",
    "reverse_padded",
    "strip_after_eos",
]
