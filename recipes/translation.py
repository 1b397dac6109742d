"""# Translation with an attentional RNN encoder–decoder (Multi30k German → English)

The seed's encoder–decoder — "Encoder (secuencia a vector), Decoder (vector a secuencia):
traducir una oración de un idioma a otro" — with the attention that made it work on
long sentences (Bahdanau et al. 2015; Luong et al. 2015):

- **Data**: Multi30k task 1 (29,000 training pairs of image captions; `test_2016_flickr`
  has 1,000), or any `source<TAB>target` file (Tatoeba/Anki). Sentencepiece subwords,
  trained on the training side only and saved beside the model.
- **Model**: a bidirectional kerasrnn encoder, a kerasrnn decoder with Luong (after the
  RNN: the decoder runs as one fused layer) or Bahdanau (inside the recurrence) attention.
- **Training**: teacher forcing, label-smoothed cross-entropy, Adam with `clipnorm`, a
  checkpoint every epoch (`--resume` continues from it).
- **Evaluation**: perplexity, BLEU and chrF (sacrebleu, detokenized output against the raw
  references) with greedy and beam search, example translations, attention heat maps,
  `DIR/results.json`.

Run (from the repository root, or `kerasrnn-recipe translation ...` once installed):

    python -m recipes.translation --data /path/to/multi30k --backend torch --output runs/mt
    python -m recipes.translation translate --output runs/mt "Ein Hund läuft."
    python -m recipes.translation --smoke --output /tmp/mt_smoke     # seconds, generated data
    python -m recipes.translation --smoke --data multi30k/ --output /tmp/mt_smoke  # seconds, a slice of it
"""

import argparse
import dataclasses
import os
import sys
import time

from recipes import common

if __name__ == "__main__":
    common.select_backend(sys.argv[1:], prefer=("torch", "tensorflow", "jax"))  # before Keras

import keras
import numpy as np

from kerasrnn import seq2seq
from kerasrnn.datasets import translation as data
from recipes import training


# ------------------------------------------------------------------------------
# ## Configuration
# ------------------------------------------------------------------------------
@dataclasses.dataclass
class Config(common.RunConfig):
    output: str = "runs/translation"
    data: str = ""  # Multi30k folder ({split}.{lang}.gz), a TSV file, or "": download Multi30k
    src: str = "de"  # source language (Multi30k: en, de, fr, cs)
    tgt: str = "en"  # target language
    tsv_columns: str = "0,1"  # TSV only: source and target columns
    cell: str = "gru"  # gru | lstm | simple, for the encoder and the decoder
    attention: str = "luong"  # luong | bahdanau | none
    score: str = "general"  # Luong score: general | dot
    embedding_dim: int = 256  # source and target embedding size
    encoder_units: int = 256  # per direction (the encoder is bidirectional)
    decoder_units: int = 512  # decoder cell units
    layers: int = 1  # stacked encoder layers
    dropout: float = 0.3  # embeddings, between encoder layers, before the output layer
    src_vocab: int = 6000  # sentencepiece vocabulary sizes
    tgt_vocab: int = 4000
    max_len: int = 64  # drop training pairs with more subwords than this
    batch_size: int = 64
    epochs: int = 10
    learning_rate: float = 2e-3  # Adam
    lr_decay: float = 0.8  # the learning rate is multiplied by this every epoch after the 4th
    clipnorm: float = 1.0  # gradient-norm clipping (0: off)
    label_smoothing: float = 0.1
    beam: int = 5  # beam size for the reported BLEU (1: greedy)
    alpha: float = 0.6  # GNMT length penalty exponent
    train_limit: int = 0  # use only the first N training pairs (0: all)
    test_limit: int = 0  # evaluate on the first N test pairs (0: all)
    examples: int = 5  # translations printed
    heatmaps: int = 3  # attention heat maps saved (PNG)
    seed: int = 0
    distribute: str = "none"  # none | data | model: split each batch over the devices (model: also shard the largest weights)
    model_shards: int = 0  # --distribute model: devices each sharded weight is split over (0: all)

    DISTRIBUTE_MODES = ("none", "data", "model")
    # `--resume` may change how the trained model is evaluated and shown.
    RESUMABLE = ("beam", "alpha", "test_limit", "examples", "heatmaps")

    def __post_init__(self):
        common.check_choice(self, "cell", ("gru", "lstm", "simple"))
        common.check_choice(self, "attention", ("luong", "bahdanau", "none"))
        common.check_choice(self, "score", ("general", "dot"))
        common.check_positive(self, "embedding_dim", "encoder_units", "decoder_units", "layers", "src_vocab",
                              "tgt_vocab", "max_len", "batch_size", "epochs", "beam")
        if not 0.0 <= self.label_smoothing < 1.0:  # (dropout, clipnorm, learning rate: common._check_numbers)
            raise common.UsageError(f"--label-smoothing must be in [0, 1); received {self.label_smoothing}.")
        if not self.lr_decay > 0:  # (`not`: a NaN fails too)
            raise common.UsageError(f"--lr-decay must be > 0; received {self.lr_decay}.")
        if self.alpha < 0:  # checked here, not by beam search after the whole training
            raise common.UsageError(f"--alpha (the length penalty's exponent) must be >= 0; received {self.alpha}.")
        if self.model_shards < 0:
            raise common.UsageError(f"--model-shards must be >= 0 (0: all devices); received {self.model_shards}.")
        if len(self.tsv_columns.split(",")) != 2 or not all(c.strip().isdigit() for c in self.tsv_columns.split(",")):
            raise common.UsageError(f"--tsv-columns takes two column numbers, e.g. 1,0; received {self.tsv_columns!r}.")


SMOKE = {
    "embedding_dim": 16, "encoder_units": 16, "decoder_units": 32, "src_vocab": 40, "tgt_vocab": 40,
    "batch_size": 32, "epochs": 2, "examples": 2, "heatmaps": 1, "beam": 3, "max_len": 20,
}


def parse_config(argv=None):
    return common.parse_config(Config, argv, prog="python -m recipes.translation",
                               description=__doc__.splitlines()[0].lstrip("# "), smoke=SMOKE)


# ------------------------------------------------------------------------------
# ## Data: sentence pairs → subword ids
# ------------------------------------------------------------------------------
def load_pairs(config):
    """`{"train", "val", "test"}` → (source sentences, target sentences)."""
    if config.smoke and not config.data:
        source, target = data.synthetic_pairs(sum(SMOKE_PAIRS.values()), vocab=10, max_len=7, seed=config.seed)
        return data.split_pairs(source, target, (0.8, 0.1, 0.1), seed=config.seed)
    common.check_data_path(config.data, "a folder of Multi30k {split}.{lang}.gz files or a TSV file")
    with common.data_errors(config.data):
        if config.data and os.path.isfile(config.data):
            columns = tuple(int(c) for c in config.tsv_columns.split(","))
            source, target = data.load_parallel_tsv(config.data, columns=columns)
            pairs = data.split_pairs(source, target, seed=config.seed)
        else:
            splits = data.load_multi30k(config.src, config.tgt, path=config.data or None)
            pairs = {"train": splits["train"], "val": splits["val"], "test": splits["test_2016_flickr"]}
    empty = [name for name, (source, _) in pairs.items() if not source]
    if empty:  # before training: perplexity and BLEU of no pairs would end the run in a traceback
        sizes = ", ".join(f"{len(p[0])} {name}" for name, p in pairs.items())
        hint = " A TSV file is split 90/5/5: give it at least 20 pairs." if os.path.isfile(config.data or "") else ""
        raise common.UsageError(
            f"--data {config.data or '(download)'}: the {' and '.join(empty)} "
            f"split{'s are' if len(empty) > 1 else ' is'} empty ({sizes} pairs).{hint}"
        )
    if config.smoke:  # the data read as in a real run, a seeded slice of each split trained on
        pairs = {name: common.smoke_slice(pair, SMOKE_PAIRS[name], config.seed + i)
                 for i, (name, pair) in enumerate(pairs.items())}
        common.note_smoke_slice(config, ", ".join(f"{len(p[0])} {name}" for name, p in pairs.items()) + " pairs")
    return pairs


#: `--smoke`'s pairs per split: generated (split 80/10/10), or a slice of `--data`.
SMOKE_PAIRS = {"train": 960, "val": 120, "test": 120}


def tokenizers(run, train):
    """Source and target sentencepiece models, trained on the training pairs only (or the
    resumed run's)."""
    config = run.config
    paths = [run.path(f"{side}.spm") for side in ("source", "target")]
    if config.resume and all(os.path.exists(p) for p in paths):
        return [data.SubwordTokenizer.load(p) for p in paths]
    kind = "word" if config.smoke else "unigram"
    toks = [
        data.SubwordTokenizer.train(train[0], config.src_vocab, model_type=kind, seed=config.seed),
        data.SubwordTokenizer.train(train[1], config.tgt_vocab, model_type=kind, seed=config.seed),
    ]
    for tok, path in zip(toks, paths):
        with common.atomic_path(path) as partial:
            tok.save(partial)
    return toks


def encode_pairs(run, pairs, source_tok, target_tok):
    """`{split: (source ids, target ids)}`, long training pairs dropped."""
    config, encoded = run.config, {}
    progress = run.progress(sum(len(src) for src, _ in pairs.values()), "Subword ids")
    for name, (src, tgt) in pairs.items():
        encoded[name] = (source_tok.encode(src), target_tok.encode(tgt))
        progress.add(len(src))
    keep = [i for i, (s, t) in enumerate(zip(*encoded["train"])) if len(s) <= config.max_len and len(t) <= config.max_len]
    encoded["train"] = tuple([seqs[i] for i in keep] for seqs in encoded["train"])
    return encoded


def limit(pairs, n):
    return pairs if not n else (pairs[0][:n], pairs[1][:n])


# ------------------------------------------------------------------------------
# ## Model
# ------------------------------------------------------------------------------
def build_model(config, source_vocab, target_vocab):
    model = seq2seq.Seq2Seq(
        source_vocab, target_vocab,
        embedding_dim=config.embedding_dim, encoder_units=config.encoder_units,
        decoder_units=config.decoder_units, cell=config.cell, num_layers=config.layers,
        attention=config.attention, score=config.score, dropout=config.dropout,
    )
    model.build()
    optimizer = keras.optimizers.Adam(common.learning_rate(config, config.learning_rate), clipnorm=config.clipnorm or None)
    model.compile(
        optimizer=optimizer,
        loss=seq2seq.MaskedSequenceLoss(label_smoothing=config.label_smoothing),
        metrics=[seq2seq.masked_accuracy],
    )
    return model


def schedule(config):
    def rate(epoch, lr):
        return common.learning_rate(config, config.learning_rate) * config.lr_decay ** max(0, epoch - 3)

    return keras.callbacks.LearningRateScheduler(rate)


# ------------------------------------------------------------------------------
# ## Evaluation: perplexity, BLEU and chrF with greedy and beam search
# ------------------------------------------------------------------------------
def translate_all(run, model, source_ids, beam, alpha, batch_size=100):
    """Every sentence decoded (a progress bar, as beam search takes minutes)."""
    tokens, weights = [], []
    progress = run.progress(len(source_ids), "Greedy decoding" if beam == 1 else f"Beam search (beam {beam})")
    for start in range(0, len(source_ids), batch_size):
        batch = data.pad_batch(source_ids[start : start + batch_size])
        t, w = model.translate(batch, beam_size=beam, alpha=alpha)
        tokens += t
        weights += w
        progress.update(len(tokens))
    return tokens, weights


def perplexity(run, model, source_ids, target_ids, target_sentences):
    """Per-subword and per-word perplexity of the references under teacher forcing.

    The per-word figure divides the same total log-likelihood by the number of words
    (sacrebleu's 13a tokens, plus one end token per sentence), so it compares with
    word-level perplexities such as the anchors'.
    """
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    batches = data.TranslationBatches(source_ids, target_ids, batch_size=100)
    progress = run.progress(len(batches), "Perplexity of the references (batches)")
    total, count = 0.0, 0
    for index in range(len(batches)):
        (source, target_in), target_out = batches[index]
        logits = keras.ops.convert_to_numpy(model((source, target_in), training=False)).astype("float64")
        logits -= logits.max(-1, keepdims=True)
        log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        nll = -np.take_along_axis(log_p, target_out[..., None], -1)[..., 0]
        total += float((nll * (target_out != 0)).sum())
        count += int((target_out != 0).sum())
        progress.update(index + 1)
    tokenize = Tokenizer13a()
    words = sum(len(tokenize(s).split()) + 1 for s in target_sentences)
    return float(np.exp(total / count)), float(np.exp(total / words))


def score(run, model, source_ids, references, target_tok):
    """`(scores, outputs)`: BLEU, chrF and seconds per beam size (1 and `--beam`), and
    `(ids, attention weights, hypotheses)` per beam size."""
    import sacrebleu

    config, scores, outputs = run.config, {}, {}
    for beam in sorted({1, config.beam}):
        started = time.time()
        ids, weights = translate_all(run, model, source_ids, beam, config.alpha)
        hypotheses = [target_tok.decode(i) for i in ids]
        scores[beam] = {
            "bleu": sacrebleu.corpus_bleu(hypotheses, [references]).score,
            "chrf": sacrebleu.corpus_chrf(hypotheses, [references]).score,
            "seconds": time.time() - started,
        }
        outputs[beam] = (ids, weights, hypotheses)
        print(f"beam {beam}: BLEU {scores[beam]['bleu']:.2f}  chrF {scores[beam]['chrf']:.2f}  "
              f"({scores[beam]['seconds']:.0f} s)", flush=True)
    return scores, outputs


# ------------------------------------------------------------------------------
# ## Report: attention heat maps, training curves, results.json
# ------------------------------------------------------------------------------
def heatmap(path, weights, source_pieces, output_pieces):
    plt = common.pyplot()
    weights = weights[: len(output_pieces), : len(source_pieces)]  # drop the batch's padding
    fig, ax = plt.subplots(figsize=(0.35 * len(source_pieces) + 2, 0.35 * len(output_pieces) + 1.5))
    ax.imshow(weights, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(source_pieces)), source_pieces, rotation=90)
    ax.set_yticks(range(len(output_pieces)), output_pieces)
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    return common.save_figure(fig, path)


def report(run, outputs, test_pairs, source_ids, source_tok, target_tok):
    """Example translations printed, heat maps and curves saved; the examples returned."""
    config, (sources, references) = run.config, test_pairs
    ids, weights, hypotheses = outputs[config.beam]
    examples = [{"source": sources[i], "reference": references[i], "translation": hypotheses[i]}
                for i in range(min(config.examples, len(references)))]
    for example in examples:
        print(f"\nsource:     {example['source']}\nreference:  {example['reference']}\n"
              f"translation: {example['translation']}")
    for i in range(min(config.heatmaps, len(references))):
        if weights[i] is None:
            break
        heatmap(run.path(f"attention_{i}.png"), weights[i], source_tok.pieces(source_ids[i]),
                target_tok.pieces(ids[i]) + ["</s>"])
    return examples


# ------------------------------------------------------------------------------
# ## Run: config → data → model → train → evaluate → report
# ------------------------------------------------------------------------------
# --distribute model: the largest weights — both embeddings, `(vocab, embedding_dim)`,
# and the output layer, `(decoder_units, vocab)` — split over the "model" axis of the
# device mesh, along a dimension that the number of shards divides for any vocabulary
# (sentencepiece's sizes are not round); everything else is replicated.
# The keys are regular expressions that must match a variable's whole path
# (`keras.distribution.LayoutMap`), e.g. "seq2_seq/decoder/output/kernel".
SHARDED = {
    ".*/source_embedding/embeddings": (None, "model"),
    ".*/decoder/embedding/embeddings": (None, "model"),
    ".*/decoder/output/kernel": ("model", None),
}


def train(config):
    run = common.start("translation", config, layouts=SHARDED)
    shards = run.parallel.model_shards
    if config.embedding_dim % shards or config.decoder_units % shards:
        raise common.UsageError(f"--distribute model splits --embedding-dim ({config.embedding_dim}) and "
                                f"--decoder-units ({config.decoder_units}) over {shards} devices: each must be "
                                f"a multiple of {shards} (or set --model-shards).")
    pairs = load_pairs(config)
    pairs = {"train": limit(pairs["train"], config.train_limit), "val": pairs["val"],
             "test": limit(pairs["test"], config.test_limit)}
    source_tok, target_tok = tokenizers(run, pairs["train"])
    encoded = encode_pairs(run, pairs, source_tok, target_tok)
    print(f"pairs: train {len(encoded['train'][0])} (of {len(pairs['train'][0])}), val {len(pairs['val'][0])}, "
          f"test {len(pairs['test'][0])}; vocab {source_tok.vocab_size} / {target_tok.vocab_size}")

    # Teacher forcing, a checkpoint every epoch. The batches of an epoch are a function
    # of (seed, epoch), and Keras shuffles their order with Python's `random`, whose
    # state the checkpoints hold: a resumed run trains on what an uninterrupted one does.
    # Split over devices (`run.parallel.even`), every batch is full: a short one is
    # filled with rows whose target is all padding, which the masked loss and accuracy
    # leave out, and each host reads its share. The validation loss averages over
    # each batch's tokens: the batches are weighed by their real rows, as without
    # fillers ("per_batch"; the accuracy takes no weights).
    train_batches = run.parallel.even(data.TranslationBatches(
        *encoded["train"], batch_size=config.batch_size, shuffle=True, seed=config.seed))
    rows = run.parallel.rows(100)
    val_batches = run.parallel.even(data.TranslationBatches(*encoded["val"], batch_size=rows), rows,
                                    evaluation="per_batch")
    model, state = training.fit(
        run, "model", lambda: build_model(config, source_tok.vocab_size, target_tok.vocab_size), train_batches,
        epochs=config.epochs, validation_data=val_batches, callbacks=[schedule(config)], shuffle=True,
    )
    training.save_model(model, run.path("model.keras"))
    print(f"parameters: {model.count_params():,}")

    ppl_subword, ppl_word = perplexity(run, model, *encoded["test"], pairs["test"][1])
    scores, outputs = score(run, model, encoded["test"][0], pairs["test"][1], target_tok)
    examples = report(run, outputs, pairs["test"], encoded["test"][0], source_tok, target_tok)
    history = {"model": state["history"]}
    common.plot_history(history, run.path("history.png"), metrics=("loss", "masked_accuracy"))
    metrics = {
        "bleu": scores[config.beam]["bleu"], "chrf": scores[config.beam]["chrf"],
        "bleu_greedy": scores[1]["bleu"], "chrf_greedy": scores[1]["chrf"],
        "perplexity": ppl_word, "perplexity_subword": ppl_subword,
        "beam": config.beam, "alpha": config.alpha,
        "train_seconds": sum(r["seconds"] for r in state["history"]),  # all (resumed) runs
        "decode_seconds": {str(k): v["seconds"] for k, v in scores.items()},
        "epochs": state["epoch"], "parameters": model.count_params(),
        "test_sentences": len(pairs["test"][1]), "examples": examples,
    }
    results = run.write_results(metrics, history)
    print(f"\nperplexity {ppl_word:.2f} per word ({ppl_subword:.2f} per subword); "
          f"BLEU {metrics['bleu']:.2f} (beam {config.beam}), {metrics['bleu_greedy']:.2f} (greedy); "
          f"{results['seconds']:.0f} s on {config.backend}; results in {config.output}/results.json")
    return results


# ------------------------------------------------------------------------------
# ## Translate: sentences → translations, with a trained model
# ------------------------------------------------------------------------------
def translate(output, sentences, beam=5, alpha=0.6):
    """Translations of `sentences` by the model and tokenizers saved in `output`."""
    if not sentences:
        raise common.UsageError('translate needs sentences: translate --output DIR "Ein Satz." ...')
    if beam < 1:  # checked before the model loads, as training's Config does
        raise common.UsageError(f"--beam must be a positive integer (1: greedy); received {beam}.")
    if not 0 <= alpha < float("inf"):
        raise common.UsageError(f"--alpha (the length penalty's exponent) must be a finite number >= 0; "
                                f"received {alpha}.")
    path = os.path.join(output, "model.keras")
    if not os.path.exists(path):
        raise common.UsageError(f"No model.keras in {output}: train first (python -m recipes.translation "
                                f"--output {output}), or pass the --output of a finished run.")
    model = keras.saving.load_model(path, compile=False)
    source_tok = data.SubwordTokenizer.load(os.path.join(output, "source.spm"))
    target_tok = data.SubwordTokenizer.load(os.path.join(output, "target.spm"))
    ids, _ = model.translate(data.pad_batch(source_tok.encode(sentences)), beam_size=beam, alpha=alpha)
    return [target_tok.decode(i) for i in ids]


def translate_main(argv):
    parser = argparse.ArgumentParser(prog="python -m recipes.translation translate", allow_abbrev=False)
    parser.add_argument("sentences", nargs="*", help="sentences to translate")
    parser.add_argument("--sentence", action="append", default=[], help="a sentence (repeatable)")
    parser.add_argument("--output", default=Config.output, help="the --output folder of a trained model")
    parser.add_argument("--beam", type=int, default=Config.beam)
    parser.add_argument("--alpha", type=float, default=Config.alpha)
    parser.add_argument("--backend", help="any Keras backend; the model was saved portably")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    texts = translate(args.output, [*args.sentences, *args.sentence], args.beam, args.alpha)
    for text in texts:
        print(text)
    return texts


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    with common.user_errors():
        if argv[:1] == ["translate"]:
            return translate_main(argv[1:])
        return train(parse_config(argv[1:] if argv[:1] == ["train"] else argv))


if __name__ == "__main__":
    main()
