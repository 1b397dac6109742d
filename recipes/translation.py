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

Run (from the repository root):

    python -m recipes.translation --data /path/to/multi30k --backend torch --output runs/mt
    python -m recipes.translation translate --output runs/mt --sentence "Ein Hund läuft."
    python -m recipes.translation --smoke --output /tmp/mt_smoke     # seconds, generated data
"""

import argparse
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Optional


@dataclass
class Config:
    data: Optional[str] = None  # Multi30k folder ({split}.{lang}.gz), a TSV file, or None: download Multi30k
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
    backend: Optional[str] = None  # tensorflow | jax | torch (default: $KERAS_BACKEND)
    threads: int = 0  # CPU threads of the backend (0: its default; 1 is far faster on a busy CPU)
    output: str = "runs/translation"
    resume: bool = False  # continue from OUTPUT/checkpoint.keras
    smoke: bool = False  # seconds, on a generated reverse-the-words task
    sentence: str = ""  # translate mode: the sentence to translate


SMOKE = dict(
    embedding_dim=16, encoder_units=16, decoder_units=32, src_vocab=40, tgt_vocab=40,
    batch_size=32, epochs=2, examples=2, heatmaps=1, beam=3, max_len=20,
)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].lstrip("# "))
    parser.add_argument("mode", nargs="?", default="train", choices=("train", "translate"))
    for field in dataclasses.fields(Config):
        if field.type is bool:
            parser.add_argument(f"--{field.name}", action="store_true")
        else:
            kind = {int: int, float: float}.get(field.type, str)
            parser.add_argument(f"--{field.name}", type=kind, default=None)
    args = vars(parser.parse_args(argv))
    mode = args.pop("mode")
    overrides = {k: v for k, v in args.items() if v not in (None, False)}
    config = Config(**{**(SMOKE if overrides.get("smoke") else {}), **overrides})
    return mode, config


mode, config = parse_args(sys.argv[1:]) if __name__ == "__main__" else ("train", Config())
if config.backend:
    os.environ["KERAS_BACKEND"] = config.backend
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
if config.threads:
    # Before the backend is imported: OpenMP (torch) and XLA read these at start-up.
    os.environ["OMP_NUM_THREADS"] = str(config.threads)
    os.environ["XLA_FLAGS"] = f"--xla_cpu_multi_thread_eigen={'true' if config.threads > 1 else 'false'}"

import keras  # noqa: E402
import numpy as np  # noqa: E402

from kerasrnn import seq2seq  # noqa: E402
from kerasrnn.datasets import translation as data  # noqa: E402

BACKEND = keras.backend.backend()
if config.threads and BACKEND == "torch":
    import torch

    torch.set_num_threads(config.threads)
elif config.threads and BACKEND == "tensorflow":
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(config.threads)
    tf.config.threading.set_inter_op_parallelism_threads(config.threads)


def load_pairs(config):
    """`{"train", "val", "test"}` → (source sentences, target sentences)."""
    if config.smoke:
        source, target = data.synthetic_pairs(1200, vocab=10, max_len=7, seed=config.seed)
        return data.split_pairs(source, target, (0.8, 0.1, 0.1), seed=config.seed)
    if config.data and os.path.isfile(config.data):
        columns = tuple(int(c) for c in config.tsv_columns.split(","))
        source, target = data.load_parallel_tsv(config.data, columns=columns)
        return data.split_pairs(source, target, seed=config.seed)
    splits = data.load_multi30k(config.src, config.tgt, path=config.data)
    return {"train": splits["train"], "val": splits["val"], "test": splits["test_2016_flickr"]}


def tokenizers(config, train):
    """Source and target sentencepiece models, trained on the training pairs only."""
    paths = [os.path.join(config.output, f"{side}.spm") for side in ("source", "target")]
    if config.resume and all(os.path.exists(p) for p in paths):
        return [data.SubwordTokenizer.load(p) for p in paths]
    kind = "word" if config.smoke else "unigram"
    toks = [
        data.SubwordTokenizer.train(train[0], config.src_vocab, model_type=kind, seed=config.seed),
        data.SubwordTokenizer.train(train[1], config.tgt_vocab, model_type=kind, seed=config.seed),
    ]
    for tok, path in zip(toks, paths):
        tok.save(path)
    return toks


def build_model(config, source_vocab, target_vocab):
    model = seq2seq.Seq2Seq(
        source_vocab, target_vocab,
        embedding_dim=config.embedding_dim, encoder_units=config.encoder_units,
        decoder_units=config.decoder_units, cell=config.cell, num_layers=config.layers,
        attention=config.attention, score=config.score, dropout=config.dropout,
    )
    model.build()
    optimizer = keras.optimizers.Adam(config.learning_rate, clipnorm=config.clipnorm or None)
    model.compile(
        optimizer=optimizer,
        loss=seq2seq.MaskedSequenceLoss(label_smoothing=config.label_smoothing),
        metrics=[seq2seq.masked_accuracy],
    )
    return model


class SaveEpoch(keras.callbacks.Callback):
    """Writes OUTPUT/state.json (epochs done, history) after each checkpoint."""

    def __init__(self, path, history):
        super().__init__()
        self.path, self.history = path, history

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.time()

    def on_epoch_end(self, epoch, logs=None):
        logs = {k: float(v) for k, v in (logs or {}).items()}
        self.history.append({**logs, "epoch_seconds": time.time() - self.started})
        with open(self.path, "w") as f:
            json.dump({"epochs_done": epoch + 1, "history": self.history}, f, indent=1)


def schedule(config):
    def rate(epoch, lr):
        return config.learning_rate * config.lr_decay ** max(0, epoch - 3)

    return keras.callbacks.LearningRateScheduler(rate)


def translate_all(model, source_ids, beam, alpha, batch_size=100):
    tokens, weights = [], []
    for start in range(0, len(source_ids), batch_size):
        batch = data.pad_batch(source_ids[start : start + batch_size])
        t, w = model.translate(batch, beam_size=beam, alpha=alpha)
        tokens += t
        weights += w
    return tokens, weights


def perplexity(model, source_ids, target_ids, target_sentences):
    """Per-subword and per-word perplexity of the references under teacher forcing.

    The per-word figure divides the same total log-likelihood by the number of words
    (sacrebleu's 13a tokens, plus one end token per sentence), so it compares with
    word-level perplexities such as the anchors'.
    """
    import sacrebleu

    batches = data.TranslationBatches(source_ids, target_ids, batch_size=100)
    total, count = 0.0, 0
    for (source, target_in), target_out in batches:
        logits = keras.ops.convert_to_numpy(model((source, target_in), training=False)).astype("float64")
        logits -= logits.max(-1, keepdims=True)
        log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        nll = -np.take_along_axis(log_p, target_out[..., None], -1)[..., 0]
        total += float((nll * (target_out != 0)).sum())
        count += int((target_out != 0).sum())
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    tokenize = Tokenizer13a()
    words = sum(len(tokenize(s).split()) + 1 for s in target_sentences)
    return float(np.exp(total / count)), float(np.exp(total / words))


def heatmap(path, weights, source_pieces, output_pieces):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    weights = weights[: len(output_pieces), : len(source_pieces)]  # drop the batch's padding
    fig, ax = plt.subplots(figsize=(0.35 * len(source_pieces) + 2, 0.35 * len(output_pieces) + 1.5))
    ax.imshow(weights, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(source_pieces)), source_pieces, rotation=90)
    ax.set_yticks(range(len(output_pieces)), output_pieces)
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_history(path, history):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    epochs = range(1, len(history) + 1)
    for key in ("loss", "val_loss"):
        ax.plot(epochs, [h.get(key, np.nan) for h in history], marker="o", label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("label-smoothed cross-entropy")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def train(config):
    import sacrebleu

    start = time.time()
    os.makedirs(config.output, exist_ok=True)
    keras.utils.set_random_seed(config.seed)
    print(json.dumps({**dataclasses.asdict(config), "resolved_backend": BACKEND}, indent=1))
    with open(os.path.join(config.output, "config.json"), "w") as f:
        json.dump(dataclasses.asdict(config), f, indent=1)

    """## Data: sentence pairs → subword ids"""
    pairs = load_pairs(config)
    train_pairs = pairs["train"]
    if config.train_limit:
        train_pairs = (train_pairs[0][: config.train_limit], train_pairs[1][: config.train_limit])
    test_pairs = pairs["test"]
    if config.test_limit:
        test_pairs = (test_pairs[0][: config.test_limit], test_pairs[1][: config.test_limit])
    source_tok, target_tok = tokenizers(config, train_pairs)
    encoded = {}
    for name, (src, tgt) in (("train", train_pairs), ("val", pairs["val"]), ("test", test_pairs)):
        encoded[name] = (source_tok.encode(src), target_tok.encode(tgt))
    keep = [i for i, (s, t) in enumerate(zip(*encoded["train"])) if len(s) <= config.max_len and len(t) <= config.max_len]
    encoded["train"] = tuple([seqs[i] for i in keep] for seqs in encoded["train"])
    print(f"pairs: train {len(keep)} (of {len(train_pairs[0])}), val {len(pairs['val'][0])}, "
          f"test {len(test_pairs[0])}; vocab {source_tok.vocab_size} / {target_tok.vocab_size}")
    train_batches = data.TranslationBatches(*encoded["train"], batch_size=config.batch_size, shuffle=True, seed=config.seed)
    val_batches = data.TranslationBatches(*encoded["val"], batch_size=100)

    """## Model: resume from the checkpoint or build a new one"""
    checkpoint = os.path.join(config.output, "checkpoint.keras")
    state_path = os.path.join(config.output, "state.json")
    history, initial_epoch = [], 0
    if config.resume and os.path.exists(checkpoint):
        model = keras.saving.load_model(checkpoint)
        with open(state_path) as f:
            state = json.load(f)
        history, initial_epoch = state["history"], state["epochs_done"]
        print(f"resumed from {checkpoint} after epoch {initial_epoch}")
    else:
        model = build_model(config, source_tok.vocab_size, target_tok.vocab_size)
    print(f"parameters: {model.count_params():,}")

    """## Training: teacher forcing, a checkpoint every epoch"""
    fit_start = time.time()
    if initial_epoch < config.epochs:
        model.fit(
            train_batches, validation_data=val_batches, epochs=config.epochs, initial_epoch=initial_epoch,
            callbacks=[keras.callbacks.ModelCheckpoint(checkpoint), SaveEpoch(state_path, history), schedule(config)],
            verbose=2,
        )
    # Summed over all (resumed) runs; a history written before this was recorded lacks it.
    train_seconds = sum(h.get("epoch_seconds", 0.0) for h in history) or time.time() - fit_start
    model.save(os.path.join(config.output, "model.keras"))

    """## Evaluation: perplexity, BLEU and chrF with greedy and beam search"""
    ppl_subword, ppl_word = perplexity(model, *encoded["test"], test_pairs[1])
    references = test_pairs[1]
    scores = {}
    outputs = {}
    for beam in sorted({1, config.beam}):
        t0 = time.time()
        ids, weights = translate_all(model, encoded["test"][0], beam, config.alpha)
        hypotheses = [target_tok.decode(i) for i in ids]
        scores[beam] = {
            "bleu": sacrebleu.corpus_bleu(hypotheses, [references]).score,
            "chrf": sacrebleu.corpus_chrf(hypotheses, [references]).score,
            "seconds": time.time() - t0,
        }
        outputs[beam] = (ids, weights, hypotheses)
        print(f"beam {beam}: BLEU {scores[beam]['bleu']:.2f}  chrF {scores[beam]['chrf']:.2f}  "
              f"({scores[beam]['seconds']:.0f} s)")
    ids, weights, hypotheses = outputs[config.beam]
    for i in range(min(config.examples, len(references))):
        print(f"\nsource:     {test_pairs[0][i]}\nreference:  {references[i]}\ntranslation: {hypotheses[i]}")

    for i in range(min(config.heatmaps, len(references))):
        if weights[i] is None:
            break
        heatmap(
            os.path.join(config.output, f"attention_{i}.png"), weights[i],
            source_tok.pieces(encoded["test"][0][i]), target_tok.pieces(ids[i]) + ["</s>"],
        )
    plot_history(os.path.join(config.output, "history.png"), history)

    results = {
        "bleu": scores[config.beam]["bleu"],
        "chrf": scores[config.beam]["chrf"],
        "bleu_greedy": scores[1]["bleu"],
        "chrf_greedy": scores[1]["chrf"],
        "perplexity": ppl_word,
        "perplexity_subword": ppl_subword,
        "beam": config.beam,
        "alpha": config.alpha,
        "seconds": time.time() - start,
        "train_seconds": train_seconds,
        "decode_seconds": {str(k): v["seconds"] for k, v in scores.items()},
        "epochs": len(history),
        "backend": BACKEND,
        "parameters": model.count_params(),
        "test_sentences": len(references),
        "config": dataclasses.asdict(config),
        "history": history,
        "examples": [
            {"source": test_pairs[0][i], "reference": references[i], "translation": hypotheses[i]}
            for i in range(min(config.examples, len(references)))
        ],
    }
    with open(os.path.join(config.output, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    print(f"\nperplexity {ppl_word:.2f} per word ({ppl_subword:.2f} per subword); "
          f"BLEU {results['bleu']:.2f} (beam {config.beam}), {results['bleu_greedy']:.2f} (greedy); "
          f"{results['seconds']:.0f} s on {BACKEND}; results in {config.output}/results.json")
    return results


def translate(config):
    """Translates `--sentence` with the model and tokenizers saved in `--output`."""
    if not config.sentence:
        raise ValueError("translate mode needs --sentence \"...\" (and --output DIR of a trained model).")
    path = os.path.join(config.output, "model.keras")
    if not os.path.exists(path):
        path = os.path.join(config.output, "checkpoint.keras")
    if not os.path.exists(path):
        raise FileNotFoundError(f"No model.keras or checkpoint.keras in {config.output}: train first.")
    model = keras.saving.load_model(path, compile=False)
    source_tok = data.SubwordTokenizer.load(os.path.join(config.output, "source.spm"))
    target_tok = data.SubwordTokenizer.load(os.path.join(config.output, "target.spm"))
    ids, _ = model.translate(data.pad_batch(source_tok.encode([config.sentence])), beam_size=config.beam, alpha=config.alpha)
    text = target_tok.decode(ids[0])
    print(text)
    return text


def main(argv=None):
    chosen_mode, chosen = parse_args(sys.argv[1:] if argv is None else argv)
    return translate(chosen) if chosen_mode == "translate" else train(chosen)


if __name__ == "__main__":
    if mode == "translate":
        translate(config)
    else:
        train(config)
