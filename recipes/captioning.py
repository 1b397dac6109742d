"""# Vector → sequence: spelling a handwritten digit's name with a decoder RNN

The seed's third shape ("entrada una imagen y salida el título de la imagen"), small
enough to train in a minute on a CPU: the 8×8 digits bundled with scikit-learn (1,797
images, no download) are the fixed input vectors, and a decoder RNN spells each digit's
English name character by character (`7 → s e v e n </s>`).

The image (64 pixels) goes through a Dense layer into the decoder's initial state; the
decoder (a kerasrnn GRU by default) reads the previous character and emits the next one.
Training uses teacher forcing (the true previous character); evaluation decodes greedily
from `<s>` and scores the exact match of the whole name on a held-out test split.

    python -m recipes.captioning --backend jax --output runs/captioning
    python -m recipes.captioning --decoder lstm
    python -m recipes.captioning --smoke --output /tmp/cap            # seconds

Writes `DIR/results.json` (`metrics.rows`: `[{"split", "exact_match", "char_accuracy"}]`),
`DIR/plots/test_captions.png` and `DIR/plots/training_curves.png`, `DIR/config.json` and
`DIR/checkpoints/`.
"""

import dataclasses
import sys

from recipes import common

if __name__ == "__main__":
    common.select_backend(sys.argv[1:], prefer=("jax", "tensorflow", "torch"))  # before Keras

import keras
import numpy as np

import kerasrnn
from kerasrnn import seq2seq
from kerasrnn.datasets import digits
from recipes import training

"""## Configuration"""


@dataclasses.dataclass
class Config(common.RunConfig):
    output: str = "runs/captioning"  # DIR for results.json, plots/, checkpoints/
    decoder: str = "gru"  # gru | lstm | simple_rnn (all kerasrnn layers)
    units: int = 128  # decoder state size
    embedding_dim: int = 16  # character embedding size
    epochs: int = 40  # passes over the ~1,260 training images
    batch_size: int = 32
    learning_rate: float = 3e-3  # Adam
    test_fraction: float = 0.2  # held-out test images (never seen in training)
    valid_fraction: float = 0.1  # validation images (for the training curve)
    seed: int = 42  # the split, the weights and the batch order
    plots: bool = True  # write DIR/plots/*.png

    RESUMABLE = ("plots",)  # what `--resume` may change besides common.RESUMABLE

    def __post_init__(self):
        common.check_choice(self, "decoder", tuple(DECODERS))
        common.check_positive(self, "units", "embedding_dim", "epochs", "batch_size")
        if not (0 < self.test_fraction < 1 and 0 < self.valid_fraction < 1 - self.test_fraction):
            raise common.UsageError("--test-fraction and --valid-fraction must be in (0, 1) and leave training "
                                    f"images; received {self.test_fraction}, {self.valid_fraction}.")


DECODERS = {"gru": kerasrnn.GRU, "lstm": kerasrnn.LSTM, "simple_rnn": kerasrnn.SimpleRNN}
# --smoke: 300 images, 1 epoch, 16 units: seconds (for the tests).
SMOKE = {"epochs": 1, "units": 16}


def parse_config(argv=None):
    return common.parse_config(Config, argv, prog="python -m recipes.captioning",
                               description=__doc__.splitlines()[0].lstrip("# "), smoke=SMOKE)


"""## Data: images and names as character ids

Id 0 pads, 1 starts a name (`<s>`), 2 ends it (`</s>`), then the letters. The decoder's
input is `<s> + name` and its target `name + </s>`, both padded to the longest name.
"""

PAD, START, END = 0, 1, 2
LETTERS = sorted(set("".join(digits.DIGIT_NAMES)))
VOCAB = ["<pad>", "<s>", "</s>", *LETTERS]
CHAR_ID = {c: i for i, c in enumerate(VOCAB)}
MAX_LEN = max(len(name) for name in digits.DIGIT_NAMES) + 1  # + </s>


def encode(names):
    """`(decoder_inputs, targets)`, int32 `(n, MAX_LEN)` each."""
    inputs = np.zeros((len(names), MAX_LEN), "int32")
    targets = np.zeros((len(names), MAX_LEN), "int32")
    for row, name in enumerate(names):
        ids = [CHAR_ID[c] for c in name]
        inputs[row, : len(ids) + 1] = [START, *ids]
        targets[row, : len(ids) + 1] = [*ids, END]
    return inputs, targets


def decode(ids):
    """Character ids → text, stopping at the first `</s>` (pads and `<s>` are skipped)."""
    text = []
    for i in ids:
        if i == END:
            break
        if i > END:
            text.append(VOCAB[i])
    return "".join(text)


def load_splits(config):
    images, names, labels = digits.load_digit_names()
    order = np.random.RandomState(config.seed).permutation(len(images))
    if config.smoke:
        order = order[:300]
    n_test = round(config.test_fraction * len(order))
    n_valid = round(config.valid_fraction * len(order))
    parts = {"test": order[:n_test], "valid": order[n_test:n_test + n_valid],
             "train": order[n_test + n_valid:]}
    if not all(len(index) for index in parts.values()):  # the fractions passed, the rounding did not
        sizes = ", ".join(f"{len(index)} {split}" for split, index in parts.items())
        raise common.UsageError(
            f"--test-fraction {config.test_fraction} and --valid-fraction {config.valid_fraction} of "
            f"{len(order)} images leave a split empty ({sizes}): each needs at least one image."
        )
    splits = {}
    for split, index in parts.items():
        split_names = [names[i] for i in index]
        inputs, targets = encode(split_names)
        splits[split] = {"images": images[index], "names": split_names, "labels": labels[index],
                         "inputs": inputs, "targets": targets}
    return splits


"""## Model: image → initial state → decoder RNN → next character"""


def build_model(config):
    image = keras.Input((64,), name="image")
    previous = keras.Input((MAX_LEN,), dtype="int32", name="previous_chars")
    layer = DECODERS[config.decoder]
    n_states = 2 if config.decoder == "lstm" else 1  # LSTM: [h_0, c_0]
    initial_state = [
        keras.layers.Dense(config.units, activation="tanh", name=f"image_to_state_{i}")(image)
        for i in range(n_states)
    ]
    x = keras.layers.Embedding(len(VOCAB), config.embedding_dim, mask_zero=True)(previous)
    x = layer(config.units, return_sequences=True, name="decoder")(x, initial_state=initial_state)
    logits = keras.layers.Dense(len(VOCAB), name="next_char")(x)
    model = keras.Model([image, previous], logits, name=f"digit_speller_{config.decoder}")
    # The loss averages over the characters of the names (PAD targets left out), over
    # the whole batch also when a tf.distribute strategy splits it between devices; the
    # accuracy over every character of the epoch, so it takes no sample weights (those
    # of --distribute's evaluation batches are for the loss).
    model.compile(
        optimizer=keras.optimizers.Adam(common.learning_rate(config, config.learning_rate)),
        loss=seq2seq.MaskedSequenceLoss(pad_id=PAD),
        metrics=[seq2seq.MaskedAccuracy(pad_id=PAD, name="accuracy")],
    )
    return model


"""## Greedy decoding and the scores

The decoder is causal, so the forecast at step `t` depends only on the characters up to
`t`: one call per step on the growing prefix (the rest still zero) spells the names.
"""


def greedy_decode(run, model, images):
    tokens = np.zeros((len(images), MAX_LEN), "int32")
    tokens[:, 0] = START
    chosen = np.zeros_like(tokens)
    progress = run.progress(MAX_LEN, "Greedy decoding (characters)")
    for t in range(MAX_LEN):
        logits = run.parallel.predict(model, [images, tokens], batch_size=512)
        chosen[:, t] = np.argmax(logits[:, t], axis=-1)
        if t + 1 < MAX_LEN:
            tokens[:, t + 1] = chosen[:, t]
        progress.update(t + 1)
    return [decode(row) for row in chosen]


def scores(predicted, names):
    exact = float(np.mean([p == n for p, n in zip(predicted, names)]))
    # Per position of the target (letters, then the end): was the right symbol emitted?
    chars = [sum(a == b for a, b in zip(p + "$", n + "$")) / (len(n) + 1)
             for p, n in zip(predicted, names)]
    return {"exact_match": exact, "char_accuracy": float(np.mean(chars))}


def plot_captions(split, predicted, path):
    plt = common.pyplot()
    fig, axes = plt.subplots(3, 8, figsize=(12, 5))
    for ax, image, name, guess in zip(axes.flat, split["images"], split["names"], predicted):
        ax.imshow(image.reshape(8, 8), cmap="gray_r")
        ax.set_title(guess or "∅", color="green" if guess == name else "red", fontsize=10)
        ax.axis("off")
    fig.suptitle("Test digits and the names the decoder spells (red: wrong)")
    common.save_figure(fig, path)


"""## Main: config → data → model → train → evaluate → report"""


def run_recipe(config):
    run = common.start("captioning", config)
    splits = load_splits(config)
    train, valid = splits["train"], splits["valid"]
    print(f"{len(train['names'])} train / {len(valid['names'])} valid / "
          f"{len(splits['test']['names'])} test images; vocabulary {VOCAB}")

    name = f"speller_{config.decoder}"
    model, state = training.fit(
        run, name, lambda: build_model(config),
        run.parallel.even(training.EpochBatches(
            [train["images"], train["inputs"]], train["targets"], config.batch_size, seed=config.seed)),
        epochs=config.epochs,
        # In Keras's batches of 32 (those of the arrays undistributed); split over
        # devices each batch's loss weighs its real rows, not the fillers (EvenBatches).
        validation_data=run.parallel.even(([valid["images"], valid["inputs"]], valid["targets"]),
                                          run.parallel.rows(32), evaluation="per_batch"),
    )

    # One decoding pass over both held-out splits (one compiled shape on JAX).
    held_out = ("valid", "test")
    predicted = greedy_decode(run, model, np.concatenate([splits[s]["images"] for s in held_out]))
    rows, examples = [], {}
    for split in held_out:
        n = len(splits[split]["names"])
        examples[split], predicted = predicted[:n], predicted[n:]
        rows.append({"split": split, "n": len(examples[split]), **scores(examples[split], splits[split]["names"])})
    test = splits["test"]
    wrong = [f"{n}→{p or '∅'}" for n, p in zip(test["names"], examples["test"]) if n != p]
    history = {name: state["history"]}
    results = run.write_results({"decoder": config.decoder, "rows": rows, "test_errors": wrong[:50]}, history)
    if config.plots:
        plot_captions(test, examples["test"], run.path("plots", "test_captions.png"))
        common.plot_history(history, run.path("plots", "training_curves.png"), metrics=("loss", "accuracy"))
    for row in rows:
        print(f"{row['split']:>5}: exact match {row['exact_match']:.4f}  "
              f"char accuracy {row['char_accuracy']:.4f}  (n={row['n']})")
    print(f"test errors: {', '.join(wrong[:20]) or 'none'}")
    print(f"{config.backend}, {results['seconds']} s → {run.path('results.json')}")
    return results


def main(argv=None):
    with common.user_errors():
        return run_recipe(parse_config(argv))


if __name__ == "__main__":
    main()
