"""keras-hub's samplers driving a kerasrnn decoder, one decoder step per token.

`keras_hub.samplers` (greedy, beam, top-k, top-p, random, contrastive) decode a causal
language model through a `next(prompt, cache, index) -> (logits, hidden_states, cache)`
function. `generate` gives them one for a `Seq2Seq`: the prompt is the begin token
followed by the positions to fill, the cache holds the decoder states and the attention
memory (so that samplers that expand the batch, such as beam search, expand them too),
and each call runs `Decoder.step` once on the previous token.

keras-hub is optional (`pip install "kerasrnn[hub]"`; it pulls TensorFlow and
tensorflow-text on every backend) and imported by the caller, never here. The recipes
decode with `Seq2Seq.translate`, whose beam search has the GNMT length penalty that
keras-hub's `BeamSampler` lacks; see `kerasrnn.seq2seq.search`.
"""

import numpy as np
from keras import ops

from kerasrnn.layers import _checks
from kerasrnn.seq2seq.search import strip_after_eos

__all__ = ["generate"]


def generate(model, source, sampler, max_length=None):
    """Decodes `source` with a keras-hub sampler driving `model`'s decoder.

    Args:
        model: a `kerasrnn.seq2seq.Seq2Seq`.
        source: int source ids `(batch, source_len)`, padded with `model.pad_id`.
        sampler: a `keras_hub.samplers.Sampler` (`GreedySampler()`,
            `BeamSampler(num_beams=5)`, `TopKSampler(k=10, seed=1)`, `TopPSampler(p=0.9)`,
            `RandomSampler()`, `ContrastiveSampler(k=4, alpha=0.6)`, ...).
        max_length: most generated tokens (default `2 · source_len + 10`).

    Returns:
        A list of token-id lists, one per sentence, without the begin, end and padding
        tokens (as `Seq2Seq.translate` returns them).

    Example:

    >>> import keras_hub  # doctest: +SKIP
    >>> from kerasrnn.seq2seq import Seq2Seq, generate
    >>> model = Seq2Seq(20, 20, embedding_dim=8, encoder_units=8, decoder_units=8)
    >>> tokens = generate(model, [[5, 6, 7, 3]], keras_hub.samplers.TopKSampler(k=5, seed=1))  # doctest: +SKIP
    """
    source = model.check_source(source, caller="generate")
    batch, source_len = source.shape
    max_length = 2 * source_len + 10 if max_length is None else _checks.positive_int("max_length", max_length)
    if batch == 0:
        return []
    decoder = model.decoder
    memory, mask, summary = model.encode(source)
    states = list(decoder.initial_state(summary))
    prepared = decoder.prepare(memory, mask)
    absent = [key for key, value in prepared.items() if value is None]  # a cache holds tensors only
    cell_constants = decoder.cell_constants(memory[:, 0], training=False)

    def step(tokens, cache):
        cached = {**cache["prepared"], **dict.fromkeys(absent)}
        logits, new_states, _ = decoder.step(tokens, cache["states"], cached, cell_constants)
        return ops.cast(logits, "float32"), list(new_states)

    def next_fn(prompt, cache, index):
        """Logits for position `index`, after one step on the token at `index - 1`."""
        previous = ops.squeeze(ops.slice(prompt, (0, index - 1), (ops.shape(prompt)[0], 1)), axis=1)
        logits, new_states = step(previous, cache)
        return logits, new_states[0], {"states": new_states, "prepared": cache["prepared"]}

    prompt = np.full((batch, max_length + 1), model.pad_id, "int32")
    prompt[:, 0] = model.bos_id
    prompt_mask = np.zeros(prompt.shape, bool)
    prompt_mask[:, 0] = True
    cache = {"states": states, "prepared": {k: v for k, v in prepared.items() if v is not None}}
    # The contrastive sampler compares each new state with those of the tokens so far:
    # the state after the begin token comes first.
    _, after_bos = step(ops.convert_to_tensor(prompt[:, 0]), cache)
    hidden = np.zeros((batch, max_length + 1, int(after_bos[0].shape[-1])), "float32")
    hidden[:, 0] = ops.convert_to_numpy(ops.cast(after_bos[0], "float32"))
    output = sampler(
        next=next_fn,
        prompt=ops.convert_to_tensor(prompt),
        cache=cache,
        index=1,
        mask=ops.convert_to_tensor(prompt_mask),
        stop_token_ids=[model.eos_id],
        hidden_states=ops.convert_to_tensor(hidden),
        model=model,
    )
    return strip_after_eos(np.asarray(ops.convert_to_numpy(output))[:, 1:], model.eos_id, model.pad_id)
