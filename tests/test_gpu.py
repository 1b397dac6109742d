"""GPU-only checks: the fused cuDNN paths (torch, JAX's LSTM), their weights, float64
exactness, mixed precision, and the measured float32 bounds.

Skipped without a GPU (see conftest); `nox -s gpu` makes a missing GPU an error instead.
With `KERASRNN_GPU_REPORT=path.json` the float32 deviations measured here are written
next to that path (`path-<worker>.json`, one per pytest-xdist worker), so the
tolerances in conftest.CUDNN_FLOAT32 can be set from them.
"""

import json
import os
import warnings

import keras
import numpy as np
import pytest
from _util import loss_and_grads, nonzero_uniform, random_weights
from conftest import BACKEND, CUDNN_FLOAT32, to_numpy

import kerasrnn
from kerasrnn.ops import fused
from kerasrnn.ops.device import on_accelerator
from kerasrnn.ops.plan import LOOP_DEFAULTS, device_kind, plan_call

pytestmark = pytest.mark.gpu

LAYERS = [kerasrnn.LSTM, kerasrnn.GRU, kerasrnn.SimpleRNN]
#: Where a fused kernel runs on a GPU, by backend: (layer class -> `last_path`).
FUSED_PATHS = {
    "torch": {
        kerasrnn.LSTM: "fused:torch._VF.lstm",
        kerasrnn.GRU: "fused:torch._VF.gru",
        kerasrnn.SimpleRNN: "fused:torch._VF.rnn_tanh",
    },
    "jax": {kerasrnn.LSTM: "fused:jax.experimental.rnn.lstm"},
}
_REPORT = {}


def _x(rng, batch=8, time=12, features=5):
    return (rng.random((batch, time, features)) + 0.1).astype("float32")


def _record(name, **values):
    _REPORT.setdefault(name, {}).update({k: float(v) for k, v in values.items()})
    path = os.environ.get("KERASRNN_GPU_REPORT")
    if path:  # one file per pytest-xdist worker
        path = path.replace(".json", f"-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}.json")
        with open(path, "w") as f:
            json.dump({"backend": BACKEND, "measured": _REPORT}, f, indent=1)


def _pair(layer_cls, dtype="float32", **kwargs):
    fast = layer_cls(16, return_sequences=True, return_state=True, dtype=dtype, **kwargs)
    ref = layer_cls(16, return_sequences=True, return_state=True, fused=False,
                    hoist_inputs=False, dtype=dtype, **kwargs)
    return fast, ref


@pytest.mark.parametrize("layer_cls", LAYERS)
@pytest.mark.parametrize("masked", [False, True])
def test_fast_path_on_gpu_matches_reference_loop(layer_cls, masked, rng):
    x = _x(rng)
    lengths = rng.integers(1, 13, size=(8, 1))
    mask = np.arange(12)[None, :] < lengths if masked else None
    fast, ref = _pair(layer_cls)
    fast(x, mask=mask)
    ref(x, mask=mask)
    ref.set_weights(fast.get_weights())
    out_fast = fast(x, mask=mask)
    out_ref = ref(x, mask=mask)
    assert on_accelerator(out_fast[0])
    expected = FUSED_PATHS.get(BACKEND, {}).get(layer_cls)
    if expected and not (masked and BACKEND == "jax"):
        assert fast.last_path == expected, fast.last_path_reason
    worst = max(np.abs(to_numpy(a) - to_numpy(b)).max() for a, b in zip(out_fast, out_ref))
    _record(f"outputs/{layer_cls.__name__}/{'masked' if masked else 'full'}", max_abs=worst)
    for a, b in zip(out_fast, out_ref):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), atol=2e-5)


@pytest.mark.parametrize("layer_cls", LAYERS)
def test_float64_fused_kernel_computes_the_same_equations(layer_cls, rng, float64):
    """In float64 rounding is out of the way: cuDNN's results and gradients equal the
    loop's to the CPU's tolerance (torch runs cuDNN in double; JAX's LSTM takes float32
    only, so there this compares the hoisted loop with the other one)."""
    fast, ref = _pair(layer_cls, dtype="float64")
    for layer in (fast, ref):
        layer.build((None, 12, 5))
    random_weights(fast, rng)
    ref.set_weights(fast.get_weights())
    x = nonzero_uniform(rng, (8, 12, 5))
    got, want = fast(x), ref(x)
    if BACKEND == "torch":
        assert fast.last_path == FUSED_PATHS["torch"][layer_cls]
    for a, b in zip(got, want):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-10, atol=1e-12)
    cotangents = [nonzero_uniform(rng, tuple(o.shape)) for o in want]
    _, dx_f, dw_f = loss_and_grads(fast, x, cotangents)
    _, dx_r, dw_r = loss_and_grads(ref, x, cotangents)
    for g_f, g_r in zip([dx_f, *dw_f], [dx_r, *dw_r]):
        np.testing.assert_allclose(g_f, g_r, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("layer_cls", LAYERS)
def test_float32_gradients_and_their_measured_bound(layer_cls, rng):
    fast, ref = _pair(layer_cls)
    for layer in (fast, ref):
        layer.build((None, 12, 5))
    random_weights(fast, rng)
    ref.set_weights(fast.get_weights())
    x = nonzero_uniform(rng, (8, 12, 5)).astype("float32")
    cotangents = [nonzero_uniform(rng, tuple(o.shape)) for o in ref(x)]
    loss_f, dx_f, dw_f = loss_and_grads(fast, x, cotangents)
    loss_r, dx_r, dw_r = loss_and_grads(ref, x, cotangents)
    worst = max(np.abs(a - b).max() for a, b in zip([dx_f, *dw_f], [dx_r, *dw_r]))
    _record(f"gradients/{layer_cls.__name__}", max_abs=worst,
            loss_rel=abs(loss_f - loss_r) / abs(loss_r))
    tol = CUDNN_FLOAT32["gradients"]
    for g_f, g_r in zip([dx_f, *dw_f], [dx_r, *dw_r]):
        np.testing.assert_allclose(g_f, g_r, **tol)


@pytest.mark.skipif(BACKEND != "torch", reason="torch's cuDNN weight buffer")
@pytest.mark.parametrize("policy", ["float32", "mixed_float16"])
@pytest.mark.parametrize("make", [
    lambda: kerasrnn.LSTM(16, return_sequences=True),
    lambda: kerasrnn.LSTM(16, proj_size=8, return_sequences=True),
    lambda: kerasrnn.GRU(16, return_sequences=True),
    lambda: kerasrnn.SimpleRNN(16, return_sequences=True),
    lambda: kerasrnn.DeepRNN.repeat(kerasrnn.LSTM(16), 2, bidirectional=True, return_sequences=True),
    lambda: kerasrnn.DeepRNN.repeat(kerasrnn.GRU(16), 3, return_sequences=True),
], ids=["lstm", "lstm_proj", "gru", "simple", "deep_bi_lstm", "deep_gru"])
def test_cudnn_never_compacts_the_weights(make, policy, rng):
    """cuDNN warns when the weights are not one buffer in its layout ("compacted at
    every call"); forward and backward must not."""
    keras.config.set_dtype_policy(policy)
    layer = make()
    x = _x(rng)
    layer(x)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            out = layer(x)
            keras.ops.sum(keras.ops.cast(out, "float32")).backward()
    assert layer.last_path.startswith("fused:"), layer.last_path_reason
    assert not [w for w in caught if "contiguous chunk" in str(w.message)]


@pytest.mark.skipif(BACKEND != "torch", reason="torch's cuDNN weight buffer")
@pytest.mark.parametrize("options", [
    {"mode": "LSTM"}, {"mode": "LSTM", "proj_size": 8}, {"mode": "GRU"},
    {"mode": "RNN_TANH", "bidirectional": True, "num_layers": 2}, {"mode": "LSTM", "bias": False},
], ids=["lstm", "lstm_proj", "gru", "rnn_bi2", "lstm_nobias"])
def test_buffer_layout_is_torch_nn_s(options, rng):
    """The offsets of our buffer are those of `torch.nn` after `flatten_parameters()`."""
    import torch

    options = dict(options)
    mode = options.pop("mode")
    num_layers, bidirectional = options.get("num_layers", 1), options.get("bidirectional", False)
    kind = {"LSTM": torch.nn.LSTM, "GRU": torch.nn.GRU, "RNN_TANH": torch.nn.RNN}[mode]
    module = kind(5, 16, batch_first=True, **options).cuda()
    module.flatten_parameters()
    theirs = [w.storage_offset() for w in module._flat_weights]
    layer_cls = {"LSTM": kerasrnn.LSTM, "GRU": kerasrnn.GRU, "RNN_TANH": kerasrnn.SimpleRNN}[mode]
    layer_kwargs = {"use_bias": options.get("bias", True)}
    if options.get("proj_size"):
        layer_kwargs["proj_size"] = options["proj_size"]
    if num_layers > 1 or bidirectional:
        layer = kerasrnn.DeepRNN.repeat(layer_cls(16, **layer_kwargs), num_layers, bidirectional=bidirectional)
        layer(_x(rng))
        owner = layer
    else:
        layer = layer_cls(16, **layer_kwargs)
        layer(_x(rng))
        owner = layer.cell
    (layout,) = owner._kerasrnn_flat_weights.buffers
    assert layout.offsets == theirs


@pytest.mark.skipif(BACKEND != "torch", reason="torch tensors from the host")
@pytest.mark.parametrize("layer_cls", LAYERS)
def test_host_tensors_in_gpu_layers(layer_cls, rng):
    """A CPU tensor (with a right-padded mask) goes where the weights are, as Keras's
    own layers take it; gradients flow back to it."""
    import torch

    x = torch.tensor(_x(rng), requires_grad=True)
    mask = torch.tensor(np.arange(12)[None, :] < np.array([[12], [5], [3], [12], [1], [7], [9], [2]]))
    layer = layer_cls(16, return_sequences=True)
    out = layer(x, mask=mask)
    assert out.device.type == "cuda" and layer.last_path.startswith("fused:")
    out.sum().backward()
    assert x.grad is not None and x.grad.device.type == "cpu"


def test_loop_choices_on_gpu_are_the_planners_gpu_column(rng):
    x = keras.ops.convert_to_tensor(_x(rng))
    layer = kerasrnn.GRU(8, fused=False)
    layer(x)
    plan = plan_call(layer.cell, x, None, False, layer.cell.loop_constants(x), fused=False)
    assert device_kind(x) == "gpu"
    assert plan.hoist == LOOP_DEFAULTS[(BACKEND, "gpu")]["hoist"]
    assert plan.remat is False and plan.xla is False


@pytest.mark.parametrize("layer_cls", LAYERS)
def test_fit_on_gpu_lowers_the_loss(layer_cls, rng):
    x = _x(rng, batch=64)
    y = x[:, -3:, 0].sum(axis=1, keepdims=True)
    model = keras.Sequential([keras.Input((12, 5)), layer_cls(32), keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    first = model.evaluate(x, y, verbose=0)
    model.fit(x, y, epochs=30, batch_size=16, verbose=0)
    assert model.evaluate(x, y, verbose=0) < 0.5 * first


@pytest.mark.parametrize("layer_cls", LAYERS)
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_on_gpu(layer_cls, policy, rng):
    x = _x(rng)
    full = layer_cls(16, return_sequences=True)
    reference = to_numpy(full(x))
    keras.config.set_dtype_policy(policy)
    half = layer_cls(16, return_sequences=True)
    half(x)
    half.set_weights(full.get_weights())
    out = half(x)
    assert str(out.dtype).split(".")[-1] == policy.split("_")[1]
    if BACKEND == "torch":  # the kernel takes half precision (JAX's takes float32 only)
        assert half.last_path.startswith("fused:"), half.last_path_reason
    tol = 2e-2 if policy == "mixed_bfloat16" else 3e-3
    np.testing.assert_allclose(to_numpy(keras.ops.cast(out, "float32")), reference, atol=tol)


@pytest.mark.skipif(BACKEND != "jax", reason="JAX's cuDNN LSTM")
def test_jax_cudnn_lstm_under_vmap_and_a_bfloat16_precision(rng):
    """cuDNN's `rnn_fwd`/`rnn_bwd` have no batching rule and no bfloat16 math: `jax.vmap`
    and per-example gradients run the kernel once per slice, and under a 'bfloat16'
    default precision the layer runs the loop (test_jax_cudnn checks both on a CPU with a
    stand-in; this, with the kernel)."""
    import jax
    import jax.numpy as jnp

    fast, ref = kerasrnn.LSTM(16, return_sequences=True), kerasrnn.LSTM(16, return_sequences=True, fused=False)
    for layer in (fast, ref):
        layer.build((None, 12, 5))
    random_weights(fast, rng)
    ref.set_weights(fast.get_weights())
    xs = jnp.asarray(np.stack([_x(rng), _x(rng)]))
    weights = [v.value for v in fast.trainable_variables]

    def run(layer, w, x):
        return layer.stateless_call(w, [v.value for v in layer.non_trainable_variables], x)[0]

    results = []
    for layer in (fast, ref):
        grad = jax.grad(lambda w, x, layer=layer: jnp.sum(jnp.sin(run(layer, w, x))))
        results.append([jax.vmap(lambda x, layer=layer: run(layer, weights, x))(xs),
                        *jax.vmap(grad, in_axes=(None, 0))(weights, xs)])
    assert fast.last_path == "fused:jax.experimental.rnn.lstm", fast.last_path_reason
    np.testing.assert_allclose(results[0][0], results[1][0], **CUDNN_FLOAT32["outputs"])
    for g_f, g_r in zip(results[0][1:], results[1][1:]):
        np.testing.assert_allclose(g_f, g_r, **CUDNN_FLOAT32["gradients"])
    with jax.default_matmul_precision("bfloat16"):
        out = fast(xs[0])
        assert fast.last_path == "kerasrnn.ops.unroll" and "bfloat16" in fast.last_path_reason
    np.testing.assert_allclose(to_numpy(out), results[1][0][0], atol=5e-2)


@pytest.mark.skipif(BACKEND != "jax", reason="JAX's cuDNN LSTM")
def test_jax_cudnn_lstm_inside_shard_map(rng, monkeypatch):
    """Under a Keras distribution that splits the batch, the kernel runs in `jax.shard_map`
    (test_distribute checks the rows each device gets, on CPU devices with a stand-in).
    Here the kernel's own custom call runs in shard_map's manual region, on a mesh of this
    one GPU: outputs and gradients as the loop's."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import Mesh

    mesh = Mesh(np.array(jax.devices()[:1]), ("batch",))
    split, sharded = [], fused._per_batch_shard
    monkeypatch.setattr(fused, "_jax_batch_split", lambda batch: (mesh, "batch"))
    monkeypatch.setattr(fused, "_per_batch_shard", lambda *a: split.append(a[1:]) or sharded(*a))
    fast, ref = kerasrnn.LSTM(16, return_sequences=True), kerasrnn.LSTM(16, return_sequences=True, fused=False)
    for layer in (fast, ref):
        layer.build((None, 12, 5))
    random_weights(fast, rng)
    ref.set_weights(fast.get_weights())
    x = jnp.asarray(_x(rng))
    weights = [v.value for v in fast.trainable_variables]

    def loss(layer, w, x):
        out = layer.stateless_call(w, [v.value for v in layer.non_trainable_variables], x)[0]
        return jnp.sum(jnp.sin(out)), out

    results = [jax.jit(jax.grad(lambda w, x, layer=layer: loss(layer, w, x), argnums=(0, 1), has_aux=True))(weights, x)
               for layer in (fast, ref)]
    assert fast.last_path == "fused:jax.experimental.rnn.lstm", fast.last_path_reason
    assert split == [(mesh, "batch")]
    (grads_fast, out_fast), (grads_ref, out_ref) = results
    np.testing.assert_allclose(out_fast, out_ref, **CUDNN_FLOAT32["outputs"])
    for g_f, g_r in zip(jax.tree.leaves(grads_fast), jax.tree.leaves(grads_ref), strict=True):
        np.testing.assert_allclose(g_f, g_r, **CUDNN_FLOAT32["gradients"])
