"""The recipes as one family: one command line, one results schema, atomic files, logs a
file can hold, TensorBoard, the console script, the wheel that ships them."""

import contextlib
import dataclasses
import glob
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest
from conftest import BACKEND

from recipes import (
    adding_problem,
    captioning,
    cli,
    common,
    forecasting,
    sentiment,
    translation,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = {"adding_problem": adding_problem, "sentiment": sentiment, "translation": translation,
           "forecasting": forecasting, "captioning": captioning}
SHARED_FLAGS = ("backend", "output", "resume", "smoke", "seed", "verbose", "tensorboard", "threads", "epochs",
                "batch_size", "distribute", "lr_scaling")
SCHEMA = {"recipe", "backend", "device", "seconds", "config", "distribution", "metrics", "history"}


def options(module):
    """`{field: every spelling the parser accepts}` of a recipe's flags."""
    found = {}
    for action in common.build_parser(module.Config, aliases=getattr(module, "ALIASES", None))._actions:
        if action.dest != "help":
            found.setdefault(action.dest, []).extend(action.option_strings)
    return found


@pytest.mark.parametrize("name", list(RECIPES))
def test_one_spelling_and_the_same_names_for_the_same_things(name):
    module = RECIPES[name]
    assert issubclass(module.Config, common.RunConfig)
    fields = {f.name for f in dataclasses.fields(module.Config)}
    assert set(SHARED_FLAGS) <= fields, set(SHARED_FLAGS) - fields
    assert ("data" in fields) == (name in ("sentiment", "translation", "forecasting"))
    for dest, spellings in options(module).items():
        dashed = "--" + dest.replace("_", "-")
        assert dashed in spellings, (dest, spellings)
        aliases = [f"--{old}" for old, new in getattr(module, "ALIASES", {}).items() if new == dest]
        shown = [s for s in spellings if "_" not in s and not s.startswith("--no-") and s not in aliases]
        assert shown == [dashed], (dest, spellings)  # the one documented spelling
    assert name in cli.RECIPES and callable(module.main) and callable(module.parse_config)


@pytest.mark.parametrize("name, flag, field", [
    ("translation", "--clipnorm", "clipnorm"), ("translation", "--dropout", "dropout"),
    ("translation", "--label-smoothing", "label_smoothing"), ("translation", "--alpha", "alpha"),
    ("sentiment", "--word-dropout", "word_dropout"), ("sentiment", "--clipnorm", "clipnorm"),
    ("adding_problem", "--clipnorm", "clipnorm"), ("forecasting", "--real-dropout", "real_dropout"),
])
def test_zero_and_false_are_values_not_absences(name, flag, field):
    module = RECIPES[name]
    assert getattr(module.Config, field) != 0
    config = module.parse_config([flag, "0", "--no-resume", "--smoke", "--no-smoke"])
    assert getattr(config, field) == 0 and config.smoke is False and config.resume is False


def test_resolution_order_and_deprecated_spellings(tmp_path, capsys):
    # defaults < data set presets < --smoke < the interrupted run's config.json < flags
    config = sentiment.parse_config(["--dataset", "mr", "--smoke", "--units", "5", "--output", str(tmp_path)])
    assert (config.max_length, config.vocab_size, config.units) == (24, 200, 5)
    common.write_json(str(tmp_path / "config.json"), {**dataclasses.asdict(config), "embedding_dim": 7,
                                                      "verbose": 0, "backend": "nonsense"})
    resumed = sentiment.parse_config(["--resume", "--output", str(tmp_path), "--patience", "6"])
    assert (resumed.dataset, resumed.embedding_dim, resumed.units, resumed.patience) == ("mr", 7, 5, 6)
    assert resumed.smoke
    assert (resumed.verbose, resumed.backend) == ("auto", "")  # one invocation's settings are not kept
    old = sentiment.parse_config(["--batch_size", "16", "--max_length", "9"])
    assert (old.batch_size, old.max_length) == (16, 9)
    assert "note: --batch_size is deprecated; use --batch-size." in capsys.readouterr().err
    for verbose, expected in (("auto", "auto"), ("0", 0), ("2", 2)):
        assert captioning.parse_config(["--verbose", verbose]).verbose == expected
    with pytest.raises(SystemExit):  # argparse: one line on stderr, status 2
        captioning.parse_config(["--verbose", "loud"])
    with pytest.raises(common.UsageError, match="--threads must be >= 0"):
        captioning.parse_config(["--threads", "-1"])
    with pytest.raises(SystemExit, match="^error: --backend must be one of"):
        captioning.main(["--backend", "numpy"])


def test_a_recipe_chooses_its_backend_before_keras(tmp_path):
    code = ("import os, sys; from recipes import common; common.select_backend(sys.argv[1:], prefer=('torch', 'jax'));"
            " print(os.environ['KERAS_BACKEND'], os.environ.get('OMP_NUM_THREADS')); assert 'keras' not in sys.modules")
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env["PYTHONPATH"] = os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])  # keras may live there

    def chosen(*args, **extra):
        done = subprocess.run([sys.executable, "-c", code, *args], env={**env, **extra}, capture_output=True,
                              text=True, check=True, cwd=tmp_path)
        return done.stdout.split()

    assert chosen("--backend", "jax", "--threads", "1") == ["jax", "1"]
    assert chosen(KERAS_BACKEND="tensorflow") == ["tensorflow", "None"]
    first = "torch" if importlib.util.find_spec("torch") else "jax"
    assert chosen()[0] == first  # the first of the recipe's preferences that is installed


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_float_flags_refuse_nan_and_what_their_name_rules_out(name):
    """`nan` passed every `x < 0` check and trained on NaN (a learning rate, a clip
    norm, a dropout rate); a negative learning rate or dropout rate trained too, and
    translation's `--alpha -1` failed in beam search, after the training. The rules are
    `common._check_numbers`'s, by name; a recipe keeps only its own."""
    module = RECIPES[name]
    floats = [f for f in dataclasses.fields(module.Config) if f.type in (float, "float")]
    assert floats
    for field in floats:
        option = common.flag(field.name)
        for value in ("nan", "inf", "-inf"):
            with pytest.raises(common.UsageError, match=f"{option}.* must be"):
                module.parse_config([f"{option}={value}"])
        bad = ["-1"] + (["1"] if "dropout" in field.name else []) + (["0"] if field.name.endswith("_lr") else [])
        if field.name in ("learning_rate", "alpha", "clipnorm", "label_smoothing") or field.name.endswith(("_lr", "dropout")):
            for value in bad:
                with pytest.raises(common.UsageError, match=f"{option}.* must be"):
                    module.parse_config([f"{option}={value}"])
        module.parse_config([option, str(field.default)])  # the default passes


def _write_mr(folder, n):
    """An MR-layout folder (`rt-polarity.pos`/`.neg`, one snippet a line) of `n` generated
    snippets per class, each one distinct."""
    os.makedirs(folder)
    for label in ("pos", "neg"):
        texts, _ = sentiment.generated_reviews(n, seed=len(label))
        with open(os.path.join(folder, f"rt-polarity.{label}"), "w", encoding="latin-1") as f:
            f.writelines(f"{label} {i} {text}\n" for i, text in enumerate(texts))
    return folder


def _write_pairs(path, n):
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(f"source {i} a b\ttarget {i} c\n" for i in range(n))
    return path


@pytest.mark.parametrize("name", ["sentiment", "translation"])
def test_smoke_with_data_trains_on_a_seeded_slice_of_it(name, tmp_path, capsys):
    """Their `--smoke` trains on generated data, and a `--data` beside it was ignored
    (then only noted): now it reads the data as a real run does (the same loader, its
    errors) and takes a seeded random slice the size of the generated data, as
    captioning's and forecasting's `--smoke` take theirs from the real data."""
    module = RECIPES[name]
    if name == "sentiment":
        data, flags, load = _write_mr(tmp_path / "mr", 1500), ["--dataset", "mr"], module.load_reviews
        sizes = {"train": module.SMOKE_REVIEWS[0], "test": module.SMOKE_REVIEWS[1]}
        lines = {line for label in ("pos", "neg")
                 for line in (data / f"rt-polarity.{label}").read_text(encoding="latin-1").splitlines()}
    else:
        data, flags, load = _write_pairs(tmp_path / "pairs.tsv", 3000), [], module.load_pairs
        sizes = module.SMOKE_PAIRS
        lines = {line.split("\t")[0] for line in data.read_text(encoding="utf-8").splitlines()}

    def loaded(*more):
        splits = load(module.parse_config(["--smoke", *flags, "--data", str(data), *more]))
        if name == "sentiment":
            (texts, labels, groups), (test_texts, test_labels) = splits
            assert len(texts) == len(labels) == len(groups) and len(test_texts) == len(test_labels)
            assert {t.split()[0] for t in texts} == {"pos", "neg"}
            assert all(int(y) == (t.split()[0] == "pos") for t, y in zip(texts, labels))  # still each one's label
            return {"train": texts, "test": test_texts}
        assert all(s.split()[1] == t.split()[1] for split in splits.values() for s, t in zip(*split))  # pairs kept
        return {split: source for split, (source, _) in splits.items()}

    first = loaded()
    assert {split: len(texts) for split, texts in first.items()} == sizes
    assert set().union(*first.values()) <= lines  # read from --data, none generated
    assert not set(first["train"]) & set(first["test"])
    err = capsys.readouterr().err
    assert f"note: --smoke trains its small model on a random slice of --data {data}: " in err
    assert loaded() == first and loaded("--seed", "5") != first  # seeded
    capsys.readouterr()
    load(module.parse_config(["--smoke", *flags]))  # without --data: generated, no note
    assert "note:" not in capsys.readouterr().err
    with pytest.raises(common.UsageError, match="--data .*no such file"):
        load(module.parse_config(["--smoke", *flags, "--data", str(tmp_path / "missing")]))


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_a_bad_seed_or_output_folder_is_one_line(name, tmp_path):
    """They used to end in NumPy's "expected non-negative integer" and os.makedirs's
    FileExistsError, with tracebacks, in every recipe."""
    module = RECIPES[name]
    for seed in (-1, 2**32):
        with pytest.raises(common.UsageError, match=r"^--seed must be between 0 and 2\*\*31 - 1; received"):
            module.parse_config(["--seed", str(seed), "--output", str(tmp_path)])
    assert module.parse_config(["--seed", str(common.MAX_SEED)]).seed == common.MAX_SEED
    afile = tmp_path / "results"
    afile.write_text("")
    with pytest.raises(SystemExit, match=f"^error: --output {afile} is a file; give a folder"):
        module.main(["--smoke", "--output", str(afile)])
    with pytest.raises(SystemExit, match=f"^error: --output {afile / 'run'}: cannot make the folder"):
        module.main(["--smoke", "--output", str(afile / "run")])
    assert os.listdir(tmp_path) == ["results"]


@pytest.mark.parametrize("name", ["adding_problem", "translation"])
def test_a_bad_backend_or_thread_count_at_the_command_line_is_one_line(name, tmp_path):
    """The backend is chosen before Keras is imported, outside the recipe's `main`: a
    wrong `--backend` there used to end in a traceback, and a wrong `--threads` in the
    usage of a two-flag parser instead of the recipe's."""

    def run(*args):
        return subprocess.run([sys.executable, "-m", f"recipes.{name}", *args], check=False, cwd=ROOT,
                              capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": ROOT})

    done = run("--backend", "numpy")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: --backend must be one of ('jax', 'tensorflow', 'torch'); received 'numpy'."]
    for args, message in ((["--threads", "two"], "argument --threads: invalid int value: 'two'"),
                          (["--backend"], "argument --backend: expected one argument")):
        done = run(*args, "--output", str(tmp_path))
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert f"python -m recipes.{name}: error: {message}" in done.stderr
        assert "--epochs" in done.stderr  # the recipe's usage, not the backend chooser's


def test_atomic_writes_never_leave_half_a_file(tmp_path):
    path = tmp_path / "results.json"
    common.write_json(path, {"a": 1})

    class Unserializable:
        pass

    with pytest.raises(TypeError):
        common.write_json(path, {"a": Unserializable()})  # fails half-way through the dump
    assert json.loads(path.read_text()) == {"a": 1}
    assert os.listdir(tmp_path) == ["results.json"]
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(common.UsageError, match="bad.json is not valid JSON"):
        common.read_json(tmp_path / "bad.json")


def test_logs_have_one_line_per_epoch_and_progress_off_a_terminal(tmp_path):
    """The sentiment recipe with its output in a file (a pipe): one line per epoch and per
    long step, no carriage returns; and on JAX or torch it runs without TensorFlow."""
    backend = "jax" if BACKEND == "tensorflow" else BACKEND
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    code = ("import sys, runpy; sys.modules['tensorflow'] = None; sys.argv = ['sentiment', *sys.argv[1:]];"
            " runpy.run_module('recipes.sentiment', run_name='__main__')")
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", code, "--smoke", "--epochs", "2", "--patience", "2", "--output", str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=600, check=False, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "\r" not in out and "\b" not in out
    epochs = [line for line in out.splitlines() if "val_accuracy:" in line]
    assert len(epochs) == 2 and all(len(line) < 300 for line in epochs)
    assert "Word ids of the training reviews:\n460/460" in out
    with open(tmp_path / "results.json") as f:
        assert json.load(f)["backend"] == backend


def test_progress_follows_verbose(capsys):
    run = common.Run("x", captioning.Config(verbose=2, output="unused"))
    assert run.verbose == 2
    bar = run.progress(3, "Counting")
    for i in range(3):
        bar.update(i + 1)
    assert capsys.readouterr().out.splitlines()[0] == "Counting:"
    silent = common.Run("x", captioning.Config(verbose=0, output="unused")).progress(3, "Quiet")
    silent.update(3)
    assert capsys.readouterr().out == ""
    assert common.Run("x", captioning.Config(output="unused")).verbose == 2  # pytest's stdout is no terminal


def test_tensorboard_logs_fit_and_the_gradient_diagnostics(tmp_path):
    if not any(importlib.util.find_spec(m) for m in ("tensorflow", "tensorboard", "tensorboardX")):
        pytest.skip("none of tensorflow, tensorboard or tensorboardX is installed")
    with contextlib.redirect_stdout(io.StringIO()):
        results = adding_problem.main(["--smoke", "--models", "gru", "--tensorboard", "--verbose", "0",
                                       "--output", str(tmp_path)])
    assert set(results) == SCHEMA
    assert glob.glob(str(tmp_path / "tensorboard" / "gru" / "events.out.tfevents.*"))
    assert glob.glob(str(tmp_path / "tensorboard" / "gru" / "diagnostics" / "events.out.tfevents.*"))


@pytest.mark.filterwarnings("ignore:.*found in sys.modules:RuntimeWarning")  # imported by this test file
def test_console_script_lists_and_runs_the_recipes(capsys):
    assert cli.main(["--list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in RECIPES)
    with pytest.raises(SystemExit, match="no recipe 'poetry'"):
        cli.main(["poetry"])
    with pytest.raises(SystemExit) as caught:
        cli.main(["captioning", "--help"])
    out = capsys.readouterr().out
    assert caught.value.code == 0 and "--batch-size" in out
    assert out.startswith("usage: kerasrnn-recipe captioning ")  # it said python -m recipes.captioning
    assert common.COMMAND is None
    # `python -m recipes` names itself (it said kerasrnn-recipe).
    listed = subprocess.run([sys.executable, "-m", "recipes", "--list"], capture_output=True, text=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), check=True).stdout
    assert listed.startswith("usage: python -m recipes NAME")


@pytest.mark.slow
def test_the_wheel_ships_the_recipes_and_the_console_script(tmp_path):
    source = tmp_path / "source"  # a copy: the build leaves build/ and *.egg-info behind
    for name in ("kerasrnn", "recipes"):
        shutil.copytree(os.path.join(ROOT, name), source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, name), source / name)
    setuptools = importlib.util.find_spec("setuptools")
    isolation = ["--no-build-isolation"] if setuptools and _version("setuptools") >= (77,) else []
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-w", str(tmp_path), str(source)],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (wheel,) = glob.glob(str(tmp_path / "kerasrnn-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    for name in [*RECIPES, "__init__", "__main__", "cli", "common", "training"]:
        assert f"recipes/{name}.py" in names, name
    assert "kerasrnn/__init__.py" in names and "kerasrnn/datasets/text.py" in names
    assert not [n for n in names if n.startswith(("tests/", "docs/"))]
    assert "kerasrnn-recipe = recipes.cli:main" in entry_points


def _version(package):
    from importlib.metadata import version

    return tuple(int(p) for p in version(package).split(".")[:2] if p.isdigit())


def test_results_schema_is_the_same_for_every_recipe(tmp_path):
    run = common.Run("captioning", captioning.Config(output=str(tmp_path), backend=keras.backend.backend()))
    written = run.write_results({"rows": []}, {"model": [{"epoch": 1, "loss": 1.0}]})
    with open(tmp_path / "results.json") as f:
        assert json.load(f) == written
    assert set(written) == SCHEMA and written["recipe"] == "captioning"
    # One device, as the data gives it: the global batch is the batch, no learning-rate factor.
    assert {k: written["distribution"][k] for k in ("mode", "replicas", "global_batch_size", "lr_factor")} == {
        "mode": "none", "replicas": 1, "global_batch_size": captioning.Config().batch_size, "lr_factor": 1.0}


def test_results_of_a_diverged_run_are_strict_json(tmp_path):
    # A NaN loss was written as the token NaN, which JSON does not have.
    run = common.Run("captioning", captioning.Config(output=str(tmp_path), backend=keras.backend.backend()))
    metrics = {"rows": [{"loss": float("nan"), "n": 3}], "ratio": np.float32("-inf"), "ok": np.float64(0.5)}
    written = run.write_results(metrics, {"model": [{"epoch": 1, "loss": float("inf")}]})
    assert np.isnan(written["metrics"]["rows"][0]["loss"])  # the caller keeps its numbers

    def refuse(token):
        raise ValueError(token)

    with open(tmp_path / "results.json") as f:
        saved = json.load(f, parse_constant=refuse)
    assert saved["metrics"] == {"rows": [{"loss": None, "n": 3}], "ratio": None, "ok": 0.5}
    assert saved["history"] == {"model": [{"epoch": 1, "loss": None}]}


@pytest.mark.parametrize("name", list(RECIPES))
def test_a_recipe_reads_top_to_bottom(name):
    """Short functions, and Keras imported at the top, never in the middle of the file."""
    import ast

    path = os.path.join(ROOT, "recipes", f"{name}.py")
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    long = [(node.name, node.end_lineno - node.lineno + 1) for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef) and node.end_lineno - node.lineno >= 60]
    assert not long, long
    first_definition = min(node.lineno for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef)))
    keras_imports = [node.lineno for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                     and any(a.name.split(".")[0] in ("keras", "kerasrnn") for a in node.names)
                     or isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("keras", "kerasrnn")]
    assert keras_imports and max(keras_imports) < first_definition, keras_imports


@pytest.mark.parametrize("name, changed, resumable", [
    ("captioning", ("--units", "64"), ("--no-plots",)),
    ("translation", ("--cell", "lstm"), ("--beam", "2")),
    ("sentiment", ("--learning-rate", "0.5"), ("--ensemble", "3")),
    ("forecasting", ("--units", "7"), ("--models", "linear")),
    ("adding_problem", ("--seq-len", "9"), ("--models", "gru")),
])
def test_resume_refuses_flags_that_change_the_saved_run(tmp_path, name, changed, resumable):
    """The checkpoints hold the saved run's model: `--resume --units 64` after a run of 16
    units trained on the 16-unit model and reported 64. Such a flag is an error naming the
    saved value; the same value, or a flag the recipe lets a resumed run change, is not."""
    module = RECIPES[name]
    first = module.parse_config(["--smoke", "--output", str(tmp_path)])
    common.write_json(str(tmp_path / "config.json"), dataclasses.asdict(first))
    flag, value = changed
    saved = getattr(first, flag[2:].replace("-", "_"))
    with pytest.raises(common.UsageError, match=rf"trained with {flag} {saved} .*; {flag} {value} would.*new --output"):
        module.parse_config(["--resume", "--output", str(tmp_path), flag, value])
    same = module.parse_config(["--resume", "--output", str(tmp_path), flag, str(saved), "--epochs", "9",
                                "--verbose", "0", *resumable])
    assert same.epochs == 9 and same.smoke
