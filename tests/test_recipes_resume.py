"""Every recipe survives a kill: while it writes a checkpoint, `--resume` continues from
the last complete one and ends exactly where an uninterrupted run ends (dropout on, on
this backend); a checkpoint that cannot be read is named, with the one before it."""

import contextlib
import glob
import io
import os
import re

import keras
import numpy as np
import pytest
from conftest import BACKEND

from recipes import adding_problem, captioning, forecasting, sentiment, translation

# Smoke runs of two epochs at least (the kill comes while epoch 2 is saved), with every
# source of randomness each recipe has: dropout masks, shuffled batches, early stopping.
RUNS = {
    "adding_problem": (adding_problem, ["--models", "lstm"]),
    "sentiment": (sentiment, ["--epochs", "3", "--patience", "3"]),
    "translation": (translation, ["--threads", "1", "--test-limit", "24", "--beam", "1"]),
    "forecasting": (forecasting, ["--data", "sunspots", "--tasks", "one_step", "--models", "gru",
                                  "--real-epochs", "3", "--real-checkpoint-every", "1", "--patience", "1"]),
    "captioning": (captioning, ["--epochs", "2"]),
}


class Killed(BaseException):
    """What a kill looks like from inside: nothing catches it."""


@contextlib.contextmanager
def killed_while_saving(monkeypatch, checkpoint="epoch-002"):
    """Every `model.save` of a file named `checkpoint...` writes half of it, then dies."""
    original = keras.Model.save

    def save(model, path, *args, **kwargs):
        original(model, path, *args, **kwargs)
        if os.path.basename(path).startswith(checkpoint):
            with open(path, "rb") as f:
                data = f.read()
            with open(path, "wb") as f:
                f.write(data[: len(data) // 2])
            raise Killed

    monkeypatch.setattr(keras.Model, "save", save)
    with pytest.raises(Killed):
        yield
    monkeypatch.setattr(keras.Model, "save", original)


def run_recipe(name, output, *extra):
    module, args = RUNS[name]
    with contextlib.redirect_stdout(io.StringIO()):
        return module.main(["--smoke", "--verbose", "0", "--output", str(output), "--seed", "3", *args, *extra])


def numbers(tree):
    """The numbers of a JSON tree, flattened in order (timings and machine load left out)."""
    if isinstance(tree, dict):
        return [n for key, value in tree.items() if not re.search("seconds|load_average", str(key))
                for n in numbers(value)]
    if isinstance(tree, list):
        return [n for value in tree for n in numbers(value)]
    return [float(tree)] if isinstance(tree, (int, float)) and not isinstance(tree, bool) else []


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RUNS))
def test_killed_while_saving_then_resumed_ends_as_uninterrupted(name, tmp_path, monkeypatch):
    expected = run_recipe(name, tmp_path / "straight")
    output = tmp_path / "killed"
    with killed_while_saving(monkeypatch):
        run_recipe(name, output)
    # Epoch 2's checkpoint never became a file that --resume would read.
    states = glob.glob(str(output / "checkpoints" / "*" / "epoch-*.json"))
    assert states and not [s for s in states if "epoch-002" in s and not s.endswith(".partial.json")]
    assert not glob.glob(str(output / "checkpoints" / "*" / "epoch-002*"))
    resumed = run_recipe(name, output, "--resume")
    assert set(resumed) >= {"recipe", "backend", "device", "seconds", "config", "metrics", "history"}
    assert resumed["history"].keys() == expected["history"].keys()
    for key in expected["history"]:
        got = [{k: v for k, v in r.items() if k != "seconds"} for r in resumed["history"][key]]
        want = [{k: v for k, v in r.items() if k != "seconds"} for r in expected["history"][key]]
        assert [r.keys() for r in got] == [r.keys() for r in want]
        np.testing.assert_allclose(numbers(got), numbers(want), rtol=2e-5, atol=1e-6, err_msg=key)
    np.testing.assert_allclose(numbers(resumed["metrics"]), numbers(expected["metrics"]), rtol=2e-5, atol=1e-6)

    # The newest checkpoint, truncated (a disk error): --resume names it and the one before.
    folder = min(glob.glob(str(output / "checkpoints" / "*")))
    newest, earlier = sorted(glob.glob(os.path.join(folder, "epoch-*.keras")))[-1:-3:-1]
    with open(newest, "r+b") as f:
        f.truncate(os.path.getsize(newest) // 3)
    if name == "forecasting":  # finished rows are kept, not refit: forget them
        os.remove(output / "results.json")
    epoch = int(os.path.basename(earlier)[6:9])
    with pytest.raises(SystemExit, match=rf"checkpoint {re.escape(newest)} cannot be read .* The earlier "
                                         rf"checkpoint {re.escape(earlier)} \(epoch {epoch}\) is intact"):
        run_recipe(name, output, "--resume")


def test_the_backend_of_these_runs():
    assert keras.backend.backend() == BACKEND
