"""The sentiment recipe: smoke run of a two-model ensemble, resume after an interruption,
errors, predict mode."""

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile

import keras
import numpy as np
import pytest
from conftest import BACKEND, SHARED_DATA, other_backend, requires_shared_data

from recipes import common, sentiment

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Dropout off, a larger step: the smoke data is tiny and the model must learn it. (The
# resume tests, tests/test_recipes_resume.py, run with dropout on.)
SMOKE = ["--smoke", "--backend", BACKEND, "--verbose", "0", "--epochs", "3", "--patience", "3",
         "--learning-rate", "0.01", "--word-dropout", "0", "--embedding-dropout", "0", "--dropout", "0",
         "--head-dropout", "0", "--ensemble", "2"]


class Interrupted(Exception):
    pass


class InterruptAt(keras.callbacks.Callback):
    """Raises in the middle of `epoch` (0-based) of the `member`-th model trained (1-based),
    as a killed process would stop."""

    def __init__(self, member, epoch, batch):
        super().__init__()
        self.at, self.fits, self.epoch = (member, epoch, batch), 0, None

    def on_train_begin(self, logs=None):
        self.fits += 1

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.fits, self.epoch, batch) == self.at:
            raise Interrupted


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    output = str(tmp_path_factory.mktemp("smoke"))
    results = sentiment.run(sentiment.parse_config([*SMOKE, "--output", output]))
    return output, results


def test_smoke_learns_and_reports(smoke_run):
    output, _results = smoke_run
    with open(os.path.join(output, "results.json")) as f:
        results = json.load(f)
    assert set(results) == {"recipe", "backend", "device", "seconds", "config", "distribution", "metrics", "history"}
    saved = results["metrics"]
    for key in ("test_accuracy", "test_loss", "epochs", "confusion", "cpu_seconds"):
        assert key in saved
    assert results["backend"] == BACKEND and saved["epochs"] == 3 and saved["ensemble"] == 2
    # The words decide the label: a model that learned (and an evaluation that keeps
    # each review with its label) is far above chance.
    assert saved["test_accuracy"] > 0.8
    confusion = saved["confusion"]
    assert sum(confusion.values()) == 256
    correct = confusion["true_positive"] + confusion["true_negative"]
    assert correct == round(saved["test_accuracy"] * 256)
    # Two members with their own seeds, histories and test scores; the ensemble of the
    # first n members is reported for every n, the full one is the headline.
    members, history = saved["members"], results["history"]
    assert [m["seed"] for m in members] == [1337, 1437] and list(history) == ["member-1", "member-2"]
    assert [r["loss"] for r in history["member-1"]] != [r["loss"] for r in history["member-2"]]
    for member, records in zip(members, history.values()):
        assert [r["epoch"] for r in records] == [1, 2, 3] and all("val_accuracy" in r for r in records)
        assert member["test_accuracy"] > 0.8 and member["test_loss"] > 0
    assert set(saved["ensemble_by_size"]) == {"1", "2"}
    assert saved["ensemble_by_size"]["1"]["test_accuracy"] == members[0]["test_accuracy"]
    assert saved["ensemble_by_size"]["2"]["test_accuracy"] == saved["test_accuracy"]
    assert saved["ensemble_by_size"]["2"]["val_accuracy"] == saved["val_accuracy"]
    assert saved["ensemble_by_size"]["1"]["val_loss"] > 0
    for name in ("member-1/model.keras", "member-2/model.keras", "checkpoints/member-2/epoch-003.json",
                 "vocabulary.json", "config.json", "curves.png"):
        assert os.path.exists(os.path.join(output, name)), name


def test_interrupted_run_resumes_where_an_uninterrupted_run_ends(smoke_run, tmp_path):
    _uninterrupted, expected = smoke_run
    output = str(tmp_path)
    # Killed in the second epoch of the second member: the first member is finished.
    with pytest.raises(Interrupted):
        sentiment.run(sentiment.parse_config([*SMOKE, "--output", output]), callbacks=[InterruptAt(2, 1, 4)])
    for member, finished in (("member-1", 3), ("member-2", 1)):  # finished epochs, not the interrupted one
        models = [n for n in os.listdir(os.path.join(output, "checkpoints", member)) if n.endswith(".keras")]
        assert max(models) == f"epoch-{finished:03d}.keras"
    results = sentiment.run(sentiment.parse_config(["--resume", "--output", output]))
    resumed = results["metrics"]
    assert resumed["resumed"] and resumed["epochs"] == 3
    assert [m["resumed"] for m in resumed["members"]] == [True, True]
    for member, records in expected["history"].items():
        for key in ("loss", "val_loss", "val_accuracy"):
            np.testing.assert_allclose([r[key] for r in results["history"][member]], [r[key] for r in records],
                                       rtol=1e-5, atol=1e-6)
    for got, want in zip(resumed["members"], expected["metrics"]["members"], strict=True):
        assert got["test_accuracy"] == pytest.approx(want["test_accuracy"], abs=1 / 256)
    assert resumed["test_accuracy"] == pytest.approx(expected["metrics"]["test_accuracy"], abs=1 / 256)


def test_predict_classifies_raw_text(smoke_run):
    output, _ = smoke_run
    texts = ["a great superb fun film", "a dull awful boring film"]
    scored = sentiment.predict(output, texts)
    assert scored[0][0] > 0.5 > scored[1][0]
    # The ensemble's answer is the mean of its members' probabilities.
    vectorizer = sentiment.load_vectorizer(os.path.join(output, "vocabulary.json"))
    ids = sentiment.encode_texts(vectorizer, texts, 24)
    ids = ids[:, : (ids != 0).sum(axis=1).max()]
    members = [
        sentiment.sigmoid(keras.ops.convert_to_numpy(
            keras.saving.load_model(os.path.join(output, f"member-{k}", "model.keras"))(ids, training=False)
        )[:, 0])
        for k in (1, 2)
    ]
    assert not np.allclose(members[0], members[1])
    np.testing.assert_allclose([p for p, _ in scored], np.mean(members, axis=0), rtol=1e-5, atol=1e-6)
    with pytest.raises(SystemExit, match="lacks config.json, vocabulary.json, member-1/model.keras"):
        sentiment.main(["predict", "--output", os.path.dirname(output), "text"])


def test_predict_names_a_missing_member(smoke_run, tmp_path):
    output, _ = smoke_run
    for name in ("config.json", "vocabulary.json", "member-1"):
        (shutil.copytree if name.startswith("member") else shutil.copy)(
            os.path.join(output, name), tmp_path / name
        )
    with pytest.raises(SystemExit, match="lacks member-2/model.keras"):
        sentiment.main(["predict", "--model", str(tmp_path), "text"])


def test_predict_on_another_backend_gives_the_same_probabilities(smoke_run):
    output, _ = smoke_run
    texts = ["the plot was superb and moving", "weak dull story"]
    expected = [p for p, _ in sentiment.predict(output, texts)]
    other = other_backend()
    if other is None:
        pytest.skip("no other backend is installed")
    env = {**os.environ, "KERAS_BACKEND": other, "TF_CPP_MIN_LOG_LEVEL": "3"}
    completed = subprocess.run(
        [sys.executable, "-m", "recipes.sentiment", "predict", "--model", output, *texts],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    lines = [line.split("\t") for line in completed.stdout.splitlines() if "\t" in line]
    np.testing.assert_allclose([float(p) for _, p, _ in lines], expected, atol=2e-3)


def test_bad_data_paths_and_settings_fail_clearly(tmp_path, capsys):
    base = ["--backend", BACKEND, "--output", str(tmp_path / "out")]
    missing = str(tmp_path / "missing.tar.gz")
    with pytest.raises(SystemExit, match=f"^error: --data {missing}: no such file or folder"):
        sentiment.main([*base, "--data", missing])
    (tmp_path / "not_imdb").mkdir()
    with pytest.raises(SystemExit, match="--data .*not_imdb: .*aclImdb layout"):
        sentiment.main([*base, "--data", str(tmp_path / "not_imdb")])
    with pytest.raises(SystemExit, match="--data .*not_imdb: load_mr: .*no rt-polarity.pos"):
        sentiment.main([*base, "--dataset", "mr", "--data", str(tmp_path / "not_imdb")])
    # A truncated archive and random bytes: one line naming the file.
    archive = tmp_path / "aclImdb_v1.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for split in ("train", "test"):
            info = tarfile.TarInfo(f"aclImdb/{split}/pos/0_9.txt")
            info.size = 2000
            tar.addfile(info, fileobj=io.BytesIO(b"a" * 2000))
    archive.write_bytes(archive.read_bytes()[:60])
    noise = tmp_path / "noise.gz"
    noise.write_bytes(np.random.default_rng(0).bytes(500))
    for path in (archive, noise):
        with pytest.raises(SystemExit, match=f"^error: --data {path}: load_imdb: cannot read") as err:
            sentiment.main([*base, "--data", str(path)])
        assert "\n" not in str(err.value)
    with pytest.raises(SystemExit, match="--cell must be one of"):
        sentiment.main([*base, "--cell", "transformer"])
    # Too few sentences for three splits: one line, not Keras's "decay_steps must be > 0"
    # (or a StopIteration with --schedule constant) after the data had loaded.
    few = tmp_path / "few"
    few.mkdir()
    (few / "rt-polarity.pos").write_text("a good film\n")
    (few / "rt-polarity.neg").write_text("a bad film\n")
    for schedule in ("cosine", "constant"):
        with pytest.raises(SystemExit, match=r"^error: --data .*few': the train and validation splits are "
                                             r"empty \(0 train, 0 validation, 2 test reviews\)"):
            sentiment.main([*base, "--smoke", "--dataset", "mr", "--data", str(few), "--schedule", schedule])


def test_flags_override_the_dataset_defaults(tmp_path):
    config = sentiment.parse_config(["--dataset", "mr", "--units", "7", "--no-bidirectional"])
    assert (config.max_length, config.units, config.bidirectional) == (64, 7, False)
    assert config.ensemble == 1  # MR: one model; IMDB: five, chosen on validation
    assert sentiment.parse_config([]).ensemble == 5
    assert sentiment.parse_config(["--smoke"]).ensemble == 1
    # --resume takes the interrupted run's settings, and flags still win.
    common.write_json(str(tmp_path / "config.json"), {**vars(config), "output": str(tmp_path)})
    resumed = sentiment.parse_config(["--resume", "--output", str(tmp_path), "--epochs", "20"])
    assert (resumed.dataset, resumed.units, resumed.epochs, resumed.resume) == ("mr", 7, 20, True)


def test_length_batches_cover_every_row_once_in_a_seeded_order():
    ids = np.zeros((50, 16), "int32")
    lengths = np.arange(50) % 16 + 1
    for i, n in enumerate(lengths):
        ids[i, :n] = 2
    labels = np.arange(50) % 2
    data = sentiment.LengthBatches(ids, labels, batch_size=8, shuffle=True, seed=3, length_step=4)
    data.set_epoch(1)
    first = [b.copy() for b in data.batches]
    assert sorted(data.order.tolist()) == list(range(50))
    for index, rows in enumerate(data.batches):
        x, y = data[index]
        assert x.shape[1] == min(16, -(-lengths[rows].max() // 4) * 4)  # cut to the longest
        np.testing.assert_array_equal(y, labels[rows])
    assert data[0][0].shape[1] != data[1][0].shape[1]  # TensorFlow then leaves time unknown
    data.set_epoch(2)
    assert any(len(a) != len(b) or (a != b).any() for a, b in zip(first, data.batches))
    data.set_epoch(1)
    assert all((a == b).all() for a, b in zip(first, data.batches))
    dropping = sentiment.LengthBatches(ids, labels, 8, shuffle=True, length_step=4, drop_remainder=True)
    assert [len(b) for b in dropping.batches] == [8] * 6
    assert len(set(dropping.order.tolist())) == 48


def test_masked_max_mean_pooling_ignores_padding():
    x = np.array([[[1.0, -5.0], [3.0, -1.0], [100.0, 100.0]]], "float32")
    mask = np.array([[True, True, False]])
    pooled = keras.ops.convert_to_numpy(sentiment.MaskedMaxMeanPooling()(x, mask=mask))
    np.testing.assert_allclose(pooled, [[3.0, -1.0, 2.0, -3.0]])
    empty = keras.ops.convert_to_numpy(sentiment.MaskedMaxMeanPooling()(x, mask=~mask & False))
    np.testing.assert_allclose(empty, np.zeros((1, 4)))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_stacked_model_ignores_padding(cell):
    # Two bidirectional layers, then pooling: padding must not change the logit, so the
    # mask has to reach the second layer and the pooling.
    config = sentiment.Config(
        backend=BACKEND, cell=cell, layers=2, units=4, vocab_size=50, embedding_dim=6, max_length=12
    )
    model = sentiment.build_model(config, steps_per_epoch=1)
    assert [layer.name for layer in model.layers if "bidirectional" in layer.name] == [
        f"bidirectional_{cell}_1", f"bidirectional_{cell}_2"
    ]
    ids = np.array([[5, 7, 9, 11, 0, 0, 0, 0]], "int32")
    padded = keras.ops.convert_to_numpy(model(ids, training=False))
    short = keras.ops.convert_to_numpy(model(ids[:, :4], training=False))
    np.testing.assert_allclose(padded, short, rtol=1e-5, atol=1e-6)


@requires_shared_data("rt-polarity")
def test_smoke_run_on_a_slice_of_the_real_mr(tmp_path):
    """`--smoke --data`: the real snippets, read as a full run reads them, a slice of
    them trained and tested on in seconds (tests/test_recipes_common.py checks the slice)."""
    out = tmp_path / "mr"
    sentiment.main([*SMOKE, "--ensemble", "1", "--epochs", "1", "--dataset", "mr",
                    "--data", os.path.join(SHARED_DATA, "rt-polarity"), "--output", str(out)])
    results = json.loads((out / "results.json").read_text())
    assert sum(results["metrics"]["confusion"].values()) == sentiment.SMOKE_REVIEWS[1]
    assert 0 <= results["metrics"]["test_accuracy"] <= 1
