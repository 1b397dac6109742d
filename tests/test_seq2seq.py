"""kerasrnn.seq2seq: attention masking and math, encoder padding, decoder step == teacher
forcing, beam search == greedy at beam 1, and a tiny reversal task learned with attention."""

import keras
import numpy as np
import pytest
from conftest import to_numpy

import kerasrnn
from kerasrnn import seq2seq

LENGTHS = np.array([5, 2, 3])


def _memory(rng, batch=3, source=5, dim=6):
    memory = rng.normal(size=(batch, source, dim)).astype("float32")
    mask = np.arange(source)[None, :] < LENGTHS[:, None]
    return memory, mask


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("attention", ["bahdanau", "general", "dot"])
def test_attention_weights_sum_to_one_and_ignore_padding(attention, rng):
    memory, mask = _memory(rng)
    layer = seq2seq.BahdanauAttention(7) if attention == "bahdanau" else seq2seq.LuongAttention(attention)
    query = rng.normal(size=(3, 6)).astype("float32")
    context, weights = layer.attend(query, layer.prepare(memory, mask, query_dim=6))
    weights = to_numpy(weights)
    np.testing.assert_array_equal(weights[~mask], 0.0)  # exactly zero, not just small
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-6)
    assert (weights[mask] > 0).all()
    # Whatever the padded positions of the memory hold, the context is the same.
    garbage = np.where(mask[..., None], memory, 1e3).astype("float32")
    context2, _ = layer.attend(query, layer.prepare(garbage, mask))
    np.testing.assert_allclose(to_numpy(context2), to_numpy(context), rtol=1e-5, atol=1e-5)


def test_bahdanau_and_luong_match_numpy(rng):
    memory, mask = _memory(rng)
    query = rng.normal(size=(3, 6)).astype("float32")
    bahdanau = seq2seq.BahdanauAttention(4)
    context, weights = bahdanau.attend(query, bahdanau.prepare(memory, mask, query_dim=6))
    w_q, w_m, b, v = (to_numpy(x) for x in (bahdanau.query_kernel, bahdanau.memory_kernel, bahdanau.bias, bahdanau.score_vector))
    scores = (np.tanh(memory @ w_m + b + (query @ w_q)[:, None]) @ v)[..., 0]
    expected = _softmax(np.where(mask, scores, -np.inf))
    np.testing.assert_allclose(to_numpy(weights), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(to_numpy(context), np.einsum("bs,bsd->bd", expected, memory), rtol=1e-5, atol=1e-5)

    luong = seq2seq.LuongAttention("general")
    queries = rng.normal(size=(3, 2, 4)).astype("float32")  # every target step at once
    context, weights = luong.attend(queries, luong.prepare(memory, mask, query_dim=4))
    w_a = to_numpy(luong.kernel)  # (memory_dim, query_dim): score = q · (W_a h)
    scores = np.einsum("btq,bsq->bts", queries, memory @ w_a)
    expected = _softmax(np.where(mask[:, None], scores, -np.inf))
    np.testing.assert_allclose(to_numpy(weights), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(to_numpy(context), expected @ memory, rtol=1e-5, atol=1e-5)


def test_dot_score_needs_equal_sizes():
    with pytest.raises(ValueError, match="score='general'"):
        seq2seq.LuongAttention("dot").prepare(np.ones((1, 2, 3), "float32"), query_dim=4)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_encoder_is_exact_on_padded_sentences(cell, rng):
    """Memory and summary of a padded sentence equal those of the unpadded sentence."""
    encoder = seq2seq.Encoder(5, cell=cell, num_layers=2)
    x = rng.normal(size=(3, 6, 4)).astype("float32")
    mask = np.arange(6)[None] < LENGTHS[:, None]
    padded = np.where(mask[..., None], x, 7.0).astype("float32")  # garbage in the padding
    memory, summary = (to_numpy(t) for t in encoder(padded, mask=mask))
    for b, n in enumerate(LENGTHS):
        alone_memory, alone_summary = (to_numpy(t) for t in encoder(x[b : b + 1, :n]))
        np.testing.assert_allclose(memory[b, :n], alone_memory[0], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(summary[b], alone_summary[0], rtol=1e-5, atol=1e-5)
    # The backward half of the summary is the backward RNN's state after the first token.
    np.testing.assert_allclose(summary[:, 5:], memory[:, 0, 5:], rtol=1e-6)


@pytest.mark.parametrize("attention", ["bahdanau", "luong", "none"])
@pytest.mark.parametrize("cell", ["lstm", "lstm_projected"])
def test_decoder_step_equals_teacher_forcing(attention, cell, rng):
    """Decoding one step at a time computes what teacher forcing computes for all steps
    (also with an LSTM whose output, the attention's query, is projected to 4 < 6)."""
    memory, mask = _memory(rng)
    summary = rng.normal(size=(3, 8)).astype("float32")
    template = kerasrnn.layers.LSTMCell(6, proj_size=4) if cell == "lstm_projected" else "lstm"
    decoder = seq2seq.Decoder(9, 6, embedding_dim=5, cell=template, attention=attention)
    assert decoder.output_size == (4 if cell == "lstm_projected" else 6)
    targets = rng.integers(1, 9, size=(3, 4)).astype("int32")
    logits, weights = decoder(targets, memory, summary, memory_mask=mask, return_attention=True)
    states = decoder.initial_state(summary)
    prepared = decoder.prepare(memory, mask)
    constants = decoder.cell_constants(memory[:, 0])
    for t in range(4):
        step_logits, states, step_weights = decoder.step(targets[:, t], states, prepared, constants)
        np.testing.assert_allclose(to_numpy(step_logits), to_numpy(logits)[:, t], rtol=1e-4, atol=1e-5)
        if attention != "none":
            np.testing.assert_allclose(to_numpy(step_weights), to_numpy(weights)[:, t], rtol=1e-4, atol=1e-6)
            np.testing.assert_array_equal(to_numpy(weights)[:, t][~mask], 0.0)


@pytest.mark.parametrize("attention", ["bahdanau", "luong", "none"])
def test_seq2seq_with_a_projected_lstm(attention, rng, tmp_path):
    # The encoder's memory and summary, the attention's query and the decoder's
    # features are sized by the cell's output (proj_size), not its units; the template
    # was validated with 1 unit, which proj_size=3 refused.
    keras.utils.set_random_seed(0)
    template = kerasrnn.layers.LSTMCell(8, proj_size=3)
    model = seq2seq.Seq2Seq(14, 14, embedding_dim=8, encoder_units=8, decoder_units=8, cell=template,
                            attention=attention)
    source, target_in, _ = _reverse_task(rng, 4, length=4)
    memory, _, summary = model.encode(source)
    assert tuple(memory.shape) == (4, 5, 6) and tuple(summary.shape) == (4, 6)
    assert tuple(model((source, target_in)).shape) == (4, 5, 14)
    tokens, _ = model.translate(source, beam_size=2, max_length=5)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.translate(source, beam_size=2, max_length=5)[0] == tokens
    with pytest.raises(ValueError, match="proj_size"):
        seq2seq.Encoder(2, cell=template)  # proj_size 3 is not smaller than 2 units


@pytest.mark.parametrize("attention", ["bahdanau", "luong"])
def test_a_float64_model_computes_in_float64(attention, rng, tmp_path, float64):
    # The dtype reached the model, not its parts: every weight and output was float32.
    model = seq2seq.Seq2Seq(14, 14, embedding_dim=8, encoder_units=8, decoder_units=8, attention=attention,
                            dtype="float64")
    source, target_in, _ = _reverse_task(rng, 4, length=4)
    logits = model((source, target_in))
    assert keras.backend.standardize_dtype(logits.dtype) == "float64"
    assert {keras.backend.standardize_dtype(w.dtype) for w in model.weights} == {"float64"}
    memory, _, summary = model.encode(source)
    assert {keras.backend.standardize_dtype(t.dtype) for t in (memory, summary)} == {"float64"}
    tokens, _ = model.translate(source, beam_size=2, max_length=5)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert {keras.backend.standardize_dtype(w.dtype) for w in loaded.weights} == {"float64"}
    assert loaded.translate(source, beam_size=2, max_length=5)[0] == tokens


def _toy_model(attention="luong", seed=0):
    keras.utils.set_random_seed(seed)
    model = seq2seq.Seq2Seq(14, 14, embedding_dim=16, encoder_units=16, decoder_units=32, attention=attention)
    model.build()
    return model


def test_beam_one_equals_greedy(rng):
    model = _toy_model("bahdanau")
    source = rng.integers(4, 14, size=(6, 7))
    source[:, 5:] = np.where(rng.random((6, 2)) < 0.5, 0, source[:, 5:])
    memory, mask, summary = model.encode(source)
    states = model.decoder.initial_state(summary)
    prepared = model.decoder.prepare(memory, mask)
    constants = model.decoder.cell_constants(memory[:, 0])

    def step_fn(tokens, states, prepared):
        logits, states, weights = model.decoder.step(tokens, states, prepared, constants)
        return keras.ops.log_softmax(logits, axis=-1), states, weights

    common = {"batch_size": 6, "bos_id": 2, "eos_id": 3, "max_length": 9}
    g_tokens, g_weights = seq2seq.greedy_search(step_fn, states, prepared, **common)
    b_tokens, b_weights, _ = seq2seq.beam_search(step_fn, states, prepared, beam_size=1, alpha=0.6, **common)
    np.testing.assert_array_equal(b_tokens[:, : g_tokens.shape[1]], g_tokens)
    np.testing.assert_allclose(b_weights[:, : g_tokens.shape[1]], g_weights, rtol=1e-5, atol=1e-6)


def _table_step(table):
    """A decoder whose next-token log-probabilities depend only on the previous token."""
    log_table = keras.ops.convert_to_tensor(np.log(table).astype("float32"))

    def step_fn(tokens, states, constants):
        return keras.ops.take(log_table, tokens, axis=0), states, None

    return step_fn


def test_beam_search_finds_what_greedy_misses_and_freezes_finished():
    # ids: 0 pad, 1 eos, 2 bos, 3 "a", 4 "b". Greedy takes "a" (0.6) and then must
    # pay 0.4·…; "b" (0.4) leads to EOS with certainty: P(b, eos) = 0.4 > P(a, x, eos).
    table = np.full((5, 5), 1e-6)
    table[2, 3], table[2, 4] = 0.6, 0.4
    table[3, 3], table[3, 4], table[3, 1] = 0.35, 0.35, 0.3
    table[4, 1] = 1.0
    table[1, 1] = 1.0
    table = table / table.sum(1, keepdims=True)
    common = {"batch_size": 1, "bos_id": 2, "eos_id": 1, "max_length": 6, "pad_id": 0}
    greedy, _ = seq2seq.greedy_search(_table_step(table), [], {}, **common)
    assert greedy.tolist()[0][:2] == [3, 3]
    tokens, _, score = seq2seq.beam_search(_table_step(table), [], {}, beam_size=2, alpha=0.0, **common)
    assert seq2seq.strip_after_eos(tokens, eos_id=1) == [[4]]
    np.testing.assert_allclose(score, np.log(0.4 * table[4, 1]), rtol=1e-5)
    # Frozen: after EOS the hypothesis only emits padding, its score unchanged.
    assert tokens.tolist()[0][1:] == [1] + [0] * (tokens.shape[1] - 2)


def test_beam_search_takes_none_among_the_constants_as_greedy_does():
    # A decoder without attention has no memory mask: `prepare` gives `mask: None`.
    table = np.full((5, 5), 0.1) + np.eye(5)[[3, 1, 4, 1, 1]]
    memory = np.zeros((2, 3, 4), "float32")
    seen = []

    def step_fn(tokens, states, constants):
        seen.append((constants["mask"], tuple(constants["memory"].shape)))
        return _table_step(table)(tokens, states, constants)

    common = {"batch_size": 2, "bos_id": 2, "eos_id": 1, "max_length": 4}
    greedy, _ = seq2seq.greedy_search(step_fn, [], {"memory": memory, "mask": None}, **common)
    tokens, _, _ = seq2seq.beam_search(step_fn, [], {"memory": memory, "mask": None}, beam_size=3, **common)
    assert seq2seq.strip_after_eos(tokens, eos_id=1) == seq2seq.strip_after_eos(greedy, eos_id=1) == [[4], [4]]
    assert seen[-1] == (None, (6, 3, 4))  # the arrays repeated per hypothesis, None kept


def test_translate_builds_a_model_never_called():
    keras.utils.set_random_seed(0)
    model = seq2seq.Seq2Seq(14, 14, embedding_dim=8, encoder_units=8, decoder_units=8)
    source = np.array([[5, 6, 7, 3], [8, 9, 3, 0]])
    greedy, weights = model.translate(source, max_length=5)
    assert model.built and len(greedy) == 2 and weights[0].shape[1] == 4
    assert model.translate(source, beam_size=1, max_length=5)[0] == greedy


@pytest.mark.parametrize("argument, value, error", [
    ("beam_size", None, TypeError), ("beam_size", 0, ValueError), ("beam_size", 2.5, TypeError),
    ("max_length", 0, ValueError), ("max_length", "9", TypeError),
])
def test_translate_names_a_bad_search_argument(argument, value, error):
    model = _toy_model()
    with pytest.raises(error, match=f"`{argument}`"):
        model.translate(np.array([[5, 6, 3]]), **{argument: value})


@pytest.mark.parametrize("source, match", [
    ([[5, 14, 3]], r"holds the id 14 \(row 0, position 1\), outside the source vocabulary \[0, 14\)"),
    ([[5, -1, 3]], "holds the id -1"),  # was read as the last id
    (np.array([[5, 2**32 + 5, 3]], "int64"), "holds the id 4294967301"),  # was cast to 5
    (np.zeros((2, 0), "int32"), "has no tokens"),  # TensorFlow: a graph error once traced at other shapes
])
def test_translate_names_a_bad_source(source, match):
    """An id outside the vocabulary failed in the embedding on TensorFlow and torch and
    gave a silent answer on JAX; no tokens depended on the backend's trace."""
    model = _toy_model()
    model.translate(np.array([[5, 6, 3], [7, 3, 0]]))
    model.translate(np.array([[5, 6, 3] * 4]))  # traced at two shapes
    for search in ({}, {"beam_size": 2}):
        with pytest.raises(ValueError, match=f"translate: `source` {match}"):
            model.translate(source, **search)


def test_translate_of_no_sentences_is_no_translations():
    model = _toy_model()
    assert model.translate(np.zeros((0, 5), "int32")) == ([], [])  # said "`batch_size` must be positive"
    assert model.translate(np.zeros((0, 5), "int32"), beam_size=3) == ([], [])


@pytest.mark.parametrize("kwargs, error, match", [
    ({"bos_id": 14}, ValueError, r"`bos_id` must be in \[0, target_vocab_size\)"),
    ({"eos_id": 20}, ValueError, "`eos_id`"),  # could never be emitted: every sentence ran to max_length
    ({"pad_id": 0.7}, TypeError, "`pad_id`"),  # was 0
    ({"pad_id": -1}, ValueError, "`pad_id`"),
    ({"bidirectional": "no"}, TypeError, "`bidirectional`"),  # was True
])
def test_seq2seq_names_a_bad_token_id_or_flag(kwargs, error, match):
    with pytest.raises(error, match=match):
        seq2seq.Seq2Seq(14, 14, embedding_dim=4, encoder_units=4, decoder_units=4, **kwargs)


def test_pad_id_must_be_a_source_id_too():
    with pytest.raises(ValueError, match="`pad_id` .* below `source_vocab_size`"):
        seq2seq.Seq2Seq(4, 14, embedding_dim=4, encoder_units=4, decoder_units=4, pad_id=8, bos_id=2, eos_id=3)


def test_seq2seq_output_shape():
    model = _toy_model()
    assert model.compute_output_shape(((None, 7), (None, 5))) == (None, 5, 14)
    assert model.compute_output_shape(((2, 7), (2, 5))) == tuple(model((np.ones((2, 7)), np.ones((2, 5)))).shape)


def test_generate_checks_source_and_max_length_as_translate_does():
    # A stand-in sampler (keras-hub is optional): the checks come before it runs.
    model = _toy_model()

    def sampler(**kwargs):
        return kwargs["prompt"]

    with pytest.raises(ValueError, match="generate: `source` must be integer token ids"):
        seq2seq.generate(model, np.array([[5.9, 6.2, 3.0]]), sampler)  # was truncated to ints
    with pytest.raises(ValueError, match="generate: `source` holds the id 99"):
        seq2seq.generate(model, [[5, 99, 3]], sampler)
    for max_length, error in ((0, ValueError), (2.5, TypeError), (-2, ValueError)):
        with pytest.raises(error, match="`max_length` must be a positive integer"):
            seq2seq.generate(model, [[5, 6, 3]], sampler, max_length=max_length)
    assert seq2seq.generate(model, np.zeros((0, 3), "int32"), sampler) == []


@pytest.mark.parametrize("beam_size", [1, 3])
@pytest.mark.parametrize("forced, rows", [(5, 6), (3, 1), (0, 0)], ids=["no_eos", "eos_first", "padding"])
def test_translate_gives_one_attention_row_per_token_and_eos(forced, rows, beam_size):
    # A decoder forced to emit one token: 5 (no EOS before max_length: one row per
    # token, none for an EOS never emitted), EOS (3) at once (its row alone), or the
    # padding id, which the tokens leave out (its rows went with the next tokens).
    model = _toy_model("luong")
    kernel, bias = model.decoder.output_layer.get_weights()
    bias = np.full_like(bias, -20.0)
    bias[forced] = 20.0
    model.decoder.output_layer.set_weights([np.zeros_like(kernel), bias])
    tokens, weights = model.translate(np.array([[5, 6, 7, 3], [8, 9, 3, 0]]), beam_size=beam_size, max_length=6)
    assert tokens == ([[5] * 6] * 2 if forced == 5 else [[], []])
    assert [w.shape for w in weights] == [(rows, 4)] * 2
    np.testing.assert_allclose(np.concatenate(weights).sum(-1), 1.0, rtol=1e-5)
    assert not weights[1][:, 3].any()  # the source's padding gets no attention


def test_kept_steps_skip_padding_inside_a_sentence():
    tokens = [[5, 0, 6, 3, 7], [0, 0, 0, 0, 0], [4, 4, 4, 4, 4]]
    assert seq2seq.kept_steps(tokens, eos_id=3) == [[0, 2, 3], [], [0, 1, 2, 3, 4]]
    assert seq2seq.strip_after_eos(tokens, eos_id=3) == [[5, 6], [], [4, 4, 4, 4, 4]]


def test_length_penalty_prefers_longer_hypotheses():
    # From bos: EOS now (p 0.5), or "a" (0.5) then EOS with p 0.9 — log 0.45 < log 0.5.
    table = np.full((4, 4), 1e-9)
    table[2, 1], table[2, 3] = 0.5, 0.5
    table[3, 1], table[3, 3] = 0.9, 0.1
    table[1, 1] = 1.0
    table = table / table.sum(1, keepdims=True)
    common = {"batch_size": 1, "bos_id": 2, "eos_id": 1, "max_length": 5, "beam_size": 2}
    short, _, _ = seq2seq.beam_search(_table_step(table), [], {}, alpha=0.0, **common)
    long, _, score = seq2seq.beam_search(_table_step(table), [], {}, alpha=1.0, **common)
    assert seq2seq.strip_after_eos(short, 1) == [[]]
    assert seq2seq.strip_after_eos(long, 1) == [[3]]
    np.testing.assert_allclose(score, np.log(0.45) / ((5 + 2) / 6), rtol=1e-5)


def _path_decoder(log_table, weight_table):
    """A decoder whose state is an integer code of its whole path: `code' = (code · vocab
    + token) mod P`, `log_probs = log_table[code']`, `weights = weight_table[code']`.
    Exact integer state and lookups, so every backend and the NumPy reference below see
    the same float32 numbers, and a hypothesis given another's state scores differently."""
    periods, vocab = log_table.shape
    tables = [keras.ops.convert_to_tensor(t) for t in (log_table, weight_table)]

    def step_fn(tokens, states, constants):
        code = (states[0] * vocab + keras.ops.cast(tokens, "int32")) % periods
        return keras.ops.take(tables[0], code, axis=0), [code], keras.ops.take(tables[1], code, axis=0)

    return step_fn


def _reference_beam_search(log_table, weight_table, codes, *, k, alpha, bos_id, eos_id, pad_id, max_length):
    """Beam search written out hypothesis by hypothesis, in NumPy float32: each candidate
    `(hypothesis i, token v)` scored, all sorted by (score descending, i · vocab + v)."""
    periods, vocab = log_table.shape
    neg_inf = np.float32(seq2seq.search.NEG_INF)

    def penalty(length):
        return np.power(np.float32((5 + length) / 6), np.float32(alpha))

    beams = [
        [{"code": int(c), "token": bos_id, "log_p": np.float32(0.0 if i == 0 else neg_inf), "finished": False,
          "length": 0, "tokens": [], "weights": []} for i in range(k)]
        for c in codes
    ]
    for t in range(max_length):
        for b, hyps in enumerate(beams):
            candidates = []
            for i, h in enumerate(hyps):
                code = (h["code"] * vocab + h["token"]) % periods
                for v in range(vocab):
                    if h["finished"]:
                        step, length = (np.float32(0.0) if v == pad_id else neg_inf), h["length"]
                    else:
                        step, length = log_table[code, v], t + 1
                    total = np.float32(h["log_p"] + step)
                    candidates.append((-np.float32(total / penalty(length)), i * vocab + v, i, v, code, total, length))
            candidates.sort(key=lambda c: (c[0], c[1]))
            beams[b] = [
                {"code": code, "token": v, "log_p": total, "length": length,
                 "finished": hyps[i]["finished"] or v == eos_id, "tokens": hyps[i]["tokens"] + [v],
                 "weights": hyps[i]["weights"] + [weight_table[code]]}
                for _, _, i, v, code, total, length in candidates[:k]
            ]
        if all(h["finished"] for hyps in beams for h in hyps):
            break
    best = [max(hyps, key=lambda h: h["log_p"] / penalty(h["length"])) for hyps in beams]
    return (np.array([h["tokens"] for h in best]), np.array([h["weights"] for h in best]),
            np.array([h["log_p"] / penalty(h["length"]) for h in best]))


@pytest.mark.parametrize(
    "case",
    [
        # Continuous log-probabilities; EOS likely enough that beams end at different steps.
        {"vocab": 7, "k": 4, "alpha": 0.6, "ties": False, "seed": 0},
        {"vocab": 5, "k": 3, "alpha": 1.0, "ties": False, "seed": 1},
        # Probabilities from three values only: many equal scores, which must be broken
        # by the lower (hypothesis, token) index on every backend (PyTorch's top-k does not).
        {"vocab": 5, "k": 4, "alpha": 0.0, "ties": True, "seed": 2},
        {"vocab": 3, "k": 5, "alpha": 0.0, "ties": True, "seed": 3},  # fewer tokens than beams
        {"vocab": 1, "k": 3, "alpha": 0.6, "ties": True, "seed": 4},  # one token: k candidates in all
    ],
    ids=lambda c: f"v{c['vocab']}-k{c['k']}-a{c['alpha']}-{'ties' if c['ties'] else 'cont'}",
)
def test_beam_search_matches_numpy_reference(case):
    rng = np.random.default_rng(case["seed"])
    periods, vocab, k = 23, case["vocab"], case["k"]
    if case["ties"]:
        probs = rng.choice([1.0, 2.0, 4.0], size=(periods, vocab))
    else:
        probs = rng.random((periods, vocab)) + 0.05
        probs[:, 1] *= 1.5  # eos_id = 1
    log_table = np.log(probs / probs.sum(1, keepdims=True)).astype("float32")
    weight_table = rng.random((periods, 4)).astype("float32")
    codes = np.array([0, 5, 11], "int32")
    common = {"bos_id": 2, "eos_id": 1, "pad_id": 0, "max_length": 9}
    tokens, weights, scores = seq2seq.beam_search(
        _path_decoder(log_table, weight_table), [codes], {}, batch_size=3, beam_size=k, alpha=case["alpha"], **common
    )
    ref_tokens, ref_weights, ref_scores = _reference_beam_search(
        log_table, weight_table, codes, k=k, alpha=case["alpha"], **common
    )
    np.testing.assert_array_equal(tokens, ref_tokens)
    np.testing.assert_array_equal(weights, ref_weights)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-6)


@pytest.mark.parametrize("vocab", [3, 8, 800])
@pytest.mark.parametrize("k", [1, 2, 5])
def test_top_k_orders_ties_by_index_on_every_backend(vocab, k, rng):
    """The beam's top-k over the `k · vocab` continuations is `argsort(-score, stable)[:k]`:
    ties inside the k kept and at the k-th place both go to the lower index (PyTorch's
    own top-k orders them freely). With `alpha=0` and `log_p=0` the scores are the step's."""
    n = k * vocab
    cases = [
        rng.choice([0.0, 1.0, 2.0], size=(4, n)),  # ties everywhere
        rng.choice([-np.inf, -1e9, -2.5, -1e-30, 0.0, 3.0], size=(4, n)),  # signs, infinities
        np.concatenate([np.full((4, 3), 5.0), rng.random((4, n - 3))], axis=1)[:, rng.permutation(n)],  # ties inside only
        rng.random((4, n)),  # no ties
    ]
    candidates = seq2seq.search._candidates_fn(k, 0.0, keras.backend.backend())
    zeros = np.zeros((4, k), "float32")
    for score in cases:
        score = score.astype("float32")
        found = candidates(score.reshape(4 * k, vocab), zeros > 0, zeros, zeros + 1, np.zeros(vocab, "float32"))
        index, log_p = seq2seq.search._best(found, k)
        expected = np.argsort(-score, axis=1, kind="stable")[:, :k]
        np.testing.assert_array_equal(index, expected)
        np.testing.assert_array_equal(log_p, np.take_along_axis(score, expected, axis=1))


def _reverse_task(rng, n, length=6, symbols=10):
    source = rng.integers(4, 4 + symbols, size=(n, length)).astype("int32")
    target = np.concatenate([source[:, ::-1], np.full((n, 1), 3, "int32")], axis=1)
    source = np.concatenate([source, np.full((n, 1), 3, "int32")], axis=1)
    target_in = np.concatenate([np.full((n, 1), 2, "int32"), target[:, :-1]], axis=1)
    return source, target_in, target


def _sequence_accuracy(attention, rng, steps):
    keras.utils.set_random_seed(1)
    model = seq2seq.Seq2Seq(14, 14, embedding_dim=16, encoder_units=32, decoder_units=64, attention=attention)
    model.build()
    model.compile(keras.optimizers.Adam(1e-2, clipnorm=1.0), loss=seq2seq.MaskedSequenceLoss())
    source, target_in, target = _reverse_task(rng, 64 * steps)
    model.fit((source, target_in), target, batch_size=64, epochs=1, verbose=0, shuffle=False)
    test_source, _, test_target = _reverse_task(rng, 200)
    ids, _ = model.translate(test_source, beam_size=1)
    return np.mean([i == t[:-1].tolist() for i, t in zip(ids, test_target)])


@pytest.mark.slow
def test_attention_learns_to_reverse_and_beats_no_attention(rng):
    with_attention = _sequence_accuracy("luong", rng, steps=250)
    without = _sequence_accuracy("none", rng, steps=250)
    # Whole reversed sequences exactly right (seen: 0.90 on JAX, >= 0.95 on torch and
    # TensorFlow; the random streams differ by backend).
    assert with_attention >= 0.85, (with_attention, without)
    assert without <= with_attention - 0.3, (with_attention, without)


@pytest.mark.parametrize("attention", ["bahdanau", "luong", "none"])
def test_compiled_training_step_matches_eager_loss(attention, rng):
    """`fit` (jit-compiled on JAX and TensorFlow) sees the loss the eager model computes."""
    model = _toy_model(attention)
    model.compile(keras.optimizers.SGD(0.0), loss=seq2seq.MaskedSequenceLoss())
    source, target_in, target = _reverse_task(rng, 8, length=4)
    target[:2, -2:] = 0  # some target padding
    eager = float(seq2seq.MaskedSequenceLoss()(target, model((source, target_in))))
    history = model.fit((source, target_in), target, batch_size=8, epochs=1, verbose=0)
    np.testing.assert_allclose(history.history["loss"][0], eager, rtol=1e-5)


@pytest.mark.parametrize("time", [3, 4], ids=["time_ne_batch", "time_eq_batch"])
def test_a_per_sequence_sample_weight_scales_whole_sequences(time, rng):
    # Keras broadcasts a (batch,) weight against (batch, time) losses along time (or
    # fails); the loss documents one weight per sequence.
    target = rng.integers(1, 5, size=(4, time))
    target[1, -1] = 0
    logits = rng.normal(size=(4, time, 5)).astype("float32")
    weights = np.array([1.0, 0.5, 0.0, 2.0], "float32")
    loss = seq2seq.MaskedSequenceLoss()
    per_token = float(loss(target, logits, sample_weight=np.repeat(weights[:, None], time, axis=1)))
    assert per_token != pytest.approx(float(loss(target, logits)))
    np.testing.assert_allclose(float(loss(target, logits, sample_weight=weights)), per_token, rtol=1e-6)
    np.testing.assert_allclose(float(loss(target, logits, sample_weight=weights[:, None])), per_token, rtol=1e-6)


def test_evaluate_with_a_per_sequence_sample_weight(rng):
    model = _toy_model("luong")
    model.compile(keras.optimizers.SGD(0.0), loss=seq2seq.MaskedSequenceLoss())
    source, target_in, target = _reverse_task(rng, 8, length=4)
    weights = np.linspace(0.0, 2.0, 8).astype("float32")
    logits = model((source, target_in))
    expected = float(seq2seq.MaskedSequenceLoss()(target, logits, sample_weight=np.repeat(weights[:, None], 5, 1)))
    got = model.evaluate((source, target_in), target, sample_weight=weights, batch_size=8, verbose=0)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


@pytest.mark.skipif(keras.backend.backend() == "torch", reason="jit_compile=True is torch.compile on torch")
def test_bahdanau_trains_under_xla(rng):
    # On TensorFlow the score's rank-3 @ rank-2 product was a Tensordot whose gradient
    # inside the decoder's while loop needs a static transpose, which XLA refused.
    # It shows where the batch size is unknown: 8 examples in batches of 3.
    model = _toy_model("bahdanau")
    model.compile(keras.optimizers.SGD(0.0), loss=seq2seq.MaskedSequenceLoss(), jit_compile=True)
    source, target_in, target = _reverse_task(rng, 8, length=4)
    history = model.fit((source, target_in), target, batch_size=3, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    model.compile(keras.optimizers.SGD(0.0), loss=seq2seq.MaskedSequenceLoss(), jit_compile=True)
    eager = float(seq2seq.MaskedSequenceLoss()(target, model((source, target_in))))
    np.testing.assert_allclose(model.evaluate((source, target_in), target, batch_size=8, verbose=0), eager, rtol=1e-5)


@pytest.mark.parametrize("attention", ["bahdanau", "luong", "none"])
def test_translate_under_mixed_precision(attention, rng):
    # The attention read its float32 weights outside Layer.__call__'s autocast: the
    # decoder step mixed float32 and float16 (TensorFlow refuses to add them).
    source, target_in, _ = _reverse_task(rng, 4, length=4)
    full = _toy_model(attention)
    keras.config.set_dtype_policy("mixed_float16")  # the conftest fixture restores float32
    half = _toy_model(attention)
    half.set_weights(full.get_weights())
    logits = half((source, target_in))
    np.testing.assert_allclose(to_numpy(logits), to_numpy(full((source, target_in))), atol=2e-2)
    for beam_size in (1, 2):
        tokens, weights = half.translate(source, beam_size=beam_size, max_length=6)
        assert len(tokens) == 4 and all(0 <= t < 14 for row in tokens for t in row)
        if attention != "none":
            assert np.allclose(np.concatenate([w.sum(-1) for w in weights]), 1.0, atol=1e-2)


def test_seq2seq_save_and_load(tmp_path, rng):
    model = _toy_model("bahdanau")
    source = rng.integers(4, 14, size=(2, 5))
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.translate(source, beam_size=2, max_length=6)[0] == model.translate(source, beam_size=2, max_length=6)[0]


def test_masked_accuracy_counts_every_token_once_and_takes_weights(rng):
    y = np.array([[1, 2, 0, 0], [3, 3, 3, 0], [2, 0, 0, 0]])
    logits = np.eye(4, dtype="float32")[np.array([[1, 0, 0, 0], [3, 1, 3, 0], [2, 0, 0, 0]])]
    metric = seq2seq.MaskedAccuracy()
    metric.update_state(y[:2], logits[:2])  # 3 of 5
    metric.update_state(y[2:], logits[2:])  # 1 of 1: 4 of 6, not the mean of 0.6 and 1
    assert float(metric.result()) == pytest.approx(4 / 6)
    metric.reset_state()
    metric.update_state(y, logits, sample_weight=np.array([1.0, 0.0, 2.0]))  # (1 + 2) / (2 + 2)
    assert float(metric.result()) == pytest.approx(3 / 4)
    metric.reset_state()
    weights = np.ones(y.shape, "float32")
    weights[1, 1] = 0.0  # the token it gets wrong
    metric.update_state(y, logits, sample_weight=weights)
    assert float(metric.result()) == pytest.approx(4 / 5)
    assert float(seq2seq.MaskedAccuracy(pad_id=3)(y, logits)) == pytest.approx(8 / 9)  # 0s count, 3s do not
    copy = seq2seq.MaskedAccuracy.from_config(seq2seq.MaskedAccuracy(pad_id=2, name="acc").get_config())
    assert (copy.pad_id, copy.name) == (2, "acc")


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="`attention`"):
        seq2seq.Decoder(5, 4, attention="dot-product")
    with pytest.raises(ValueError, match="`cell`"):
        seq2seq.Encoder(4, cell="transformer")
    with pytest.raises(ValueError, match="alpha"):
        seq2seq.length_penalty(3, -1.0)
    with pytest.raises(ValueError, match="beam_size"):
        seq2seq.beam_search(_table_step(np.eye(3) + 0.1), [], {}, batch_size=1, bos_id=0, eos_id=1, max_length=3, beam_size=0)
