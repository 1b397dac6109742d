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

import argparse
import dataclasses
import json
import os
import sys
import time

import numpy as np

MODELS = ("tanh", "irnn", "lstm", "gru")
BACKENDS = ("jax", "tensorflow", "torch")


# ------------------------------------------------------------------------------
# ## Configuration
# Defaults were tuned on the validation set (fresh seeded sequences, never the test
# set); docs/recipes/adding_problem.md has the measurements.
# ------------------------------------------------------------------------------
@dataclasses.dataclass
class Config:
    seq_len: int = 150  # T, the length of every sequence
    models: str = ",".join(MODELS)  # comma list, a subset of tanh,irnn,lstm,gru
    backend: str = ""  # "" = $KERAS_BACKEND, else jax (the fastest measured on CPU)
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
    output: str = "runs/adding_problem"
    resume: bool = False  # continue from the checkpoints in --output
    smoke: bool = False  # a few seconds of everything, for tests
    verbose: int = 0  # Keras fit verbosity

    def __post_init__(self):
        if self.smoke:  # every size capped: seconds per model
            caps = dict(seq_len=12, units=4, batch_size=8, epochs=2, val_size=16, test_size=64,
                        diag_size=4, **{f"{m}_steps": 4 for m in MODELS})
            for name, cap in caps.items():
                setattr(self, name, min(getattr(self, name), cap))
        sizes = ["seq_len", "units", "batch_size", "epochs", "val_size", "test_size", "diag_size"]
        sizes += [f"{m}_steps" for m in MODELS]
        for name in sizes:
            value = getattr(self, name)
            if isinstance(value, bool) or value < 1:
                raise ValueError(f"--{_flag(name)} must be a positive integer; received {value!r}.")
        if self.seq_len < 2:
            raise ValueError(f"--seq-len must be at least 2 (two markers); received {self.seq_len}.")
        if self.irnn_input_stddev <= 0:
            raise ValueError(f"--irnn-input-stddev must be > 0; received {self.irnn_input_stddev}.")
        if self.clipnorm < 0:
            raise ValueError(f"--clipnorm must be >= 0 (0 turns clipping off); received {self.clipnorm}.")
        for name in (f"{m}_schedule" for m in MODELS):
            if getattr(self, name) not in ("cosine", "constant"):
                raise ValueError(f"--{_flag(name)} must be 'cosine' or 'constant'; received {getattr(self, name)!r}.")
        if self.backend and self.backend not in BACKENDS:
            raise ValueError(f"--backend must be one of {BACKENDS}; received {self.backend!r}.")
        self.model_list()

    def model_list(self):
        names = [m.strip() for m in self.models.split(",") if m.strip()]
        unknown = [m for m in names if m not in MODELS]
        if unknown or not names:
            raise ValueError(f"--models takes a comma list of {list(MODELS)}; received {self.models!r}.")
        return names

    def steps_per_epoch(self, name):
        """`{name}_steps · max(1, T/150)` updates, split into `epochs` (rounded up)."""
        steps = getattr(self, f"{name}_steps") * max(1.0, self.seq_len / 150)
        return -(-round(steps) // self.epochs)


def _flag(name):
    return name.replace("_", "-")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0].lstrip("# "))
    for field in dataclasses.fields(Config):
        flag = "--" + _flag(field.name)
        if field.type is bool or isinstance(field.default, bool):
            parser.add_argument(flag, dest=field.name, action="store_true")
        else:
            parser.add_argument(flag, dest=field.name, type=type(field.default), default=field.default)
    return Config(**vars(parser.parse_args(argv)))


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


def training_batches(config, steps_per_epoch, first_epoch):
    """Fresh batches for epochs `first_epoch … epochs-1`, each epoch seeded on its own
    (so a resumed run sees the same data as an uninterrupted one)."""
    size = config.batch_size * steps_per_epoch
    for epoch in range(first_epoch, config.epochs):
        x, y = adding_problem(size, config.seq_len, (config.seed, TRAIN, epoch))
        for i in range(0, size, config.batch_size):
            yield x[i : i + config.batch_size], y[i : i + config.batch_size]


# ------------------------------------------------------------------------------
# ## Models
# ------------------------------------------------------------------------------
def build_model(name, config):
    import keras

    import kerasrnn

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
    learning_rate = getattr(config, f"{name}_lr")
    if getattr(config, f"{name}_schedule") == "cosine":
        total = config.steps_per_epoch(name) * config.epochs
        learning_rate = keras.optimizers.schedules.CosineDecay(learning_rate, total, alpha=0.01)
    clip = {"clipnorm": config.clipnorm} if config.clipnorm > 0 else {}
    model.compile(keras.optimizers.Adam(learning_rate, **clip), loss="mse")
    return model


# ------------------------------------------------------------------------------
# ## Training, with a checkpoint after every epoch
# ------------------------------------------------------------------------------
def make_checkpoint(path, state):
    import keras

    class Checkpoint(keras.callbacks.Callback):
        """Saves the model (with its optimizer) and the run's state after every epoch."""

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            state["seconds"] += time.perf_counter() - self.started
            state["history"].append({
                "epoch": epoch + 1,
                "steps": (epoch + 1) * self.params["steps"],
                "loss": float(logs["loss"]),
                "val_mse": float(logs["val_loss"]),
                "seconds": state["seconds"],
            })
            state["epoch"] = epoch + 1
            self.model.save(os.path.join(path, "model.keras"))
            write_json(os.path.join(path, "state.json"), state)
            print(f"[{self.model.name}] epoch {epoch + 1}/{self.params['epochs']}: "
                  f"val MSE {logs['val_loss']:.4f} ({state['seconds']:.0f} s)", flush=True)

    return Checkpoint()


def train(name, config, validation, diag_batch):
    import keras

    from kerasrnn.diagnostics import RecurrentDiagnostics

    path = os.path.join(config.output, "checkpoints", name)
    os.makedirs(path, exist_ok=True)
    state_path = os.path.join(path, "state.json")
    csv_path = os.path.join(config.output, f"{name}_diagnostics.csv")
    state = read_json(state_path) if config.resume else None
    if state and os.path.exists(os.path.join(path, "model.keras")):
        model = keras.models.load_model(os.path.join(path, "model.keras"))
        print(f"[{name}] resuming after epoch {state['epoch']} ({state['seconds']:.0f} s so far)")
    else:
        keras.utils.set_random_seed(config.seed)
        model = build_model(name, config)
        state = {"epoch": 0, "seconds": 0.0, "history": []}
        if os.path.exists(csv_path):
            os.remove(csv_path)
    if state["epoch"] < config.epochs:
        diagnostics = RecurrentDiagnostics(
            *diag_batch, csv_path=csv_path, layers=["rnn"],
            record_initial=state["epoch"] == 0, initial_epoch=state["epoch"],
        )
        steps_per_epoch = config.steps_per_epoch(name)
        model.fit(
            training_batches(config, steps_per_epoch, state["epoch"]),
            steps_per_epoch=steps_per_epoch,
            epochs=config.epochs,
            initial_epoch=state["epoch"],
            validation_data=validation,
            callbacks=[diagnostics, make_checkpoint(path, state)],
            shuffle=False,  # fresh batches already
            verbose=config.verbose,
        )
    return model, state, csv_path


# ------------------------------------------------------------------------------
# ## Evaluation and report
# ------------------------------------------------------------------------------
def evaluate(name, model, state, csv_path, config, test):
    from kerasrnn.diagnostics import read_csv

    x_test, y_test = test
    rows = [r for r in read_csv(csv_path) if r["layer"] == "rnn"]
    first, last = rows[0], rows[-1]
    return {
        "test_mse": float(model.evaluate(x_test, y_test, batch_size=500, verbose=0)),
        "baseline_mse": float(np.mean((y_test - 1.0) ** 2)),
        "steps": state["epoch"] * config.steps_per_epoch(name),
        "epochs": state["epoch"],
        "seconds": round(state["seconds"], 1),
        "units": config.units,
        "learning_rate": getattr(config, f"{name}_lr"),
        "schedule": getattr(config, f"{name}_schedule"),
        "clipnorm": config.clipnorm,
        # log10 ‖∂L/∂h_1‖ / ‖∂L/∂h_T‖: 0 = the error signal reaches step 1 intact.
        "grad_log10_ratio_initial": first["grad_log10_ratio"],
        "grad_log10_ratio_final": last["grad_log10_ratio"],
        "spectral_radius_final": _columns(last, "_spectral_radius"),
        "saturation_final": _columns(last, "_saturation"),
        "history": state["history"],
        "grad_norms": {"initial": first["grad_norms"].tolist(), "final": last["grad_norms"].tolist()},
    }


def _columns(row, suffix):
    """`{name: value}` of a diagnostics CSV row's `<name><suffix>` columns."""
    return {k[: -len(suffix)]: v for k, v in row.items() if k.endswith(suffix) and v is not None}


def plot(results, config):
    import matplotlib

    from kerasrnn.diagnostics import (
        plot_gradient_heatmap,
        plot_gradient_norms,
        read_csv,
    )

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, r in results.items():
        steps = [h["steps"] for h in r["history"]]
        ax.semilogy(steps, [h["val_mse"] for h in r["history"]], marker="o", label=name)
    baseline = next(iter(results.values()))["baseline_mse"]
    ax.axhline(baseline, color="gray", linestyle="--", label=f"predict 1 ({baseline:.3f})")
    ax.axhline(0.01, color="gray", linestyle=":", label="0.01")
    ax.set_xlabel("updates")
    ax.set_ylabel("validation MSE")
    ax.set_title(f"Adding problem, T = {config.seq_len}")
    ax.legend(fontsize="small")
    fig.tight_layout()
    paths.append(os.path.join(config.output, "learning_curves.png"))
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    profiles, styles = {}, {}
    for i, (name, r) in enumerate(results.items()):
        for phase, linestyle in (("initial", "--"), ("final", "-")):
            label = f"{name} ({'at init' if phase == 'initial' else 'trained'})"
            profiles[label] = np.array(r["grad_norms"][phase])
            styles[label] = {"color": f"C{i}", "linestyle": linestyle}
    paths.append(plot_gradient_norms(
        profiles, os.path.join(config.output, "gradient_norms.png"),
        title=f"‖∂L/∂h_t‖ through time, T = {config.seq_len}", styles=styles,
    ))
    for name in results:
        rows = read_csv(os.path.join(config.output, f"{name}_diagnostics.csv"))
        by_epoch = {f"epoch {r['epoch']}": r["grad_norms"] for r in rows}
        paths.append(plot_gradient_norms(
            by_epoch, os.path.join(config.output, f"{name}_gradient_norms.png"),
            title=f"{name}: ‖∂L/∂h_t‖ per epoch, T = {config.seq_len}",
        ))
        paths.append(plot_gradient_heatmap(
            by_epoch, os.path.join(config.output, f"{name}_gradient_heatmap.png"),
            title=f"{name}: log10 ‖∂L/∂h_t‖ (rows: epochs)",
        ))
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


def device_name():
    import keras

    from kerasrnn.ops.device import on_accelerator

    if on_accelerator(keras.ops.zeros((1,))):
        return "accelerator (GPU/TPU)"
    return f"CPU, {os.cpu_count()} cores"


def write_json(path, data):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)  # a run killed mid-write never leaves half a file


def read_json(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


# ------------------------------------------------------------------------------
# ## Main
# ------------------------------------------------------------------------------
def main(argv=None):
    started = time.perf_counter()
    config = parse_args(argv)
    if "keras" not in sys.modules:  # the backend is fixed when Keras is imported
        os.environ["KERAS_BACKEND"] = config.backend or os.environ.get("KERAS_BACKEND", "jax")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    backend = keras.backend.backend()
    if config.backend and config.backend != backend:
        raise ValueError(
            f"--backend {config.backend}: Keras was already imported with the {backend!r} "
            "backend; run `python -m recipes.adding_problem` in a fresh process."
        )
    config.backend = backend
    os.makedirs(config.output, exist_ok=True)
    print("Config:\n" + "\n".join(f"  {k} = {v!r}" for k, v in dataclasses.asdict(config).items()))
    write_json(os.path.join(config.output, "config.json"), dataclasses.asdict(config))

    validation = adding_problem(config.val_size, config.seq_len, (config.seed, VALIDATION))
    test = adding_problem(config.test_size, config.seq_len, (config.seed, TEST))
    diag_batch = (validation[0][: config.diag_size], validation[1][: config.diag_size])

    results = {}
    for name in config.model_list():
        model, state, csv_path = train(name, config, validation, diag_batch)
        results[name] = evaluate(name, model, state, csv_path, config, test)
        print(f"[{name}] test MSE {results[name]['test_mse']:.5f} after "
              f"{results[name]['steps']} updates, {results[name]['seconds']:.0f} s")

    report = {
        "task": "adding problem (Le, Jaitly & Hinton 2015; generator of Bai, Kolter & Koltun 2018)",
        "seq_len": config.seq_len,
        "backend": backend,
        "device": device_name(),
        "models": results,
        "config": dataclasses.asdict(config),
    }
    write_json(os.path.join(config.output, "results.json"), report)
    try:
        report["plots"] = plot(results, config)
    except ImportError:
        print("matplotlib is not installed: no plots (pip install 'kerasrnn[recipes]').")
    report["wall_seconds"] = round(time.perf_counter() - started, 1)  # this process, all models
    write_json(os.path.join(config.output, "results.json"), report)
    print(f"\nAdding problem, T = {config.seq_len}, backend {backend} "
          f"(predicting 1 gives MSE ≈ 0.167; solved means < 0.01):")
    print(table(results))
    print(f"\nWall time {report['wall_seconds']:.0f} s. Results and plots in {config.output}/")
    return report


if __name__ == "__main__":
    main()
