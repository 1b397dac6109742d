"""docs/examples/unstable_gradients.py: the seed's W^50, by hand and in a real SimpleRNN."""

import importlib.util
import os

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "docs", "examples", "unstable_gradients.py")


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("unstable_gradients", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_product_of_fifty_jacobians(example):
    products = example.jacobian_products()
    assert products[2.0] == pytest.approx(1.1259e15, rel=1e-4) and products[2.0] == 2.0**50
    assert products[0.5] == pytest.approx(8.8818e-16, rel=1e-4) and products[0.5] == 0.5**50


def test_the_script_measures_the_same_in_simple_rnns(example, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    plot = str(tmp_path / "grads.png")
    measured = example.main(["--plot", plot])
    assert measured["linear, W_h = 2·I"]["ratio"] == pytest.approx(2.0**50, rel=1e-4)
    assert measured["linear, W_h = 0.5·I"]["ratio"] == pytest.approx(0.5**50, rel=1e-4)
    tanh = measured["tanh, W_h = 2·I"]
    assert tanh["ratio"] < 1e-20 and tanh["saturation"] > 0.5  # saturated: vanishes instead
    assert measured["relu, W_h = I (IRNN)"]["ratio"] == pytest.approx(1.0, rel=1e-5)
    profile = measured["linear, W_h = 2·I"]["profile"]
    np.testing.assert_allclose(profile[:-1] / profile[1:], 2.0, rtol=1e-4)
    printed = capsys.readouterr().out
    assert "1.1259e+15" in printed and "8.8818e-16" in printed
    assert os.path.getsize(plot) > 0
