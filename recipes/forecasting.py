"""# Forecasting time series with kerasrnn — Géron's chapter 15, held to its numbers

Sequence → vector (forecast the next value, or the next 10 at once) and sequence →
sequence (at every step, forecast the next 10) on three kinds of data:

- `geron`: the synthetic series of *Hands-On Machine Learning* (2nd ed., ch. 15), two
  noisy sine waves, 10,000 series of 50 steps, split 7,000 / 2,000 / 1,000 (seed 42);
- `sunspots`: the yearly sunspot numbers 1700–2008 bundled in statsmodels, windows of
  24 years, split chronologically 70 / 15 / 15 % by the years forecast;
- any CSV column: `--data file.csv --column NAME`, treated like the sunspots.

Tasks: `one_step`, `multi_step` (10 ahead at once), `seq2seq` (10 ahead at every step,
scored on the last step), `iterative` (the one-step model fed its own forecasts).
Models: `naive` (last value), `linear_lstsq` (least squares, closed form), `linear`
(Dense on the flattened window, trained), `simple_rnn` (one SimpleRNN unit), `deep_rnn`
(2 × SimpleRNN(20) + Dense), `lstm`, `gru`, `ln_rnn` (2 × SimpleRNN(20, layer_norm=True)).
Every recurrent layer is kerasrnn's (`--library keras` builds the same models on
`keras.layers`, for comparison); training is the book's: Adam, MSE, batch 32, 20 epochs.

    python -m recipes.forecasting --backend jax --output runs/forecasting
    python -m recipes.forecasting --data sunspots --tasks one_step --models naive,gru
    python -m recipes.forecasting --data my.csv --column load --tasks multi_step
    python -m recipes.forecasting --smoke --output /tmp/fc        # seconds

Writes `DIR/results.json` (`metrics.rows`: `[{"dataset", "task", "model", "val_mse",
"test_mse", ...}]`), `DIR/plots/*.png` (forecasts against the truth, training curves),
`DIR/config.json`, and the checkpoints of every fit under `DIR/checkpoints/`
(`--resume` continues).
"""

import dataclasses
import os
import sys
import time

from recipes import common

if __name__ == "__main__":
    common.select_backend(sys.argv[1:], prefer=("jax", "tensorflow", "torch"))  # before Keras

import keras
import numpy as np

import kerasrnn
from kerasrnn.datasets import timeseries
from recipes import training

"""## Configuration"""


@dataclasses.dataclass
class Config(common.RunConfig):
    output: str = "runs/forecasting"  # DIR for results.json, plots/, checkpoints/
    data: str = "geron,sunspots"  # comma list of: geron | sunspots | path/to/file.csv
    column: str = ""  # the column to forecast when --data is a CSV file
    tasks: str = "all"  # comma list of one_step, multi_step, seq2seq, iterative (or all)
    models: str = "all"  # comma list of the MODELS below (or all)
    epochs: int = 20  # on Géron's series, as in the book
    real_epochs: int = 300  # on sunspots/CSV (~200 windows: 7 steps an epoch), best val kept
    patience: int = 50  # early-stopping patience on sunspots/CSV (epochs without val gain)
    real_checkpoint_every: int = 25  # epochs between checkpoints on sunspots/CSV (Géron: every epoch)
    real_dropout: float = 0.2  # sunspots/CSV: recurrent dropout, and input dropout between layers
    batch_size: int = 32  # Keras's default, as in the book
    learning_rate: float = 0.0  # 0: the book's (1e-3; 5e-3 simple_rnn; 1e-2 seq2seq deep_rnn)
    units: int = 20  # units of each recurrent layer of the deep models
    n_steps: int = 50  # input length on Géron's series
    window: int = 24  # input length on sunspots/CSV (about two solar cycles)
    horizon: int = 10  # steps ahead for multi_step, seq2seq and iterative
    seed: int = 42  # the data: np.random.seed(42) in the book
    init_seed: int = 42  # weights and shuffling: tf.random.set_seed(42) in the book
    library: str = "kerasrnn"  # kerasrnn | keras: the same models on keras.layers, to compare
    plots: bool = True  # write DIR/plots/*.png
    # `--resume` may change: every (data, task, model) trains apart, its rows are merged.
    RESUMABLE = ("data", "column", "tasks", "models", "real_epochs", "patience", "real_checkpoint_every", "plots")

    def __post_init__(self):
        common.check_choice(self, "library", ("kerasrnn", "keras"))
        common.check_positive(self, "epochs", "real_epochs", "patience", "real_checkpoint_every", "batch_size",
                              "units", "n_steps", "window", "horizon")
        common.split_list(self.tasks, TASKS, "tasks")
        common.split_list(self.models, MODELS, "models")


# --smoke: short series and windows, 4 units, 1 epoch (2 on real series): seconds.
SMOKE = {"n_steps": 20, "window": 12, "units": 4, "epochs": 1, "real_epochs": 2}
# Spellings of earlier versions, still accepted (with a note).
ALIASES = {"task": "tasks", "model": "models", "layers": "library"}


def parse_config(argv=None):
    return common.parse_config(Config, argv, prog="python -m recipes.forecasting",
                               description=__doc__.splitlines()[0].lstrip("# "), smoke=SMOKE,
                               aliases=ALIASES)



TASKS = timeseries.TASKS
MODELS = ("naive", "linear_lstsq", "linear", "simple_rnn", "deep_rnn", "lstm", "gru", "ln_rnn")
TRAINED = ("linear", "simple_rnn", "deep_rnn", "lstm", "gru", "ln_rnn")
# Which models make sense for which task (the book's choices).
TASK_MODELS = {
    "one_step": MODELS,
    "multi_step": ("naive", "linear_lstsq", "linear", "deep_rnn", "lstm", "gru", "ln_rnn"),
    "seq2seq": ("naive", "deep_rnn", "lstm", "gru", "ln_rnn"),
    "iterative": MODELS,  # the one_step models, fed their own forecasts
}

# Validation MSE of Géron's notebook (2nd ed., chapter 15; TensorFlow 2, same data, Adam,
# 20 epochs). Iterative is the deep RNN fed its own forecasts; simple_rnn is SimpleRNN(1).
GERON_VAL_MSE = {
    ("one_step", "naive"): 0.0202,
    ("one_step", "linear"): 0.0042,
    ("one_step", "simple_rnn"): 0.0108,
    ("one_step", "deep_rnn"): 0.0026,
    ("multi_step", "linear"): 0.0187,
    ("multi_step", "deep_rnn"): 0.0085,
    ("seq2seq", "deep_rnn"): 0.0096,
    ("seq2seq", "lstm"): 0.0086,
    ("seq2seq", "gru"): 0.0103,
    ("seq2seq", "ln_rnn"): 0.0121,
    ("iterative", "deep_rnn"): 0.0285,
}

"""## Data

Géron's series come straight from `kerasrnn.datasets.timeseries.geron_dataset`. A real
series is centered on the mean of its training period and divided by 1.25 × the largest
deviation there, so that it lies within (−0.8, 0.8) like Géron's (a `tanh` output such as
SimpleRNN(1)'s can reach it); then it is cut into windows whose forecast years fall wholly
in one split. MSEs are in these units.
"""


def load_real_series(name, config):
    """`(label, values, index)` of a sunspots/CSV series; `index` labels the time axis."""
    if name == "sunspots":
        years, values = timeseries.load_sunspots()
        return "sunspots", values, years
    if not os.path.isfile(name):
        raise common.UsageError(
            f"--data {name}: no such file (the entries are 'geron', 'sunspots' or CSV file paths)."
        )
    with common.data_errors(name):
        values = timeseries.load_csv_column(name, config.column or None)
    label = f"{os.path.splitext(os.path.basename(name))[0]}:{config.column}"
    return label, values, np.arange(len(values))


def make_datasets(name, tasks, config):
    """`(label, {task: splits}, info)` for one `--data` entry."""
    tasks = set(tasks) | ({"one_step"} if "iterative" in tasks else set())
    if name == "geron":
        sizes = (200, 50, 50) if config.smoke else (7000, 2000, 1000)
        splits = {
            task: timeseries.geron_dataset(task, config.n_steps, config.horizon, sizes, config.seed)
            for task in tasks
        }
        return "geron", splits, {"n_steps": config.n_steps, "real": False}
    label, values, index = load_real_series(name, config)
    if len(values) < 3:
        raise common.UsageError(
            f"--data {label}: the series has {len(values)} value(s); it needs a training, a "
            "validation and a test period."
        )
    train_end, _ = timeseries.split_bounds(len(values))
    center = float(np.mean(values[:train_end]))
    scale = 1.25 * float(np.max(np.abs(values[:train_end] - center)))
    if scale == 0:
        raise common.UsageError(f"--data {label}: the training period is constant; nothing to forecast.")
    scaled = (values - center) / scale
    with common.data_errors(label):  # a series too short for the windows
        splits = {task: timeseries.window_dataset(scaled, config.window, task, config.horizon)
                  for task in tasks}
    return label, splits, {"n_steps": config.window, "real": True, "center": center,
                           "scale": scale, "index": index}


"""## Models

All recurrent layers are kerasrnn's. The deep models are the book's: two recurrent
layers of 20 units, then a Dense head on the last output (or on every output for
`seq2seq`). On the short real series (~200 training windows) they overfit the training
cycles, so there every two-layer model (deep_rnn, lstm, gru, ln_rnn) gets `real_dropout`
(Gal & Ghahramani's per-sequence masks), and all trained models stop early on the
validation years. `ln_rnn` needs
`kerasrnn.SimpleRNN(..., layer_norm=True)`; where the installed kerasrnn lacks that option
the row is skipped with a note, never replaced by another cell.
"""


@keras.saving.register_keras_serializable(package="recipes.forecasting")
def last_time_step_mse(y_true, y_pred):
    """The book's seq2seq metric: MSE of the forecasts made at the last time step."""
    return keras.ops.mean(keras.ops.square(y_true[:, -1] - y_pred[:, -1]), axis=-1)


def layer_norm_available(config):
    if config.library != "kerasrnn":
        return False
    try:
        kerasrnn.SimpleRNN(2, layer_norm=True)
    except (TypeError, ValueError):
        return False
    return True


def build_model(name, task, n_steps, config, dropout=0.0):
    """The model `name` for `task`; `dropout` regularizes the two-layer recurrent models:
    recurrent dropout in both layers, input dropout into the second (never on the single
    input feature, where one mask per sequence would blank a whole series)."""
    source = {"kerasrnn": kerasrnn, "keras": keras.layers}[config.library]
    outputs = 1 if task in ("one_step", "iterative") else config.horizon
    per_step = task == "seq2seq"
    inputs = keras.Input((n_steps if name == "linear" else None, 1))
    if name == "linear":
        x = keras.layers.Flatten()(inputs)
    elif name == "simple_rnn":  # the output is the unit's own h_t, as in the book
        return keras.Model(inputs, source.SimpleRNN(1)(inputs), name=name)
    else:
        extra = {"layer_norm": True} if name == "ln_rnn" else {}
        layer = {"deep_rnn": source.SimpleRNN, "lstm": source.LSTM,
                 "gru": source.GRU, "ln_rnn": source.SimpleRNN}[name]
        x = layer(config.units, return_sequences=True, recurrent_dropout=dropout, **extra)(inputs)
        x = layer(config.units, return_sequences=per_step, dropout=dropout,
                  recurrent_dropout=dropout, **extra)(x)
    return keras.Model(inputs, keras.layers.Dense(outputs)(x), name=name)


def learning_rate(name, task, config):
    if config.learning_rate > 0:
        return config.learning_rate
    if name == "simple_rnn":
        return 5e-3
    if name == "deep_rnn" and task == "seq2seq":
        return 1e-2
    return 1e-3


"""## Training, with a checkpoint every epoch

Each (dataset, task, model) fit is checkpointed by `training.fit` after every epoch
(every `real_checkpoint_every` epochs on the short real series, where an epoch takes
milliseconds) in `DIR/checkpoints/KEY/`; with `--resume` a fit continues from there, and
a finished one is loaded instead of refit. The batches are reshuffled every epoch by
`training.EpochBatches` (seeded by `--init-seed` and the epoch), the same on every
backend and after a resume.
"""


@dataclasses.dataclass
class Fits:
    """The models trained on one `--data` entry (`iterative` reuses the `one_step` ones)
    and the training histories of all (`results.json`'s `history`)."""

    run: common.Run
    dataset_key: str
    histories: dict
    models: dict = dataclasses.field(default_factory=dict)


def compiled_model(name, task, n_steps, config, dropout=0.0):
    """`build_model`, compiled as the book trains it: Adam, MSE."""
    model = build_model(name, task, n_steps, config, dropout)
    model.compile(
        optimizer=keras.optimizers.Adam(common.learning_rate(config, learning_rate(name, task, config))),
        loss="mse",
        weighted_metrics=[last_time_step_mse] if task == "seq2seq" else None,
    )
    return model


def fit(fits, name, task, splits, n_steps, real):
    run, config = fits.run, fits.run.config

    def build():
        return compiled_model(name, task, n_steps, config, config.real_dropout if real else 0.0)

    key = f"{fits.dataset_key}-{task}-{name}"
    print(f"[{key}] training", flush=True)
    early_stopping = {"monitor": ("val_loss", "min"), "patience": config.patience, "restore_best": True}
    model, state = training.fit(
        run, key, build,
        run.parallel.even(training.EpochBatches(*splits["train"], config.batch_size, seed=config.init_seed)),
        epochs=config.real_epochs if real else config.epochs, seed=config.init_seed,
        every=config.real_checkpoint_every if real else 1,
        validation_data=run.parallel.even(splits["valid"], evaluation=True),
        **(early_stopping if real else {}),
    )
    fits.histories[key] = state["history"]
    return model


"""## Forecasts and scores

Every model becomes a function `x → forecast` with the task's target shape; the MSEs
are computed the same way for all (`timeseries.forecast_mse`: seq2seq on the last step).
"""


def forecaster(fits, name, task, data, n_steps, real):
    """A function `x → forecast` for `name` on `task` (trains the model if needed)."""
    config = fits.run.config
    if name == "naive":
        return lambda x: timeseries.naive_forecast(x, task, config.horizon)
    fit_task = "one_step" if task == "iterative" else task
    if name == "linear_lstsq":
        W, b = timeseries.fit_linear_forecaster(*data[fit_task]["train"])

        def one(x):
            return timeseries.linear_forecast(x, W, b)
    else:
        if (fit_task, name) not in fits.models:
            fits.models[(fit_task, name)] = fit(fits, name, fit_task, data[fit_task], n_steps, real)
        model = fits.models[(fit_task, name)]

        def one(x):
            return fits.run.parallel.predict(model, x, batch_size=1024)
    if task == "iterative":
        return lambda x: timeseries.iterative_forecast(one, x, config.horizon)
    return one


def run_row(fits, label, task, name, data, info):
    row = {"dataset": label, "task": task, "model": name, "val_mse": None, "test_mse": None}
    config = fits.run.config
    if name == "ln_rnn" and not layer_norm_available(config):
        row["note"] = ("skipped: the installed kerasrnn.SimpleRNN has no layer_norm option"
                       if config.library == "kerasrnn" else "skipped: keras.layers has no layer-norm SimpleRNN")
        return row, None
    start = time.time()
    predict = forecaster(fits, name, task, data, info["n_steps"], info["real"])
    x_valid, y_valid = data[task]["valid"]
    x_test, y_test = data[task]["test"]
    test_pred = np.asarray(predict(x_test)).reshape(y_test.shape)
    row["val_mse"] = timeseries.forecast_mse(y_valid, predict(x_valid), task)
    row["test_mse"] = timeseries.forecast_mse(y_test, test_pred, task)
    row["seconds"] = round(time.time() - start, 1)
    return row, test_pred


"""## Report: the table beside Géron's, and plots of forecasts against the truth"""


def print_table(rows):
    naive = {(r["dataset"], r["task"]): r["test_mse"] for r in rows if r["model"] == "naive"}
    header = (f"{'dataset':<12} {'task':<11} {'model':<13} {'val MSE':>9} {'test MSE':>9} "
              f"{'Géron val':>9}  test vs naive")
    lines = [header, "-" * len(header)]
    for r in rows:
        if r["val_mse"] is None:
            lines.append(f"{r['dataset']:<12} {r['task']:<11} {r['model']:<13} {r.get('note', '')}")
            continue
        geron = r.get("geron_val_mse")
        base = naive.get((r["dataset"], r["task"]))
        versus = f"{r['test_mse'] / base - 1:+.0%}" if base and r["model"] != "naive" else ""
        lines.append(
            f"{r['dataset']:<12} {r['task']:<11} {r['model']:<13} {r['val_mse']:9.5f} "
            f"{r['test_mse']:9.5f} {(f'{geron:.4f}' if geron else ''):>9}  {versus}"
        )
    print("\n".join(lines))
    return "\n".join(lines)


def plot_forecasts(label, task, data, info, predictions, path):
    plt = common.pyplot()
    x_test, y_test = data[task]["test"]
    if info["real"] and task == "one_step":  # the whole test period, year by year
        fig, ax = plt.subplots(figsize=(10, 4))
        t = info["index"][-len(y_test):]
        ax.plot(t, y_test[:, 0], "k.-", label="truth")
        for name, pred in predictions.items():
            ax.plot(t, pred[:, 0], label=name, alpha=0.8)
        ax.set_xlabel("year" if label == "sunspots" else "t")
    else:  # three test windows: the inputs, then the truth and each forecast ahead
        fig, axes = plt.subplots(1, 3, figsize=(15, 4), sharey=True)
        n = x_test.shape[1]
        for i, ax in enumerate(axes):
            i = min(i, len(x_test) - 1)
            ax.plot(np.arange(n), x_test[i, :, 0], ".-", color="gray", label="input")
            truth = y_test[i, -1] if task == "seq2seq" else y_test[i]
            ahead = np.arange(n, n + len(truth))
            ax.plot(ahead, truth, "ko-", label="truth")
            for name, pred in predictions.items():
                guess = pred[i, -1] if task == "seq2seq" else pred[i]
                ax.plot(ahead, guess, "x-", label=name)
        ax = axes[0]
    ax.legend(fontsize=8)
    fig.suptitle(f"{label} — {task} (test split)")
    common.save_figure(fig, path)


def plot_training_curves(histories, folder):
    """`<dataset>_<task>_curves.png`: the loss of every model trained for that task."""
    groups = {}
    for key, records in histories.items():
        dataset_task, name = key.rsplit("-", 1)
        groups.setdefault(dataset_task, {})[name] = records
    return [common.plot_history(group, os.path.join(folder, f"{dataset_task.replace('-', '_')}_curves.png"),
                                title=f"{dataset_task}: mean squared error")
            for dataset_task, group in groups.items()]


"""## Main: config → data → models → train → evaluate → report"""


def run_recipe(config):
    run = common.start("forecasting", config)
    tasks = common.split_list(config.tasks, TASKS, "tasks")
    models = common.split_list(config.models, MODELS, "models")
    previous = common.read_json(run.path("results.json"), {}) if config.resume else {}
    rows = list(previous.get("metrics", {}).get("rows", []))
    histories = dict(previous.get("history", {}))
    finished = {(r["dataset"], r["task"], r["model"]) for r in rows if r["val_mse"] is not None}

    for entry in [d.strip() for d in config.data.split(",") if d.strip()]:
        label, data, info = make_datasets(entry, tasks, config)
        fits = Fits(run, label.replace(":", "_").replace(os.sep, "_"), histories)
        for task in tasks:
            predictions = {}
            for name in [m for m in models if m in TASK_MODELS[task] and (label, task, m) not in finished]:
                row, pred = run_row(fits, label, task, name, data, info)
                if label == "geron" and not config.smoke:
                    row["geron_val_mse"] = GERON_VAL_MSE.get((task, name))
                rows = [r for r in rows if (r["dataset"], r["task"], r["model"]) != (label, task, name)]
                rows.append(row)
                if pred is not None:
                    predictions[name] = pred
                print(f"[{label} {task} {name}] val {row['val_mse']} test {row['test_mse']}", flush=True)
                run.write_results({"rows": rows}, histories)
            if config.plots and predictions:
                plot_forecasts(label, task, data, info, predictions, run.path("plots", f"{fits.dataset_key}_{task}.png"))

    results = run.write_results({"rows": rows}, histories)
    if config.plots:
        plot_training_curves(histories, run.path("plots"))
    table = print_table(rows)
    print(f"\n{len(rows)} rows on {config.backend} in {results['seconds']} s → {run.path('results.json')}")
    return {**results, "table": table}


def main(argv=None):
    with common.user_errors():
        return run_recipe(parse_config(argv))


if __name__ == "__main__":
    main()
