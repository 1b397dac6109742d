"""Decoding loops: greedy search and beam search with the GNMT length penalty.

Both run a decoder one step at a time — `step_fn(tokens, states, constants)` is called
once per output position with the tokens chosen at the previous position — so the
cost of a step does not grow with the prefix (no re-run of the whole prefix per token).
They run eagerly (a Python loop that stops as soon as every hypothesis has ended), on
any backend. What is as wide as the vocabulary (the arg-max, the beam's scores and their
top k) stays on the device; only `(batch, beam)` numbers come to the host per step.

Why not `keras_hub.samplers.BeamSampler`? It can carry the decoder state in its cache,
but (1) it has no length penalty: hypotheses are ranked by their summed log-probability,
which favours short translations, and the penalty must enter the ranking *inside* the
loop, where a finished hypothesis competes with longer alive ones, not only in a final
re-ranking; (2) a hypothesis that has emitted the end token keeps being extended and
scored (its beam can even be duplicated), so finished hypotheses are not frozen; and
(3) keras-hub depends on `tensorflow-text`, hence on TensorFlow, which a JAX or PyTorch
user of kerasrnn should not need for ~100 lines of `keras.ops`. Its samplers can still
drive a kerasrnn decoder, for top-k, top-p or contrastive sampling: `generate` in
`kerasrnn.seq2seq.hub`.
"""

import functools

import keras
import numpy as np
from keras import ops, tree

from kerasrnn.layers import _checks
from kerasrnn.ops.compiled import compiled_function

__all__ = ["beam_search", "greedy_search", "kept_steps", "length_penalty", "strip_after_eos"]

#: Stands for log(0) in the beam scores: finite, so that sums and divisions never make
#: a NaN (as `-inf - -inf` would), and far below any real log-probability.
NEG_INF = -1e9


def length_penalty(length, alpha):
    r"""The GNMT length penalty `lp(Y) = ((5 + |Y|) / 6) ** α` (Wu et al. 2016, eq. 14).

    A hypothesis `Y` is ranked by `log P(Y | X) / lp(Y)`. With `α = 0` it is the plain
    log-probability; larger `α` favours longer hypotheses.

    Args:
        length: `|Y|`, the number of generated tokens (the end token included); an int
            or a tensor.
        alpha: `α >= 0`.

    Example:

    >>> round(float(length_penalty(7, 0.6)), 4)
    1.5157

    Reference:
        Wu et al., "Google's Neural Machine Translation System: Bridging the Gap between
        Human and Machine Translation", 2016.
    """
    alpha = _check_alpha(alpha)
    length = ops.cast(length, "float32")
    return ops.power((5.0 + length) / 6.0, alpha)


def _check_alpha(alpha):
    return _checks.non_negative_float("alpha", alpha, "the length penalty's exponent; 0: no penalty")


def _check_search_args(batch_size, max_length, beam_size=1):
    for name, value in (("batch_size", batch_size), ("max_length", max_length), ("beam_size", beam_size)):
        _checks.positive_int(name, value)


def greedy_search(step_fn, states, constants, *, batch_size, bos_id, eos_id, max_length, pad_id=0):
    """Greedy decoding: the most probable token at each step.

    Args:
        step_fn: `step_fn(tokens, states, constants) -> (log_probs, new_states, weights)`
            with `tokens (batch,)` int, `log_probs (batch, vocab)`, `weights` the
            attention weights `(batch, source_len)` or `None`.
        states: list of `(batch, ...)` decoder states.
        constants: nested structure of `(batch, ...)` tensors that `step_fn` reads
            (encoder memory, its mask, precomputed keys).
        batch_size: the batch size.
        bos_id, eos_id, pad_id: start, end and padding token ids. After the end token a
            row emits `pad_id`.
        max_length: the most tokens to generate.

    Returns:
        `(tokens, weights)`: `tokens (batch, steps)` NumPy ints (`steps <= max_length`),
        `weights (batch, steps, source_len)` NumPy floats or `None`.

    Example:

    >>> import numpy as np, keras
    >>> table = np.log(np.full((4, 4), 1e-3) + np.eye(4)[[2, 3, 3, 1]])  # next(t) = table[t]
    >>> def step_fn(tokens, states, constants):
    ...     return keras.ops.take(keras.ops.convert_to_tensor(table, "float32"), tokens, axis=0), states, None
    >>> tokens, _ = greedy_search(step_fn, [], {}, batch_size=1, bos_id=0, eos_id=1, max_length=5)
    >>> tokens.tolist()
    [[2, 3, 1]]
    """
    _check_search_args(batch_size, max_length)
    tokens = ops.full((batch_size,), bos_id, dtype="int32")
    finished = np.zeros((batch_size,), bool)
    outputs, history = [], []
    for _ in range(int(max_length)):
        log_probs, states, weights = step_fn(tokens, states, constants)
        chosen = ops.convert_to_numpy(ops.argmax(log_probs, axis=-1)).astype("int32")
        chosen = np.where(finished, pad_id, chosen)
        outputs.append(chosen)
        if weights is not None:
            history.append(ops.convert_to_numpy(weights))
        finished |= chosen == eos_id
        tokens = ops.convert_to_tensor(chosen)
        if finished.all():
            break
    weights = np.stack(history, axis=1) if history else None
    return np.stack(outputs, axis=1), weights


def beam_search(
    step_fn,
    states,
    constants,
    *,
    batch_size,
    bos_id,
    eos_id,
    max_length,
    beam_size=5,
    alpha=0.6,
    pad_id=0,
):
    r"""Beam search with the GNMT length penalty and frozen finished hypotheses.

    Each of the `beam_size` hypotheses of a sentence is extended by every token; the
    `beam_size` candidates with the best score `log P(Y | X) / lp(Y)` (see
    `length_penalty`) are kept. A hypothesis that has emitted `eos_id` is *finished*:
    its only continuation is `pad_id` at no cost, so its log-probability and length —
    hence its score — stay frozen while it keeps its place in the beam, competing with
    the alive ones. The search ends when every hypothesis of every sentence is finished,
    or after `max_length` steps; the best-scoring hypothesis (finished or not) is
    returned. With `beam_size=1` this is exactly `greedy_search`.

    Args:
        step_fn, states, constants, batch_size, bos_id, eos_id, pad_id, max_length: as in
            `greedy_search`. `states` and `constants` are given per sentence (`batch`
            rows); they are repeated `beam_size` times here, so `step_fn` sees
            `batch * beam_size` rows, hypotheses of a sentence next to each other.
        beam_size: the number of hypotheses kept per sentence.
        alpha: the length-penalty exponent `α` (0: no penalty; GNMT used 0.6–0.7).

    Returns:
        `(tokens, weights, scores)`: the best hypothesis per sentence,
        `tokens (batch, steps)`, its attention `weights (batch, steps, source_len)` (or
        `None`) and its `scores (batch,)` `log P / lp`, all NumPy.

    Example:

    >>> import numpy as np, keras
    >>> table = np.log(np.full((4, 4), 1e-3) + np.eye(4)[[2, 3, 3, 1]])
    >>> def step_fn(tokens, states, constants):
    ...     return keras.ops.take(keras.ops.convert_to_tensor(table, "float32"), tokens, axis=0), states, None
    >>> tokens, _, _ = beam_search(step_fn, [], {}, batch_size=1, bos_id=0, eos_id=1,
    ...                            max_length=5, beam_size=2)
    >>> tokens.tolist()  # the other hypothesis ran to max_length: padding after EOS
    [[2, 3, 1, 0, 0]]

    Reference:
        Wu et al., "Google's Neural Machine Translation System", 2016 (length penalty);
        Sutskever, Vinyals & Le, "Sequence to Sequence Learning with Neural Networks",
        NeurIPS 2014 (beam search for translation).

    Notes:
        GNMT's coverage penalty (β) is not implemented. Finished hypotheses stay in the
        beam instead of a separate list, as in most RNN translation toolkits.
    """
    _check_search_args(batch_size, max_length, beam_size)
    alpha = _check_alpha(alpha)
    k = int(beam_size)
    rows = batch_size * k

    def tile(x):  # `None` (a decoder without a memory mask) stays `None`
        return None if x is None else ops.repeat(x, k, axis=0)

    states = [tile(s) for s in states]
    constants = tree.map_structure(tile, constants)
    tokens = ops.full((rows,), bos_id, dtype="int32")
    # The bookkeeping of the beams — `(batch, k)` arrays and the token histories — is
    # NumPy on the host. What is `vocab` wide (the scores of every continuation and
    # their top k) stays on the device: per step, `(batch, k)` numbers and the attention
    # weights cross, not the `(batch · k, vocab)` log-probabilities.
    # Only the first copy of each sentence is alive at the start, so the first step
    # picks `k` different tokens instead of `k` copies of the best one.
    log_p = np.tile(np.array([0.0] + [NEG_INF] * (k - 1), "float32"), (batch_size, 1))
    finished = np.zeros((batch_size, k), bool)
    lengths = np.zeros((batch_size, k), "int32")
    sequences = np.zeros((batch_size, k, 0), "int32")
    history = None
    frozen = None
    offsets = (np.arange(batch_size) * k)[:, None]
    candidates = _candidates_fn(k, alpha, keras.backend.backend())
    for t in range(int(max_length)):
        step_log_p, states, weights = step_fn(tokens, states, constants)
        vocab = int(step_log_p.shape[-1])
        if frozen is None:
            # A finished hypothesis continues only with `pad_id`, at no cost.
            frozen = ops.convert_to_tensor(np.where(np.arange(vocab) == pad_id, 0.0, NEG_INF).astype("float32"))
        new_lengths = np.where(finished, lengths, t + 1)
        found = candidates(step_log_p, finished, log_p, new_lengths, frozen)
        best, log_p = _best(found, k)  # (batch, k), best first; their log-probabilities
        parent, token = best // vocab, best % vocab
        lengths = np.take_along_axis(new_lengths, parent, axis=1)
        finished = np.take_along_axis(finished, parent, axis=1) | (token == eos_id)
        sequences = np.concatenate(
            [np.take_along_axis(sequences, parent[..., None], axis=1), token[..., None]], axis=2
        )
        if weights is not None:
            # The weights of this step belong to the parents of the new hypotheses.
            w = ops.convert_to_numpy(weights).reshape(batch_size, k, 1, -1)
            w = np.take_along_axis(w, parent[..., None, None], axis=1)
            if history is not None:
                w = np.concatenate([np.take_along_axis(history, parent[..., None, None], axis=1), w], axis=2)
            history = w
        rows_index = ops.convert_to_tensor((offsets + parent).reshape(-1).astype("int32"))
        states = [ops.take(s, rows_index, axis=0) for s in states]
        tokens = ops.convert_to_tensor(token.reshape(-1).astype("int32"))
        if finished.all():
            break
    final = log_p / ops.convert_to_numpy(length_penalty(lengths, alpha))
    top = np.argmax(final, axis=1)
    pick = np.arange(batch_size)
    weights = history[pick, top] if history is not None else None
    return sequences[pick, top], weights, final[pick, top]


def _candidates(step_log_p, finished, log_p, lengths, frozen, *, k, alpha, wide, host_ties):
    """On the device, the best `wide` continuations of each sentence's `k` hypotheses:
    `(score, total, values, index, log_p)`. `score` and `total` `(batch, k · vocab)` are
    every continuation's `log P / lp` and `log P` (finished hypotheses frozen); `values`
    are the `wide` largest scores, at `index` (flat: `hypothesis · vocab + token`), and
    `log_p` their `log P`. Without `host_ties`, `score` and `total` are `None`, so that a
    compiled program need not write them out."""
    finished, log_p = ops.convert_to_tensor(finished), ops.convert_to_tensor(log_p)  # from NumPy
    batch, vocab = ops.shape(finished)[0], ops.shape(frozen)[0]
    step_log_p = ops.reshape(ops.cast(step_log_p, "float32"), (batch, k, vocab))
    step_log_p = ops.where(finished[..., None], frozen, step_log_p)
    total = log_p[..., None] + step_log_p  # (batch, k, vocab)
    score = ops.reshape(total / length_penalty(lengths, alpha)[..., None], (batch, k * vocab))
    total = ops.reshape(total, (batch, k * vocab))
    values, index = ops.top_k(score, wide)
    log_p = ops.take_along_axis(total, index, axis=1)
    return (score, total, values, index, log_p) if host_ties else (None, None, values, index, log_p)


@functools.lru_cache(maxsize=32)
def _candidates_fn(k, alpha, backend):
    """`_candidates` for `k` and `alpha`: one compiled program per shape on JAX and
    TensorFlow, as it is on PyTorch, with twice as many candidates for `_best` to break
    ties. The search's work per step (100 sentences, beam 5, 4,000 tokens; a 2-core CPU,
    JAX) took 15 ms eagerly, 15 ms compiled but writing `score` and `total` out, and
    10 ms compiled without them."""
    host_ties = backend == "torch"
    wide = 2 * k if host_ties else k
    function = compiled_function(functools.partial(_candidates, k=k, alpha=alpha, wide=wide, host_ties=host_ties))

    def call(step_log_p, finished, log_p, lengths, frozen):
        if k * int(frozen.shape[0]) < wide:  # a vocabulary of one token
            return _candidates(step_log_p, finished, log_p, lengths, frozen, k=k, alpha=alpha, wide=k, host_ties=True)
        return function(step_log_p, finished, log_p, lengths, frozen)

    return call


def _best(found, k):
    """NumPy `(index, log_p)`, each `(batch, k)`, of the `k` best continuations in `found`
    (`_candidates`), best first, the lower index first among equal scores — as
    `np.argsort(-score, kind="stable")` would give them."""
    score, total, values, index, log_p = found
    if score is None:
        # JAX's and TensorFlow's top-k put the lower index first among equal scores.
        return ops.convert_to_numpy(index).astype("int64"), ops.convert_to_numpy(log_p)
    # PyTorch's does not: among equal scores it returns any, in any order, and near-uniform
    # distributions (an untrained model) tie at the k-th place often. With twice as many:
    # where the last of them scores below the k-th, every score tied with the k-th is
    # among them, and a sort by (score descending, index ascending) on the host decides.
    values, index, log_p = (ops.convert_to_numpy(x) for x in (values, index, log_p))
    wide = values.shape[1]
    if wide < score.shape[1] and not (values[:, wide - 1] < values[:, k - 1]).all():
        # A tie wider than that (the -1e9 of dead hypotheses): exact int64 keys.
        best = ops.top_k(_score_then_index(score), k)[1]
        log_p = ops.take_along_axis(total, best, axis=1)
        return ops.convert_to_numpy(best).astype("int64"), ops.convert_to_numpy(log_p)
    order = np.lexsort((index, -values), axis=-1)[:, :k]
    return (np.take_along_axis(index, order, axis=1).astype("int64"), np.take_along_axis(log_p, order, axis=1))


def _score_then_index(score):
    """int64 keys of a float32 `score (batch, n)` that sort as (score descending, index
    ascending): the score's bits made monotonic (negative floats flipped), shifted left
    by 32, and `2**32 - 1 - index` below them."""
    bits = ops.view(score + 0.0, "int32")  # `+ 0.0`: -0.0 becomes 0.0, which it equals
    ordered = ops.cast(ops.where(bits < 0, ops.bitwise_xor(bits, 0x7FFFFFFF), bits), "int64")
    tie_break = (2**32 - 1) - ops.arange(ops.shape(score)[1], dtype="int64")
    return ordered * 2**32 + tie_break[None, :]


def kept_steps(tokens, eos_id, pad_id=0):
    """Per row, the steps whose tokens `strip_after_eos` keeps, then the EOS step if
    the row has one: the rows of the attention weights that go with the tokens.

    Example:

    >>> kept_steps([[5, 0, 6, 3, 0], [7, 8, 9, 9, 9]], eos_id=3)
    [[0, 2, 3], [0, 1, 2, 3, 4]]
    """
    result = []
    for row in np.asarray(tokens).tolist():
        steps = []
        for t, token in enumerate(row):
            if token == eos_id:
                steps.append(t)
                break
            if token != pad_id:
                steps.append(t)
        result.append(steps)
    return result


def strip_after_eos(tokens, eos_id, pad_id=0):
    """Token-id lists cut before the first `eos_id`, without padding.

    Example:

    >>> strip_after_eos([[5, 6, 3, 0], [7, 3, 0, 0]], eos_id=3)
    [[5, 6], [7]]
    """
    result = []
    for row in np.asarray(tokens).tolist():
        out = []
        for token in row:
            if token == eos_id:
                break
            if token != pad_id:
                out.append(int(token))
        result.append(out)
    return result
