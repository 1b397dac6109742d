"""The child process of tests/test_distribute.py: `python -m tests.distributed N TASK [ARGS]`.

Virtual devices exist only if they are asked for before the backend starts, so this
module makes `N` of them first (JAX: `--xla_force_host_platform_device_count`;
TensorFlow: logical CPU devices), then imports Keras and runs `TASK`, printing one JSON
line that starts with `RESULT ` for the test to read:

- `steps`: each recipe's model at smoke size trained for 5 steps with `--distribute
  data` (the last batch filled up with filler rows): the running loss after every step;
  then every kerasrnn layer trained for two steps, and the counts of an evaluation.
- `model SHARDS`: the translation model with `--distribute model`, its largest weights
  split over SHARDS devices: the running losses and each weight's sharding;
- `resume CHECKPOINT`: the captioning recipe with `--distribute data`, killed while it
  saves the checkpoint `CHECKPOINT`, resumed, against an uninterrupted run.
- `cudnn` (JAX, 4 devices): LSTMs on JAX's cuDNN kernel (its CPU stand-in) trained
  without a distribution and under three: the losses, the weights and the batch rows
  each call of the kernel computed.
"""

import json
import os
import sys
import time

DEVICES = int(sys.argv[1]) if __name__ == "__main__" else 1
if __name__ == "__main__":
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={DEVICES}"
    if os.environ.get("KERAS_BACKEND") == "tensorflow":
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * DEVICES)

import keras
import numpy as np

import kerasrnn
from kerasrnn import seq2seq
from kerasrnn.datasets import encode_texts, make_vectorizer
from kerasrnn.datasets import translation as translation_data
from recipes import (
    adding_problem,
    captioning,
    forecasting,
    sentiment,
    training,
    translation,
)

STEPS = 5
BACKEND = keras.backend.backend()
# TensorFlow draws a dropout mask per replica (its own shape, the same seed), so only
# without dropout can two device counts compute the same numbers there; JAX draws one
# mask for the whole distributed batch.
DROPOUT = BACKEND == "jax"


def smoke(module, **overrides):
    config = module.parse_config(["--smoke", "--distribute", "data", "--output", os.devnull])
    for name, value in overrides.items():
        setattr(config, name, value)
    return config


def examples(batch_size):
    """Five batches' worth: four full, the fifth with three real examples."""
    return batch_size * (STEPS - 1) + 3


def recipe_models(parallel, translation_config=None):
    """`{recipe: (build, data)}`: each recipe's model and data at smoke size."""
    rng = np.random.default_rng(0)
    models = {}

    config = smoke(adding_problem)
    x, y = adding_problem.adding_problem(examples(config.batch_size), config.seq_len, 0)
    models["adding_problem"] = (lambda config=config: adding_problem.build_model("lstm", config), parallel.even((x, y), config.batch_size))

    config = smoke(sentiment, **({} if DROPOUT else {"word_dropout": 0.0, "embedding_dropout": 0.0,
                                                       "dropout": 0.0, "head_dropout": 0.0}))
    texts, labels = sentiment.generated_reviews(examples(config.batch_size), seed=0)
    vectorizer = make_vectorizer(texts, max_tokens=config.vocab_size)
    ids = encode_texts(vectorizer, texts, config.max_length)
    train = sentiment.LengthBatches(ids, labels, config.batch_size, shuffle=True, seed=0)
    models["sentiment"] = (lambda config=config: sentiment.build_model(config, steps_per_epoch=STEPS), parallel.even(train, config.batch_size))

    config = translation_config or smoke(translation, **({} if DROPOUT else {"dropout": 0.0}))
    n = examples(config.batch_size)
    # At most 8 ids (EOS included): every batch is 8 wide, one program to compile.
    source = [list(rng.integers(4, 40, rng.integers(2, 8))) + [3] for _ in range(n)]
    target = [list(rng.integers(4, 40, rng.integers(2, 8))) + [3] for _ in range(n)]
    batches = translation_data.TranslationBatches(source, target, config.batch_size, shuffle=True, remainder="pad")
    models["translation"] = (lambda config=config: translation.build_model(config, 40, 40), batches)

    config = smoke(forecasting)
    x = rng.normal(size=(examples(config.batch_size), config.n_steps, 1)).astype("float32")
    y = rng.normal(size=(len(x), config.n_steps, config.horizon)).astype("float32")
    dropout = 0.2 if DROPOUT else 0.0
    models["forecasting"] = (lambda config=config: forecasting.compiled_model("lstm", "seq2seq", config.n_steps, config, dropout),
                             parallel.even(training.EpochBatches(x, y, config.batch_size), config.batch_size))

    config = smoke(captioning)
    split = captioning.load_splits(config)["train"]
    n = examples(config.batch_size)
    inputs = [split["images"][:n], split["inputs"][:n]]
    data = training.EpochBatches(inputs, split["targets"][:n], config.batch_size)
    models["captioning"] = (lambda config=config: captioning.build_model(config), parallel.even(data, config.batch_size))
    return models


class StepLosses(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.losses = []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(float(logs["loss"]))


def timed(function, *args):
    started = time.time()
    result = function(*args)
    print(f"{function.__name__}: {time.time() - started:.1f} s", file=sys.stderr)
    return result


def train_steps(parallel, build, data, models=None):
    """The loss after each of `STEPS` steps; the trained model is appended to `models`."""
    keras.utils.set_random_seed(0)
    model = parallel.prepare(build())
    record = StepLosses()
    model.fit(data, epochs=1, steps_per_epoch=STEPS, verbose=0, shuffle=False, callbacks=[record])
    if models is not None:
        models.append(model)
    return record.losses


# ------------------------------------------------------------------------ layers
def layers(random):
    """`{name: layer factory}`: every kerasrnn layer (`random`: only those with dropout or
    zoneout, turned on)."""
    zoneout, dropout = (0.1, 0.2) if random else (0.0, 0.0)
    stochastic = {
        "lstm_zoneout_dropout": lambda: kerasrnn.LSTM(4, zoneout=zoneout, zoneout_cell=zoneout, dropout=dropout,
                                                      recurrent_dropout=dropout),
        "bidirectional_gru_zoneout": lambda: keras.layers.Bidirectional(kerasrnn.GRU(4, zoneout=zoneout)),
        "deep_rnn": lambda: kerasrnn.DeepRNN([kerasrnn.GRUCell(4), kerasrnn.LSTMCell(4)], dropout=dropout / 2),
    }
    if random:
        return stochastic
    return {
        "irnn": lambda: kerasrnn.IRNN(4),
        "gru_reset_before": lambda: kerasrnn.GRU(4, reset_after=False),
        "simple_rnn_layer_norm": lambda: kerasrnn.SimpleRNN(4, layer_norm=True),
        "lstm_peepholes_projection_layer_norm": lambda: kerasrnn.LSTM(4, use_peepholes=True, proj_size=2,
                                                                       layer_norm=True),
        **stochastic,
    }


def train_layers(parallel):
    """Every kerasrnn layer side by side in one model (one program to compile), the
    layers with dropout and zoneout on in a second, and `Seq2Seq` with each attention (its
    decoders), each trained for two steps (batches of 8): `{name: loss}`."""
    rng = np.random.default_rng(1)
    losses = {}
    x = rng.normal(size=(16, 5, 3)).astype("float32")
    for name, random in (("layers", False), ("layers_random", True)):
        made = layers(random)
        y = rng.normal(size=(16, len(made))).astype("float32")
        keras.utils.set_random_seed(0)
        inputs = keras.Input((5, 3))
        outputs = [keras.layers.Dense(1)(make()(inputs)) for make in made.values()]
        model = keras.Model(inputs, keras.layers.Concatenate()(outputs))
        model.compile(keras.optimizers.Adam(1e-2), "mse")
        losses[name] = model.fit(parallel.even((x, y)), epochs=1, verbose=0).history["loss"][0]
    source = rng.integers(1, 12, (16, 6)).astype("int32")
    target_in, target_out = rng.integers(1, 12, (2, 16, 5)).astype("int32")
    for attention in ("luong", "bahdanau", "none"):
        keras.utils.set_random_seed(0)
        model = seq2seq.Seq2Seq(12, 12, embedding_dim=4, encoder_units=4, decoder_units=4, attention=attention)
        model.build()
        model.compile(keras.optimizers.Adam(1e-2), seq2seq.MaskedSequenceLoss())
        history = model.fit(parallel.even(((source, target_in), target_out)), epochs=1, verbose=0).history
        losses[f"seq2seq_{attention}"] = history["loss"][0]
    return losses


# ------------------------------------------------------------------------ counts
class WeightedSum(keras.metrics.Metric):
    """Σ sample_weight · f(y_true) over an evaluation: with f = 1 it counts the examples,
    with f = the example's id it checks which ones."""

    def __init__(self, power, **kwargs):
        super().__init__(**kwargs)
        self.power = power
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")

    def update_state(self, y_true, y_pred, sample_weight=None):
        ids = keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "float32")
        weight = keras.ops.ones_like(ids) if sample_weight is None else keras.ops.reshape(sample_weight, (-1,))
        self.total.assign_add(keras.ops.sum(weight * ids**self.power))

    def result(self):
        return keras.ops.convert_to_tensor(self.total)


def count_evaluation(parallel, n=37):
    """What an evaluation of `n` examples on even batches counts: the examples, the sum
    of their ids and of their squares; and the predictions that come back."""
    ids = np.arange(n, dtype="float32")
    inputs = keras.Input((1,))
    model = keras.Model(inputs, keras.layers.Dense(1, kernel_initializer="ones", use_bias=False)(inputs))
    model.compile("sgd", "mse", weighted_metrics=[WeightedSum(0, name="count"), WeightedSum(1, name="ids"),
                                                  WeightedSum(2, name="squares")])
    logs = model.evaluate(parallel.even((ids[:, None], ids), batch_size=8), verbose=0, return_dict=True)
    predicted = parallel.predict(model, ids[:, None], batch_size=8)
    return {**{k: float(logs[k]) for k in ("count", "ids", "squares")}, "predicted": predicted[:, 0].tolist()}


def run_steps(parallel, *extra):
    """`{recipe: step losses}`, and with "layers" `{"layers": train_layers(...)}`, with
    "counts" `{"counts": count_evaluation(...)}`."""
    result = {name: timed(train_steps, parallel, build, data) for name, (build, data) in recipe_models(parallel).items()}
    if "layers" in extra:
        result["layers"] = timed(train_layers, parallel)
    if "counts" in extra:
        result["counts"] = timed(count_evaluation, parallel)
    return result


def configure():
    """`--distribute data` over the virtual devices, with a global batch of 8."""
    from recipes import distribute

    return distribute.configure(captioning.Config(distribute="data", batch_size=8))


# ------------------------------------------------------------------ model parallel
def model_parallel(shards):
    """The translation model with `--distribute model`: its largest weights split over
    `shards` devices (`translation.SHARDED`), trained for `STEPS` steps. Returns the step
    losses and each weight's sharding (the mesh axis of each dimension)."""
    from recipes import distribute

    config = smoke(translation, **({} if DROPOUT else {"dropout": 0.0}))
    config.distribute, config.model_shards = "model", shards
    parallel = distribute.configure(config, layouts=translation.SHARDED)
    build, data = recipe_models(parallel, translation_config=config)["translation"]
    models = []
    losses = timed(train_steps, parallel, build, data, models)
    layouts = {v.path: list(v.value.sharding.spec) + [None] * (len(v.shape) - len(v.value.sharding.spec))
               for v in models[0].weights}
    return {"replicas": parallel.replicas, "model_shards": parallel.model_shards, "translation": losses,
            "layouts": layouts}


# ------------------------------------------------------------------- cuDNN's LSTM
def cudnn_lstm():
    """An LSTM and a bidirectional one on JAX's cuDNN kernel, stood in for on the CPU by
    `_util.jax_cudnn_stand_in`, trained for two epochs of two batches of 8: without a distribution,
    with `DataParallel` on 2 and on 4 devices, and with `ModelParallel` on a 2 x 2 mesh
    (the LSTMs' kernels split over "model"); then, `jax.vmap`ped over the two batches,
    the gradients of each. `{run: {path, losses, weights, group_gradients, rows}}`, where
    `rows` are the batch sizes the kernel's forward and backward halves were called with
    (the stand-in's operations XLA could split; the kernel's custom call it cannot, so
    what counts is the batch each call is given)."""
    import functools

    import jax

    from kerasrnn.ops import fused
    from tests._util import jax_cudnn_stand_in

    forward, backward = jax_cudnn_stand_in()
    rows = {"forward": set(), "backward": set()}

    def counted_forward(x, *args):
        rows["forward"].add(x.shape[0])
        return forward(x, *args)

    def counted_backward(*args):
        rows["backward"].add(args[-2][0].shape[0])  # the residuals start with x
        return backward(*args)

    fused._jax_cudnn_ready = lambda x: True
    fused._jax_lstm_parts = lambda: (counted_forward, counted_backward)
    devices = keras.distribution.list_devices()
    layouts = keras.distribution.LayoutMap(keras.distribution.DeviceMesh((2, 2), ["batch", "model"], devices))
    layouts[".*lstm.*kernel"] = (None, "model")
    runs = {
        "none": None,
        "data_2": keras.distribution.DataParallel(devices=devices[:2]),
        "data_4": keras.distribution.DataParallel(devices=devices),
        "model_2x2": keras.distribution.ModelParallel(layout_map=layouts, batch_dim_name="batch"),
    }
    def group_loss(weights, x, y, model):
        fixed = [v.value for v in model.non_trainable_variables]
        return jax.numpy.mean((model.stateless_call(weights, fixed, x)[0] - y) ** 2)

    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(16, 5, 3)).astype("float32"), rng.normal(size=(16, 1)).astype("float32")
    result = {}
    for name, distribution in runs.items():
        keras.distribution.set_distribution(distribution)
        keras.utils.set_random_seed(0)
        for seen in rows.values():
            seen.clear()
        model = keras.Sequential([keras.Input((5, 3)), kerasrnn.LSTM(4, return_sequences=True),
                                  keras.layers.Bidirectional(kerasrnn.LSTM(4)), keras.layers.Dense(1)])
        model.compile(keras.optimizers.SGD(0.1), "mse")
        history = model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0).history
        grads = jax.jit(jax.vmap(jax.grad(functools.partial(group_loss, model=model)), in_axes=(None, 0, 0)))(
            [v.value for v in model.trainable_variables], x.reshape(2, 8, 5, 3), y.reshape(2, 8, 1))
        result[name] = {"path": model.layers[0].last_path, "losses": history["loss"],
                        "weights": [keras.ops.convert_to_numpy(w).tolist() for w in model.weights],
                        "group_gradients": [np.asarray(g).tolist() for g in grads],
                        "rows": {half: sorted(seen) for half, seen in rows.items()}}
    keras.distribution.set_distribution(None)
    return result


# ------------------------------------------------------------------------ resume
def resume(checkpoint, output):
    """Captioning with `--distribute data`: uninterrupted, then killed and resumed."""
    import contextlib
    import io

    original = keras.Model.save

    def dies_while_saving(model, path, *args, **kwargs):
        original(model, path, *args, **kwargs)
        if os.path.basename(path).startswith(checkpoint):
            with open(path, "r+b") as f:
                f.truncate(os.path.getsize(path) // 2)
            raise KeyboardInterrupt

    args = ["--smoke", "--distribute", "data", "--epochs", "2", "--verbose", "0", "--seed", "3", "--no-plots"]
    with contextlib.redirect_stdout(io.StringIO()):
        expected = captioning.main([*args, "--output", os.path.join(output, "whole")])
        keras.Model.save = dies_while_saving
        try:
            captioning.main([*args, "--output", os.path.join(output, "killed")])
        except KeyboardInterrupt:
            pass
        keras.Model.save = original
        resumed = captioning.main([*args, "--output", os.path.join(output, "killed"), "--resume"])
    return {"expected": expected, "resumed": resumed}


def main():
    task = sys.argv[2]
    if task == "steps":
        parallel = configure()
        result = {"replicas": parallel.replicas, **run_steps(parallel, *sys.argv[3:])}
    elif task == "model":
        result = model_parallel(int(sys.argv[3]))
    elif task == "resume":
        result = resume(sys.argv[3], sys.argv[4])
    elif task == "cudnn":
        result = cudnn_lstm()
    else:
        raise SystemExit(f"unknown task {task!r}")
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
