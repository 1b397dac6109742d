"""Sessions: tests per backend (CPU), gpu per backend, bench, recipes, docs, lint.

    nox -s tests                      # all three backends on the CPU
    nox -s "tests(backend='jax')"     # one backend
    nox -s bench -- --cells lstm      # benchmark (not part of the tests)
    nox --no-venv -s "gpu(backend='torch')"   # in an existing environment with a GPU
"""

import os

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = False

BACKENDS = ["tensorflow", "jax", "torch"]
# CPU builds: torch 2.13.0 is a CPU wheel (a plain `torch` pulls a multi-GB CUDA build);
# tensorflow-cpu likewise. Every test session installs all three backends, because the
# parity tests compare with torch.nn and the save/load tests cross backends.
CPU_BACKEND_PACKAGES = ["tensorflow-cpu", "jax", "torch==2.13.0"]
TEST_PACKAGES = ["pytest>=8", "numpy", "matplotlib", "statsmodels", "scikit-learn"]


def _env(backend):
    return {
        "KERAS_BACKEND": backend,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
    }


@nox.session
@nox.parametrize("backend", BACKENDS)
def tests(session, backend):
    """The test suite on the CPU with KERAS_BACKEND=backend (all backends installed)."""
    session.install(*CPU_BACKEND_PACKAGES, *TEST_PACKAGES)
    session.install("-e", ".")
    env = _env(backend)
    env["CUDA_VISIBLE_DEVICES"] = ""  # CPU session: never pick up a GPU
    session.run("pytest", "-q", *session.posargs, env=env)


@nox.session(python=False, default=False)
@nox.parametrize("backend", BACKENDS)
def gpu(session, backend):
    """The suite plus GPU-only tests, in the current environment (no venv, no network).

    Run with `nox --no-venv -s "gpu(backend='torch')"` (or `--force-venv-backend none`)
    where the backend and keras are already installed and a GPU is visible; it fails,
    rather than skips, when the backend sees no GPU.
    """
    env = {"KERAS_BACKEND": backend, "KERASRNN_REQUIRE_GPU": "1", "PYTHONPATH": os.getcwd()}
    session.run("python", "-m", "pytest", "-q", *session.posargs, env=env)


@nox.session(default=False)
@nox.parametrize("backend", BACKENDS)
def bench(session, backend):
    """Speed of kerasrnn vs keras.layers (and torch.nn on torch), printed as ratios."""
    session.install(*CPU_BACKEND_PACKAGES)
    session.install("-e", ".")
    session.run("python", "benchmarks/rnn_bench.py", *session.posargs, env=_env(backend))


@nox.session(default=False)
def lint(session):
    """ruff over the package, tests, recipes and benchmarks."""
    session.install("ruff")
    session.run("ruff", "check", "kerasrnn", "tests", "recipes", "benchmarks", "noxfile.py")
