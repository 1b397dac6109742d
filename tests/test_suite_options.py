"""The suite's own options, which the GPU script relies on: `--part K/N` splits the
suite into whole files, `KERASRNN_TEST_DEADLINE` skips what had no time to start, and
`KERASRNN_REQUIRE_GPU=1` fails (rather than skips) where the backend sees no GPU."""

import os
import re
import subprocess
import sys

import pytest
from conftest import ON_GPU

ROOT = os.path.join(os.path.dirname(__file__), os.pardir)
FILES = ["tests/test_unroll.py", "tests/test_errors.py", "tests/test_bench.py"]


def pytest_run(*args, **env):
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", *args],
        check=False, cwd=ROOT, capture_output=True, text=True, env={**os.environ, **env}, timeout=600,
    )


def collected(*args):
    run = pytest_run("--collect-only", "-q", *FILES, *args)
    assert run.returncode == 0, run.stdout + run.stderr
    return [line for line in run.stdout.splitlines() if "::" in line]


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
    run = pytest_run("-q", "-rs", FILES[1], KERASRNN_TEST_DEADLINE="0")
    assert run.returncode == 0, run.stdout + run.stderr
    skipped = int(re.search(r"(\d+) skipped", run.stdout).group(1))
    assert skipped == len([t for t in collected() if t.startswith(FILES[1])])
    assert "out of time (KERASRNN_TEST_DEADLINE" in run.stdout
    assert not re.search(r"\d+ passed", run.stdout)


@pytest.mark.skipif(ON_GPU, reason="checks the machine without a GPU")
def test_require_gpu_fails_without_one():
    run = pytest_run("--collect-only", "-q", FILES[0], KERASRNN_REQUIRE_GPU="1")
    assert run.returncode == 4
    assert "KERASRNN_REQUIRE_GPU=1 but the backend sees no GPU" in run.stderr
