"""GPU-only checks: the fused cuDNN path on torch, the hoisting choice on JAX, float16.

Skipped without a GPU (see conftest); `nox -s gpu` makes a missing GPU an error instead.
"""

import keras
import numpy as np
import pytest

import kerasrnn
from kerasrnn.layers.rnn import HOIST_DEFAULTS
from kerasrnn.ops.device import on_accelerator
from tests.conftest import BACKEND, to_numpy

pytestmark = pytest.mark.gpu

LAYERS = [kerasrnn.LSTM, kerasrnn.GRU, kerasrnn.SimpleRNN]


def _x(rng, batch=8, time=12, features=5):
    return (rng.random((batch, time, features)) + 0.1).astype("float32")


@pytest.mark.parametrize("layer_cls", LAYERS)
@pytest.mark.parametrize("masked", [False, True])
def test_fast_path_on_gpu_matches_reference_loop(layer_cls, masked, rng):
    x = _x(rng)
    mask = np.arange(12)[None, :] < rng.integers(1, 13, size=(8, 1)) if masked else None
    fast = layer_cls(16, return_sequences=True, return_state=True)
    ref = layer_cls(16, return_sequences=True, return_state=True, fused=False, hoist_inputs=False)
    fast(x, mask=mask)
    ref(x, mask=mask)
    ref.set_weights(fast.get_weights())
    out_fast = fast(x, mask=mask)
    out_ref = ref(x, mask=mask)
    assert on_accelerator(out_fast[0])
    if BACKEND == "torch":
        assert fast.last_path.startswith("fused:torch._VF."), fast.last_path_reason
    for a, b in zip(out_fast, out_ref):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), atol=2e-5)


def test_hoisting_default_on_gpu_is_measured_choice(rng):
    layer = kerasrnn.GRU(8)
    x = _x(rng)
    assert layer._hoist(keras.ops.convert_to_tensor(x)) == HOIST_DEFAULTS[(BACKEND, True)]


@pytest.mark.parametrize("layer_cls", LAYERS)
def test_fit_on_gpu_lowers_the_loss(layer_cls, rng):
    x = _x(rng, batch=64)
    y = x[:, -3:, 0].sum(axis=1, keepdims=True)
    model = keras.Sequential([keras.Input((12, 5)), layer_cls(32), keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    first = model.evaluate(x, y, verbose=0)
    model.fit(x, y, epochs=30, batch_size=16, verbose=0)
    assert model.evaluate(x, y, verbose=0) < 0.5 * first


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_on_gpu(policy, rng):
    x = _x(rng)
    full = kerasrnn.LSTM(16, return_sequences=True)
    reference = to_numpy(full(x))
    keras.config.set_dtype_policy(policy)
    half = kerasrnn.LSTM(16, return_sequences=True)
    half(x)
    half.set_weights(full.get_weights())
    out = half(x)
    assert str(out.dtype).split(".")[-1] == policy.split("_")[1]
    tol = 2e-2 if policy == "mixed_bfloat16" else 3e-3
    np.testing.assert_allclose(to_numpy(keras.ops.cast(out, "float32")), reference, atol=tol)
