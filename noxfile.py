"""Sessions: tests per backend (CPU), gpu per backend, bench, hub, docs, lint.

    nox -s tests                      # all three backends on the CPU
    nox -s "tests(backend='jax')"     # one backend
    nox -s bench -- --cells lstm      # benchmark (not part of the tests)
    nox -s bench_decode               # translate's decoding speed, compiled vs op by op
    nox -s hub                        # keras-hub's samplers driving kerasrnn (installs keras-hub)
    nox -s docs                       # build the site strictly, check it in a browser
    nox --no-venv -s "gpu(backend='torch')"   # in an existing environment with a GPU
    nox --no-venv -s "gpu(backend='jax')" -- --part 1/2   # half of the suite
"""

import os
import sys
import time

import nox
from nox.command import CommandFailed

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = False

BACKENDS = ["tensorflow", "jax", "torch"]
# CPU builds: torch 2.13.0 is a CPU wheel (a plain `torch` pulls a multi-GB CUDA build);
# tensorflow-cpu likewise. Every test session installs all three backends, because the
# parity tests compare with torch.nn and the save/load tests cross backends.
CPU_BACKEND_PACKAGES = ["tensorflow-cpu", "jax", "torch==2.13.0"]
TEST_PACKAGES = [
    "pytest>=8", "pytest-xdist", "numpy", "matplotlib", "sentencepiece", "sacrebleu", "statsmodels",
    "scikit-learn", "tensorboard",
]


# pip's own patience with the registry: more retries per request, and more resumes of a
# download that breaks off (CI once failed on a wheel cut at 5.8 of 7.4 MB six times in a
# row). Older pips ignore the variables they do not know.
PIP_PATIENCE = {"PIP_RETRIES": "10", "PIP_RESUME_RETRIES": "20", "PIP_TIMEOUT": "60"}


def _install(session, *args, attempts=3, pause_s=30, python=None):
    """`session.install(*args)` (or `python -m pip install *args`), tried again after a
    pause when pip fails.

    A registry that drops connections fails a whole CI run in its first minute; a second
    try, half a minute later, may find it back. A failure that repeats (a package
    that does not exist, a full disk) still fails the session, with pip's own message.
    """
    for attempt in range(1, attempts + 1):
        try:
            if python is None:
                session.install(*args, env=PIP_PATIENCE)
            else:
                session.run(python, "-m", "pip", "install", *args, env=PIP_PATIENCE, external=True, silent=True)
            return
        except CommandFailed:
            if attempt == attempts:
                raise
            session.warn(f"pip install failed (try {attempt} of {attempts}); trying again in {pause_s} s")
            time.sleep(pause_s)


def _workers():
    """pytest-xdist workers for the CPU suite: one per core the process may use, at most 4
    (each loads a backend, and the tests that start children use cores of their own);
    none on one core. `nox -s tests -- -n 0` runs the suite in one process."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return ["-n", str(min(cores, 4)), "--dist", "loadfile"] if cores > 1 else []


def _env(backend):
    return {
        "KERAS_BACKEND": backend,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
    }


#: The one venv of the `tests` sessions, made afresh by the first of them that a nox
#: invocation runs (`nox -s tests` runs three) and shared by the others.
TEST_VENV = os.path.join(".nox", "tests-cpu")
_test_venv_made = []


def _test_venv(session):
    """The Python of the `tests` sessions' shared venv, made and installed on the first
    call of this nox invocation.

    Every test session installs the same packages (all three backends: the parity tests
    compare with torch.nn, the save/load tests cross backends); only KERAS_BACKEND
    differs. One venv instead of three saves two installs of about 3.3 GB each (about
    two minutes apiece here, with pip's cache warm). Like nox's own venvs here
    (`reuse_existing_virtualenvs = False`), it starts from nothing in each invocation.
    """
    bin_dir = os.path.join(os.path.abspath(TEST_VENV), "Scripts" if sys.platform == "win32" else "bin")
    python = os.path.join(bin_dir, "python")
    if not _test_venv_made:
        session.log(f"Creating the tests' shared venv in {TEST_VENV} (all three backends)")
        session.run(sys.executable, "-m", "venv", "--clear", TEST_VENV, external=True)
        _install(session, "--upgrade", "pip", python=python)
        _install(session, *CPU_BACKEND_PACKAGES, *TEST_PACKAGES, python=python)
        _install(session, "-e", ".", python=python)
        _test_venv_made.append(TEST_VENV)
    else:
        session.log(f"Reusing the tests' shared venv {TEST_VENV}, made by an earlier session of this run")
    return python, bin_dir


@nox.session(python=False)
@nox.parametrize("backend", BACKENDS)
def tests(session, backend):
    """The test suite on the CPU with KERAS_BACKEND=backend (all backends installed, in
    one venv that the three sessions of a run share: `_test_venv`)."""
    python, bin_dir = _test_venv(session)
    env = _env(backend)
    env["CUDA_VISIBLE_DEVICES"] = ""  # CPU session: never pick up a GPU
    # As in an activated venv: a test that starts `python` or a console script finds this one's.
    env["VIRTUAL_ENV"] = os.path.dirname(bin_dir)
    env["PATH"] = os.pathsep.join([bin_dir, os.environ.get("PATH", "")])
    # Whole files per worker (`loadfile`): a module's fixture (the virtual-device
    # children of test_distribute.py, a recipe's smoke run) then runs once, not once per
    # worker that gets one of its tests.
    session.run(python, "-m", "pytest", "-q", *_workers(), *session.posargs, env=env, external=True)


@nox.session(python=False, default=False)
@nox.parametrize("backend", BACKENDS)
def gpu(session, backend):
    """The suite plus GPU-only tests, in the current environment (no venv, no network).

    Run with `nox --no-venv -s "gpu(backend='torch')"` (or `--force-venv-backend none`)
    where the backend and keras are already installed and a GPU is visible; it fails,
    rather than skips, when the backend sees no GPU. Arguments after `--` go to pytest:
    `-- --part 1/3` runs a third of the suite (whole files), `-- -n 8` spreads it over
    pytest-xdist workers. `benchmarks/gpu_check.sh` runs both backends and the benchmark
    on a machine lent for a few minutes.
    """
    env = {
        "KERAS_BACKEND": backend,
        "KERASRNN_REQUIRE_GPU": "1",
        "XLA_PYTHON_CLIENT_PREALLOCATE": "false",  # leave GPU memory for torch in-process
        # The suite checks the equations at float32 precision: no TF32 tensor-core
        # matmuls (cuBLAS/cuDNN default on Ampere and later, JAX's default on GPU).
        "NVIDIA_TF32_OVERRIDE": "0",
        "JAX_DEFAULT_MATMUL_PRECISION": "highest",
        # Deterministic kernels, so that a resumed run ends where an uninterrupted one
        # does (the resume tests): XLA's scatter without atomics, cuBLAS's fixed
        # workspace (torch's RNN docs), torch's switch (tests/conftest.py).
        "XLA_FLAGS": " ".join(filter(None, (os.environ.get("XLA_FLAGS"), "--xla_gpu_deterministic_ops=true"))),
        "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
        "KERASRNN_DETERMINISTIC": "1",
        "PYTHONPATH": os.pathsep.join(p for p in (os.getcwd(), os.environ.get("PYTHONPATH")) if p),
    }
    session.run(sys.executable, "-m", "pytest", "-q", *session.posargs, env=env, external=True)


@nox.session(default=False)
@nox.parametrize("backend", BACKENDS)
def bench(session, backend):
    """Speed of kerasrnn vs keras.layers (and torch.nn on torch), printed as ratios."""
    _run_benchmark(session, backend, "benchmarks/rnn_bench.py")


@nox.session(default=False)
@nox.parametrize("backend", BACKENDS)
def bench_decode(session, backend):
    """Speed of `Seq2Seq.translate`, compiled steps vs op by op, printed as ratios."""
    _run_benchmark(session, backend, "benchmarks/decode_bench.py")


def _run_benchmark(session, backend, script):
    _install(session, *CPU_BACKEND_PACKAGES)
    _install(session, "-e", ".")
    session.run("python", script, *session.posargs, env=_env(backend))


@nox.session(default=False)
def hub(session):
    """keras-hub's samplers driving a kerasrnn decoder, on every backend.

    keras-hub comes from PyPI with what it requires (TensorFlow and tensorflow-text, on
    every backend), which is why it is an optional extra and this session is not part of
    `nox -s tests`. One environment; the test file runs once per backend.
    """
    _install(session, "jax", "torch==2.13.0", "pytest>=8", "numpy")
    _install(session, "-e", ".[hub]")
    for backend in BACKENDS:
        session.run("pytest", "-q", "-p", "no:cacheprovider", "tests/test_keras_hub.py",
                    "kerasrnn/seq2seq/hub.py", *session.posargs, env=_env(backend))


@nox.session(default=False)
def docs(session):
    """Build the site with `mkdocs build --strict`, then check it in headless Chromium.

    The figures of the Concepts pages are drawn by the package on JAX (the one backend
    installed here). Any warning fails the build: a broken link or anchor, a missing
    reference, a docstring that does not parse, a missing results file. The browser
    check (docs/tools/check_render.py) skips where no Chromium is installed.
    """
    _install(session, "-e", ".[docs]", "jax")
    env = _env("jax")
    env["NO_MKDOCS_2_WARNING"] = "1"  # Material's banner about its successor
    session.run("mkdocs", "build", "--strict", *session.posargs, env=env)
    session.run("python", "docs/tools/check_render.py", "site", env=env)


@nox.session(default=False)
def lint(session):
    """ruff over the package, tests, recipes, benchmarks and the docs' scripts."""
    _install(session, "ruff")
    session.run("ruff", "check", "kerasrnn", "tests", "recipes", "benchmarks", "docs", "noxfile.py")
