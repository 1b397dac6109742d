"""The benchmark script runs (a smoke test on a tiny shape; timings are not checked)."""

import json
import os
import sys

import pytest
from conftest import BACKEND

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks"))
import rnn_bench


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_extension_rows(cell, tmp_path, capsys):
    out = tmp_path / "timings.json"
    rnn_bench.main(["--cells", cell, "--shapes", "tiny", "--rounds", "1", "--steps", "1", "--extensions", "--json", str(out)])
    timings = json.loads(out.read_text())["results"][f"train/{cell}/tiny"]
    expected = {"keras.layers", "kerasrnn", "kerasrnn[layer_norm=True]"}
    expected |= (
        {"kerasrnn[use_peepholes=True]", "kerasrnn[proj_size=2]", "kerasrnn[zoneout=0.1;zoneout_cell=0.1]"}
        if cell == "lstm" else {"kerasrnn[zoneout=0.1]"}
    )
    if BACKEND == "torch":
        expected |= {"torch.nn", "kerasrnn[fused=False]"}
    if BACKEND == "jax":
        expected |= {"jax lax.scan (hand-written)", "kerasrnn (same step)"}
    assert set(timings) == expected
    assert all(len(t) == 1 and t[0] > 0 for t in timings.values())
    # Ratios divide by the plain kerasrnn layer.
    table = capsys.readouterr().out
    assert any(line.split()[0] == "kerasrnn" and line.split()[-1] == "1.00" for line in table.splitlines() if line.strip())


@pytest.mark.skipif(BACKEND != "jax", reason="the hand-written JAX contender")
@pytest.mark.parametrize("cell", ["lstm", "gru", "simple_rnn"])
def test_hand_written_jax_layer_computes_kerasrnns_function(cell):
    """The hand-written `lax.scan` is a fair contender: with kerasrnn's weights it
    computes the same function."""
    import jax.numpy as jnp
    import keras
    import numpy as np

    import kerasrnn

    shape = rnn_bench.SHAPES["tiny"]
    layer = getattr(kerasrnn, rnn_bench.KERAS_NAMES[cell])(shape["units"])
    x = np.random.default_rng(0).standard_normal((2, 3, 2)).astype("float32")
    rows = rnn_bench.jax_contenders(cell, shape, jnp.asarray(x), jnp.zeros((2, 1)), layer)
    hand = rows["jax lax.scan (hand-written)"]
    assert set(rows) == {"jax lax.scan (hand-written)", "kerasrnn (same step)"}
    kernel, recurrent, *bias = [keras.ops.convert_to_numpy(w) for w in layer.get_weights()]
    params = {"kernel": kernel, "recurrent": recurrent,
              "bias": np.reshape(bias[0], (-1, kernel.shape[1])) if bias else None}
    got = rnn_bench.hand_written_layer(cell, shape["units"])(params, jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(got), keras.ops.convert_to_numpy(layer(x)), atol=1e-6)
    assert callable(hand[0]) and callable(hand[1])
