"""Training on many devices: `--distribute`, the global batch, and batches that divide evenly.

`--distribute none` (the default) trains on the backend's default device, as always.
`--distribute data` copies the model to every local device and splits each batch
between them (data parallelism), with the backend's own machinery:

- JAX: `keras.distribution.DataParallel` over `keras.distribution.list_devices()`;
  across hosts too, once `keras.distribution.initialize()` has joined the processes
  (called here when `KERAS_DISTRIBUTION_JOB_ADDRESSES` or
  `KERAS_DISTRIBUTION_NUM_PROCESSES` is set: see Keras's documentation of it);
- TensorFlow: `tf.distribute.MirroredStrategy` over the local GPUs (over the logical
  CPUs where there is no GPU), set as the default strategy so that every model is
  built, loaded and trained under it;
- torch: Keras 3 has no distribution support on torch; `configure` says so.

`--distribute model` (translation only, JAX only) shards the largest weights across
devices with a `keras.distribution.LayoutMap` (`keras.distribution.ModelParallel`).

`--batch-size` is the global batch: all devices together. Each of the `replicas`
data-parallel copies computes `batch_size / replicas` examples, so the same command
trains the same model on 1, 2 or 8 devices. Every batch a distributed model sees has
exactly its full number of rows: a dataset's short last batch is filled up with
*filler rows* (`EvenBatches`) — copies of the batch's first input whose sample weight
is 0 and whose target is all zeros (padding, for the masked sequence losses) — and
`Parallel.predict` drops the predictions of the fillers. So every real example counts
once, fillers never count, and the batches (hence the losses and the updates) do not
depend on the number of devices. A loss averaged over the batch (Keras's
`sum_over_batch_size`) divides by the full batch size, fillers included, as
`tf.nn.compute_average_loss` does with the global batch size: the short last batch of an
epoch moves the weights `real / batch_size` as far as it would on its own.

The learning rate follows `--lr-scaling`: `none` (the default) keeps each recipe's
rates; `linear` multiplies them by `batch_size / default batch_size` (Goyal et al. 2017,
"Accurate, Large Minibatch SGD"), for a global batch grown with the number of devices.
"""

import dataclasses
import math
import os
import re

import keras
import numpy as np

from recipes import common
from recipes.common import UsageError


@dataclasses.dataclass
class Parallel:
    """How a run uses its devices; `Run.parallel`. Recipes ask it for even batches
    (`even`) and predictions without fillers (`predict`)."""

    mode: str = "none"
    api: str = ""  # the Keras or TensorFlow object that distributes the work
    devices: tuple = ()
    replicas: int = 1  # data-parallel copies of the model: each batch is split among them
    model_shards: int = 1  # devices each sharded weight is split over (--distribute model)
    processes: int = 1
    process: int = 0
    batch_size: int = 0  # the global batch
    lr_scaling: str = "none"
    lr_factor: float = 1.0
    layouts: dict = dataclasses.field(default_factory=dict)  # --distribute model: {path regex: axes}

    @property
    def distributed(self):
        return self.mode != "none"

    def rows(self, batch_size):
        """`batch_size` rounded up to a multiple of the replicas (an evaluation batch)."""
        return -(-int(batch_size) // self.replicas) * self.replicas

    def even(self, data, batch_size=None, evaluation=False):
        """`data` as batches that divide evenly over the replicas: an `EvenBatches` of
        `batch_size` rows (default `--batch-size`), or `data` itself when not distributed.

        `data` is a `keras.utils.PyDataset` or a tuple of arrays `(x, y[, sample_weight])`.
        `evaluation=True` for `validation_data` with a loss averaged over the batch's
        rows (Keras's `sum_over_batch_size`), `evaluation="per_batch"` for one averaged
        over a count of its own (`MaskedSequenceLoss`: tokens): see `EvenBatches`.
        """
        if not self.distributed or data is None:
            return data
        return EvenBatches(data, self.rows(batch_size or self.batch_size), self.process, self.processes,
                           evaluation=evaluation)

    def predict(self, model, x, batch_size=None):
        """`model.predict(x)` as a NumPy array: one row per real example, in order.

        `x` is an array, a list of arrays (a model's inputs) or a `PyDataset`.
        """
        if not self.distributed:
            return model.predict(x, batch_size=None if _is_dataset(x) else batch_size, verbose=0)
        if self.processes > 1:
            raise UsageError(
                f"training is done and checkpointed, but predictions with --distribute {self.mode} across "
                f"{self.processes} processes are not supported (Keras returns arrays that span the hosts): "
                "evaluate on one host with the same command plus --resume --distribute none, which finds "
                "every epoch done and only evaluates."
            )
        batches = EvenBatches(x if _is_dataset(x) else (x,), self.rows(batch_size or self.batch_size))
        predicted = model.predict(batches, verbose=0)
        return predicted[batches.real_rows()]

    def prepare(self, model):
        """`model`, its optimizer made to behave on many replicas as on one device.

        On TensorFlow, Keras 3 clips gradients (`clipnorm`, `global_clipnorm`,
        `clipvalue`) in each replica *before* the replicas' gradients are summed: each
        replica clips its own share (a `1 / replicas` part of the gradient), so the
        clipping, and the training, change with the number of devices. Here the
        optimizer sums the shares first and clips the sum; the first replica hands
        the clipped gradient on, the others nothing, so Keras's own sum that follows
        gives it unchanged. On JAX
        the gradient is computed once for the whole (sharded) batch, nothing to do.
        Called on every model a recipe builds or resumes (`training.fit`).
        """
        if self.api == "tf.distribute.MirroredStrategy" and self.replicas > 1 and model.optimizer is not None:
            _clip_after_all_reduce(getattr(model.optimizer, "inner_optimizer", model.optimizer))
        for pattern in self.layouts:  # a pattern that matches nothing would shard nothing, silently
            if not any(re.fullmatch(pattern, v.path) for v in model.weights):
                raise ValueError(f"--distribute model: the layout {pattern!r} matches no weight of the model "
                                 f"(its paths: {', '.join(v.path for v in model.weights[:6])}, ...).")
        return model

    def describe(self):
        """The `distribution` entry of `results.json`."""
        return {
            "mode": self.mode, "api": self.api, "devices": len(self.devices), "device_names": list(self.devices),
            "replicas": self.replicas, "model_shards": self.model_shards, "processes": self.processes,
            "global_batch_size": self.batch_size, "per_replica_batch_size": self.batch_size // self.replicas,
            "lr_scaling": self.lr_scaling, "lr_factor": self.lr_factor,
            "sharded": {pattern: list(axes) for pattern, axes in self.layouts.items()},
            "batches": "every batch full; fillers weigh 0" if self.distributed else "as the data gives them",
        }


def _is_dataset(data):
    return isinstance(data, keras.utils.PyDataset)


# --------------------------------------------------------------------------- setup
def configure(config, layouts=None):
    """Sets up `config.distribute` on the backend Keras runs; returns the `Parallel`.

    Args:
        config: the run's config (`distribute`, `batch_size`, `lr_scaling`, and
            `model_shards` where the recipe has `--distribute model`).
        layouts: for `--distribute model`, `{variable path regex: axes}` of the
            sharded weights (`keras.distribution.LayoutMap` entries; each regex must
            match a whole path, and `prepare` checks that it matches a weight).
    """
    mode = config.distribute
    backend = keras.backend.backend()
    lr_factor = common.lr_factor(config)
    if mode == "none":
        return Parallel(batch_size=config.batch_size, lr_scaling=config.lr_scaling, lr_factor=lr_factor)
    if backend == "torch":
        raise UsageError(
            f"--distribute {mode}: Keras 3 has no distribution support on the torch backend "
            "(keras.distribution runs on JAX, tf.distribute on TensorFlow). Use --backend jax or "
            "--backend tensorflow, or train with torch's DistributedDataParallel (torchrun) in a "
            "loop of your own."
        )
    if mode == "model" and backend != "jax":
        raise UsageError("--distribute model needs --backend jax: Keras 3's ModelParallel (LayoutMap) "
                         "runs on JAX only.")
    if backend == "jax":
        parallel = _jax(mode, config, layouts)
    else:
        parallel = _tensorflow()
    parallel.batch_size, parallel.lr_scaling, parallel.lr_factor = config.batch_size, config.lr_scaling, lr_factor
    if config.batch_size % parallel.replicas:
        lower = config.batch_size // parallel.replicas * parallel.replicas
        raise UsageError(
            f"--batch-size {config.batch_size} is the global batch and must split evenly over the "
            f"{parallel.replicas} data-parallel replicas: use a multiple of {parallel.replicas} "
            f"({', '.join(str(n) for n in (lower, lower + parallel.replicas) if n > 0)})."
        )
    return parallel


def _jax(mode, config, layouts):
    if os.environ.get("KERAS_DISTRIBUTION_JOB_ADDRESSES") or os.environ.get("KERAS_DISTRIBUTION_NUM_PROCESSES"):
        keras.distribution.initialize()
    import jax

    devices = keras.distribution.list_devices()
    common = {"devices": tuple(devices), "processes": jax.process_count(), "process": jax.process_index()}
    # Each process feeds its own share of every batch (`EvenBatches` slices it), so
    # Keras must not try to shard the (Python) dataset itself.
    if mode == "data":
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False))
        return Parallel(mode, "keras.distribution.DataParallel", replicas=len(devices), **common)
    shards = config.model_shards or len(devices)
    if len(devices) % shards:
        raise UsageError(f"--model-shards {shards} must divide the {len(devices)} devices.")
    mesh = keras.distribution.DeviceMesh((len(devices) // shards, shards), ("batch", "model"), devices)
    layout_map = keras.distribution.LayoutMap(mesh)
    for pattern, axes in (layouts or {}).items():
        layout_map[pattern] = axes
    keras.distribution.set_distribution(
        keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch", auto_shard_dataset=False)
    )
    return Parallel(mode, "keras.distribution.ModelParallel", replicas=len(devices) // shards,
                    model_shards=shards, layouts=dict(layouts or {}), **common)


def _tensorflow():
    import tensorflow as tf

    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    names = [d.name for d in devices]
    strategy = tf.distribute.MirroredStrategy(names)
    # The default strategy from now on: models built, loaded and trained in this
    # process are mirrored on every device without a `scope()` around each.
    tf.distribute.experimental_set_strategy(strategy)
    return Parallel("data", "tf.distribute.MirroredStrategy", devices=tuple(names),
                    replicas=strategy.num_replicas_in_sync)


def _clip_after_all_reduce(optimizer):
    """`optimizer` (on TensorFlow) clips the gradient summed over the replicas."""
    import tensorflow as tf

    if getattr(optimizer, "_kerasrnn_global_clip", False) or not (
        optimizer.clipnorm or optimizer.global_clipnorm or optimizer.clipvalue
    ):
        return
    clip = optimizer._clip_gradients  # Keras's: one replica's gradients in, clipped out

    def clip_sum(grads):
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return clip(grads)
        present = [g for g in grads if g is not None]
        summed = iter(context.all_reduce(tf.distribute.ReduceOp.SUM, present))
        clipped = clip([None if g is None else next(summed) for g in grads])
        first = tf.equal(context.replica_id_in_sync_group, 0)
        return [None if g is None else _only_if(first, g) for g in clipped]

    optimizer._clip_gradients = clip_sum
    optimizer._kerasrnn_global_clip = True


def _only_if(first, gradient):
    """`gradient` on the first replica, nothing on the others: the sum over the replicas
    that Keras takes next is then `gradient` exactly (an `IndexedSlices`, the gradient of
    an embedding, keeps its rows as they are: no row is doubled or halved)."""
    import tensorflow as tf

    if isinstance(gradient, tf.IndexedSlices):
        rows = tf.where(first, tf.shape(gradient.indices)[0], 0)
        return tf.IndexedSlices(gradient.values[:rows], gradient.indices[:rows], gradient.dense_shape)
    return tf.where(first, gradient, tf.zeros_like(gradient))


# ------------------------------------------------------------------------ batches
class EvenBatches(keras.utils.PyDataset):
    """The batches of `data`, each filled up to exactly `rows` examples.

    A short batch gets `rows - n` filler rows: copies of its first input, targets of
    zeros and sample weight 0, so no loss or weighted metric counts them (and a masked
    sequence loss finds only padding in their targets). Every batch comes with sample
    weights: the data's own (fillers: 0), else 1 for each real row. With several
    processes (JAX across hosts), each yields its own contiguous share of every batch.

    Args:
        data: a `keras.utils.PyDataset` of `x`, `(x,)`, `(x, y)` or `(x, y, w)` batches,
            or a tuple of arrays `(x[, y[, w]])` (`x` an array or a list of arrays) cut
            into batches of `rows`.
        rows: examples in every batch.
        process, processes: this process's index and the number of processes.
        evaluation: scale the weights of the real rows by `batches · rows / real rows`
            (the same for every batch, so no weighted metric changes). Keras weighs
            each batch's loss by its rows, fillers included, when it averages the loss
            over the batches: a loss averaged over the rows (`sum_over_batch_size`,
            fillers weighing 0) came out as the mean over the real examples times
            `real rows / (batches · rows)` (52 validation reviews in two batches of 32:
            the loss × 52/64). With the scale it is that mean, as without fillers. Not
            for a loss that divides by its own count (`MaskedSequenceLoss`: tokens):
            `"per_batch"` scales batch `b`'s real rows by `batches · real_b / real rows`
            instead, so that the average Keras takes (each batch weighing `rows`) is
            the one without fillers (each weighing `real_b`). That changes weighted
            metrics: for models whose metrics take no sample weight.

    Example:

    >>> import numpy as np
    >>> batches = EvenBatches((np.arange(5.0)[:, None], np.arange(5.0)), rows=4)
    >>> x, y, w = batches[1]
    >>> x[:, 0].tolist(), y.tolist(), w.tolist()
    ([4.0, 4.0, 4.0, 4.0], [4.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0])
    >>> int(batches.real_rows().sum())
    5
    """

    def __init__(self, data, rows, process=0, processes=1, evaluation=False):
        super().__init__()
        if rows % processes:
            raise ValueError(f"`rows` ({rows}) must split evenly over the {processes} processes.")
        self.data = data if _is_dataset(data) else _ArrayBatches(data, rows)
        self.rows, self.process, self.processes = int(rows), process, processes
        if evaluation not in (False, True, "per_batch"):
            raise ValueError(f"`evaluation` must be False, True or 'per_batch'; received {evaluation!r}.")
        self.weight_scales = [1.0] * len(self)  # one per batch
        if evaluation and len(self):
            real = self.real_rows().reshape(len(self), self.rows).sum(axis=1)
            total = max(int(real.sum()), 1)
            if evaluation == "per_batch":
                self.weight_scales = [len(self) * int(n) / total for n in real]
            else:
                self.weight_scales = [len(self) * self.rows / total] * len(self)

    def set_epoch(self, epoch):
        if hasattr(self.data, "set_epoch"):
            self.data.set_epoch(epoch)

    def on_epoch_end(self):
        self.data.on_epoch_end()

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        batch = self.data[index]
        x, y, w = (*batch, None, None)[:3] if isinstance(batch, tuple) else (batch, None, None)
        n = _length(x)
        if n > self.rows:
            raise ValueError(f"batch {index} holds {n} examples, more than the {self.rows} of an even batch.")
        fill = self.rows - n
        # Several inputs as a tuple: tf.data takes a list for one tensor, not a structure.
        x = tuple(x) if isinstance(x, list) else x
        x = keras.tree.map_structure(lambda a: np.concatenate([a, np.repeat(a[:1], fill, axis=0)]), x)
        if y is None:
            return self._share((x,))
        y = keras.tree.map_structure(lambda a: np.concatenate([a, np.zeros((fill, *a.shape[1:]), a.dtype)]), y)
        if w is None:  # one weight per row, shaped to broadcast over a loss per time step
            w = np.ones((n, 1) if keras.tree.flatten(y)[0].ndim > 1 else (n,), "float32")
        w = np.asarray(w, "float32") * np.float32(self.weight_scales[index])
        w = np.concatenate([w, np.zeros((fill, *w.shape[1:]), "float32")])
        return self._share((x, y, w))

    def _share(self, batch):
        if self.processes == 1:
            return batch
        size = self.rows // self.processes
        part = slice(self.process * size, (self.process + 1) * size)
        return keras.tree.map_structure(lambda a: a[part], batch)

    def real_rows(self):
        """A boolean array over all rows of all batches: True for the real examples."""
        counts = [_length(_inputs(self.data[i])) for i in range(len(self))]
        return np.concatenate([np.arange(self.rows) < n for n in counts]) if counts else np.zeros(0, bool)


class _ArrayBatches:
    """Consecutive batches of `rows` examples of a tuple of arrays `(x[, y[, w]])`."""

    def __init__(self, arrays, rows):
        self.arrays, self.rows = tuple(a for a in arrays if a is not None), rows
        self.size = _length(self.arrays[0])

    def __len__(self):
        return math.ceil(self.size / self.rows)

    def __getitem__(self, index):
        part = slice(index * self.rows, (index + 1) * self.rows)
        return tuple(keras.tree.map_structure(lambda a: a[part], a) for a in self.arrays)

    def on_epoch_end(self):
        pass


def _inputs(batch):
    return batch[0] if isinstance(batch, tuple) else batch


def _length(x):
    return len(keras.tree.flatten(x)[0])
