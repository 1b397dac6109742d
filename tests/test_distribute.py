"""Training on many devices (`--distribute`, recipes/distribute.py).

The batches that divide evenly, the learning-rate scaling and the errors are checked
here on every backend. Training on 1, 2 and 4 virtual CPU devices runs in child
processes (tests/distributed.py), because a backend makes its devices when it starts:
the same model, data and global batch must give the same loss after every step on any
number of devices, every kerasrnn layer must train under `DataParallel`, an evaluation
must count each example once, the translation model must train with its largest
weights sharded (`ModelParallel`, JAX), and a distributed run must resume exactly.
"""

import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import BACKEND, to_numpy
from test_recipes_resume import numbers

from kerasrnn.datasets.translation import TranslationBatches
from recipes import adding_problem, captioning, common, distribute, translation
from recipes.distribute import EvenBatches, Parallel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DISTRIBUTES = BACKEND in ("jax", "tensorflow")  # Keras 3 distributes on these two
needs_distribution = pytest.mark.skipif(not DISTRIBUTES, reason="Keras 3 has no distribution on torch")
RECIPES = ("adding_problem", "sentiment", "translation", "forecasting", "captioning")
# float32: a sum split over devices adds in another order (measured: 8e-7 relative at most).
RTOL = 1e-5


# ------------------------------------------------------------------ even batches
def rows_seen(batches):
    """`{id: total weight}` over all batches, and the number of rows of each batch."""
    weights, sizes = {}, []
    for i in range(len(batches)):
        x, y, w = batches[i]
        sizes.append(len(x))
        for example, weight in zip(y, np.reshape(w, (len(w), -1))[:, 0]):
            weights[int(example)] = weights.get(int(example), 0.0) + float(weight)
    return weights, sizes


@pytest.mark.parametrize("n", [1, 7, 8, 9, 37])
def test_even_batches_count_every_example_once(n):
    ids = np.arange(1, n + 1, dtype="float32")  # 0 is what a filler's target is
    batches = EvenBatches((ids[:, None], ids), rows=8)
    weights, sizes = rows_seen(batches)
    assert set(sizes) == {8}  # every batch full
    assert weights.pop(0, 0.0) == 0.0  # fillers weigh nothing
    assert weights == {i: 1.0 for i in range(1, n + 1)}
    assert batches.real_rows().sum() == n and len(batches.real_rows()) == 8 * len(batches)


def test_even_batches_keep_the_data_weights_and_sequence_targets():
    x = np.arange(10, dtype="float32").reshape(5, 2)
    y = np.ones((5, 3), "float32")  # a target per time step
    w = np.array([1, 2, 3, 4, 5], "float32")
    batch_x, batch_y, batch_w = EvenBatches((x, y, w), rows=4)[1]
    np.testing.assert_array_equal(batch_x, [[8, 9]] * 4)  # fillers copy the first input
    np.testing.assert_array_equal(batch_y[1:], 0)  # and have all-padding targets
    np.testing.assert_array_equal(batch_w, [5, 0, 0, 0])
    _, _, ones = EvenBatches((x, y), rows=4)[1]
    assert ones.shape == (4, 1) and ones[:, 0].tolist() == [1, 0, 0, 0]  # broadcasts over time


def test_even_batches_of_a_dataset_and_inputs_only():
    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return ([np.full((3 - i, 2), i, "float32"), np.zeros((3 - i, 4), "int32")],)

    even = EvenBatches(Batches(), rows=4)
    (x,) = even[1]
    assert isinstance(x, tuple) and [a.shape for a in x] == [(4, 2), (4, 4)]  # tf.data: not a list
    assert even.real_rows().tolist() == [True] * 3 + [False] + [True] * 2 + [False] * 2


def test_a_model_with_two_inputs_trains_and_validates_on_even_batches():
    first, second = keras.Input((3,)), keras.Input((2,))
    model = keras.Model([first, second], keras.layers.Dense(1)(keras.layers.Concatenate()([first, second])))
    model.compile("sgd", "mse")
    rng = np.random.default_rng(0)
    data = ([rng.normal(size=(11, 3)), rng.normal(size=(11, 2))], rng.normal(size=(11, 1)))
    history = model.fit(EvenBatches(data, rows=4), validation_data=EvenBatches(data, rows=4), epochs=1, verbose=0)
    assert np.isfinite(history.history["val_loss"][0])


@pytest.mark.parametrize("loss", ["mse", "binary_crossentropy"])
def test_evaluation_batches_give_the_loss_of_the_real_examples(loss):
    # Keras weighs each batch's loss by its rows, fillers included: 11 examples in 3
    # batches of 4 gave the mean over the real examples × 11/12.
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, activation="sigmoid")])
    model.compile("sgd", loss, weighted_metrics=["mae"])
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(11, 3)).astype("float32"), rng.uniform(size=(11, 1)).astype("float32")
    plain = model.evaluate(x, y, batch_size=4, verbose=0, return_dict=True)
    even = model.evaluate(EvenBatches((x, y), rows=4, evaluation=True), verbose=0, return_dict=True)
    assert even["loss"] == pytest.approx(plain["loss"], rel=1e-6)
    assert even["mae"] == pytest.approx(plain["mae"], rel=1e-6)  # a weighted metric: unchanged by the scale
    filled = model.evaluate(EvenBatches((x, y), rows=4), verbose=0, return_dict=True)
    assert filled["loss"] == pytest.approx(plain["loss"] * 11 / 12, rel=1e-6)  # training batches: as documented
    np.testing.assert_allclose(EvenBatches((x, y), rows=4, evaluation=True)[2][2].ravel(), [12 / 11] * 3 + [0.0],
                               rtol=1e-6)


def test_per_batch_evaluation_gives_a_token_averaged_loss_as_without_fillers():
    # MaskedSequenceLoss averages over each batch's own tokens, which fillers (all
    # padding) do not change, but Keras weighs each batch by its rows: translation's
    # 120 validation pairs in batches of 100 gave val_loss 2.394 instead of 2.356.
    from kerasrnn.seq2seq import MaskedSequenceLoss, masked_accuracy

    rng = np.random.default_rng(0)
    x = rng.integers(1, 6, size=(11, 4)).astype("int32")
    y = rng.integers(1, 6, size=(11, 4)).astype("int32")
    y[:, 2:][rng.uniform(size=(11, 2)) < 0.5] = 0  # rows of different lengths
    model = keras.Sequential([keras.Input((4,), dtype="int32"), keras.layers.Embedding(6, 6)])
    model.compile("sgd", MaskedSequenceLoss(), metrics=[masked_accuracy])
    plain = model.evaluate(x, y, batch_size=4, verbose=0, return_dict=True)
    even = model.evaluate(EvenBatches((x, y), rows=4, evaluation="per_batch"), verbose=0, return_dict=True)
    assert even["loss"] == pytest.approx(plain["loss"], rel=1e-6)
    assert even["masked_accuracy"] == pytest.approx(plain["masked_accuracy"], rel=1e-6)
    rows = EvenBatches((x, y), rows=4, evaluation=True)
    assert model.evaluate(rows, verbose=0, return_dict=True)["loss"] != pytest.approx(plain["loss"], rel=1e-3)
    np.testing.assert_allclose([EvenBatches((x, y), rows=4, evaluation="per_batch")[i][2][0, 0] for i in range(3)],
                               [12 / 11, 12 / 11, 9 / 11], rtol=1e-6)
    with pytest.raises(ValueError, match="evaluation"):
        EvenBatches((x, y), rows=4, evaluation="tokens")


def test_per_batch_evaluation_keeps_an_unweighted_token_accuracy_exact():
    # The captioning recipe: MaskedSequenceLoss with `evaluation="per_batch"`, and the
    # accuracy of every token once (MaskedAccuracy, unweighted), which its former
    # token-weighted "accuracy" gave and a per-batch weight would have changed.
    from kerasrnn.seq2seq import MaskedAccuracy, MaskedSequenceLoss

    rng = np.random.default_rng(1)
    x = rng.integers(1, 6, size=(11, 4)).astype("int32")
    y = rng.integers(1, 6, size=(11, 4)).astype("int32")
    y[:, 1:][rng.uniform(size=(11, 3)) < 0.5] = 0
    model = keras.Sequential([keras.Input((4,), dtype="int32"), keras.layers.Embedding(6, 6)])
    model.compile("sgd", MaskedSequenceLoss(), metrics=[MaskedAccuracy(name="accuracy")])
    plain = model.evaluate(x, y, batch_size=4, verbose=0, return_dict=True)
    even = model.evaluate(EvenBatches((x, y), rows=4, evaluation="per_batch"), verbose=0, return_dict=True)
    logits = to_numpy(model(x))
    tokens = y != 0
    exact = ((logits.argmax(-1) == y) & tokens).sum() / tokens.sum()
    assert plain["accuracy"] == pytest.approx(exact, rel=1e-6)
    assert even["accuracy"] == pytest.approx(exact, rel=1e-6)
    assert even["loss"] == pytest.approx(plain["loss"], rel=1e-6)


def test_each_process_feeds_its_share():
    ids = np.arange(1, 12, dtype="float32")
    whole = EvenBatches((ids[:, None], ids), rows=8)
    shares = [EvenBatches((ids[:, None], ids), rows=8, process=p, processes=2) for p in (0, 1)]
    for i in range(len(whole)):
        for part, (share_0, share_1) in zip(whole[i], zip(shares[0][i], shares[1][i])):
            np.testing.assert_array_equal(part, np.concatenate([share_0, share_1]))
    with pytest.raises(ValueError, match="split evenly over the 3 processes"):
        EvenBatches((ids,), rows=8, processes=3)


def test_parallel_rounds_batches_and_describes_itself():
    parallel = Parallel("data", "keras.distribution.DataParallel", devices=("a", "b", "c"), replicas=3,
                        batch_size=48, lr_scaling="linear", lr_factor=1.5)
    assert parallel.rows(100) == 102 and parallel.rows(99) == 99
    described = parallel.describe()
    assert described["global_batch_size"] == 48 and described["per_replica_batch_size"] == 16
    assert described["devices"] == 3 and described["lr_factor"] == 1.5
    data = (np.zeros((5, 1)), np.zeros(5))
    assert Parallel().even(data) is data  # nothing changes without --distribute


def test_linear_learning_rate_scaling():
    config = adding_problem.parse_config(["--lr-scaling", "linear", "--output", os.devnull])
    default = config.batch_size
    config.batch_size = default * 4
    assert common.lr_factor(config) == 4.0 and common.learning_rate(config, 1e-3) == pytest.approx(4e-3)
    config.lr_scaling = "none"
    assert common.lr_factor(config) == 1.0


def test_translation_batches_drop_or_pad_the_remainder():
    source = [[4 + i, 3] for i in range(7)]
    target = [[10 + i, 3] for i in range(7)]

    def pairs(batches):
        seen = []
        for i in range(len(batches)):
            (src, _), out = batches[i]
            seen += [(int(s[0]), int(t[0])) for s, t in zip(src, out) if t[0] != 0]
        return sorted(seen)

    everything = sorted((4 + i, 10 + i) for i in range(7))
    pad = TranslationBatches(source, target, batch_size=3, multiple=1, remainder="pad")
    assert {len(pad[i][1]) for i in range(len(pad))} == {3} and pairs(pad) == everything
    keep = TranslationBatches(source, target, batch_size=3, multiple=1)
    assert pairs(keep) == everything and sorted(len(keep[i][1]) for i in range(len(keep))) == [1, 3, 3]
    drop = TranslationBatches(source, target, batch_size=3, multiple=1, remainder="drop")
    assert len(drop) == 2 and len(pairs(drop)) == 6
    with pytest.raises(ValueError, match="remainder"):
        TranslationBatches(source, target, remainder="last")


# ---------------------------------------------------------------------- errors
def test_a_layout_that_matches_no_weight_is_an_error():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="output")])
    Parallel("model", layouts={".*/output/kernel": ("model", None)}).prepare(model)  # matches
    with pytest.raises(ValueError, match="'.*/embedding/embeddings' matches no weight"):
        Parallel("model", layouts={".*/embedding/embeddings": (None, "model")}).prepare(model)


def test_unknown_modes_are_refused():
    with pytest.raises(common.UsageError, match="--distribute must be one of"):
        adding_problem.parse_config(["--distribute", "model", "--output", os.devnull])
    with pytest.raises(common.UsageError, match="--lr-scaling"):
        adding_problem.parse_config(["--lr-scaling", "sqrt", "--output", os.devnull])


@pytest.mark.skipif(BACKEND == "jax", reason="model parallelism runs on JAX")
def test_model_parallel_needs_jax():
    config = translation.parse_config(["--smoke", "--distribute", "model", "--output", os.devnull])
    with pytest.raises(common.UsageError, match="Keras 3 has no distribution|needs --backend jax"):
        distribute.configure(config, translation.SHARDED)


@pytest.mark.skipif(BACKEND != "torch", reason="the torch backend's error")
def test_torch_says_what_to_use_instead(tmp_path):
    with pytest.raises(SystemExit, match="no distribution support on the torch backend.*torchrun"):
        captioning.main(["--smoke", "--distribute", "data", "--output", str(tmp_path)])
    assert not os.path.exists(tmp_path / "results.json")


@needs_distribution
def test_the_global_batch_must_split_over_the_replicas(monkeypatch):
    def three(*args):
        return Parallel("data", "three devices", devices=("a", "b", "c"), replicas=3)

    monkeypatch.setattr(distribute, "_jax", three)
    monkeypatch.setattr(distribute, "_tensorflow", three)
    config = adding_problem.parse_config(["--smoke", "--distribute", "data", "--batch-size", "32",
                                          "--output", os.devnull])
    with pytest.raises(common.UsageError, match=r"--batch-size 32 .* multiple of 3 \(30, 33\)"):
        distribute.configure(config)


# ---------------------------------------------------------- on virtual devices
def start_child(devices, *task):
    """Starts `python -m tests.distributed DEVICES TASK...` on this backend, on virtual
    CPU devices even on a GPU machine (JAX is told so rather than left to fall back to
    the CPU when it finds no visible GPU)."""
    env = {**os.environ, "KERAS_BACKEND": BACKEND, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "",
           "JAX_PLATFORMS": "cpu"}
    return subprocess.Popen([sys.executable, "-m", "tests.distributed", str(devices), *task], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def result_of(process, timeout=1200):
    """The RESULT a started child printed."""
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
    results = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    assert process.returncode == 0 and results, f"exit {process.returncode}\n{stdout[-2000:]}\n{stderr[-4000:]}"
    return json.loads(results[-1][len("RESULT "):])


def child(devices, *task, timeout=1200):
    """`python -m tests.distributed DEVICES TASK...` on this backend: its RESULT."""
    return result_of(start_child(devices, *task), timeout)


@pytest.fixture(scope="module")
def runs():
    """`{devices: result}` of the `steps` task on 1, 2 and 4 devices, run side by side
    (each is mostly compilation, one core's work: on a machine with many cores this
    takes a third of the time)."""
    started = {n: start_child(n, "steps", "layers", "counts") for n in (1, 2, 4)}
    return {n: result_of(process) for n, process in started.items()}


@needs_distribution
@pytest.mark.slow
@pytest.mark.parametrize("devices", [2, 4])
@pytest.mark.parametrize("recipe", RECIPES)
def test_same_losses_on_any_number_of_devices(runs, recipe, devices):
    assert runs[devices]["replicas"] == devices
    np.testing.assert_allclose(runs[devices][recipe], runs[1][recipe], rtol=RTOL, err_msg=recipe)


@needs_distribution
@pytest.mark.slow
@pytest.mark.parametrize("devices", [1, 2, 4])
def test_every_layer_trains_under_data_parallel(runs, devices):
    losses = runs[devices]["layers"]
    assert set(losses) == {"layers", "layers_random", "seq2seq_luong", "seq2seq_bahdanau", "seq2seq_none"}
    assert all(np.isfinite(v) for v in losses.values())
    for name in ("layers", "seq2seq_luong", "seq2seq_bahdanau", "seq2seq_none"):
        np.testing.assert_allclose(losses[name], runs[1]["layers"][name], rtol=RTOL, err_msg=name)
    # With dropout and zoneout: on JAX one draw for the whole batch, the same numbers; on
    # TensorFlow each replica draws its own masks (docs/distributed.md), so only finite.
    if BACKEND == "jax":
        np.testing.assert_allclose(losses["layers_random"], runs[1]["layers"]["layers_random"], rtol=RTOL)


@needs_distribution
@pytest.mark.slow
@pytest.mark.parametrize("devices", [1, 2, 4])
def test_evaluation_sees_every_example_once(runs, devices):
    counts, n = runs[devices]["counts"], 37
    assert counts["count"] == n
    assert counts["ids"] == sum(range(n)) and counts["squares"] == sum(i * i for i in range(n))
    assert counts["predicted"] == list(range(n))  # one prediction per example, in order


@pytest.mark.skipif(BACKEND != "jax", reason="ModelParallel (LayoutMap) runs on JAX")
@pytest.mark.slow
@pytest.mark.parametrize("devices, shards", [(2, 2), (4, 2)])
def test_translation_trains_with_sharded_weights(runs, devices, shards):
    result = child(devices, "model", str(shards))
    assert result["replicas"] == devices // shards and result["model_shards"] == shards
    np.testing.assert_allclose(result["translation"], runs[1]["translation"], rtol=RTOL)
    sharded = {}
    for path, axes in result["layouts"].items():
        patterns = [pattern for pattern in translation.SHARDED if re.fullmatch(pattern, path)]
        assert len(patterns) <= 1, path
        if patterns:
            sharded[patterns[0]] = axes
        else:
            assert axes == [None] * len(axes), f"{path} should be replicated"
    assert sharded == {pattern: list(axes) for pattern, axes in translation.SHARDED.items()}


@pytest.mark.skipif(BACKEND != "jax", reason="JAX's cuDNN LSTM")
@pytest.mark.slow
def test_jax_cudnn_lstm_runs_each_devices_rows_only():
    """XLA cannot split cuDNN's custom call along the batch: left to it, every device
    would gather the whole batch and run the LSTM on all of it. Each device runs its own
    rows instead (also under `jax.vmap`, where the kernel runs once per vmapped slice),
    and training ends where it ends on one device."""
    result = child(4, "cudnn")
    alone = result.pop("none")
    assert alone["path"] == "fused:jax.experimental.rnn.lstm"
    assert alone["rows"] == {"forward": [8], "backward": [8]}
    rows = {"data_2": 4, "data_4": 2, "model_2x2": 4}  # a global batch of 8 over the batch axis
    assert set(result) == set(rows)
    for name, run in result.items():
        assert run["path"] == alone["path"], name
        assert run["rows"] == {"forward": [rows[name]], "backward": [rows[name]]}, name
        np.testing.assert_allclose(run["losses"], alone["losses"], rtol=RTOL, err_msg=name)
        for got, want in zip(run["weights"] + run["group_gradients"],
                             alone["weights"] + alone["group_gradients"], strict=True):
            np.testing.assert_allclose(got, want, rtol=RTOL, atol=1e-6, err_msg=name)


@needs_distribution
@pytest.mark.slow
def test_a_distributed_run_resumes_exactly(tmp_path):
    result = child(2, "resume", "epoch-002", str(tmp_path))
    expected, resumed = result["expected"], result["resumed"]
    assert resumed["distribution"]["replicas"] == 2 and resumed["distribution"]["global_batch_size"] > 0
    assert resumed["history"].keys() == expected["history"].keys()
    for key in expected["history"]:
        drop = [{k: v for k, v in r.items() if k != "seconds"} for r in expected["history"][key]]
        got = [{k: v for k, v in r.items() if k != "seconds"} for r in resumed["history"][key]]
        np.testing.assert_allclose(numbers(got), numbers(drop), rtol=2e-5, atol=1e-6, err_msg=key)
    np.testing.assert_allclose(numbers(resumed["metrics"]), numbers(expected["metrics"]), rtol=2e-5, atol=1e-6)
