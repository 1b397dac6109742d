"""# The adding problem: can a recurrent network carry a number across 150 steps?

The benchmark of Le, Jaitly & Hinton (2015), with the data generator of the TCN
benchmark (Bai, Kolter & Koltun 2018). Each input is a sequence of `T`
pairs `(value, marker)`: the values are drawn from U[0, 1], the markers are 0 except
at two random, distinct positions. The target is the sum of the two marked values.
Always predicting 1 (the mean of the target) gives MSE = Var(u1 + u2) = 2/12 ≈ 0.167;
solving the task means an MSE far below it (here: < 0.01).

Four networks of 64 units learn from the same stream of data; each has its own
learning rate and number of updates (`Config`):

- **tanh** — a SimpleRNN with Glorot-uniform input and recurrent weights: the error
  signal vanishes through the tanh Jacobians, and it stays at the baseline;
- **irnn** — ReLU units with identity recurrent initialization (`kerasrnn.IRNN`),
  a small learning rate with cosine decay;
- **lstm** — forget-gate bias 1; **gru** — the Keras/cuDNN form.

Each is trained with Adam and gradient-norm clipping (`--clipnorm`, 0 turns it off),
on a fresh batch at every update; `kerasrnn.diagnostics.RecurrentDiagnostics` records
`‖∂L/∂h_t‖` for every step before training and after every epoch.

    python -m recipes.adding_problem                        # T=150, all four, jax
    python -m recipes.adding_problem --seq-len 300 --output runs/adding_300
    python -m recipes.adding_problem --models lstm,gru --clipnorm 0
    python -m recipes.adding_problem --resume               # continue an interrupted run
    python -m recipes.adding_problem --smoke                # seconds: tiny everything

Every `Config` field is a `--flag` (`--seq-len 300`, `--irnn-lr 1e-4`). The output
folder gets `config.json`, `results.json`, the PNGs, the diagnostics CSVs and a
checkpoint per model (saved after every epoch; `--resume` continues from it).
"""

import dataclasses
import os
import sys

from recipes import common

if __name__ == "__main__":
    common.select_backend(sys.argv[1:], prefer=("jax", "tensorflow", "torch"))  # before Keras

import keras
import numpy as np

import kerasrnn
from kerasrnn.diagnostics import (
    RecurrentDiagnostics,
    plot_gradient_heatmap,
    plot_gradient_norms,
    read_csv,
)
from recipes import training

MODELS = ("tanh", "irnn", "lstm", "gru")


# ------------------------------------------------------------------------------
# ## Configuration
# Defaults were tuned on the validation set (fresh seeded sequences, never the test
# set); docs/recipes/adding_problem.md has the measurements.
# ------------------------------------------------------------------------------
@dataclasses.dataclass
class Config(common.RunConfig):
    output: str = "runs/adding_problem"
    seq_len: int = 150  # T, the length of every sequence
    models: str = ",".join(MODELS)  # comma list, a subset of tanh,irnn,lstm,gru
    units: int = 64  # recurrent units of every model
    batch_size: int = 64  # every update sees a fresh batch
    epochs: int = 10  # each model's updates are split into this many epochs
    clipnorm: float = 1.0  # gradient-norm clipping of each update; 0 turns it off
    # Per model: the Adam learning rate, its schedule ("constant", or "cosine": decay
    # to 1% of it by the last update) and the number of updates at T = 150, scaled by
    # T/150 for longer sequences (the LSTM needs ~1300 updates to leave the
    # predict-the-mean plateau at T = 150, ~2700 at T = 300).
    tanh_lr: float = 1e-3
    tanh_schedule: str = "constant"
    tanh_steps: int = 2000
    irnn_lr: float = 2e-4  # small, as IRNNs need (Le et al. 2015) ...
    irnn_schedule: str = "cosine"  # ... and smaller still to settle below 0.01
    irnn_steps: int = 6000  # it learns slowly, but its updates are the cheapest
    irnn_input_stddev: float = 0.1  # of W_x; the paper's 0.001 is far too slow with Adam
    lstm_lr: float = 1e-2
    lstm_schedule: str = "constant"
    lstm_steps: int = 2000
    gru_lr: float = 1e-2
    gru_schedule: str = "constant"
    gru_steps: int = 1000
    val_size: int = 1000  # validation sequences, evaluated after every epoch
    test_size: int = 10000  # test sequences, evaluated once at the end
    diag_size: int = 100  # validation sequences used for the gradient diagnostics
    seed: int = 0  # data and initialization
    # `--resume` may change: each model trains apart; the test set is used once, at the end.
    RESUMABLE = ("models", "test_size")

    def __post_init__(self):
        common.check_positive(self, "seq_len", "units", "batch_size", "epochs", "val_size", "test_size",
                              "diag_size", *(f"{m}_steps" for m in MODELS))
        if self.seq_len < 2:
            raise common.UsageError(f"--seq-len must be at least 2 (two markers); received {self.seq_len}.")
        if self.irnn_input_stddev <= 0:
            raise common.UsageError(f"--irnn-input-stddev must be > 0; received {self.irnn_input_stddev}.")
        for model in MODELS:
            common.check_choice(self, f"{model}_schedule", ("cosine", "constant"))
        self.model_list()

    def model_list(self):
        return common.split_list(self.models, MODELS, "models")

    def steps_per_epoch(self, name):
        """`{name}_steps · max(1, T/150)` updates, split into `epochs` (rounded up)."""
        steps = getattr(self, f"{name}_steps") * max(1.0, self.seq_len / 150)
        return -(-round(steps) // self.epochs)


# --smoke: every size tiny, seconds per model (flags given still win).
SMOKE = dict(seq_len=12, units=4, batch_size=8, epochs=2, val_size=16, test_size=64, diag_size=4,
             **{f"{m}_steps": 4 for m in MODELS})


def parse_config(argv=None):
    return common.parse_config(Config, argv, prog="python -m recipes.adding_problem",
                               description=__doc__.splitlines()[0].lstrip("# "), smoke=SMOKE)



# ------------------------------------------------------------------------------
# ## Data
# ------------------------------------------------------------------------------
def adding_problem(n, seq_len, seed):
    """`n` sequences `(n, seq_len, 2)` of `[value ~ U[0,1], marker]` and targets `(n, 1)`.

    Two distinct positions, uniform over the whole sequence, carry the marker 1; the
    target is the sum of their values (the TCN benchmark's generator, Bai et al. 2018).
    `seed` is anything `np.random.default_rng` takes, e.g. `(run seed, split, epoch)`.
    """
    rng = np.random.default_rng(seed)
    values = rng.random((n, seq_len), dtype=np.float32)
    first = rng.integers(0, seq_len, n)
    second = rng.integers(0, seq_len - 1, n)
    second = second + (second >= first)  # a uniform pair of distinct positions
    rows = np.arange(n)
    markers = np.zeros((n, seq_len), np.float32)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    targets = values[rows, first] + values[rows, second]
    return np.stack([values, markers], axis=-1), targets[:, None].astype(np.float32)


TRAIN, VALIDATION, TEST = 0, 1, 2  # seed streams: the splits never share a sequence


class FreshBatches(keras.utils.PyDataset):
    """`steps` fresh batches per epoch, drawn from the seed `(seed, TRAIN, epoch)`, so a
    resumed run sees the data an uninterrupted one sees."""

    def __init__(self, config, steps):
        super().__init__()
        self.config, self.steps = config, steps
        self.set_epoch(0)

    def set_epoch(self, epoch):
        config = self.config
        self.x, self.y = adding_problem(config.batch_size * self.steps, config.seq_len, (config.seed, TRAIN, epoch))

    def __len__(self):
        return self.steps

    def __getitem__(self, index):
        rows = slice(index * self.config.batch_size, (index + 1) * self.config.batch_size)
        return self.x[rows], self.y[rows]


# ------------------------------------------------------------------------------
# ## Models
# ------------------------------------------------------------------------------
def build_model(name, config):
    units = config.units
    recurrent = {
        # Glorot & Bengio (2010) for both matrices: the textbook tanh RNN.
        "tanh": lambda: kerasrnn.SimpleRNN(
            units, activation="tanh", kernel_initializer="glorot_uniform",
            recurrent_initializer="glorot_uniform", name="rnn",
        ),
        # ReLU, W_h = I, b = 0 (Le, Jaitly & Hinton 2015); W_x ~ N(0, 0.1²): Adam moves
        # each weight by about lr per update, so the paper's N(0, 0.001²) input weights
        # (and the large readout they call for) take thousands of updates to grow.
        "irnn": lambda: kerasrnn.IRNN(units, input_stddev=config.irnn_input_stddev, name="rnn"),
        "lstm": lambda: kerasrnn.LSTM(units, unit_forget_bias=True, name="rnn"),
        "gru": lambda: kerasrnn.GRU(units, name="rnn"),
    }[name]()
    model = keras.Sequential(
        [keras.Input((config.seq_len, 2)), recurrent, keras.layers.Dense(1, name="sum")],
        name=name,
    )
    learning_rate = common.learning_rate(config, getattr(config, f"{name}_lr"))
    if getattr(config, f"{name}_schedule") == "cosine":
        total = config.steps_per_epoch(name) * config.epochs
        learning_rate = keras.optimizers.schedules.CosineDecay(learning_rate, total, alpha=0.01)
    clip = {"clipnorm": config.clipnorm} if config.clipnorm > 0 else {}
    model.compile(keras.optimizers.Adam(learning_rate, **clip), loss="mse")
    return model


# ------------------------------------------------------------------------------
# ## Training, with a checkpoint after every epoch
# `training.fit` saves each model (with its optimizer) and the run's state after every
# epoch; the diagnostics CSV gets one row per epoch, and on --resume the rows of an
# epoch that was not checkpointed are dropped before that epoch is trained again.
# ------------------------------------------------------------------------------
def train(run, name, validation, diag_batch):
    config = run.config
    csv_path = run.path(f"{name}_diagnostics.csv")

    def diagnostics(state):
        keep_diagnostics_rows(csv_path, state["epoch"])
        log_dir = run.tensorboard_dir(name, "diagnostics")
        return [RecurrentDiagnostics(*diag_batch, csv_path=csv_path, log_dir=log_dir, layers=["rnn"],
                                     record_initial=state["epoch"] == 0, initial_epoch=state["epoch"])]

    model, state = training.fit(
        run, name, lambda: build_model(name, config),
        run.parallel.even(FreshBatches(config, config.steps_per_epoch(name))),
        epochs=config.epochs, validation_data=run.parallel.even(validation, evaluation=True), callbacks=diagnostics,
    )
    return model, state, csv_path


def keep_diagnostics_rows(path, last_epoch):
    """Keeps the CSV rows of epochs 0…`last_epoch` (all of it is gone when 0)."""
    if last_epoch == 0 or not os.path.exists(path):
        if os.path.exists(path):
            os.remove(path)
        return
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    kept = lines[:1] + [line for line in lines[1:] if int(line.split(",", 1)[0]) <= last_epoch]
    with common.atomic_path(path) as partial, open(partial, "w", encoding="utf-8") as f:
        f.writelines(kept)


# ------------------------------------------------------------------------------
# ## Evaluation and report
# ------------------------------------------------------------------------------
def evaluate(run, name, model, state, csv_path, test):
    config, (x_test, y_test) = run.config, test
    rows = [r for r in read_csv(csv_path) if r["layer"] == "rnn"]
    first, last = rows[0], rows[-1]
    predicted = run.parallel.predict(model, x_test, batch_size=500)  # each test sequence once
    return {
        "test_mse": float(np.mean((predicted.astype("float64") - y_test) ** 2)),
        "baseline_mse": float(np.mean((y_test - 1.0) ** 2)),
        "steps": updates(state["history"], config, name)[-1] if state["history"] else 0,
        "epochs": state["epoch"],
        "seconds": round(sum(h["seconds"] for h in state["history"]), 1),  # training, all runs
        "units": config.units,
        "learning_rate": common.learning_rate(config, getattr(config, f"{name}_lr")),  # as trained (--lr-scaling)
        "schedule": getattr(config, f"{name}_schedule"),
        "clipnorm": config.clipnorm,
        # log10 ‖∂L/∂h_1‖ / ‖∂L/∂h_T‖: 0 = the error signal reaches step 1 intact.
        "grad_log10_ratio_initial": first["grad_log10_ratio"],
        "grad_log10_ratio_final": last["grad_log10_ratio"],
        "spectral_radius_final": _columns(last, "_spectral_radius"),
        "saturation_final": _columns(last, "_saturation"),
        "grad_norms": {"initial": first["grad_norms"].tolist(), "final": last["grad_norms"].tolist()},
    }


def updates(history, config, name):
    """The updates made by the end of each epoch of `history`, from each epoch's
    `steps` (a run resumed with another `--epochs` makes another number per epoch;
    a record without it, from an older checkpoint, counts the current number)."""
    return np.cumsum([r.get("steps", config.steps_per_epoch(name)) for r in history]).tolist()


def _columns(row, suffix):
    """`{name: value}` of a diagnostics CSV row's `<name><suffix>` columns."""
    return {k[: -len(suffix)]: v for k, v in row.items() if k.endswith(suffix) and v is not None}


def plot_learning_curves(results, history, config, path):
    plt = common.pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, records in history.items():
        steps = updates(records, config, name)
        ax.semilogy(steps, [r["val_loss"] for r in records], marker="o", label=name)
    baseline = next(iter(results.values()))["baseline_mse"]
    ax.axhline(baseline, color="gray", linestyle="--", label=f"predict 1 ({baseline:.3f})")
    ax.axhline(0.01, color="gray", linestyle=":", label="0.01")
    ax.set_xlabel("updates")
    ax.set_ylabel("validation MSE")
    ax.set_title(f"Adding problem, T = {config.seq_len}")
    ax.legend(fontsize="small")
    return common.save_figure(fig, path)


def plot_gradients(run, results):
    """‖∂L/∂h_t‖ through time: all models at init and trained, then each model per epoch."""
    config, paths = run.config, []
    profiles, styles = {}, {}
    for i, (name, r) in enumerate(results.items()):
        for phase, linestyle in (("initial", "--"), ("final", "-")):
            label = f"{name} ({'at init' if phase == 'initial' else 'trained'})"
            profiles[label] = np.array(r["grad_norms"][phase])
            styles[label] = {"color": f"C{i}", "linestyle": linestyle}
    paths.append(plot_gradient_norms(profiles, run.path("gradient_norms.png"), styles=styles,
                                     title=f"‖∂L/∂h_t‖ through time, T = {config.seq_len}"))
    for name in results:
        by_epoch = {f"epoch {r['epoch']}": r["grad_norms"] for r in read_csv(run.path(f"{name}_diagnostics.csv"))}
        paths.append(plot_gradient_norms(by_epoch, run.path(f"{name}_gradient_norms.png"),
                                         title=f"{name}: ‖∂L/∂h_t‖ per epoch, T = {config.seq_len}"))
        paths.append(plot_gradient_heatmap(by_epoch, run.path(f"{name}_gradient_heatmap.png"),
                                           title=f"{name}: log10 ‖∂L/∂h_t‖ (rows: epochs)"))
    return paths


def table(results):
    lines = [
        f"{'model':6} {'test MSE':>10} {'baseline':>9} {'log10 ratio init→final':>23} {'steps':>6} {'seconds':>8}",
    ]
    for name, r in results.items():
        ratio = f"{r['grad_log10_ratio_initial']:+.1f} → {r['grad_log10_ratio_final']:+.1f}"
        lines.append(
            f"{name:6} {r['test_mse']:10.5f} {r['baseline_mse']:9.4f} {ratio:>23} "
            f"{r['steps']:6d} {r['seconds']:8.0f}"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------
# ## Main: config → data → models → train → evaluate → report
# ------------------------------------------------------------------------------
def run_recipe(config):
    run = common.start("adding_problem", config)
    validation = adding_problem(config.val_size, config.seq_len, (config.seed, VALIDATION))
    test = adding_problem(config.test_size, config.seq_len, (config.seed, TEST))
    diag_batch = (validation[0][: config.diag_size], validation[1][: config.diag_size])

    results, history = {}, {}
    for name in config.model_list():
        model, state, csv_path = train(run, name, validation, diag_batch)
        results[name] = evaluate(run, name, model, state, csv_path, test)
        history[name] = state["history"]
        print(f"[{name}] test MSE {results[name]['test_mse']:.5f} after "
              f"{results[name]['steps']} updates, {results[name]['seconds']:.0f} s", flush=True)

    metrics = {
        "task": "adding problem (Le, Jaitly & Hinton 2015; generator of Bai, Kolter & Koltun 2018)",
        "seq_len": config.seq_len,
        "models": results,
    }
    report = run.write_results(metrics, history)
    plot_learning_curves(results, history, config, run.path("learning_curves.png"))
    plot_gradients(run, results)
    print(f"\nAdding problem, T = {config.seq_len}, backend {config.backend} "
          f"(predicting 1 gives MSE ≈ 0.167; solved means < 0.01):")
    print(table(results))
    print(f"\nWall time {report['seconds']:.0f} s. Results and plots in {config.output}/")
    return report


def main(argv=None):
    with common.user_errors():
        return run_recipe(parse_config(argv))


if __name__ == "__main__":
    main()
