"""All diagnostics of one batch in one call, and a Keras callback recording them during `fit`.

CSV: one row per (epoch, recurrent layer); columns

- `epoch` (0 = before training, `e` = after epoch `e`), `layer`;
- `grad_log10_ratio`, `grad_norm_first`, `grad_norm_last` (batch-mean norms, see
  `gradient_norms`), then the whole profile `grad_norm_1 … grad_norm_T`;
- for each recorded value `v` (`h`, and the gates: `i f g o c` for LSTM, `z r g` for
  GRU): `v_mean`, `v_var`, `v_saturation` (empty where unbounded);
- for each recurrent block `b` (`h`; `i f g o all`; `z r g all`):
  `b_spectral_radius`, `b_max_singular`.

TensorBoard: the same scalars under `<layer>/<column>`, plus histograms of the
log10 gradient-norm profile and of the singular values. Event files are written with
`tf.summary.write` when TensorFlow is importable (on any Keras backend; the
`tensorboard` package is not needed to write them, only to view them), else with the
`tensorboard` package's own event writer when it is installed (the package one views
the logs with; it needs no TensorFlow), else with `tensorboardX`, else TensorBoard
logging is skipped with a warning; the CSV is always written. No extra dependency is
added for this: every CPU install of the test matrix has TensorFlow, and a machine
with torch or JAX but no TensorFlow usually has `tensorboard`.
"""

import csv
import numbers
import os
import time
import warnings

import keras
import numpy as np

from kerasrnn.diagnostics.gradients import gradient_norms, log10_ratio
from kerasrnn.diagnostics.saturation import activation_statistics, check_tol
from kerasrnn.diagnostics.spectrum import recurrent_spectrum
from kerasrnn.diagnostics.trace import recurrent_layers

__all__ = ["RecurrentDiagnostics", "TensorBoardScalars", "diagnose", "read_csv"]


def diagnose(model, x, y, loss=None, layers=None, tol=0.01):
    """Gradient norms through time, activation statistics and spectra for one batch.

    Args:
        model: a Keras model containing kerasrnn recurrent layers.
        x, y: a batch of inputs and targets.
        loss: per-example loss (default: the compiled loss), see `gradient_norms`.
        layers: names of the recurrent layers (default: all).
        tol: saturation band, see `saturation_fraction`.

    Returns:
        dict `layer name -> {"grad_norms": (batch, time) array, "grad_log10_ratio":
        float, "activations": {...}, "spectrum": {...}}`.

    Example:

    >>> import numpy as np, keras, kerasrnn
    >>> from kerasrnn.diagnostics import diagnose
    >>> model = keras.Sequential([keras.Input((5, 2)), kerasrnn.GRU(3, name="gru"),
    ...                           keras.layers.Dense(1)])
    >>> report = diagnose(model, np.ones((4, 5, 2)), np.zeros((4, 1)), loss="mse")
    >>> tuple(report["gru"]["grad_norms"].shape), sorted(report["gru"]["spectrum"])
    ((4, 5), ['all', 'g', 'r', 'z'])
    """
    check_tol(tol)
    selected = recurrent_layers(model, layers)
    names = [layer.name for layer in selected]
    norms = gradient_norms(model, x, y, loss=loss, layers=names)
    stats = activation_statistics(model, x, layers=names, tol=tol)
    return {
        layer.name: {
            "grad_norms": norms[layer.name],
            "grad_log10_ratio": log10_ratio(norms[layer.name]),
            "activations": stats[layer.name],
            "spectrum": recurrent_spectrum(layer),
        }
        for layer in selected
    }


def flatten(report, epoch):
    """CSV rows (one per layer) from a `diagnose` report."""
    rows = []
    for layer, r in report.items():
        profile = r["grad_norms"].mean(axis=0)
        row = {
            "epoch": epoch,
            "layer": layer,
            "grad_log10_ratio": r["grad_log10_ratio"],
            "grad_norm_first": float(profile[0]),
            "grad_norm_last": float(profile[-1]),
        }
        for name, s in r["activations"].items():
            row[f"{name}_mean"] = s["mean"]
            row[f"{name}_var"] = s["var"]
            row[f"{name}_saturation"] = s["saturation"]
        for name, s in r["spectrum"].items():
            row[f"{name}_spectral_radius"] = s["spectral_radius"]
            row[f"{name}_max_singular"] = float(s["singular_values"][0])
        row.update({f"grad_norm_{t + 1}": float(v) for t, v in enumerate(profile)})
        rows.append(row)
    return rows


def read_csv(path):
    """The rows a `RecurrentDiagnostics` CSV holds, numbers as floats (`None` if empty).

    Args:
        path: the CSV file.

    Returns:
        list of dicts; `row["grad_norms"]` is the `(time,)` profile as an array.
    """
    rows = []
    with open(path, newline="") as f:
        for raw in csv.DictReader(f):
            row = {}
            for key, value in raw.items():
                if key == "layer":
                    row[key] = value
                elif key == "epoch":
                    row[key] = int(value)
                else:
                    row[key] = float(value) if value not in ("", None) else None
            steps = sorted(
                (int(k.rsplit("_", 1)[1]), v) for k, v in row.items()
                if k.startswith("grad_norm_") and k.rsplit("_", 1)[1].isdigit() and v is not None
            )
            row["grad_norms"] = np.array([v for _, v in steps])
            rows.append(row)
    return rows


class RecurrentDiagnostics(keras.callbacks.Callback):
    """Records gradient norms through time, saturation and spectra during `fit`.

    Before training (epoch 0, unless `record_initial=False`) and after every
    `every`-th epoch it runs `diagnose` on the fixed batch `(x, y)` — in inference
    mode, outside the training step, so training is unchanged — and appends the
    results to `history`, to a CSV file and to TensorBoard logs (see the module
    docstring for the columns and for how event files are written).

    Args:
        x, y: a fixed batch to diagnose (e.g. a slice of the validation set).
        csv_path: CSV file to append to (created with a header if new); `None`: none.
        log_dir: TensorBoard log directory; `None`: no event files.
        layers: names of the recurrent layers (default: all).
        loss: per-example loss (default: the compiled loss).
        every: record every `every` epochs (the last epoch is always recorded).
        record_initial: also record before the first epoch of this `fit`.
        initial_epoch: the `initial_epoch` given to `fit` (when resuming), so that
            rows are labelled with the true epoch numbers.
        tol: saturation band, see `saturation_fraction`.

    Attributes:
        history: list of `(epoch, diagnose report)` pairs recorded in this process.

    Example:

    >>> import os, tempfile, numpy as np, keras, kerasrnn
    >>> from kerasrnn.diagnostics import RecurrentDiagnostics, read_csv
    >>> model = keras.Sequential([keras.Input((5, 2)), kerasrnn.LSTM(3, name="lstm"),
    ...                           keras.layers.Dense(1)])
    >>> model.compile("adam", "mse")
    >>> x, y = np.ones((8, 5, 2), "float32"), np.zeros((8, 1), "float32")
    >>> path = os.path.join(tempfile.mkdtemp(), "diag.csv")
    >>> cb = RecurrentDiagnostics(x, y, csv_path=path)
    >>> _ = model.fit(x, y, epochs=2, verbose=0, callbacks=[cb])
    >>> [(row["epoch"], row["layer"], len(row["grad_norms"])) for row in read_csv(path)]
    [(0, 'lstm', 5), (1, 'lstm', 5), (2, 'lstm', 5)]
    """

    def __init__(
        self, x, y, csv_path=None, log_dir=None, layers=None, loss=None, every=1,
        record_initial=True, initial_epoch=0, tol=0.01,
    ):
        super().__init__()
        if isinstance(every, bool) or not isinstance(every, numbers.Integral) or every < 1:
            raise ValueError(f"`every` must be a positive integer; received {every!r}.")
        check_tol(tol)
        self.x, self.y = x, y
        self.csv_path = csv_path
        self.log_dir = log_dir
        self.layers = layers
        self.loss = loss
        self.every = every
        self.record_initial = record_initial
        self.tol = tol
        self.history = []
        self._writer = None
        self.initial_epoch = initial_epoch
        self._finished = self._recorded = None  # the last epoch finished, and recorded

    def on_train_begin(self, logs=None):
        if self.log_dir is not None and self._writer is None:
            self._writer = _summary_writer(self.log_dir)
        self._finished = self._recorded = None
        if self.record_initial:
            self._record(self.initial_epoch)

    def on_epoch_end(self, epoch, logs=None):
        done = self._finished = epoch + 1
        last = done == self.params.get("epochs")
        if done % self.every == 0 or last:
            self._record(done)

    def on_train_end(self, logs=None):
        # A fit stopped early (EarlyStopping, `stop_training`) ends before `epochs`:
        # its last epoch is recorded here, as the docstring promises.
        if self._finished is not None and self._recorded != self._finished:
            self._record(self._finished)
        if self._writer is not None:
            self._writer.flush()

    def _record(self, epoch):
        self._recorded = epoch
        report = diagnose(self.model, self.x, self.y, loss=self.loss, layers=self.layers, tol=self.tol)
        self.history.append((epoch, report))
        rows = flatten(report, epoch)
        if self.csv_path is not None:
            _append_csv(self.csv_path, rows)
        if self._writer is not None:
            for row, (layer, r) in zip(rows, report.items()):
                self._writer.write(epoch, layer, row, r)


class TensorBoardScalars(keras.callbacks.Callback):
    """Writes `fit`'s epoch logs (loss, metrics, learning rate) as TensorBoard scalars.

    `keras.callbacks.TensorBoard` needs the `tensorboard` package (and TensorFlow); this
    callback writes the same kind of event files with the writer `RecurrentDiagnostics`
    uses (`tf.summary.write` where TensorFlow is importable, else the `tensorboard`
    package's event writer, else `tensorboardX`), so the logs exist on any backend. Tags are `epoch_<name>` (`epoch_loss`,
    `epoch_val_loss`, ..., `epoch_learning_rate`), the step is the epoch number (1 for
    the first).

    Args:
        log_dir: the folder for the event files (created if needed).

    Example:

    >>> import os, tempfile, numpy as np, keras
    >>> from kerasrnn.diagnostics import TensorBoardScalars
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> model.compile("adam", "mse")
    >>> log_dir = tempfile.mkdtemp()
    >>> _ = model.fit(np.ones((4, 2)), np.ones((4, 1)), epochs=2, verbose=0,
    ...               callbacks=[TensorBoardScalars(log_dir)])
    >>> # Event files need one of the writers (without any: a warning, the logs skipped).
    >>> from importlib.util import find_spec
    >>> can_write = any(find_spec(m) for m in ("tensorflow", "tensorboard", "tensorboardX"))
    >>> any(name.startswith("events.out.tfevents") for name in os.listdir(log_dir)) == can_write
    True
    """

    def __init__(self, log_dir):
        super().__init__()
        self.log_dir = log_dir
        self._writer = None

    def on_train_begin(self, logs=None):
        if self._writer is None:
            self._writer = _summary_writer(self.log_dir, caller="TensorBoardScalars")

    def on_epoch_end(self, epoch, logs=None):
        if self._writer is None:
            return
        values = {f"epoch_{k}": float(v) for k, v in (logs or {}).items() if np.ndim(v) == 0}
        rate = getattr(self.model.optimizer, "learning_rate", None)
        if rate is not None and "epoch_learning_rate" not in values:
            values["epoch_learning_rate"] = float(keras.ops.convert_to_numpy(rate))
        self._writer.scalars(epoch + 1, values)
        self._writer.flush()


def _append_csv(path, rows):
    new = not os.path.exists(path) or os.path.getsize(path) == 0
    if new:
        fields = list(dict.fromkeys(k for row in rows for k in row))
    else:
        with open(path, newline="") as f:
            fields = next(csv.reader(f))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fields, restval="", extrasaction="ignore")
        if new:
            writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})


class _TFWriter:
    """Event files through `tf.summary.write` with the TensorBoard plugins' metadata.

    `tf.summary.scalar`/`histogram` need the `tensorboard` package, which
    `tensorflow-cpu` no longer installs; the low-level `tf.summary.write` is part of
    TensorFlow itself and writes the very same records.
    """

    def __init__(self, log_dir):
        import tensorflow as tf
        from tensorflow.core.framework import summary_pb2

        if keras.backend.backend() != "tensorflow":
            try:  # only the CPU is needed to write summaries; leave the GPU to Keras
                tf.config.set_visible_devices([], "GPU")
            except RuntimeError:
                pass
        self.tf = tf
        self.metadata = {
            plugin: summary_pb2.SummaryMetadata(
                plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=plugin)
            ).SerializeToString()
            for plugin in ("scalars", "histograms")
        }
        self.writer = tf.summary.create_file_writer(log_dir)

    def scalars(self, step, values):
        tf = self.tf
        with self.writer.as_default():
            for tag, value in values.items():
                tf.summary.write(tag, tf.constant(value, tf.float32), step=step,
                                 metadata=self.metadata["scalars"])

    def write(self, step, layer, row, report):
        tf = self.tf
        self.scalars(step, {f"{layer}/{key}": value for key, value in _scalars(row)})
        with self.writer.as_default():
            for key, values in _histograms(report):
                tf.summary.write(f"{layer}/{key}", tf.constant(_buckets(values)), step=step,
                                 metadata=self.metadata["histograms"])

    def flush(self):
        self.writer.flush()


def _buckets(values, bins=30):
    """TensorBoard's histogram tensor: rows `[left edge, right edge, count]`."""
    values = np.asarray(values, "float64").ravel()
    counts, edges = np.histogram(values, bins=bins)
    return np.stack([edges[:-1], edges[1:], counts.astype("float64")], axis=1)


class _TensorBoardWriter:
    """Event files through the `tensorboard` package alone (no TensorFlow): its own
    event-file writer and protocol buffers, with the records `_TFWriter` writes."""

    def __init__(self, log_dir):
        from tensorboard.compat.proto import (
            event_pb2,
            summary_pb2,
            tensor_pb2,
            types_pb2,
        )
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self.event_pb2, self.summary_pb2, self.tensor_pb2 = event_pb2, summary_pb2, tensor_pb2
        self.dtypes = {"float32": types_pb2.DT_FLOAT, "float64": types_pb2.DT_DOUBLE}
        self.metadata = {
            plugin: summary_pb2.SummaryMetadata(
                plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=plugin)
            )
            for plugin in ("scalars", "histograms")
        }
        self.writer = EventFileWriter(log_dir)

    def _tensor(self, value, dtype):
        array = np.asarray(value, dtype)
        proto = self.tensor_pb2.TensorProto(dtype=self.dtypes[dtype], tensor_content=array.tobytes())
        for size in array.shape:
            proto.tensor_shape.dim.add(size=size)
        return proto

    def _event(self, step, values, plugin, dtype):
        summary = self.summary_pb2.Summary(value=[
            self.summary_pb2.Summary.Value(tag=tag, tensor=self._tensor(value, dtype), metadata=self.metadata[plugin])
            for tag, value in values
        ])
        self.writer.add_event(self.event_pb2.Event(wall_time=time.time(), step=step, summary=summary))

    def scalars(self, step, values):
        self._event(step, values.items(), "scalars", "float32")

    def write(self, step, layer, row, report):
        self.scalars(step, {f"{layer}/{key}": value for key, value in _scalars(row)})
        histograms = [(f"{layer}/{key}", _buckets(values)) for key, values in _histograms(report)]
        self._event(step, histograms, "histograms", "float64")

    def flush(self):
        self.writer.flush()


class _TensorBoardXWriter:
    def __init__(self, log_dir):
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(log_dir)

    def scalars(self, step, values):
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def write(self, step, layer, row, report):
        self.scalars(step, {f"{layer}/{key}": value for key, value in _scalars(row)})
        for key, values in _histograms(report):
            self.writer.add_histogram(f"{layer}/{key}", values, step)

    def flush(self):
        # tensorboardX's `flush` leaves the events still queued for its writer thread
        # unwritten (a run that ends then loses them); `close` drains the queue. The
        # next write opens a new event file in the same folder, which TensorBoard
        # reads as one run.
        self.writer.close()


def _summary_writer(log_dir, caller="RecurrentDiagnostics"):
    os.makedirs(log_dir, exist_ok=True)
    for writer in (_TFWriter, _TensorBoardWriter, _TensorBoardXWriter):
        try:
            return writer(log_dir)
        except ImportError:
            continue
    warnings.warn(
        f"{caller}: TensorBoard logs skipped (none of tensorflow, tensorboard or "
        "tensorboardX is installed; `pip install tensorboard` to get them). The CSV "
        "is still written.",
        stacklevel=3,
    )
    return None


def _scalars(row):
    for key, value in row.items():
        if key in ("epoch", "layer") or (key.startswith("grad_norm_") and key[10:].isdigit()):
            continue
        if value is not None:
            yield key, float(value)


def _histograms(report):
    profile = np.maximum(report["grad_norms"].mean(axis=0), 1e-38)
    yield "grad_norm_log10_profile", np.log10(profile)
    for name, s in report["spectrum"].items():
        yield f"{name}_singular_values", s["singular_values"]
