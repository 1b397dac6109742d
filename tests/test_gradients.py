"""Float64 finite-difference checks of the backend's gradients through every cell form.

For a loss `L = Σ outputs · C` (random `C` over the output sequence and final states),
the autodiff gradient `g` of each tensor (inputs and every weight) must give the
directional derivative that central differences measure:
`(L(θ + εv) − L(θ − εv)) / 2ε ≈ g · v` for random directions `v`, plus single entries.
"""

import numpy as np
import pytest
from _util import (
    CELL_FORMS,
    functional,
    loss_and_grads,
    n_states,
    nonzero_uniform,
    random_mask,
    random_weights,
)

BATCH, TIME, FEATURES, UNITS = 3, 4, 3, 3
EPS = 1e-6


def check_gradients(layer, x, rng, directions=2, **call_kwargs):
    outputs = functional(layer, **call_kwargs)
    weights = [np.asarray(w, "float64") for w in layer.get_weights()]
    assert len(weights) == len(layer.trainable_weights)
    cotangents = [nonzero_uniform(rng, o.shape) for o in outputs(weights, x)]

    def loss(weights, x):
        return sum(float(np.sum(o * c)) for o, c in zip(outputs(weights, x), cotangents))

    value, dx, dw = loss_and_grads(layer, x, cotangents, weights=weights, **call_kwargs)
    np.testing.assert_allclose(value, loss(weights, x), rtol=1e-12)

    def perturbed(index, delta):
        if index is None:
            return weights, x + delta
        ws = list(weights)
        ws[index] = ws[index] + delta
        return ws, x

    tensors = [(None, x, dx)] + [(i, w, g) for i, (w, g) in enumerate(zip(weights, dw))]
    for index, value, grad in tensors:
        assert grad.shape == value.shape
        assert np.abs(grad).max() > 1e-4, f"tensor {index} gets no gradient"
        vs = [rng.normal(size=value.shape) for _ in range(directions)]
        one_hot = np.zeros(value.shape)  # the entry with the largest gradient
        one_hot[np.unravel_index(np.abs(grad).argmax(), grad.shape)] = 1.0
        for v in vs + [one_hot]:
            numeric = (loss(*perturbed(index, EPS * v)) - loss(*perturbed(index, -EPS * v))) / (2 * EPS)
            np.testing.assert_allclose(
                np.sum(grad * v), numeric, rtol=1e-6, atol=1e-8,
                err_msg=f"tensor {index} ({'inputs' if index is None else 'weight'})",
            )


def make(form, rng, **kwargs):
    layer_class, form_kwargs = CELL_FORMS[form]
    layer = layer_class(UNITS, dtype="float64", **form_kwargs, **kwargs)
    layer.build((None, TIME, FEATURES))
    random_weights(layer, rng)
    return layer


@pytest.mark.parametrize("form", CELL_FORMS)
def test_masked_backward_sequences(form, rng, float64):
    layer = make(form, rng, return_sequences=True, return_state=True, go_backwards=True)
    x = nonzero_uniform(rng, (BATCH, TIME, FEATURES))
    mask = random_mask(rng, BATCH, TIME, "arbitrary")
    check_gradients(layer, x, rng, mask=mask)


@pytest.mark.parametrize("hoist", [True, False], ids=["hoisted", "in_loop"])
@pytest.mark.parametrize("form", ["simple_tanh", "irnn", "lstm", "gru_after", "gru_before"])
def test_last_output_from_initial_state(form, hoist, rng, float64):
    layer = make(form, rng, hoist_inputs=hoist)
    x = nonzero_uniform(rng, (BATCH, TIME, FEATURES))
    h0 = [nonzero_uniform(rng, (BATCH, UNITS)) for _ in range(n_states(layer))]
    check_gradients(layer, x, rng, initial_state=h0)
