"""The suite's own options, which the GPU script relies on: `--part K/N` splits the
suite into whole files, `KERASRNN_TEST_DEADLINE` skips what had no time to start,
`KERASRNN_REQUIRE_GPU=1` fails (rather than skips) where the backend sees no GPU, and
pytest-xdist's workers share one JAX compilation cache."""

import ast
import glob
import os
import re
import subprocess
import sys
import time

import pytest
from conftest import BACKEND, GPU_FIRST, ON_GPU

pytestmark = pytest.mark.slow  # each check starts pytest again

ROOT = os.path.join(os.path.dirname(__file__), os.pardir)
FILES = ["tests/test_unroll.py", "tests/test_errors.py", "tests/test_bench.py"]


#: The options under test: a nested run gets them from its test only, never from the
#: run around it (`gpu_check.sh` exports a deadline to the whole suite).
OPTIONS = ("KERASRNN_TEST_DEADLINE", "KERASRNN_REQUIRE_GPU")


def pytest_run(*args, xdist=False, **env):
    outer = {k: v for k, v in os.environ.items() if k not in OPTIONS}
    plugins = [] if xdist else ["-p", "no:xdist"]
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *plugins, *args],
        check=False, cwd=ROOT, capture_output=True, text=True, env={**outer, **env}, timeout=600,
    )


def collected(*args, files=FILES, **env):
    run = pytest_run("--collect-only", "-q", *files, *args, **env)
    assert run.returncode == 0, run.stdout + run.stderr
    return [line for line in run.stdout.splitlines() if "::" in line]


def files_in_order(tests):
    return list(dict.fromkeys(t.split("::")[0] for t in tests))


def test_the_suite_imports_its_own_modules_by_one_name():
    """pytest imports conftest.py, _util.py and the test files by their bare names
    (tests/ has no __init__.py). `from tests.conftest import …` imported conftest a
    second time, as another module that ran its setup again (seen in sys.modules beside
    `conftest`). Only tests/distributed.py, which runs as a child process from the
    repository's root, imports through `tests.`."""
    ours = {os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(ROOT, "tests", "*.py"))}
    wrong = []
    for path in sorted(glob.glob(os.path.join(ROOT, "tests", "*.py"))):
        if os.path.basename(path) == "distributed.py":
            continue
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            wrong += [f"{os.path.basename(path)}:{node.lineno} {name}" for name in names
                      if name.startswith("tests.") and name.split(".")[1] in ours]
    assert not wrong, "import these by their bare names (`from conftest import …`): " + ", ".join(wrong)


def test_parts_split_the_suite_into_whole_files():
    everything = collected()
    parts = [collected("--part", f"{k}/2") for k in (1, 2)]
    assert sorted(parts[0] + parts[1]) == sorted(everything)
    assert parts[0] and parts[1]
    files = [{t.split("::")[0] for t in part} for part in parts]
    assert not files[0] & files[1]
    bad = pytest_run("--collect-only", "-q", FILES[0], "--part", "3/2")
    assert bad.returncode == 4 and "--part takes K/N" in bad.stderr


def test_deadline_skips_what_has_not_started():
    """Tests and the package's doctests alike (a hook of tests/conftest.py alone would
    not reach kerasrnn/)."""
    targets = [FILES[1], "kerasrnn/ops/unroll.py", "kerasrnn/layers/gru.py"]
    run = pytest_run("-q", "-rs", *targets, KERASRNN_TEST_DEADLINE="0")
    assert run.returncode == 1, run.stdout + run.stderr  # an incomplete run is not green
    skipped = int(re.search(r"(\d+) skipped", run.stdout).group(1))
    listed = pytest_run("--collect-only", "-q", *targets)
    assert "kerasrnn/layers/gru.py::" in listed.stdout
    assert skipped == len([line for line in listed.stdout.splitlines() if "::" in line])
    assert f"kerasrnn: {skipped} tests out of time, not run" in run.stdout
    on_time = pytest_run("-q", targets[2], KERASRNN_TEST_DEADLINE=str(time.time() + 3600))
    assert on_time.returncode == 0 and "out of time" not in on_time.stdout
    # A minute left: time for the doctests, not for a test marked slow.
    slow = "tests/test_seq2seq.py::test_attention_learns_to_reverse_and_beats_no_attention"
    close = pytest_run("-q", "-rs", targets[2], slow, KERASRNN_TEST_DEADLINE=str(time.time() + 60))
    assert re.search(r"2 passed, 1 skipped", close.stdout), close.stdout
    assert "kerasrnn: 1 tests out of time, not run" in close.stdout
    assert "out of time (KERASRNN_TEST_DEADLINE" in run.stdout
    assert not re.search(r"\d+ passed", run.stdout)


def test_a_run_against_the_clock_starts_with_the_gpu_files():
    """What a GPU changes is checked first, so a run cut short leaves out the rest."""
    assert all(os.path.exists(os.path.join(ROOT, "tests", name)) for name in GPU_FIRST)
    files = [FILES[1], "tests/test_golden.py", "tests/test_fused_masked.py", FILES[0]]
    timed = collected(files=files, KERASRNN_TEST_DEADLINE=str(time.time() + 3600))
    assert files_in_order(timed) == [files[2], files[1], files[0], files[3]]
    if not ON_GPU:  # without a deadline (nor a GPU) the order is the command line's
        assert files_in_order(collected(files=files)) == files
    parts = [collected("--part", f"{k}/2", files=files, KERASRNN_TEST_DEADLINE="1e12") for k in (1, 2)]
    assert sorted(parts[0] + parts[1]) == sorted(timed)


@pytest.mark.skipif(ON_GPU, reason="checks the machine without a GPU")
@pytest.mark.parametrize("workers", [0, 2])
def test_require_gpu_fails_without_one(workers):
    """A usage error with the reason, also over pytest-xdist's workers (as
    `gpu_check.sh` runs the suite), where a worker's error used to surface as an
    INTERNALERROR without it."""
    if workers:
        pytest.importorskip("xdist")
    xdist = ("-n", str(workers)) if workers else ()
    # (xdist does not distribute `--collect-only`: the workers run, but no test does.)
    run = pytest_run("-q", "-k", "no_such_test", *xdist, FILES[0], xdist=bool(workers),
                     KERASRNN_REQUIRE_GPU="1")
    assert run.returncode == 4, run.stdout + run.stderr
    assert "KERASRNN_REQUIRE_GPU=1 but the backend sees no GPU" in run.stderr


jax_only = pytest.mark.skipif(
    BACKEND != "jax" or bool(os.environ.get("JAX_COMPILATION_CACHE_DIR")),
    reason="the suite's JAX compilation cache (not where the user names one)",
)


@jax_only
@pytest.mark.parametrize("probe", range(8))
def test_this_process_caches_in_the_runs_directory(probe):
    """Every process of a run, pytest-xdist's workers too, compiles into the directory
    the run's first process made (tests/conftest.py); with `KERASRNN_PROBE_DIR` it
    also says which, for the test below."""
    import jax

    directory = jax.config.jax_compilation_cache_dir
    assert directory == os.environ["KERASRNN_JAX_CACHE"] and os.path.isdir(directory)
    out = os.environ.get("KERASRNN_PROBE_DIR")
    if out:
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        with open(os.path.join(out, f"{worker}-{probe}.txt"), "w") as f:
            f.write(directory)


@jax_only
def test_xdist_workers_share_one_jax_compilation_cache(tmp_path):
    """gpu_check.sh runs the JAX suite over ten workers: one cache between them compiles
    each program once, not once per worker, and it is removed when the run ends."""
    pytest.importorskip("xdist")
    env = {k: v for k, v in os.environ.items() if k not in (*OPTIONS, "KERASRNN_JAX_CACHE")}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-n", "2",
         "tests/test_suite_options.py::test_this_process_caches_in_the_runs_directory"],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**env, "KERASRNN_PROBE_DIR": str(tmp_path)},
    )
    assert run.returncode == 0, run.stdout + run.stderr
    reports = {p.stem: p.read_text() for p in tmp_path.glob("*.txt")}
    assert len(reports) == 8 and {name.split("-")[0] for name in reports} == {"gw0", "gw1"}
    (directory,) = set(reports.values())
    assert directory != os.environ["KERASRNN_JAX_CACHE"]  # that run's own, not this one's
    assert not os.path.exists(directory)


def test_this_process_writes_temporary_files_in_the_runs_folder():
    """With `KERASRNN_PROBE_DIR`, also says where a temporary folder went, for the test
    below."""
    import tempfile

    folder = os.environ["KERASRNN_TMP"]
    assert tempfile.gettempdir() == folder == os.environ["TMPDIR"]
    made = tempfile.mkdtemp()
    child = subprocess.run([sys.executable, "-c", "import tempfile; print(tempfile.mkdtemp())"],
                           check=True, capture_output=True, text=True).stdout.strip()
    assert os.path.dirname(made) == os.path.dirname(child) == folder
    # torch's compile cache: importing Keras fixes it (before this test can see it).
    assert os.environ.get("TORCHINDUCTOR_CACHE_DIR", folder).startswith(folder)
    out = os.environ.get("KERASRNN_PROBE_DIR")
    if out:
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        with open(os.path.join(out, f"tmp-{worker}.txt"), "w") as f:
            f.write(made)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_run_leaves_no_temporary_files_behind(tmp_path, workers):
    """The doctests write into `tempfile.mkdtemp()` folders as a user would; every run
    used to leave them (and Keras's own) in the system's temporary directory."""
    if workers:
        pytest.importorskip("xdist")
    system_tmp, probe = tmp_path / "tmp", tmp_path / "probe"
    system_tmp.mkdir(), probe.mkdir()
    # (This run's folders, which importing Keras pinned in the environment, are not theirs.)
    ours = ("KERASRNN_TMP", "KERASRNN_JAX_CACHE", "TORCHINDUCTOR_CACHE_DIR")
    env = {k: v for k, v in os.environ.items() if k not in (*OPTIONS, *ours)}
    # The doctests that write files, and a test that reports where its own went.
    targets = ["kerasrnn/datasets/timeseries.py", "kerasrnn/diagnostics/callback.py",
               "tests/test_suite_options.py::test_this_process_writes_temporary_files_in_the_runs_folder"]
    xdist = ["-n", str(workers)] if workers else ["-p", "no:xdist"]
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *xdist,
         "--basetemp", str(tmp_path / "base"), *targets],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**env, "TMPDIR": str(system_tmp), "KERASRNN_PROBE_DIR": str(probe)},
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert re.search(r"[4-9] passed", run.stdout), run.stdout
    (report,) = probe.glob("tmp-*.txt")
    assert os.path.dirname(os.path.dirname(report.read_text())) == str(system_tmp)
    assert sorted(os.listdir(system_tmp)) == []
