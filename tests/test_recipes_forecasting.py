"""recipes/forecasting.py: --smoke on the current backend, CSV errors, resume, the table."""

import importlib.util
import json
import os

import keras
import numpy as np
import pytest

from kerasrnn.datasets import timeseries as ts
from recipes import forecasting

BACKEND = keras.backend.backend()
has_statsmodels = importlib.util.find_spec("statsmodels") is not None


def run(tmp_path, *args):
    out = str(tmp_path / "out")
    forecasting.main(["--smoke", "--verbose", "0", "--output", out, *args])
    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    return out, {(r["dataset"], r["task"], r["model"]): r for r in results["metrics"]["rows"]}, results


def test_smoke_geron_all_tasks(tmp_path):
    out, rows, results = run(
        tmp_path, "--backend", BACKEND, "--data", "geron",
        "--tasks", "one_step,seq2seq,iterative", "--models", "naive,linear_lstsq,gru,ln_rnn",
    )
    assert results["backend"] == BACKEND and results["recipe"] == "forecasting"
    # The naive rows are exact: recompute them from the same smoke data.
    x, y = ts.geron_dataset("one_step", 20, 10, (200, 50, 50), 42)["valid"]
    expected = ts.forecast_mse(y, ts.naive_forecast(x, "one_step"), "one_step")
    assert rows[("geron", "one_step", "naive")]["val_mse"] == pytest.approx(expected, rel=1e-12)
    for task in ("one_step", "seq2seq", "iterative"):
        assert rows[("geron", task, "gru")]["test_mse"] > 0
        assert np.isfinite(rows[("geron", task, "gru")]["val_mse"])
        assert os.path.exists(os.path.join(out, "plots", f"geron_{task}.png"))
    assert ("geron", "seq2seq", "linear_lstsq") not in rows  # no such model for seq2seq
    # Least squares beats the naive forecast even on the smoke data.
    assert (rows[("geron", "one_step", "linear_lstsq")]["val_mse"]
            < rows[("geron", "one_step", "naive")]["val_mse"])
    ln = rows[("geron", "one_step", "ln_rnn")]
    if forecasting.layer_norm_available(forecasting.Config()):
        assert np.isfinite(ln["val_mse"])
    else:
        assert ln["val_mse"] is None and "layer_norm" in ln["note"]
    # The iterative GRU reuses the one-step GRU: one checkpoint, no iterative one.
    checkpoints = os.listdir(os.path.join(out, "checkpoints"))
    assert "geron-one_step-gru" in checkpoints and "geron-one_step-gru" in results["history"]
    assert not any("iterative" in name for name in checkpoints)
    assert os.path.exists(os.path.join(out, "plots", "geron_seq2seq_curves.png"))


def test_resume_reuses_finished_rows_and_models(tmp_path):
    args = ["--data", "geron", "--tasks", "one_step,iterative", "--models", "naive,linear"]
    out, first, _ = run(tmp_path, *args)
    with open(os.path.join(out, "checkpoints", "geron-one_step-linear", "epoch-001.json")) as f:
        assert json.load(f)["epoch"] == 1
    os.remove(os.path.join(out, "results.json"))  # lose the rows: the model must be loaded
    _, second, _ = run(tmp_path, *args, "--resume")
    for key in first:
        assert second[key]["val_mse"] == pytest.approx(first[key]["val_mse"], rel=1e-6)


def test_csv_column_and_its_errors(tmp_path):
    path = tmp_path / "wave.csv"
    t = np.arange(150)
    path.write_text("t,value\n" + "".join(f"{i},{np.sin(0.4 * i) * 50 + 60:.6f}\n" for i in t))
    _, rows, _ = run(tmp_path, "--data", str(path), "--column", "value",
                     "--tasks", "one_step,multi_step", "--models", "naive,linear_lstsq")
    for task in ("one_step", "multi_step"):  # a pure sine: least squares is exact
        assert rows[("wave:value", task, "linear_lstsq")]["test_mse"] < 1e-8
        assert rows[("wave:value", task, "naive")]["test_mse"] > 1e-3
    with pytest.raises(SystemExit, match=r"--data .*wave.csv: .*'price' is not in .*\['t', 'value'\]"):
        run(tmp_path, "--data", str(path), "--column", "price")
    with pytest.raises(SystemExit, match="No `column` given"):
        run(tmp_path, "--data", str(path))
    with pytest.raises(SystemExit, match="no such file"):
        run(tmp_path, "--data", str(tmp_path / "missing.csv"), "--column", "value")
    (tmp_path / "folder").mkdir()
    noise = tmp_path / "noise.csv"
    noise.write_bytes(np.random.default_rng(0).bytes(400))
    for bad in (tmp_path / "folder", noise):
        with pytest.raises(SystemExit, match=f"^error: --data {bad}") as caught:
            run(tmp_path, "--data", str(bad), "--column", "value")
        assert "\n" not in str(caught.value)
    # A series too short (or only a header) is a --data error too, not a traceback.
    (tmp_path / "header.csv").write_text("value\n")
    (tmp_path / "five.csv").write_text("value\n1\n2\n3\n4\n5\n")
    for name, pattern in (("header", "the series has 0 value"), ("five", "too short for windows")):
        with pytest.raises(SystemExit, match=f"^error: --data {name}:value: .*{pattern}") as caught:
            run(tmp_path, "--data", str(tmp_path / f"{name}.csv"), "--column", "value")
        assert "\n" not in str(caught.value)


@pytest.mark.skipif(not has_statsmodels, reason="statsmodels is not installed")
def test_sunspots_least_squares_beats_naive(tmp_path):
    _, rows, _ = run(tmp_path, "--data", "sunspots", "--tasks", "one_step,iterative",
                     "--models", "naive,linear_lstsq")
    for task in ("one_step", "iterative"):
        naive = rows[("sunspots", task, "naive")]["test_mse"]
        assert rows[("sunspots", task, "linear_lstsq")]["test_mse"] < 0.6 * naive


def test_bad_arguments_are_clear_errors(tmp_path, capsys):
    with pytest.raises(SystemExit, match="--tasks takes a comma list"):
        run(tmp_path, "--tasks", "two_step")
    with pytest.raises(SystemExit, match="--models takes a comma list"):
        run(tmp_path, "--models", "transformer")
    with pytest.raises(SystemExit, match="--library must be one of"):
        run(tmp_path, "--library", "flax")
    other = next(b for b in ("jax", "torch", "tensorflow") if b != keras.backend.backend())
    with pytest.raises(SystemExit, match="already imported"):
        run(tmp_path, "--backend", other)
    # The spellings of earlier versions still work, with a note.
    config = forecasting.parse_config(["--task", "one_step", "--model", "gru", "--layers", "keras", "--init_seed", "7"])
    assert (config.tasks, config.models, config.library, config.init_seed) == ("one_step", "gru", "keras", 7)
    notes = capsys.readouterr().err
    for old, new in (("--task", "--tasks"), ("--model", "--models"), ("--layers", "--library"),
                     ("--init_seed", "--init-seed")):
        assert f"note: {old} is deprecated; use {new}." in notes
