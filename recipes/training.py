"""Training that loses nothing and resumes exactly: `fit`, its checkpoints, `EpochBatches`.

`fit(run, name, build, data, ...)` trains one model with a checkpoint after every epoch
(or every `every` epochs) in `OUTPUT/checkpoints/NAME/`:

    epoch-007.keras        the model with its optimizer state
    epoch-007.json         what else the run needs to continue exactly: the epoch, the
                           history, early-stopping state, and every random state
    best-epoch-005.npz     the best weights so far (when a metric is monitored)

Each file is written under a temporary name and renamed (`common.atomic_path`); the
JSON is written last, so it only ever names complete files. The two newest checkpoints
are kept: if the newest cannot be read (a disk error, a file copied half-way), the
error names it and the one before.

A resumed run ends where an uninterrupted one would: the data is ordered at each epoch
by its own `set_epoch` (`EpochBatches`, or a recipe's dataset), and every random state
that a `.keras` file does not hold is saved beside it — the state of every
`SeedGenerator` in the model (dropout masks; Keras saves them with their initial value
only) and the global Python, NumPy and torch generators (Keras shuffles a dataset's
batches with Python's, when asked to).
"""

import glob
import math
import os
import random
import re
import time
import zipfile

import keras
import numpy as np

from kerasrnn.diagnostics import TensorBoardScalars
from recipes.common import UsageError, atomic_path, read_json, write_json

KEEP = 2  # checkpoints kept: the newest, and one to fall back to


class CheckpointError(UsageError):
    """A checkpoint that cannot be read; the message names it and any earlier one."""


# ------------------------------------------------------------------ random state
def _seed_variables(model):
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


def random_state(model):
    """Every random state a run depends on besides the weights, as JSON-able lists."""
    numpy_state = np.random.get_state()
    state = {
        "seed_generators": [keras.ops.convert_to_numpy(v).tolist() for v in _seed_variables(model)],
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
    }
    if keras.backend.backend() == "torch":
        import torch

        state["torch"] = torch.get_rng_state().tolist()
    return state


def restore_random_state(model, state):
    """Puts back what `random_state` saved (the model must have the same layers)."""
    variables = _seed_variables(model)
    if len(variables) != len(state["seed_generators"]):
        raise CheckpointError(
            f"the checkpoint holds {len(state['seed_generators'])} random-seed states but the "
            f"model has {len(variables)}: it was written by another version of the recipe; "
            "start again without --resume."
        )
    for variable, value in zip(variables, state["seed_generators"]):
        variable.assign(np.asarray(value, dtype=keras.backend.standardize_dtype(variable.dtype)))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
    if "torch" in state and keras.backend.backend() == "torch":
        import torch

        torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))


# -------------------------------------------------------------------- checkpoints
def save_model(model, path):
    """`model.save(path)`, atomically."""
    with atomic_path(path) as partial:
        model.save(partial)


class Checkpoints:
    """The checkpoint files of one model in `directory` (see the module docstring)."""

    def __init__(self, directory):
        self.directory = directory
        os.makedirs(directory, exist_ok=True)

    def _file(self, name):
        return os.path.join(self.directory, name)

    def states(self):
        """Paths of the checkpoint JSON files, newest first."""
        numbered = []
        for path in glob.glob(self._file("epoch-*.json")):
            match = re.fullmatch(r"epoch-(\d+)\.json", os.path.basename(path))
            if match:
                numbered.append((int(match.group(1)), path))
        return [path for _, path in sorted(numbered, reverse=True)]

    def clear(self):
        """Removes every checkpoint (a fresh run in a used folder)."""
        for path in glob.glob(self._file("*")):
            if os.path.isfile(path):
                os.remove(path)

    def save(self, model, state, best_weights=None):
        """Writes the checkpoint of `state["epoch"]`: model, best weights, then the JSON."""
        epoch = state["epoch"]
        state["model"] = f"epoch-{epoch:03d}.keras"
        save_model(model, self._file(state["model"]))
        if best_weights is not None:
            state["monitor"]["weights"] = f"best-epoch-{state['monitor']['best_epoch']:03d}.npz"
            path = self._file(state["monitor"]["weights"])
            if not os.path.exists(path):
                with atomic_path(path) as partial, open(partial, "wb") as f:
                    np.savez(f, *best_weights)
        state["random"] = random_state(model)
        write_json(self._file(f"epoch-{epoch:03d}.json"), state)
        self._prune()

    def _prune(self):
        kept = [read_json(p) for p in self.states()[:KEEP]]
        wanted = {name for s in kept for name in (s.get("model"), (s.get("monitor") or {}).get("weights")) if name}
        wanted |= {f"epoch-{s['epoch']:03d}.json" for s in kept}
        for path in glob.glob(self._file("*")):
            if os.path.basename(path) not in wanted and os.path.isfile(path):
                os.remove(path)

    def load_latest(self):
        """`(model, state, best_weights)` of the newest checkpoint, or `(None, None, None)`."""
        states = self.states()
        if not states:
            return None, None, None
        state = read_json(states[0])
        model_path = self._file(state["model"])
        try:
            _check_archive(model_path)
            model = keras.saving.load_model(model_path)
            best = None
            if (state.get("monitor") or {}).get("weights"):
                with np.load(self._file(state["monitor"]["weights"])) as saved:
                    best = [saved[f"arr_{i}"] for i in range(len(saved.files))]
        except Exception as err:  # noqa: BLE001 (any failure to read is reported the same way)
            raise CheckpointError(self._unreadable(model_path, err, states)) from None
        return model, state, best

    def _unreadable(self, path, err, states):
        message = f"checkpoint {path} cannot be read ({type(err).__name__}: {err})."
        for older in states[1:]:
            previous = read_json(older)
            try:
                _check_archive(self._file(previous["model"]))
            except (OSError, zipfile.BadZipFile):
                continue
            return (f"{message} The earlier checkpoint {self._file(previous['model'])} (epoch "
                    f"{previous['epoch']}) is intact: delete {states[0]} and run with --resume "
                    "again to continue from it.")
        return (f"{message} No earlier checkpoint is kept in {self.directory}: run again "
                "without --resume to start over.")


def _check_archive(path):
    """OSError/BadZipFile unless `path` is a complete zip archive (a `.keras` file)."""
    with zipfile.ZipFile(path) as archive:
        bad = archive.testzip()
    if bad is not None:
        raise zipfile.BadZipFile(f"member {bad} is corrupt")


# ------------------------------------------------------------------------------ fit
class EpochCheckpoint(keras.callbacks.Callback):
    """After every epoch: the history, early stopping, and a checkpoint every `every`."""

    def __init__(self, checkpoints, state, every=1, patience=None, best_weights=None):
        super().__init__()
        self.checkpoints, self.state, self.every, self.patience = checkpoints, state, every, patience
        self.best_weights = best_weights

    def on_train_begin(self, logs=None):
        # Restored here, not when the model is loaded: `fit` first draws a batch to build
        # the model (and Keras shuffles batches with Python's `random` to do it), which an
        # uninterrupted run did once, at its start.
        if self.state.get("random"):
            restore_random_state(self.model, self.state["random"])

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.time()
        self.steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps = batch + 1  # the last step's index (several per call with steps_per_execution)

    def on_epoch_end(self, epoch, logs=None):
        state = self.state
        record = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items() if np.ndim(v) == 0}}
        record["seconds"] = round(time.time() - self.started, 2)
        record["steps"] = self.steps  # the updates this epoch made
        state["history"].append(record)
        state["epoch"] = epoch + 1
        monitor = state.get("monitor")
        if monitor:
            self._early_stopping(monitor, record)
        if state["epoch"] % self.every == 0 or state["stopped"]:
            self.save()

    def _early_stopping(self, monitor, record):
        value, best = record[monitor["name"]], monitor["best"]
        if best is None or (value > best if monitor["mode"] == "max" else value < best):
            monitor.update(best=value, best_epoch=record["epoch"], wait=0)
            self.best_weights = self.model.get_weights()
            return
        monitor["wait"] += 1
        if self.patience is not None and monitor["wait"] >= self.patience:
            self.state["stopped"] = True
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        monitor = self.state.get("monitor")
        if self.state["stopped"] and monitor:
            print(f"Early stopping after epoch {self.state['epoch']}: {monitor['name']} has not improved "
                  f"for {monitor['wait']} epoch(s); best at epoch {monitor['best_epoch']}.", flush=True)

    def save(self):
        self.checkpoints.save(self.model, self.state, self.best_weights)


class SetEpoch(keras.callbacks.Callback):
    """Tells a dataset with `set_epoch` which epoch begins (its order depends on it)."""

    def __init__(self, data):
        super().__init__()
        self.data = data

    def on_epoch_begin(self, epoch, logs=None):
        self.data.set_epoch(epoch)


def fit(run, name, build, data, *, epochs, seed=None, monitor=None, patience=None, restore_best=False,
        every=1, callbacks=(), **fit_kwargs):
    """Trains model `name` (or continues it with `--resume`); returns `(model, state)`.

    Args:
        run: the `common.Run`.
        name: the model's name: its checkpoints are in `OUTPUT/checkpoints/NAME/`, its
            history in `results.json`'s `history[NAME]`.
        build: function returning the compiled model (called after seeding).
        data: the training data for `model.fit` (its `set_epoch` is called each epoch).
        epochs: epochs in all (`--resume` continues up to it).
        seed: seeds weights and dropout (default `--seed`).
        monitor: `("val_accuracy", "max")` or `("val_loss", "min")`: keep the best epoch's
            weights and stop after `patience` epochs without a gain.
        restore_best: end with the best epoch's weights.
        every: epochs between checkpoints (the last epoch is always saved).
        callbacks: more Keras callbacks, or a function of the state (the epoch to
            start from, ...) that returns them.
        **fit_kwargs: the rest of `model.fit`'s arguments (`validation_data`, ...).

    Returns:
        `(model, state)`; `state["history"]` is the list of per-epoch records,
        `state["resumed_from"]` the epoch this process started from (0: a fresh start).
    """
    checkpoints = Checkpoints(os.path.join(run.config.output, "checkpoints", name))
    model, state, best = checkpoints.load_latest() if run.config.resume else (None, None, None)
    if model is None:
        if run.config.resume:
            print(f"[{name}] no checkpoint in {checkpoints.directory}: training from the start", flush=True)
        checkpoints.clear()
        keras.utils.set_random_seed(run.config.seed if seed is None else seed)
        model = build()
        state = {"epoch": 0, "stopped": False, "history": [], "monitor": None}
        if monitor:
            state["monitor"] = {"name": monitor[0], "mode": monitor[1], "best": None, "best_epoch": 0,
                                "wait": 0, "weights": None}
    else:
        print(f"[{name}] resuming after epoch {state['epoch']} (checkpoint {state['model']})", flush=True)
    run.parallel.prepare(model)
    resumed_from = state["epoch"]
    checkpoint = EpochCheckpoint(checkpoints, state, every, patience, best)
    if state["epoch"] < epochs and not state["stopped"]:
        order = [SetEpoch(data)] if hasattr(data, "set_epoch") else []
        log_dir = run.tensorboard_dir(name)
        logs = [TensorBoardScalars(log_dir)] if log_dir else []
        extra = callbacks(state) if callable(callbacks) else list(callbacks)
        # The data orders itself (set_epoch). Keras would also shuffle a dataset's batches
        # unless told not to (with Python's `random`, which the checkpoints hold too).
        fit_kwargs.setdefault("shuffle", False)
        model.fit(data, epochs=epochs, initial_epoch=state["epoch"], verbose=run.verbose,
                  callbacks=[*order, *extra, checkpoint, *logs], **fit_kwargs)
        if state["epoch"] % every:  # the last epoch, when it was not a checkpoint epoch
            checkpoint.save()
    if restore_best and checkpoint.best_weights is not None:
        model.set_weights(checkpoint.best_weights)
    return model, {**state, "resumed_from": resumed_from}


# ----------------------------------------------------------------------------- data
class EpochBatches(keras.utils.PyDataset):
    """Batches of arrays, reshuffled at each epoch in an order that depends only on
    `(seed, epoch)`.

    `fit(x, y, shuffle=True)` shuffles with NumPy's global generator on JAX, torch's on
    torch and inside a `tf.data` pipeline on TensorFlow, where no checkpoint can reach
    it; these batches are the same on every backend, and a resumed run sees the
    batches an uninterrupted one sees (`fit` calls `set_epoch`).

    Args:
        x: an array or a list of arrays (the model's inputs), first axis the examples.
        y: the targets.
        batch_size: examples per batch (the last batch may be smaller).
        seed: the shuffling seed.
        sample_weight: optional weights, one row per example.
    """

    def __init__(self, x, y, batch_size, seed=0, sample_weight=None):
        super().__init__()
        self.x, self.y, self.sample_weight = x, y, sample_weight
        self.batch_size, self.seed, self.size = int(batch_size), seed, len(y)
        self.set_epoch(0)

    def set_epoch(self, epoch):
        self.order = np.random.default_rng([self.seed, epoch]).permutation(self.size)

    def __len__(self):
        return math.ceil(self.size / self.batch_size)

    def __getitem__(self, index):
        rows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        x = tuple(a[rows] for a in self.x) if isinstance(self.x, (list, tuple)) else self.x[rows]
        if self.sample_weight is None:
            return x, self.y[rows]
        return x, self.y[rows], self.sample_weight[rows]
