"""JAX's cuDNN LSTM (`jax.experimental.rnn.lstm`, what `keras.layers.LSTM` runs on a JAX
GPU): where kerasrnn dispatches to it, and that the call around it (weights packed in
cuDNN's layout, states, `go_backwards`, gradients) computes what the loop computes. The
kernel needs a CUDA GPU; on a CPU its reference implementation stands in for it.
"""

import numpy as np
import pytest
from _util import jax_cudnn_stand_in, loss_and_grads, nonzero_uniform, random_weights
from conftest import BACKEND, JAX_CUDNN, to_numpy

import kerasrnn
from kerasrnn.ops import fused

pytestmark = pytest.mark.skipif(BACKEND != "jax", reason="JAX's cuDNN LSTM")

B, T, I, U = 3, 6, 5, 4


def _x(rng):
    return (rng.random((B, T, I)) + 0.1).astype("float32")


@pytest.fixture
def jax_cudnn_on_cpu(monkeypatch):
    """JAX's cuDNN LSTM stood in for by `_util.jax_cudnn_stand_in` and the device check answered
    yes: the dispatch, the weight packing and the conventions around the kernel run on a
    CPU."""
    parts = jax_cudnn_stand_in()
    monkeypatch.setattr(fused, "_jax_cudnn_ready", lambda x: True)
    monkeypatch.setattr(fused, "_jax_lstm_parts", lambda: parts)


@pytest.mark.parametrize("initial_state", [False, True], ids=["zero_h0", "given_h0"])
@pytest.mark.parametrize("go_backwards", [False, True], ids=["forward", "backward"])
@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "nobias"])
def test_jax_cudnn_lstm_matches_the_loop(use_bias, go_backwards, initial_state, rng, jax_cudnn_on_cpu):
    layers = []
    for fused_option in ("auto", False):
        layer = kerasrnn.LSTM(U, use_bias=use_bias, go_backwards=go_backwards, fused=fused_option,
                              return_sequences=True, return_state=True)
        layer.build((None, T, I))
        layers.append(layer)
    random_weights(layers[0], rng)
    layers[1].set_weights(layers[0].get_weights())
    x = _x(rng)
    kwargs = {}
    if initial_state:
        kwargs["initial_state"] = [nonzero_uniform(rng, (B, U)).astype("float32") for _ in range(2)]
    got, want = layers[0](x, **kwargs), layers[1](x, **kwargs)
    assert layers[0].last_path == "fused:jax.experimental.rnn.lstm", layers[0].last_path_reason
    assert layers[1].last_path == "kerasrnn.ops.unroll"
    for a, b in zip(got, want):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-5, atol=1e-6)
    cotangents = [nonzero_uniform(rng, tuple(o.shape)) for o in want]
    loss_f, dx_f, dw_f = loss_and_grads(layers[0], x, cotangents, **kwargs)
    loss_r, dx_r, dw_r = loss_and_grads(layers[1], x, cotangents, **kwargs)
    np.testing.assert_allclose(loss_f, loss_r, rtol=1e-5)
    np.testing.assert_allclose(dx_f, dx_r, rtol=1e-4, atol=1e-5)
    for g_f, g_r in zip(dw_f, dw_r):
        np.testing.assert_allclose(g_f, g_r, rtol=1e-4, atol=1e-5)


def test_jax_cudnn_lstm_is_used_only_where_exact(rng, jax_cudnn_on_cpu):
    x = _x(rng)
    cases = [
        (kerasrnn.LSTM(U), {"mask": np.ones((B, T), bool)}, "mask"),
        (kerasrnn.LSTM(U, proj_size=2), {}, "projection"),
        (kerasrnn.LSTM(U, use_peepholes=True), {}, "peepholes"),
        (kerasrnn.LSTM(U, recurrent_dropout=0.2), {"training": True}, "recurrent dropout"),
        (kerasrnn.GRU(U), {}, "LSTM only"),
        (kerasrnn.SimpleRNN(U), {}, "LSTM only"),
    ]
    for layer, call, reason in cases:
        layer(x, **call)
        assert layer.last_path == "kerasrnn.ops.unroll" and reason in layer.last_path_reason
    layer = kerasrnn.LSTM(U, dropout=0.3)  # input dropout goes on before the kernel
    layer(x, training=True)
    assert layer.last_path == "fused:jax.experimental.rnn.lstm"


def test_jax_cudnn_lstm_under_vmap(rng, jax_cudnn_on_cpu):
    """cuDNN's primitives have no batching rule: `jax.vmap` over the layer, per-example
    gradients (a vmapped backward pass with shared weights) and `jax.jacrev` run the
    kernel once per vmapped slice, and give what the loop gives."""
    import jax
    import jax.numpy as jnp

    V = 2
    layers = []
    for fused_option in ("auto", False):
        layer = kerasrnn.LSTM(U, fused=fused_option, return_sequences=True)
        layer.build((None, T, I))
        layers.append(layer)
    random_weights(layers[0], rng)
    layers[1].set_weights(layers[0].get_weights())
    xs = jnp.asarray((rng.random((V, B, T, I)) + 0.1).astype("float32"))
    weights = [v.value for v in layers[0].trainable_variables]

    def run(layer, w, x):
        return layer.stateless_call(w, [v.value for v in layer.non_trainable_variables], x)[0]

    def loss(layer, w, x):
        return jnp.sum(jnp.sin(run(layer, w, x)))

    got, want = ({}, {})
    for layer, out in zip(layers, (got, want)):
        out["vmap"] = jax.vmap(lambda x, layer=layer: run(layer, weights, x))(xs)
        out["jit(vmap)"] = jax.jit(jax.vmap(lambda x, layer=layer: run(layer, weights, x)))(xs)
        out["vmap(grad)"] = jax.vmap(jax.grad(lambda w, x, layer=layer: loss(layer, w, x)),
                                     in_axes=(None, 0))(weights, xs)
        out["jacrev"] = jax.jacrev(lambda x, layer=layer: run(layer, weights, x)[:, -1])(xs[0])
        out["vmap(weights)"] = jax.vmap(lambda w, layer=layer: run(layer, w, xs[0]))(
            [jnp.stack([w, 2 * w]) for w in weights])
    assert layers[0].last_path == "fused:jax.experimental.rnn.lstm", layers[0].last_path_reason
    for name, expected in want.items():
        for a, b in zip(jax.tree_util.tree_leaves(got[name]), jax.tree_util.tree_leaves(expected)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5, err_msg=name)


def test_jax_cudnn_lstm_only_under_a_precision_it_has(rng, jax_cudnn_on_cpu):
    """cuDNN's LSTM computes in float32 or TF32; under a bfloat16 default matmul precision
    (JAX's kernel raises NotImplementedError there) or a dot algorithm it cannot honour,
    the layer runs the loop, which honours it, and says why."""
    import jax

    x = _x(rng)
    for value, fuses in [("highest", True), ("float32", True), ("tensorfloat32", True),
                         ("high", True), ("bfloat16", False), ("default", False),
                         ("F32_F32_F32", False)]:
        with jax.default_matmul_precision(value):
            layer = kerasrnn.LSTM(U)
            layer(x)
            assert (layer.last_path == "fused:jax.experimental.rnn.lstm") == fuses, (value, layer.last_path)
            if not fuses:
                assert f"jax_default_matmul_precision={value!r}" in layer.last_path_reason
                with pytest.raises(ValueError, match="fused=True.*jax_default_matmul_precision"):
                    kerasrnn.LSTM(U, fused=True)(x)
    # The stand-in raises as the kernel does, so the check above is the layer's.
    from jax.experimental import rnn

    if hasattr(rnn, "_lstm_cudnn_allow_tf32"):
        with jax.default_matmul_precision("bfloat16"), pytest.raises(NotImplementedError):
            fused._jax_lstm()(x.transpose(1, 0, 2)[:1], *[np.zeros((1, 1, U), "float32")] * 2,
                              np.zeros(4 * U * (I + U + 2), "float32"), np.full((1,), B, "int32"),
                              input_size=I, hidden_size=U, num_layers=1, dropout=0.0,
                              bidirectional=False)


def test_a_cpu_placement_on_a_gpu_machine_runs_the_loop(monkeypatch):
    """On a GPU machine, a traced call placed on the CPU (`jax.default_device`, which
    `keras.device("cpu")` sets) must not get cuDNN's kernel, which has no CPU lowering."""
    import jax
    from jax.experimental import rnn

    cpu = jax.devices("cpu")[0]

    class Gpu:
        platform = "gpu"

    monkeypatch.setattr(rnn, "gpu_rnn", getattr(rnn, "gpu_rnn", None) or object(), raising=False)
    monkeypatch.setattr(jax, "devices", lambda *a: [Gpu()])
    traced = object()  # a tracer: no `devices()` to ask
    assert fused._jax_cudnn_ready(traced)
    with jax.default_device(cpu):
        assert not fused._jax_cudnn_ready(traced)
    with jax.default_device("cpu"):
        assert not fused._jax_cudnn_ready(traced)
    with jax.default_device("gpu"):
        assert fused._jax_cudnn_ready(traced)


@pytest.mark.skipif(JAX_CUDNN, reason="checks a JAX without cuDNN's LSTM (no GPU)")
def test_jax_without_a_gpu_runs_the_loop(rng):
    layer = kerasrnn.LSTM(U)
    layer(_x(rng))
    assert layer.last_path == "kerasrnn.ops.unroll"
    assert "GPU" in layer.last_path_reason
    with pytest.raises(ValueError, match="fused=True"):
        kerasrnn.LSTM(U, fused=True)(_x(rng))


def test_shard_map_only_where_jax_has_it_as_used(monkeypatch):
    """Under a distribution the kernel runs in `jax.shard_map(..., check_vma=False)`
    (test_distribute); a JAX whose `shard_map` predates `check_vma`, or has none, keeps
    the plain call instead of failing."""
    import jax

    def old_shard_map(f, *, mesh, in_specs, out_specs, check_rep=True):
        raise AssertionError("not to be called")

    try:
        fused._jax_shard_map.cache_clear()
        assert fused._jax_shard_map() is jax.shard_map
        for stand_in in (old_shard_map, None):
            fused._jax_shard_map.cache_clear()
            monkeypatch.setattr(jax, "shard_map", stand_in, raising=False)
            assert fused._jax_shard_map() is None
    finally:
        monkeypatch.undo()
        fused._jax_shard_map.cache_clear()
