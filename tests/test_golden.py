"""Golden values: every cell form against the NumPy reference of the seed's equations
(`kerasrnn.testing.reference`), on random weights and inputs without zeros."""

import keras
import numpy as np
import pytest
from _util import (
    BATCH,
    CELL_FORMS,
    FEATURES,
    TIME,
    UNITS,
    both_directions,
    build,
    n_states,
    nonzero_uniform,
    random_mask,
    random_weights,
    reference_step,
)
from conftest import to_numpy

from kerasrnn.testing import reference

F32 = dict(rtol=1e-5, atol=1e-5)
F64 = dict(rtol=1e-10, atol=1e-12)


def make(form, rng, dtype="float32", **kwargs):
    layer_class, form_kwargs = CELL_FORMS[form]
    layer = layer_class(UNITS, dtype=dtype, **form_kwargs, **kwargs)
    build(layer, FEATURES)
    weights = random_weights(layer, rng)
    return layer, reference_step(layer, weights)


def initial_states(layer, rng):
    return [nonzero_uniform(rng, (BATCH, UNITS)) for _ in range(n_states(layer))]


def check(layer, step, x, mask=None, h0=None, tol=F32, dtype="float32", **call_kwargs):
    """Calls `layer` (return_sequences and return_state set) and compares outputs and
    final states with `reference.run_sequence`."""
    n = n_states(layer)
    zeros = [np.zeros((x.shape[0], UNITS)) for _ in range(n)]
    expected, expected_states = reference.run_sequence(
        step, x, h0 if h0 is not None else zeros, mask=mask,
        go_backwards=layer.go_backwards, zero_output_for_mask=layer.zero_output_for_mask,
    )
    kwargs = dict(call_kwargs)
    if mask is not None:
        kwargs["mask"] = mask
    if h0 is not None:
        kwargs["initial_state"] = [s.astype(layer.compute_dtype) for s in h0]
    outputs, *states = layer(x.astype(layer.compute_dtype), **kwargs)
    assert len(states) == n
    assert keras.backend.standardize_dtype(outputs.dtype) == dtype
    np.testing.assert_allclose(to_numpy(outputs), expected, **tol)
    for got, want in zip(states, expected_states):
        np.testing.assert_allclose(to_numpy(got), want, **tol)
    return expected


@pytest.mark.parametrize("hoist", [True, False], ids=["hoisted", "in_loop"])
@both_directions
@pytest.mark.parametrize("form", CELL_FORMS)
def test_sequence_and_states(form, go_backwards, hoist, rng):
    layer, step = make(
        form, rng, return_sequences=True, return_state=True,
        go_backwards=go_backwards, hoist_inputs=hoist,
    )
    x = nonzero_uniform(rng, (BATCH, TIME, FEATURES))
    expected = check(layer, step, x)
    if go_backwards:  # the outputs are in processing order, as in Keras
        forward, _ = reference.run_sequence(step, x[:, ::-1], [np.zeros((BATCH, UNITS))] * n_states(layer))
        np.testing.assert_allclose(expected, forward, atol=1e-12)


@pytest.mark.parametrize("form", CELL_FORMS)
def test_last_output_only(form, rng):
    layer, step = make(form, rng)
    x = nonzero_uniform(rng, (BATCH, TIME, FEATURES))
    expected, _ = reference.run_sequence(step, x, [np.zeros((BATCH, UNITS))] * n_states(layer))
    out = layer(x.astype("float32"))
    assert tuple(out.shape) == (BATCH, UNITS)
    np.testing.assert_allclose(to_numpy(out), expected[:, -1], **F32)


MASK_CASES = {
    # (mask kind, zero_output_for_mask, go_backwards, hoist_inputs)
    "right": ("right", False, False, True),
    "right_backward_inloop": ("right", False, True, False),
    "arbitrary": ("arbitrary", False, False, False),
    "arbitrary_zero_output": ("arbitrary", True, False, True),
    "arbitrary_zero_output_backward": ("arbitrary", True, True, False),
}
#: Every mask case for the forms with a bias; one for those without (a bias changes
#: nothing in how masks are applied).
MASK_TESTS = [
    (form, case) for form in CELL_FORMS for case in MASK_CASES
    if "nobias" not in form or case == "arbitrary_zero_output_backward"
]


@pytest.mark.parametrize("form, case", MASK_TESTS)
def test_masks(form, case, rng):
    kind, zero_output, go_backwards, hoist = MASK_CASES[case]
    layer, step = make(
        form, rng, return_sequences=True, return_state=True, go_backwards=go_backwards,
        zero_output_for_mask=zero_output, hoist_inputs=hoist,
    )
    x = nonzero_uniform(rng, (BATCH, TIME, FEATURES))
    mask = random_mask(rng, BATCH, TIME, kind)
    expected = check(layer, step, x, mask=mask)
    # The mask must matter: the reference without it differs.
    unmasked, _ = reference.run_sequence(
        step, x, [np.zeros((BATCH, UNITS))] * n_states(layer), go_backwards=go_backwards
    )
    assert np.abs(unmasked - expected).max() > 1e-3


@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
@both_directions
@pytest.mark.parametrize("form", CELL_FORMS)
def test_initial_state(form, go_backwards, masked, rng):
    layer, step = make(
        form, rng, return_sequences=True, return_state=True, go_backwards=go_backwards
    )
    x = nonzero_uniform(rng, (BATCH, TIME, FEATURES))
    h0 = initial_states(layer, rng)
    mask = random_mask(rng, BATCH, TIME, "arbitrary") if masked else None
    check(layer, step, x, mask=mask, h0=h0)


@pytest.mark.parametrize(
    "masked, hoist", [(False, True), (True, False)], ids=["unmasked_hoisted", "masked_backward_in_loop"]
)
@pytest.mark.parametrize("form", CELL_FORMS)
def test_float64(form, masked, hoist, rng, float64):
    """A float64 layer computes in float64 on every backend (Keras narrows some float64
    ops to float32 on torch and JAX; see kerasrnn/ops/math.py)."""
    layer, step = make(
        form, rng, dtype="float64", return_sequences=True, return_state=True,
        hoist_inputs=hoist, go_backwards=masked,
    )
    x = nonzero_uniform(rng, (BATCH, TIME, FEATURES))
    mask = random_mask(rng, BATCH, TIME, "arbitrary") if masked else None
    h0 = initial_states(layer, rng)
    check(layer, step, x, mask=mask, h0=h0, tol=F64, dtype="float64")


@pytest.mark.parametrize("form", ["simple_tanh", "lstm", "gru_after", "gru_before"])
def test_long_sequence(form, rng):
    """Error does not accumulate over a longer sequence (T=60)."""
    layer, step = make(form, rng, return_sequences=True, return_state=True)
    x = nonzero_uniform(rng, (2, 60, FEATURES))
    outputs, *_ = layer(x.astype("float32"))
    expected, _ = reference.run_sequence(step, x, [np.zeros((2, UNITS))] * n_states(layer))
    np.testing.assert_allclose(to_numpy(outputs), expected, rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("form", ["simple_tanh", "lstm", "gru_after", "gru_before"])
def test_cell_call_is_one_step(form, rng):
    """The Keras cell protocol: `cell(x_t, states)` is one step of the reference."""
    layer, step = make(form, rng)
    cell = layer.cell
    x = nonzero_uniform(rng, (BATCH, FEATURES))
    states = [nonzero_uniform(rng, (BATCH, UNITS)) for _ in range(n_states(layer))]
    out, new_states = cell(x.astype("float32"), [s.astype("float32") for s in states])
    want, want_states = step(x, states)
    np.testing.assert_allclose(to_numpy(out), want, **F32)
    for got, w in zip(new_states, want_states):
        np.testing.assert_allclose(to_numpy(got), w, **F32)
