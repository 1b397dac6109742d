"""recipes/translation.py: --smoke end to end, --resume, and translate mode on another backend."""

import contextlib
import gzip
import io
import json
import os
import subprocess
import sys

import pytest
from conftest import BACKEND, other_backend

pytestmark = pytest.mark.slow  # a smoke run of the recipe (about 30 s) serves the file

ROOT = os.path.join(os.path.dirname(__file__), "..")


def _run(*args, backend):
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "recipes.translation", *args, "--threads", "1"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
    )


@pytest.fixture(scope="module")
def recipe():
    if os.path.abspath(ROOT) not in map(os.path.abspath, sys.path):
        sys.path.insert(0, os.path.abspath(ROOT))  # `pytest` (not `python -m pytest`) omits the cwd
    from recipes import translation

    return translation


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, recipe):
    # In this process (the backend is already KERAS_BACKEND): no second start-up.
    out = str(tmp_path_factory.mktemp("translation"))
    capture = io.StringIO()
    with contextlib.redirect_stdout(capture):
        recipe.main(["--smoke", "--epochs", "1", "--output", out])
    return out, capture.getvalue()


def test_smoke_writes_results_checkpoint_and_plots(smoke_run):
    out, stdout = smoke_run
    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    metrics = results["metrics"]
    for key in ("bleu", "chrf", "perplexity", "beam", "bleu_greedy", "decode_seconds", "examples"):
        assert key in metrics, key
    assert results["recipe"] == "translation" and results["backend"] == BACKEND
    assert metrics["beam"] == 3 and metrics["epochs"] == 1 and len(results["history"]["model"]) == 1
    assert 0 <= metrics["bleu"] <= 100 and metrics["perplexity"] > 1
    for name in ("checkpoints/model/epoch-001.keras", "model.keras", "source.spm", "target.spm", "attention_0.png",
                 "history.png", "config.json"):
        assert os.path.exists(os.path.join(out, name)), name
    assert "translation:" in stdout and "Beam search (beam 3):" in stdout


def test_resume_continues_from_the_checkpoint(smoke_run, recipe):
    out, _ = smoke_run
    capture = io.StringIO()
    with contextlib.redirect_stdout(capture):
        results = recipe.main(["--smoke", "--epochs", "2", "--resume", "--output", out])
    assert "[model] resuming after epoch 1" in capture.getvalue()
    assert results["metrics"]["epochs"] == 2 and len(results["history"]["model"]) == 2
    assert max(n for n in os.listdir(os.path.join(out, "checkpoints", "model")) if n.endswith(".keras")) == (
        "epoch-002.keras"
    )


def test_falsy_flags_are_honoured(recipe):
    config = recipe.parse_config(["--clipnorm", "0", "--dropout", "0", "--label-smoothing", "0", "--alpha", "0",
                                  "--smoke", "--no-smoke"])
    assert (config.clipnorm, config.dropout, config.label_smoothing, config.alpha, config.smoke) == (0, 0, 0, 0, False)


def test_bad_data_paths_are_one_line_errors(recipe, tmp_path):
    def error(path):
        with pytest.raises(SystemExit) as caught:
            recipe.main(["--data", str(path), "--output", str(tmp_path / "out"), "--verbose", "0"])
        message = str(caught.value)
        assert message.startswith(f"error: --data {path}") and "\n" not in message, message
        return message

    assert "no such file or folder" in error(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    assert "train.de.gz (or train.de) not found" in error(tmp_path / "empty")
    noisy = tmp_path / "noisy"
    noisy.mkdir()
    for lang in ("de", "en"):
        (noisy / f"train.{lang}.gz").write_bytes(os.urandom(300))
    assert "train.de.gz: cannot be read as a gzip-compressed UTF-8 text file" in error(noisy)
    truncated = tmp_path / "pairs.tsv.gz"
    with gzip.open(truncated, "wt") as f:
        f.write("ein Hund\ta dog\n" * 2000)
    truncated.write_bytes(truncated.read_bytes()[:100])
    assert "pairs.tsv.gz: cannot be read as a gzip-compressed UTF-8 text file" in error(truncated)
    # 10 pairs split 90/5/5 leave no test pair: the run trained, then divided by zero.
    tiny = tmp_path / "tiny.tsv"
    tiny.write_text("".join(f"w{i} w{i + 1}\tv{i} v{i + 1}\n" for i in range(10)), encoding="utf-8")
    assert "the test split is empty (9 train, 1 val, 0 test pairs). A TSV file is split 90/5/5" in error(tiny)


def test_a_failed_download_is_a_one_line_error(recipe, tmp_path, monkeypatch):
    import keras

    def offline(*args, **kwargs):  # what keras.utils.get_file raises without a network
        raise Exception(  # noqa: TRY002 (what get_file raises)
            "URL fetch failure on https://x/train.de.gz: None -- [Errno -2] Name or service not known")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(SystemExit) as caught:
        recipe.main(["--output", str(tmp_path / "out"), "--verbose", "0"])
    message = str(caught.value)
    assert message.startswith("error: --data (download): could not download https://") and "\n" not in message
    assert "pass the local copy as `path` (a folder of {split}.{lang}.gz files)" in message


def test_translate_mode_loads_the_model_on_another_backend(smoke_run):
    out, _ = smoke_run
    other = other_backend()
    if other is None:
        pytest.skip("no other backend is installed")
    result = _run("translate", "--output", out, "--sentence", "w1 w2 w3", "--beam", "2", backend=other)
    assert result.returncode == 0, result.stderr[-3000:]
    words = result.stdout.strip().splitlines()[-1].split()
    assert all(w.startswith("w") for w in words)  # target-vocabulary words (smoke task)


def test_translate_mode_errors_are_clear(smoke_run, recipe, tmp_path):
    out, _ = smoke_run
    with pytest.raises(SystemExit, match="translate needs sentences"):
        recipe.main(["translate", "--output", out])
    with pytest.raises(SystemExit, match="train first"):
        recipe.main(["translate", "--output", str(tmp_path), "w1"])
    # Checked before the model loads; they were tracebacks from deep in beam search (or,
    # for nan, a translation from NaN scores).
    with pytest.raises(SystemExit, match=r"^error: --beam must be a positive integer \(1: greedy\); received 0\.$"):
        recipe.main(["translate", "--output", out, "--beam", "0", "w1"])
    for alpha in ("nan", "-1", "inf"):
        with pytest.raises(SystemExit, match=r"^error: --alpha \(the length penalty's exponent\) must be a finite"):
            recipe.main(["translate", "--output", out, "--beam", "3", "--alpha", alpha, "w1"])
    assert len(recipe.translate(out, ["w1 w2", "w3"], beam=2)) == 2
