"""The benchmark script runs (a smoke test on a tiny shape; timings are not checked)."""

import json
import os
import sys

import pytest
from conftest import BACKEND, fused_tolerance

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
        expected |= {"torch.nn", "kerasrnn (same step)", "kerasrnn[fused=False]"}
    if BACKEND == "jax":
        expected |= {"jax lax.scan (hand-written)", "kerasrnn (same step)"}
    assert set(timings) == expected
    assert all(len(t) == 1 and t[0] > 0 for t in timings.values())
    # Ratios divide by the plain kerasrnn layer.
    table = capsys.readouterr().out
    assert any(line.split()[0] == "kerasrnn" and line.split()[-1] == "1.00" for line in table.splitlines() if line.strip())


def test_inference_rows_and_timings_kept_when_stopped(tmp_path, monkeypatch):
    """`--inference` times every contender's inference too; the JSON is rewritten after
    every round, so a run stopped by a time limit (a GPU lease) keeps what it measured,
    including the rounds of the table it was stopped in."""
    out, calls, measure = tmp_path / "timings.json", [], rnn_bench.measure

    def stopped_in_the_second_run(fns, *args, after_round, **kwargs):
        calls.append(sorted(fns))

        def stop_after_two_rounds(times):
            after_round(times)
            if len(calls) > 2 and len(next(iter(times.values()))) == 2:  # the time is up
                raise KeyboardInterrupt

        return measure(fns, *args, after_round=stop_after_two_rounds, **kwargs)

    monkeypatch.setattr(rnn_bench, "measure", stopped_in_the_second_run)
    with pytest.raises(KeyboardInterrupt):
        rnn_bench.main(["--cells", "simple_rnn,gru", "--shapes", "tiny", "--rounds", "3", "--steps", "1",
                        "--inference", "--json", str(out)])
    results = json.loads(out.read_text())["results"]
    assert sorted(results) == ["infer/simple_rnn/tiny", "train/gru/tiny", "train/simple_rnn/tiny"]
    assert set(results["infer/simple_rnn/tiny"]) == set(calls[0]) >= {"keras.layers", "kerasrnn"}
    assert all(len(t) == 3 and min(t) > 0 for t in results["infer/simple_rnn/tiny"].values())
    assert set(results["train/gru/tiny"]) == set(calls[2])  # stopped in its third round
    assert all(len(t) == 2 and min(t) > 0 for t in results["train/gru/tiny"].values())
    assert not os.path.exists(f"{out}.tmp")


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
    ours = keras.ops.convert_to_numpy(layer(x))  # the LSTM runs cuDNN's kernel on a GPU
    np.testing.assert_allclose(np.asarray(got), ours, **fused_tolerance("outputs", layer, atol=1e-6))
    assert callable(hand[0]) and callable(hand[1])



@pytest.mark.skipif(BACKEND != "torch", reason="the plain torch training step")
@pytest.mark.parametrize("cell", ["lstm", "gru", "simple_rnn"])
def test_plain_torch_step_trains_kerasrnns_variables(cell):
    """`kerasrnn (same step)` trains the layer in a plain torch loop (torch.optim.Adam on
    its variables' parameters): the loss falls, the variables move, and the kernel reads
    what the optimizer wrote (the fused layer agrees with the loop given the same
    weights), so the row times real training, not a stale copy."""
    import keras
    import numpy as np

    import kerasrnn

    shape = dict(rnn_bench.SHAPES["tiny"], batch=8, time=5)
    name = rnn_bench.KERAS_NAMES[cell]
    layer = getattr(kerasrnn, name)(shape["units"])
    rng = np.random.default_rng(0)
    x = keras.ops.convert_to_tensor(rng.standard_normal((8, 5, shape["features"])).astype("float32"))
    y = keras.ops.convert_to_tensor(rng.standard_normal((8, 1)).astype("float32"))
    rows = rnn_bench.torch_contenders(cell, shape, x, y, layer)
    assert set(rows) == {"torch.nn", "kerasrnn (same step)"}
    before = [np.array(w) for w in layer.get_weights()]
    train, _ = rows["kerasrnn (same step)"]
    losses = [train() for _ in range(20)]
    assert losses[-1] < losses[0]
    assert all(np.abs(w - b).max() > 1e-4 for w, b in zip(layer.get_weights(), before))
    loop = getattr(kerasrnn, name)(shape["units"], fused=False)
    loop.build(x.shape)
    loop.set_weights(layer.get_weights())
    ours = keras.ops.convert_to_numpy(layer(x))
    np.testing.assert_allclose(ours, keras.ops.convert_to_numpy(loop(x)), **fused_tolerance("outputs", layer, atol=1e-6))

def _loop_bodies(compiled_text):
    """The opcodes of each `while` body in XLA's compiled HLO text, counted."""
    import collections
    import re

    computations, current = {}, None
    for line in compiled_text.splitlines():
        if line and not line.startswith(" ") and line.rstrip().endswith("{"):
            current = line.split()[1 if line.startswith("ENTRY") else 0].lstrip("%")
            computations[current] = []
        elif current and line.startswith("  ") and " = " in line:
            computations[current].append(line)
    bodies = {
        match.group(1)
        for lines in computations.values() for line in lines
        for match in [re.search(r"\swhile\(.*body=%?([\w.\-]+)", line)] if match
    }
    counts = []
    for body in bodies:
        ops_ = [re.search(r"\s([a-z][a-z0-9\-]*)\(", " " + line.split(" = ", 1)[1]) for line in computations[body]]
        counts.append(dict(collections.Counter(m.group(1) for m in ops_ if m)))
    return sorted(counts, key=lambda c: sorted(c.items()))


@pytest.mark.skipif(BACKEND != "jax", reason="XLA's compiled loop on JAX")
@pytest.mark.parametrize("cell", ["lstm", "gru", "simple_rnn"])
def test_jax_training_loop_compiles_like_the_hand_written_scan(cell):
    """kerasrnn's loop, as it runs on a GPU (input projection hoisted, no remat), and the
    hand-written `lax.scan` compile to time loops with the same operations, forward and
    backward: on a GPU every extra operation in a loop body is a kernel launch per step
    (a carried copy of the output cost a copy forward and a copy and an add backward)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import kerasrnn

    batch, time, features, units = 8, 7, 6, 16
    layer = getattr(kerasrnn, rnn_bench.KERAS_NAMES[cell])(units, hoist_inputs=True, remat=False, fused=False)
    layer.build((None, time, features))
    trainable = [v.value for v in layer.trainable_variables]
    fixed = [v.value for v in layer.non_trainable_variables]
    gates = {"lstm": 4, "gru": 3, "simple_rnn": 1}[cell]
    hand = {
        "kernel": jnp.full((features, gates * units), 0.01),
        "recurrent": jnp.full((units, gates * units), 0.01),
        "bias": jnp.zeros((2 if cell == "gru" else 1, gates * units)),
    }
    hand_layer = rnn_bench.hand_written_layer(cell, units)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((batch, time, features)), "float32")

    def compiled_loops(layer_fn, params):
        step = jax.value_and_grad(lambda p, x: jnp.sum(layer_fn(p, x) ** 2))
        return _loop_bodies(jax.jit(step).lower(params, x).compile().as_text())

    ours = compiled_loops(lambda p, x: layer.stateless_call(p, fixed, x)[0], trainable)
    theirs = compiled_loops(hand_layer, hand)
    assert len(ours) == 2, ours  # the forward and the backward loop
    assert ours == theirs


def test_decode_bench_prints_both_modes_and_their_ratio(capsys):
    import decode_bench

    decode_bench.main(["--tiny", "--batches", "2", "--rounds", "2", "--steps", "3", "--beam", "2"])
    lines = capsys.readouterr().out.splitlines()
    assert [line for line in lines if line.startswith("beam")] == ["beam 1:", "beam 2:"]
    rows = [line.split()[0:3] for line in lines if "later rounds min" in line]
    assert rows == [["compiled", "first", "round"], ["op", "by", "op"]] * 2
    ratios = [line for line in lines if "op by op / compiled" in line]
    assert len(ratios) == 2 and all(float(line.split()[-1].rstrip("x")) > 0 for line in ratios)


@pytest.mark.parametrize("args, message", [
    (["--shapes", "Z"], "--shapes: unknown 'Z'; choose from A, B, GPU, tiny"),
    (["--cells", "foo", "--shapes", "tiny"], "--cells: unknown 'foo'"),
    (["--variants", "bogus", "--shapes", "tiny", "--cells", "lstm"], "--variants: 'bogus' is not key=value"),
    (["--rounds", "0", "--shapes", "tiny"], "--rounds must be >= 1"),
    (["--baseline", "nope", "--shapes", "tiny", "--cells", "lstm", "--rounds", "1", "--steps", "1"],
     "--baseline 'nope' is not a contender here; the contenders: keras.layers, kerasrnn"),
])
def test_bad_arguments_are_one_line_errors(args, message, capsys, monkeypatch):
    # They were tracebacks: KeyError for a shape or cell, StatisticsError for --rounds 0,
    # and a KeyError for --baseline after every round had run.
    monkeypatch.setattr(rnn_bench, "measure", lambda *a, **k: pytest.fail("timed before checking"))
    with pytest.raises(SystemExit) as caught:
        rnn_bench.main(args)
    assert caught.value.code == 2
    assert message in capsys.readouterr().err
