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
    assert set(timings) == expected
    assert all(len(t) == 1 and t[0] > 0 for t in timings.values())
    # Ratios divide by the plain kerasrnn layer.
    table = capsys.readouterr().out
    assert any(line.split()[0] == "kerasrnn" and line.split()[-1] == "1.00" for line in table.splitlines() if line.strip())
