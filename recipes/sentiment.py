"""# Sentiment of movie reviews with a recurrent network (sequence → vector)

The lecture's sequence-to-vector example: read a review word by word and predict
whether it is positive. Two data sets:

- **IMDB** (Maas et al. 2011): 25,000 training and 25,000 test reviews, ~230 words each.
- **MR** (Pang & Lee 2005): 10,662 one-sentence snippets, a fixed seeded 90/10 split.

The model: word ids → `Embedding(mask_zero=True)` → a kerasrnn GRU/LSTM (bidirectional
by default, masked so padding is never read) → max and mean over the valid time steps →
`Dense(1)`. Dropout touches the inputs and outputs of the recurrent layer, never its
recurrent connection; the optimizer clips the gradient norm.

    python -m recipes.sentiment                          # IMDB, the measured defaults
    python -m recipes.sentiment --dataset mr --output runs/mr
    python -m recipes.sentiment --ensemble 3             # average 3 models (IMDB's default: 5)
    python -m recipes.sentiment --resume                 # continue an interrupted run
    python -m recipes.sentiment --smoke                  # seconds, generated reviews
    python -m recipes.sentiment --smoke --dataset mr --data rt-polaritydata/  # seconds, a slice of MR
    python -m recipes.sentiment predict --output runs/sentiment "A wonderful film."

Every setting is a `Config` field and a `--flag` (`--max-length 300`, `--no-bidirectional`).
`--ensemble N` trains N copies with different seeds (weights, dropout, batch order),
each checkpointed in `OUTPUT/checkpoints/member-K/` and saved as `OUTPUT/member-K/model.keras`,
and averages their predicted probabilities. Results (test accuracy and loss, confusion
counts, curves, wall time) go to `--output`.
"""

import argparse
import dataclasses
import os
import sys
import time

from recipes import common

if __name__ == "__main__":
    common.select_backend(sys.argv[1:], prefer=("tensorflow", "jax", "torch"))  # before Keras

import keras
import numpy as np

import kerasrnn
from kerasrnn.datasets import (
    encode_texts,
    load_imdb,
    load_mr,
    load_vectorizer,
    make_vectorizer,
    save_vectorizer,
)
from recipes import training


# ------------------------------------------------------------------------------
# ## Configuration
# Defaults were chosen on a validation split of the training reviews (never on the
# test set); docs/recipes/sentiment.md has the measurements.
# ------------------------------------------------------------------------------
@dataclasses.dataclass
class Config(common.RunConfig):
    output: str = "runs/sentiment"  # checkpoints, models, vocabulary, results, plots
    dataset: str = "imdb"  # "imdb" (Maas et al. 2011) or "mr" (Pang & Lee 2005)
    data: str = ""  # folder or .tar.gz; "" downloads once with keras.utils.get_file
    cell: str = "lstm"  # "lstm", "gru", "simple_rnn" or "irnn"
    bidirectional: bool = True  # read the review forwards and backwards
    units: int = 64  # recurrent units per direction
    layers: int = 1  # stacked recurrent layers (each reads the sequence the one below returns)
    pooling: str = "max_mean"  # "max_mean" over valid steps, or "last" (final state)
    vocab_size: int = 30000  # most frequent words kept (ids 0 = padding, 1 = unknown)
    max_length: int = 600  # words kept per review (see `truncate` for which)
    truncate: str = "pre"  # "pre" keeps a long review's end (the verdict), "post" its start
    embedding_dim: int = 128
    word_dropout: float = 0.4  # fraction of whole words (their vectors) dropped
    embedding_dropout: float = 0.2  # on single features of the word vectors
    dropout: float = 0.3  # on the recurrent layer's inputs (not its recurrent connection)
    head_dropout: float = 0.5  # on the pooled features, before Dense(1)
    batch_size: int = 64
    length_buckets: int = 8  # batches are cut to one of this many lengths (XLA compiles each)
    epochs: int = 2  # at most; early stopping may end sooner (IMDB overfits after two)
    learning_rate: float = 1e-3  # Adam's initial step size
    schedule: str = "cosine"  # "cosine" decays it to 0 over `epochs`; "constant" keeps it
    clipnorm: float = 1.0  # gradient-norm clipping (per variable, Keras `clipnorm`); 0 turns it off
    validation_fraction: float = 0.1  # of train, held out for early stopping (IMDB: unseen movies)
    patience: int = 1  # epochs without val_accuracy gain before stopping
    seed: int = 1337  # member K of an ensemble uses seed + 100·(K-1)
    ensemble: int = 1  # models trained with different seeds; their probabilities are averaged
    # `--resume` may change: members train apart (more are added), patience stops early.
    RESUMABLE = ("patience", "ensemble")

    def __post_init__(self):
        common.check_choice(self, "dataset", tuple(DATASET_DEFAULTS))
        common.check_choice(self, "cell", tuple(RECURRENT_LAYERS))
        common.check_choice(self, "pooling", ("max_mean", "last"))
        common.check_choice(self, "truncate", ("pre", "post"))
        common.check_choice(self, "schedule", ("cosine", "constant"))
        common.check_positive(self, "units", "layers", "vocab_size", "max_length", "embedding_dim", "batch_size",
                              "epochs", "patience", "length_buckets", "ensemble")
        if not 0.0 < self.validation_fraction < 1.0:
            raise common.UsageError(f"--validation-fraction must be in (0, 1); received {self.validation_fraction}.")


# MR: 9,600 short sentences (~20 words). A GRU, a smaller vocabulary and embedding and
# more dropout (chosen on validation, mean of three seeds), more but shorter epochs.
# IMDB: single models end at 88.2–88.9 % whatever the settings; five seeds averaged
# (about 3 minutes each here) gain what no setting did. N was chosen on validation.
DATASET_DEFAULTS = {
    "imdb": {"ensemble": 5},
    "mr": {
        "cell": "gru", "max_length": 64, "vocab_size": 10000, "embedding_dim": 64, "units": 64,
        "word_dropout": 0.3, "embedding_dropout": 0.3, "dropout": 0.3, "head_dropout": 0.5,
        "epochs": 8, "patience": 2,
    },
}
SMOKE = {
    "vocab_size": 200, "max_length": 24, "embedding_dim": 16, "units": 8,
    "batch_size": 32, "epochs": 2, "length_buckets": 1, "ensemble": 1,
}


def parse_config(argv=None):
    """The config: the dataclass defaults, then the data set's, then the flags given."""
    return common.parse_config(
        Config, argv, prog="python -m recipes.sentiment", description=__doc__.splitlines()[0].lstrip("# "),
        presets=lambda given: DATASET_DEFAULTS.get(given.get("dataset", Config.dataset), {}), smoke=SMOKE,
    )


# ------------------------------------------------------------------------------
# ## Data
# Reviews → word ids (`kerasrnn.datasets.WordVectorizer`, Keras's TextVectorization ids
# in plain Python; vocabulary from the training split only) → batches of reviews of
# similar length, each cut to its longest review, so the recurrent layer does not spend
# most of its steps on padding.
# ------------------------------------------------------------------------------
def load_reviews(config):
    """`(train_texts, train_labels, train_groups), (test_texts, test_labels)`.

    Reviews of one group stay on one side of the validation split. IMDB's test set
    reviews other movies than its training set; its review ids run movie by movie, so
    blocks of 250 consecutive ids (about ten films) make a validation set of mostly
    unseen movies too. Otherwise every review is its own group.
    """
    if config.smoke and not config.data:
        (train_texts, train_labels), test = (
            generated_reviews(SMOKE_REVIEWS[0], seed=config.seed), generated_reviews(SMOKE_REVIEWS[1], seed=config.seed + 1)
        )
        return (train_texts, train_labels, np.arange(len(train_texts))), test
    common.check_data_path(config.data, "a folder or a .tar.gz archive of the data set")
    with common.data_errors(config.data):
        if config.dataset == "imdb":
            (texts, labels, ids), (test_texts, test_labels, _) = load_imdb(config.data or None, return_ids=True)
            train, test = (texts, labels, labels * 10**6 + ids // 250), (test_texts, test_labels)
        else:
            (texts, labels), test = load_mr(config.data or None)
            train = (texts, labels, np.arange(len(texts)))
    if config.smoke:  # the data read as in a real run, a seeded slice of it trained on
        train, test = common.smoke_slice(train, SMOKE_REVIEWS[0], config.seed), common.smoke_slice(
            test, SMOKE_REVIEWS[1], config.seed + 1)
        common.note_smoke_slice(config, f"{len(train[0])} training and {len(test[0])} test reviews")
    return train, test


#: `--smoke`'s training and test reviews: generated, or a slice of `--data`.
SMOKE_REVIEWS = (512, 256)


def generated_reviews(n, seed=0):
    """Random word salad whose label is the majority of sentiment-bearing words."""
    rng = np.random.default_rng(seed)
    good, bad = ["good", "great", "superb", "moving", "fun"], ["bad", "dull", "awful", "boring", "weak"]
    filler = ["the", "a", "film", "plot", "actor", "scene", "was", "and", "very", "story"]
    texts, labels = [], []
    for _ in range(n):
        label = int(rng.integers(2))
        words = list(rng.choice(filler, size=rng.integers(4, 30)))
        for _ in range(rng.integers(1, 4)):
            words.insert(rng.integers(len(words) + 1), rng.choice(good if label else bad))
        texts.append(" ".join(words))
        labels.append(label)
    return texts, np.array(labels, dtype="int32")


def split_validation(texts, labels, groups, fraction, seed):
    """Holds out seeded random groups holding `fraction` of each class's reviews."""
    rng = np.random.default_rng(seed)
    is_val = np.zeros(len(texts), dtype=bool)
    for label in np.unique(labels):
        names, sizes = np.unique(groups[labels == label], return_counts=True)
        order = rng.permutation(len(names))
        n_groups = np.searchsorted(np.cumsum(sizes[order]), fraction * sizes.sum()) + 1
        is_val |= np.isin(groups, names[order[:n_groups]]) & (labels == label)
    train, val = np.flatnonzero(~is_val), np.flatnonzero(is_val)
    return ([texts[i] for i in train], labels[train]), ([texts[i] for i in val], labels[val])


def check_splits(config, **sizes):
    """A `UsageError` where a split holds no review (a data set of a few sentences):
    training and the scores need each of them."""
    empty = [name for name, n in sizes.items() if n == 0]
    if empty:
        counts = ", ".join(f"{n} {name}" for name, n in sizes.items())
        source = f"--data {config.data!r}" if config.data else f"--dataset {config.dataset}"
        raise common.UsageError(
            f"{source}: the {' and '.join(empty)} split{'s are' if len(empty) > 1 else ' is'} empty "
            f"({counts} reviews); give more reviews or change --validation-fraction.")


class LengthBatches(keras.utils.PyDataset):
    """Batches of reviews of similar length, each cut to its longest row.

    Rows are sorted by length (with noise when shuffling, so batches change between
    epochs), cut into batches, and the batches shuffled. The order is a function of
    `(seed, epoch)` only, so a resumed run sees the batches an uninterrupted run sees.
    Cut lengths are rounded up to a multiple of `length_step`, which bounds the number
    of distinct shapes that jit-compiling backends compile.
    """

    def __init__(self, ids, labels, batch_size, shuffle=False, seed=0, length_step=32, drop_remainder=False):
        super().__init__()
        self.ids, self.labels = ids, labels.astype("float32")
        self.lengths = np.maximum((ids != 0).sum(axis=1), 1)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.length_step, self.drop_remainder = length_step, drop_remainder
        self.set_epoch(0)

    def set_epoch(self, epoch):
        order = np.argsort(self.lengths, kind="stable")
        if self.shuffle:
            rng = np.random.default_rng([self.seed, epoch])
            noisy = self.lengths * rng.uniform(0.9, 1.1, size=len(self.lengths))  # ±10 %
            order = np.argsort(noisy, kind="stable")
            if self.drop_remainder and len(order) > self.batch_size:
                # Leave out a few random rows (others each epoch) rather than a short batch.
                keep = rng.permutation(len(order))[: len(order) - len(order) % self.batch_size]
                order = order[np.sort(keep)]
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        # TensorFlow's adapter infers the input signature from the first two batches:
        # make their lengths differ so the time axis stays unknown (None).
        widths = [self._width(b) for b in batches]
        other = [j for j in range(2, len(batches)) if widths[j] != widths[0]]
        if len(batches) > 2 and widths[0] == widths[1] and other:
            batches[1], batches[other[0]] = batches[other[0]], batches[1]
        self.batches = batches

    def _width(self, batch):
        longest = int(self.lengths[batch].max())
        return min(self.ids.shape[1], -(-longest // self.length_step) * self.length_step)

    @property
    def order(self):
        """Row indices in the order the batches deliver them."""
        return np.concatenate(self.batches)

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, index):
        batch = self.batches[index]
        return self.ids[batch, : self._width(batch)], self.labels[batch]


def vectorize(run, train_texts, val_texts, test_texts):
    """`(vectorizer, train_ids, val_ids, test_ids)`; the vocabulary is the resumed run's
    if there is one, else learned from `train_texts` and saved."""
    config = run.config
    vocabulary_path = run.path("vocabulary.json")
    if config.resume and os.path.exists(vocabulary_path):
        vectorizer = load_vectorizer(vocabulary_path)
    else:
        vectorizer = make_vectorizer(train_texts, max_tokens=config.vocab_size)
        save_vectorizer(vectorizer, vocabulary_path)
    encoded = []
    for name, texts in (("training", train_texts), ("validation", val_texts), ("test", test_texts)):
        progress = run.progress(len(texts), f"Word ids of the {name} reviews")
        encoded.append(encode_texts(vectorizer, texts, config.max_length, truncate=config.truncate,
                                    progress=progress))
    return (vectorizer, *encoded)


# ------------------------------------------------------------------------------
# ## Model
# ------------------------------------------------------------------------------
@keras.saving.register_keras_serializable(package="kerasrnn_recipes")
class MaskedMaxMeanPooling(keras.layers.Layer):
    """Concatenates the maximum and the mean over the valid (unmasked) time steps.

    `(batch, time, features)` → `(batch, 2·features)`. Padding never wins the maximum
    nor dilutes the mean; a review with no valid step pools to zeros.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs, mask=None):
        ops = keras.ops
        if mask is None:
            mask = ops.ones(ops.shape(inputs)[:2], dtype="bool")
        valid = ops.expand_dims(ops.cast(mask, "bool"), -1)
        weights = ops.cast(valid, inputs.dtype)
        count = ops.sum(weights, axis=1)
        mean = ops.sum(inputs * weights, axis=1) / ops.maximum(count, 1.0)
        maximum = ops.max(ops.where(valid, inputs, ops.full_like(inputs, -1e9)), axis=1)
        maximum = ops.where(count > 0, maximum, ops.zeros_like(maximum))
        return ops.concatenate([maximum, mean], axis=-1)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 2 * input_shape[-1])


RECURRENT_LAYERS = {
    "lstm": kerasrnn.LSTM,
    "gru": kerasrnn.GRU,
    "simple_rnn": kerasrnn.SimpleRNN,
    "irnn": kerasrnn.IRNN,
}


def build_model(config, steps_per_epoch, seed=None):
    """Word ids `(batch, time)` → logit of "positive" `(batch, 1)`, compiled."""
    seed = config.seed if seed is None else seed
    ids = keras.Input(shape=(None,), dtype="int32", name="word_ids")
    x = keras.layers.Embedding(
        config.vocab_size, config.embedding_dim, mask_zero=True,
        embeddings_initializer="glorot_uniform", name="embedding",
    )(ids)
    if config.word_dropout:
        x = keras.layers.Dropout(config.word_dropout, noise_shape=(None, None, 1), seed=seed + 3, name="word_dropout")(x)
    x = keras.layers.Dropout(config.embedding_dropout, seed=seed, name="embedding_dropout")(x)
    for layer in range(config.layers):
        suffix = f"_{layer + 1}" if config.layers > 1 else ""
        rnn = RECURRENT_LAYERS[config.cell](
            config.units,
            return_sequences=config.pooling == "max_mean" or layer < config.layers - 1,
            dropout=config.dropout,  # input dropout: one mask per sequence (Gal & Ghahramani)
            kernel_initializer="glorot_uniform",  # recurrent kernel: orthogonal (IRNN: identity)
            seed=seed + 1 + 10 * layer,
            name=config.cell + suffix,
        )
        if config.bidirectional:
            rnn = keras.layers.Bidirectional(rnn, name=f"bidirectional_{config.cell}{suffix}")
        x = rnn(x)
    if config.pooling == "max_mean":
        x = MaskedMaxMeanPooling(name="max_mean_pooling")(x)
    x = keras.layers.Dropout(config.head_dropout, seed=seed + 2, name="head_dropout")(x)
    logit = keras.layers.Dense(1, kernel_initializer="glorot_uniform", name="logit")(x)
    model = keras.Model(ids, logit, name=f"sentiment_{config.cell}")
    learning_rate = common.learning_rate(config, config.learning_rate)
    if config.schedule == "cosine":
        learning_rate = keras.optimizers.schedules.CosineDecay(
            learning_rate, decay_steps=config.epochs * steps_per_epoch
        )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate, clipnorm=config.clipnorm or None),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
        # Weighted: the filler rows of a batch split over devices weigh 0 (recipes.distribute).
        weighted_metrics=[keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0)],
    )
    return model


# ------------------------------------------------------------------------------
# ## Training that loses nothing
# `training.fit` checkpoints every epoch (model, optimizer, early-stopping state, the
# random states of the dropout masks), keeps the best-on-validation weights and stops
# after `patience` epochs without a gain. An ensemble trains its members one after
# another, each with its own checkpoints: `--resume` skips the finished members and
# continues the unfinished one from its last finished epoch. All members share the
# data, the vocabulary and the validation split; they differ in seed (initial weights,
# dropout masks, batch order).
# ------------------------------------------------------------------------------
def fit_member(run, k, train_ids, train_labels, val, callbacks=()):
    """`(model, state)`: member `k` (0-based) trained or resumed; the model carries the
    best-on-validation weights and is saved as `OUTPUT/member-K/model.keras`."""
    config, seed = run.config, run.config.seed + 100 * k
    name = f"member-{k + 1}"
    print(f"Member {k + 1} of {config.ensemble} (seed {seed})", flush=True)
    step = -(-config.max_length // config.length_buckets)
    train = LengthBatches(train_ids, train_labels, config.batch_size, shuffle=True, seed=seed,
                          length_step=step, drop_remainder=True)  # one batch shape fewer to compile
    model, state = training.fit(
        run, name, lambda: build_model(config, steps_per_epoch=len(train), seed=seed), run.parallel.even(train),
        epochs=config.epochs, seed=seed, monitor=("val_accuracy", "max"), patience=config.patience,
        restore_best=True, validation_data=run.parallel.even(val, evaluation=True), callbacks=callbacks,
    )
    training.save_model(model, run.path(name, "model.keras"))
    return model, state


# ------------------------------------------------------------------------------
# ## Evaluate: average the members' probabilities (on the test set once per member,
# with each member's best-on-validation weights)
# ------------------------------------------------------------------------------
def sigmoid(logits):
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype="float64")))


def logit_loss(logits, y):
    """Binary cross-entropy from logits: log(1 + exp(-z)) for positives, log(1 + exp(z)) else."""
    return float(np.mean(np.logaddexp(0.0, np.where(y == 1, -logits, logits))))


def probability_loss(probability, y, epsilon=1e-7):
    """Binary cross-entropy of averaged probabilities."""
    p = np.clip(probability, epsilon, 1 - epsilon)
    return float(-np.mean(np.where(y == 1, np.log(p), np.log(1 - p))))


def evaluate(members, val_logits, test_logits, val_y, y):
    """The ensemble's scores; also the ensemble of the first n members for every n: how
    N was chosen (on validation; its loss is the finer measure), and what it gives on test."""
    for member, logits in zip(members, test_logits):
        member.update(test_accuracy=float(np.mean((logits > 0) == y)), test_loss=logit_loss(logits, y))

    def scores(logits, labels, n):
        mean = np.mean(sigmoid(np.stack(logits[:n])), axis=0)
        return float(np.mean((mean > 0.5) == labels)), probability_loss(mean, labels)

    by_size = {}
    for n in range(1, len(members) + 1):
        (val_accuracy, val_loss), (test_accuracy, _) = scores(val_logits, val_y, n), scores(test_logits, y, n)
        by_size[n] = {"val_accuracy": val_accuracy, "val_loss": val_loss, "test_accuracy": test_accuracy}
    probability = np.mean(sigmoid(np.stack(test_logits)), axis=0)
    predicted = (probability > 0.5).astype("int64")
    return {
        "test_accuracy": float(np.mean(predicted == y)),
        "test_loss": probability_loss(probability, y),
        "val_accuracy": by_size[len(members)]["val_accuracy"],
        "confusion": {
            "true_positive": int(np.sum((predicted == 1) & (y == 1))),
            "false_positive": int(np.sum((predicted == 1) & (y == 0))),
            "true_negative": int(np.sum((predicted == 0) & (y == 0))),
            "false_negative": int(np.sum((predicted == 0) & (y == 1))),
        },
        "ensemble_by_size": by_size,
    }


# ------------------------------------------------------------------------------
# ## Run: config → data → models → fit → evaluate → report
# ------------------------------------------------------------------------------
def run(config, callbacks=()):
    """Trains and evaluates as `config` says; returns the results dict."""
    recipe = common.start("sentiment", config)
    cpu_started, load_at_start = time.process_time(), os.getloadavg()

    (train_texts, train_labels, groups), (test_texts, test_labels) = load_reviews(config)
    (train_texts, train_labels), (val_texts, val_labels) = split_validation(
        train_texts, train_labels, groups, config.validation_fraction, config.seed
    )
    check_splits(config, train=len(train_texts), validation=len(val_texts), test=len(test_texts))
    vectorizer, train_ids, val_ids, test_ids = vectorize(recipe, train_texts, val_texts, test_texts)
    step = -(-config.max_length // config.length_buckets)
    val = LengthBatches(val_ids, val_labels, config.batch_size, length_step=step)
    test = LengthBatches(test_ids, test_labels, config.batch_size, length_step=step)
    print(f"{len(train_texts)} train, {len(val_texts)} validation, {len(test_texts)} test reviews; "
          f"vocabulary {vectorizer.vocabulary_size()}; mean length {np.mean((train_ids != 0).sum(1)):.0f} words")

    members, history, val_logits, test_logits = [], {}, [], []
    for k in range(config.ensemble):
        model, state = fit_member(recipe, k, train_ids, train_labels, val, callbacks)
        val_logits.append(recipe.parallel.predict(model, val)[:, 0])
        test_logits.append(recipe.parallel.predict(model, test)[:, 0])
        history[f"member-{k + 1}"] = state["history"]
        members.append({"seed": config.seed + 100 * k, "epochs": state["epoch"],
                        "best_epoch": state["monitor"]["best_epoch"], "best_val_accuracy": state["monitor"]["best"],
                        "resumed": state["resumed_from"] > 0})
        del model

    metrics = {
        "dataset": config.dataset,
        "ensemble": config.ensemble,
        **evaluate(members, val_logits, test_logits, val.labels[val.order].astype("int64"),
                   test.labels[test.order].astype("int64")),
        "epochs": max(member["epochs"] for member in members),
        "cpu_seconds": time.process_time() - cpu_started,  # all threads; wall ≫ cpu/cores = contention
        "train_seconds_all_runs": float(sum(r["seconds"] for records in history.values() for r in records)),
        "resumed": any(member["resumed"] for member in members),
        "cpu_count": os.cpu_count(),
        "load_average_start_end": [load_at_start[0], os.getloadavg()[0]],
        "members": members,
    }
    results = recipe.write_results(metrics, history)
    common.plot_history(history, recipe.path("curves.png"), metrics=("loss", "accuracy"))
    print(f"Test accuracy {metrics['test_accuracy']:.4f}, loss {metrics['test_loss']:.4f} "
          f"({len(test_texts)} reviews, {config.ensemble} model(s), {config.backend}, "
          f"{results['seconds'] / 60:.1f} min) → {config.output}/results.json")
    return results


# ------------------------------------------------------------------------------
# ## Predict: raw text → probability of "positive", with a saved model
# An ensemble's members each give a probability; the mean is the answer.
# ------------------------------------------------------------------------------
def predict(model_dir, texts):
    """`[(probability_positive, text), ...]` from the model(s) saved in `model_dir`."""
    paths = {name: os.path.join(model_dir, name) for name in ("config.json", "vocabulary.json")}
    config = common.read_json(paths["config.json"], {})
    # The run's members (config.json says how many), or a run from before ensembles.
    models = [os.path.join(model_dir, f"member-{k + 1}", "model.keras") for k in range(config.get("ensemble", 1))]
    if "ensemble" not in config and os.path.exists(os.path.join(model_dir, "model.keras")):
        models = [os.path.join(model_dir, "model.keras")]
    missing = [os.path.relpath(path, model_dir) for path in (*paths.values(), *models) if not os.path.exists(path)]
    if missing:
        raise common.UsageError(
            f"--output {model_dir!r} lacks {', '.join(missing)}: pass the --output folder "
            "of a finished `python -m recipes.sentiment` run."
        )
    vectorizer = load_vectorizer(paths["vocabulary.json"])
    ids = encode_texts(vectorizer, list(texts), config["max_length"], truncate=config["truncate"])
    ids = ids[:, : max(1, int((ids != 0).sum(axis=1).max()))]
    probabilities = [
        sigmoid(keras.ops.convert_to_numpy(keras.saving.load_model(path)(ids, training=False))[:, 0])
        for path in models
    ]
    return [(float(p), text) for p, text in zip(np.mean(probabilities, axis=0), texts)]


def predict_main(argv):
    parser = argparse.ArgumentParser(prog="python -m recipes.sentiment predict")
    parser.add_argument("--output", "--model", dest="output", required=True,
                        help="the --output folder of a finished run")
    parser.add_argument("--backend", help="any Keras backend; the model was saved portably")
    parser.add_argument("texts", nargs="+", help="reviews to classify")
    args = parser.parse_args(argv)
    scored = predict(args.output, args.texts)
    for probability, text in scored:
        label = "positive" if probability > 0.5 else "negative"
        print(f"{label}\t{probability:.3f}\t{text}")
    return scored


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    with common.user_errors():
        if argv[:1] == ["predict"]:
            return predict_main(argv[1:])
        return run(parse_config(argv))


if __name__ == "__main__":
    main()
