"""The adding-problem recipe: its data, its smoke run on this backend, and resume."""

import json
import os
import sys

import keras
import numpy as np
import pytest
from conftest import to_numpy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # recipes/ is run from the repository root, not installed

from kerasrnn.diagnostics import read_csv
from recipes import adding_problem


def test_generator_matches_the_benchmark_definition():
    x, y = adding_problem.adding_problem(200_000, 150, seed=(0, 0, 0))
    assert x.shape == (200_000, 150, 2) and y.shape == (200_000, 1) and x.dtype == np.float32
    values, markers = x[..., 0], x[..., 1]
    assert values.min() >= 0.0 and values.max() < 1.0
    np.testing.assert_array_equal(markers.sum(axis=1), 2.0)  # two distinct marked steps
    np.testing.assert_allclose(y[:, 0], (values * markers).sum(axis=1), rtol=1e-6)
    # Marker positions are uniform over the sequence (both halves, first and last step).
    positions = np.nonzero(markers)[1]
    assert abs(positions.mean() - 74.5) < 0.5 and positions.min() == 0 and positions.max() == 149
    # Predicting 1 (the target's mean) gives Var(u1 + u2) = 2/12.
    assert np.mean((y - 1.0) ** 2) == pytest.approx(1 / 6, abs=2e-3)
    a, b, c = (adding_problem.adding_problem(16, 150, seed=s)[0] for s in [(0, 1), (0, 1), (0, 2)])
    np.testing.assert_array_equal(a, b)  # seeded: the test set is the same in every run
    assert not np.array_equal(a, c)  # and no split shares its stream


def test_config_errors_name_the_flag():
    with pytest.raises(ValueError, match="--models"):
        adding_problem.parse_config(["--models", "lstm,transformer"])
    with pytest.raises(ValueError, match="--seq-len"):
        adding_problem.parse_config(["--seq-len", "1"])
    with pytest.raises(ValueError, match="--clipnorm"):
        adding_problem.parse_config(["--clipnorm", "-1"])
    with pytest.raises(ValueError, match="--lstm-steps"):
        adding_problem.parse_config(["--lstm-steps", "0"])
    with pytest.raises(SystemExit, match="error: --irnn-schedule must be one of"):
        adding_problem.main(["--irnn-schedule", "linear"])
    # --smoke sets small sizes; flags given still win.
    config = adding_problem.parse_config(["--seq-len", "300", "--irnn-lr", "1e-4", "--smoke"])
    assert (config.seq_len, config.irnn_lr, config.smoke, config.epochs) == (300, 1e-4, True, 2)
    assert config.steps_per_epoch("irnn") == 4  # 4 updates · 300/150, in two epochs
    assert adding_problem.parse_config(["--lstm-steps", "2001"]).steps_per_epoch("lstm") == 201
    # Updates scale with T/150: twice as many for sequences twice as long.
    assert adding_problem.parse_config(["--seq-len", "300"]).steps_per_epoch("lstm") == 400


def test_smoke_run_writes_results_plots_and_diagnostics(tmp_path, capsys):
    out = str(tmp_path / "run")
    report = adding_problem.main(["--smoke", "--output", out])
    with open(os.path.join(out, "results.json")) as f:
        saved = json.load(f)
    assert saved["recipe"] == "adding_problem" and saved["backend"] == keras.backend.backend()
    models = saved["metrics"]["models"]
    assert list(models) == ["tanh", "irnn", "lstm", "gru"] == list(saved["history"])
    for name, r in models.items():
        for key in ("test_mse", "baseline_mse", "steps", "seconds", "grad_log10_ratio_initial",
                    "grad_log10_ratio_final"):
            assert isinstance(r[key], (int, float)), (name, key)
        assert r["steps"] == 4 and [h["epoch"] for h in saved["history"][name]] == [1, 2]
        assert len(r["grad_norms"]["final"]) == 12
        rows = read_csv(os.path.join(out, f"{name}_diagnostics.csv"))
        assert [row["epoch"] for row in rows] == [0, 1, 2]
    assert models["tanh"]["baseline_mse"] == report["metrics"]["models"]["irnn"]["baseline_mse"]
    for png in ["learning_curves.png", "gradient_norms.png", "lstm_gradient_norms.png",
                "irnn_gradient_heatmap.png"]:
        with open(os.path.join(out, png), "rb") as f:
            assert f.read(4) == b"\x89PNG"
    printed = capsys.readouterr().out
    assert "test MSE" in printed and "irnn" in printed


def test_resume_keeps_one_diagnostics_row_per_epoch(tmp_path, capsys, monkeypatch):
    """Killed while epoch 2 was saved (after its diagnostics row was written): the resumed
    run trains epoch 2 again and the CSV still has one row per epoch."""
    from test_recipes_resume import killed_while_saving

    args = ["--smoke", "--models", "irnn", "--output", str(tmp_path), "--verbose", "0"]
    with killed_while_saving(monkeypatch):
        adding_problem.main(args)
    assert [row["epoch"] for row in read_csv(str(tmp_path / "irnn_diagnostics.csv"))] == [0, 1, 2]
    capsys.readouterr()
    resumed = adding_problem.main([*args, "--resume"])
    assert "resuming after epoch 1" in capsys.readouterr().out
    assert resumed["metrics"]["models"]["irnn"]["steps"] == 4
    assert [row["epoch"] for row in read_csv(str(tmp_path / "irnn_diagnostics.csv"))] == [0, 1, 2]
    model = keras.models.load_model(str(tmp_path / "checkpoints" / "irnn" / "epoch-002.keras"))
    assert int(to_numpy(model.optimizer.iterations)) == 4  # the cosine schedule resumed too


def test_steps_count_the_updates_made_when_resumed_with_other_epochs(tmp_path, capsys):
    """`--resume --epochs N` after a finished run: `steps` (and the learning curves' x
    axis) count the updates made, each epoch's own number, not N × the new per-epoch
    number (2 × 2 updates then `--epochs 1` said 8; then `--epochs 4`, 4 for 6)."""
    args = ["--smoke", "--models", "gru", "--output", str(tmp_path), "--verbose", "0"]
    assert adding_problem.main(args)["metrics"]["models"]["gru"]["steps"] == 4
    again = adding_problem.main([*args, "--resume", "--epochs", "1"])
    assert (again["metrics"]["models"]["gru"]["epochs"], again["metrics"]["models"]["gru"]["steps"]) == (2, 4)
    longer = adding_problem.main([*args, "--resume", "--epochs", "4"])
    assert [r["steps"] for r in longer["history"]["gru"]] == [2, 2, 1, 1]
    assert longer["metrics"]["models"]["gru"]["steps"] == 6
    config = adding_problem.parse_config([*args, "--epochs", "4"])
    assert adding_problem.updates(longer["history"]["gru"], config, "gru") == [2, 4, 5, 6]
    capsys.readouterr()


def test_the_reported_learning_rate_is_the_one_trained_with(tmp_path, capsys):
    # With --lr-scaling linear the report gave --lstm-lr (0.01) while Adam used 0.0025.
    out = str(tmp_path / "run")
    report = adding_problem.main(["--smoke", "--models", "lstm", "--lstm-schedule", "constant", "--lr-scaling",
                                  "linear", "--batch-size", "16", "--epochs", "1", "--output", out])
    factor = report["distribution"]["lr_factor"]
    assert factor == 16 / adding_problem.Config().batch_size
    assert report["metrics"]["models"]["lstm"]["learning_rate"] == pytest.approx(adding_problem.Config().lstm_lr * factor)
    model = keras.saving.load_model(os.path.join(out, "checkpoints", "lstm", "epoch-001.keras"))
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(
        report["metrics"]["models"]["lstm"]["learning_rate"])
