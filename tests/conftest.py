"""Shared fixtures. The backend is chosen by KERAS_BACKEND before Keras is imported."""

import atexit
import importlib.util
import os
import shutil
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# Temporary files of a run go to one folder, removed when the run ends: the doctests'
# `tempfile.mkdtemp()` (the examples stay as a user would write them), Keras's and
# torch's own temporary files, and those of child processes (`TMPDIR`). Without it
# every run left ~10 folders per backend in the system's temporary directory (540 after
# a few weeks here). pytest's `tmp_path` folders stay where pytest keeps them (its last
# three runs, for looking at a failure). The first process makes the folder; pytest-xdist's
# workers and nested runs, started after it, find it in `KERASRNN_TMP` and use it too.
# Before Keras is imported: importing torch fixes its compile cache's folder
# (`TORCHINDUCTOR_CACHE_DIR`) from the temporary directory of that moment.
_tmp = os.environ.get("KERASRNN_TMP")
if not _tmp or not os.path.isdir(_tmp):
    os.environ.setdefault("PYTEST_DEBUG_TEMPROOT", tempfile.gettempdir())
    _tmp = tempfile.mkdtemp(prefix="kerasrnn-tests-")
    os.environ["KERASRNN_TMP"] = _tmp
    atexit.register(shutil.rmtree, _tmp, ignore_errors=True)
tempfile.tempdir = os.environ["TMPDIR"] = _tmp

import keras
import numpy as np
import pytest

BACKEND = keras.backend.backend()

if BACKEND == "jax" and not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    # Eager `lax.scan` compiles its body on every layer call (~0.4 s here), and most
    # tests compile programs another test already compiled. JAX's persistent cache,
    # keyed by the program, turns those into lookups: the suite runs several times
    # faster. A fresh directory per run (removed at exit): nothing stale is read. The
    # first process makes it and pytest-xdist's workers, started after it, share it
    # (`KERASRNN_JAX_CACHE`), so a program is compiled once per run, not once per
    # worker. Without a size limit JAX takes no file lock (with one, every write scans
    # the whole directory); an entry read while another worker still writes it fails
    # to decompress, which JAX reports as a warning and answers by compiling.
    import jax

    _cache_dir = os.environ.get("KERASRNN_JAX_CACHE")
    if not _cache_dir or not os.path.isdir(_cache_dir):
        _cache_dir = tempfile.mkdtemp(prefix="kerasrnn-jax-")
        os.environ["KERASRNN_JAX_CACHE"] = _cache_dir
        atexit.register(shutil.rmtree, _cache_dir, ignore_errors=True)
    jax.config.update("jax_compilation_cache_dir", _cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
SHARED_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")


def has_gpu():
    """Whether the current backend sees a GPU."""
    try:
        if BACKEND == "torch":
            import torch

            return torch.cuda.is_available()
        if BACKEND == "jax":
            import jax

            return any(d.platform == "gpu" for d in jax.devices())
        if BACKEND == "tensorflow":
            import tensorflow as tf

            return bool(tf.config.list_physical_devices("GPU"))
    except Exception:  # noqa: BLE001 (no usable GPU, whatever the reason)
        return False
    return False


ON_GPU = has_gpu()

# The `gpu` session asks for deterministic kernels (with XLA_FLAGS and
# CUBLAS_WORKSPACE_CONFIG for JAX and cuBLAS): the resume tests compare a resumed run with
# an uninterrupted one, and a GPU's atomic adds (an embedding's gradient, for one) sum in
# a different order on every run. torch's switch is a call, not an environment variable.
if BACKEND == "torch" and os.environ.get("KERASRNN_DETERMINISTIC") == "1":
    import torch

    torch.use_deterministic_algorithms(True, warn_only=True)


def other_backend():
    """The next installed backend after this one (tensorflow → jax → torch → tensorflow),
    for the tests that save on one backend and load on another; `None` where this is
    the only one (a GPU image with torch and JAX has no TensorFlow)."""
    order = ["tensorflow", "jax", "torch"]
    i = order.index(BACKEND)
    return next((b for b in order[i + 1 :] + order[:i] if importlib.util.find_spec(b)), None)

#: Tolerances of float32 comparisons between a fused cuDNN kernel (torch on CUDA) and the
#: `keras.ops` loop. cuDNN sums the products of all gates in one matrix product, in its
#: own order and with fused multiply-adds, so its float32 results differ from the loop's
#: by rounding that grows with the sequence. Measured on an H200 with TF32 off (the `gpu`
#: nox session), at the parity tests' shapes (batch 4, 6 steps, 5 units): outputs and
#: states differ by at most 8.3e-6 (simple RNN; LSTM 2.5e-6, GRU 3.5e-6), the weighted
#: losses by 1.5e-4 relative, a three-layer stack's golden values by 1.3e-5. The
#: GPU tolerances are about three times those bounds. Gradients were not reached by that
#: run (the outputs failed first), so their GPU tolerance is the outputs' scaled by the
#: steps they sum over, until a run measures it (tests/test_gpu.py writes the measured
#: bounds to $KERASRNN_GPU_REPORT). The float64 comparisons in tests/test_gpu.py keep
#: the CPU's tight tolerances: cuDNN computes the same equations. JAX's cuDNN LSTM is
#: the same cuDNN kernel, reached through `jax.experimental.rnn`; until a GPU run
#: measures it, it is given torch's bounds.
CUDNN_FLOAT32 = {
    "outputs": {"rtol": 1e-5, "atol": 2.5e-5},
    "loss": {"rtol": 5e-4},
    "gradients": {"rtol": 1e-3, "atol": 1.5e-4},
    "stack": {"atol": 4e-5},
}


def _jax_runs_cudnn_lstm():
    """Whether kerasrnn's JAX LSTM takes cuDNN's kernel here (`jax.experimental.rnn`,
    on a GPU) rather than the loop: asked of the package's own check."""
    if BACKEND != "jax":
        return False
    import jax.numpy as jnp

    from kerasrnn.ops import fused

    return fused._jax_cudnn_ready(jnp.zeros(()))


#: Whether a plain, unmasked float32 `kerasrnn.LSTM` runs a fused kernel here with the
#: default `fused="auto"`: torch's kernels on any device, JAX's cuDNN LSTM on a GPU. (On
#: torch the GRU and SimpleRNN do too; on JAX they always run the loop.)
JAX_CUDNN = _jax_runs_cudnn_lstm()
FUSED_LSTM = BACKEND == "torch" or JAX_CUDNN
#: Whether torch's fused kernels run on cuDNN here (a GPU), with cuDNN's rounding.
TORCH_CUDNN = BACKEND == "torch" and ON_GPU


def fused_tolerance(kind, *ran, **cpu):
    """`cpu` (the tolerance on a CPU, unchanged), or `CUDNN_FLOAT32[kind]` where a
    comparison went through cuDNN: torch's fused kernels on a GPU, or JAX's cuDNN LSTM.
    Given the layers that ran (`ran`), their `last_path` says whether a fused kernel
    took part; without them, every torch layer on a GPU is taken to have run one."""
    cudnn = TORCH_CUDNN or JAX_CUDNN
    if ran:
        cudnn = cudnn and any(str(getattr(layer, "last_path", "")).startswith("fused:") for layer in ran)
    return dict(CUDNN_FLOAT32[kind]) if cudnn else cpu


def pytest_addoption(parser):
    parser.addoption(
        "--part", default=None, metavar="K/N",
        help="run part K of N of the collected tests (whole files, balanced by count), "
        "e.g. `nox --no-venv -s \"gpu(backend='jax')\" -- --part 1/3` on a machine lent for "
        "a few minutes at a time",
    )


def _select_part(config, items):
    part = config.getoption("--part")
    if not part:
        return
    try:
        k, n = (int(v) for v in part.split("/"))
        assert 1 <= k <= n
    except (ValueError, AssertionError):
        raise pytest.UsageError(f"--part takes K/N with 1 <= K <= N; received {part!r}.") from None
    counts = {}
    for item in items:
        counts[item.fspath.strpath] = counts.get(item.fspath.strpath, 0) + 1
    loads, owner = [0] * n, {}
    for path in sorted(counts, key=lambda p: (-counts[p], p)):  # largest files first
        lightest = loads.index(min(loads))
        owner[path] = lightest
        loads[lightest] += counts[path]
    kept = [item for item in items if owner[item.fspath.strpath] == k - 1]
    config.hook.pytest_deselected(items=[item for item in items if owner[item.fspath.strpath] != k - 1])
    items[:] = kept


#: The files that check what a GPU changes: the GPU-only tests, the fused kernels and
#: their weights, the float32 tolerances, parity with keras.layers and torch.nn. A run on
#: a GPU or against the clock (`KERASRNN_TEST_DEADLINE`) starts with them, in this
#: order, so a run cut short by its deadline leaves out the rest of the suite, not these.
GPU_FIRST = (
    "test_gpu.py",
    "test_jax_cudnn.py",
    "test_fused_weights.py",
    "test_fused_masked.py",
    "test_torch_parity.py",
    "test_keras_parity.py",
    "test_golden.py",
    "test_deep_rnn.py",
    "test_gradients.py",
    "test_layer_norm.py",
)


def _gpu_files_first(items):
    def rank(item):
        name = item.path.name
        return GPU_FIRST.index(name) if name in GPU_FIRST else len(GPU_FIRST)

    items.sort(key=rank)  # stable: the rest keeps its order


def pytest_collection_modifyitems(config, items):
    _select_part(config, items)
    if ON_GPU or os.environ.get("KERASRNN_TEST_DEADLINE"):
        _gpu_files_first(items)
    skip = pytest.mark.skip(reason="needs a GPU")
    for item in items:
        if "gpu" in item.keywords and not ON_GPU:
            item.add_marker(skip)


class _Deadline:
    """With `KERASRNN_TEST_DEADLINE` (seconds since the epoch), tests that have not
    started by then are skipped ("out of time"): a run on a machine lent for a few
    minutes (benchmarks/gpu_check.sh) then ends with its summary, the failures and what
    was left, instead of being killed with nothing to show. A plugin rather than a hook
    of this file, whose `runtest` hooks reach only the items under tests/ (the
    doctests of kerasrnn/ are collected too)."""

    REASON = "out of time (KERASRNN_TEST_DEADLINE passed before this test started)"
    #: A test marked `slow` (up to minutes: virtual-device children, whole recipes)
    #: starts only with this many seconds left.
    SLOW_NEEDS = 150

    def __init__(self, deadline):
        self.deadline = float(deadline)
        self.left = 0

    def pytest_runtest_setup(self, item):
        needs = self.SLOW_NEEDS if item.get_closest_marker("slow") else 0
        if time.time() > self.deadline - needs:
            pytest.skip(self.REASON)

    def pytest_runtest_logreport(self, report):  # here, or forwarded from xdist's workers
        if report.skipped and self.REASON in str(report.longrepr):
            self.left += 1

    def pytest_sessionfinish(self, session, exitstatus):
        # A run that left tests out is not a green run.
        if self.left and exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter):
        if self.left:
            terminalreporter.write_line(f"kerasrnn: {self.left} tests out of time, not run", red=True)


def pytest_configure(config):
    # Here, not at collection: under pytest-xdist this runs in the controller before any
    # worker starts, and the reason reaches the user (a worker's usage error at
    # collection ends the run as an INTERNALERROR without it).
    if os.environ.get("KERASRNN_REQUIRE_GPU") == "1" and not ON_GPU:
        raise pytest.UsageError("KERASRNN_REQUIRE_GPU=1 but the backend sees no GPU.")
    deadline = os.environ.get("KERASRNN_TEST_DEADLINE")
    if deadline:
        config.pluginmanager.register(_Deadline(deadline), "kerasrnn-deadline")


@pytest.fixture(autouse=True)
def _seed_and_policy():
    keras.utils.set_random_seed(1234)
    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_dtype_policy("float32")


@pytest.fixture
def float64():
    """Lets the backend compute in float64 during the test (JAX needs `jax_enable_x64`)."""
    if BACKEND == "jax":
        import jax

        with jax.enable_x64(True):
            yield
    else:
        yield


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def requires_shared_data(*parts):
    """Skip unless ../shared/data/<parts> exists (never committed to the repo)."""
    path = os.path.join(SHARED_DATA, *parts)
    return pytest.mark.skipif(not os.path.exists(path), reason=f"{path} is absent")
