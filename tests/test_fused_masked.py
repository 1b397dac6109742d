"""torch's fused kernels on right-padded masks (packed sequences) vs the keras.ops loop."""

import keras
import numpy as np
import pytest
from conftest import BACKEND, fused_tolerance, to_numpy

import kerasrnn

pytestmark = pytest.mark.skipif(BACKEND != "torch", reason="fused kernels are torch's")

LAYERS = [
    (kerasrnn.LSTM, {}),
    (kerasrnn.GRU, {}),
    (kerasrnn.SimpleRNN, {}),
    (kerasrnn.SimpleRNN, {"activation": "relu"}),
]


def _pair(layer_cls, kwargs, **common):
    fused = layer_cls(6, return_state=True, **common, **kwargs)
    loop = layer_cls(6, return_state=True, fused=False, **common, **kwargs)
    return fused, loop


def _data(rng, lengths=(7, 3, 1, 5)):
    x = (rng.random((len(lengths), 7, 5)) + 0.1).astype("float32")
    mask = np.arange(7)[None, :] < np.array(lengths)[:, None]
    return x, mask


@pytest.mark.parametrize("layer_cls,kwargs", LAYERS)
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("zero_output_for_mask", [False, True])
def test_right_padded_mask_runs_fused_and_matches_loop(layer_cls, kwargs, go_backwards, zero_output_for_mask, rng):
    import torch

    x, mask = _data(rng)
    fused, loop = _pair(
        layer_cls, kwargs, return_sequences=True, go_backwards=go_backwards,
        zero_output_for_mask=zero_output_for_mask,
    )
    init = [(rng.random((4, 6)) - 0.5).astype("float32") for _ in fused.state_size]
    loop(x, mask=mask, initial_state=init)
    fused(x, mask=mask, initial_state=init)
    loop.set_weights(fused.get_weights())

    xt = torch.tensor(x, requires_grad=True)
    outs_f = fused(xt, mask=mask, initial_state=init)
    assert fused.last_path.startswith("fused:torch._VF."), fused.last_path_reason
    xl = torch.tensor(x, requires_grad=True)
    outs_l = loop(xl, mask=mask, initial_state=init)
    assert loop.last_path == "kerasrnn.ops.unroll"
    for a, b in zip(outs_f, outs_l):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), **fused_tolerance("outputs", atol=1e-6))

    # Gradients w.r.t. the inputs and every weight agree too.
    probe = torch.tensor(rng.standard_normal(outs_f[0].shape).astype("float32"), device=outs_f[0].device)
    (outs_f[0] * probe).sum().backward()
    (outs_l[0] * probe).sum().backward()
    grad_tol = fused_tolerance("gradients", atol=1e-5)
    np.testing.assert_allclose(to_numpy(xt.grad), to_numpy(xl.grad), **grad_tol)
    for wf, wl in zip(fused.trainable_weights, loop.trainable_weights):
        np.testing.assert_allclose(to_numpy(wf.value.grad), to_numpy(wl.value.grad), **grad_tol)


def test_left_padded_or_empty_masks_fall_back_to_the_loop(rng):
    x, _ = _data(rng)
    layer = kerasrnn.LSTM(6)
    left = np.arange(7)[None, :] >= np.array([0, 4, 6, 2])[:, None]
    layer(x, mask=left)
    assert layer.last_path == "kerasrnn.ops.unroll"
    assert "right-padded" in layer.last_path_reason
    empty = np.ones((4, 7), bool)
    empty[2] = False
    layer(x, mask=empty)
    assert layer.last_path == "kerasrnn.ops.unroll"
    with pytest.raises(ValueError, match="fused=True"):
        kerasrnn.LSTM(6, fused=True)(x, mask=left)


def test_embedding_mask_zero_in_bidirectional_runs_fused(rng):
    tokens = np.array([[3, 4, 5, 0, 0], [1, 2, 0, 0, 0], [7, 7, 7, 7, 7]])
    embed = keras.layers.Embedding(10, 4, mask_zero=True)
    ours = keras.layers.Bidirectional(kerasrnn.GRU(3, return_sequences=True))
    ref = keras.layers.Bidirectional(keras.layers.GRU(3, return_sequences=True))
    e = embed(tokens)
    mask = embed.compute_mask(tokens)
    ours(e, mask=mask)
    ref(e, mask=mask)
    ours.set_weights(ref.get_weights())
    np.testing.assert_allclose(to_numpy(ours(e, mask=mask)), to_numpy(ref(e, mask=mask)), atol=1e-5)
    assert ours.forward_layer.last_path == "fused:torch._VF.gru"
    assert ours.backward_layer.last_path == "fused:torch._VF.gru"
