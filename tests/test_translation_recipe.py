"""recipes/translation.py: --smoke end to end, --resume, and translate mode on another backend."""

import contextlib
import io
import json
import os
import subprocess
import sys

import pytest
from conftest import BACKEND

ROOT = os.path.join(os.path.dirname(__file__), "..")
OTHER_BACKEND = {"jax": "torch", "torch": "tensorflow", "tensorflow": "jax"}


def _run(*args, backend):
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "recipes.translation", *args, "--threads", "1"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
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
    for key in ("bleu", "chrf", "perplexity", "beam", "seconds", "backend", "config", "bleu_greedy"):
        assert key in results, key
    assert results["backend"] == BACKEND and results["beam"] == 3 and results["epochs"] == 1
    assert 0 <= results["bleu"] <= 100 and results["perplexity"] > 1
    for name in ("checkpoint.keras", "model.keras", "source.spm", "target.spm", "attention_0.png", "history.png", "config.json"):
        assert os.path.exists(os.path.join(out, name)), name
    assert "translation:" in stdout


def test_resume_continues_from_the_checkpoint(smoke_run, recipe):
    out, _ = smoke_run
    capture = io.StringIO()
    with contextlib.redirect_stdout(capture):
        results = recipe.main(["--smoke", "--epochs", "2", "--resume", "--output", out])
    assert "resumed from" in capture.getvalue() and "after epoch 1" in capture.getvalue()
    assert results["epochs"] == 2 and len(results["history"]) == 2
    with open(os.path.join(out, "state.json")) as f:
        assert json.load(f)["epochs_done"] == 2


def test_translate_mode_loads_the_model_on_another_backend(smoke_run):
    out, _ = smoke_run
    result = _run("translate", "--output", out, "--sentence", "w1 w2 w3", "--beam", "2", backend=OTHER_BACKEND[BACKEND])
    assert result.returncode == 0, result.stderr[-3000:]
    words = result.stdout.strip().splitlines()[-1].split()
    assert all(w.startswith("w") for w in words)  # target-vocabulary words (smoke task)


def test_translate_mode_errors_are_clear(smoke_run, recipe, tmp_path):
    out, _ = smoke_run
    with pytest.raises(ValueError, match="--sentence"):
        recipe.main(["translate", "--output", out])
    with pytest.raises(FileNotFoundError, match="train first"):
        recipe.main(["translate", "--output", str(tmp_path), "--sentence", "w1"])
