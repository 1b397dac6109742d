"""A conformance kit for recurrent cells: the battery kerasrnn's own cells pass, for yours.

Give it a function that makes your cell and your cell's equations as a NumPy step, and
it checks, on the current backend, that the cell computes those equations wherever
kerasrnn runs it:

- `golden`: outputs and final states against the NumPy reference (float64), with the
  input projection hoisted and not;
- `masks`: right-padded and arbitrary masks, forward and `go_backwards`;
- `initial_state`: given initial states;
- `keras_rnn`: the same cell in `keras.layers.RNN` computes the same;
- `gradients`: float64 gradients (inputs and every weight) against central finite
  differences;
- `save_load`: a `.keras` round trip of a model holding the cell;
- `deep`: two cells in a `DeepRNN`, against the two references chained;
- `mixed_precision`: `mixed_float16` and `mixed_bfloat16` run and stay close;
- `regularization`: dropout and zoneout are off at inference (zoneout's expectation
  against the reference) and on in training;
- `diagnostics`: the diagnostics' trace records what the layer outputs.

Example (the kit on kerasrnn's own GRU):

>>> import kerasrnn
>>> from kerasrnn.testing import check_cell, reference
>>> def gru_step(x, states, w):
...     return reference.gru_step(x, states, w["kernel"], w["recurrent_kernel"], w["bias"])
>>> check_cell(lambda **kw: kerasrnn.GRUCell(3, **kw), gru_step, checks=["golden", "masks"])
['golden', 'masks']
"""

import contextlib
import os
import re
import tempfile

import keras
import numpy as np

from kerasrnn.ops.device import on_accelerator
from kerasrnn.testing import reference

__all__ = ["CHECKS", "check_cell"]

CHECKS = (
    "golden", "masks", "initial_state", "keras_rnn", "gradients", "save_load", "deep",
    "mixed_precision", "regularization", "diagnostics",
)


def check_cell(make_cell, numpy_step, *, checks=CHECKS, input_dim=4, batch=3, time=5, seed=0,
               atol=1e-5):
    """Runs the battery on a cell; returns the names of the checks that ran.

    Args:
        make_cell: `make_cell(**options) -> cell`, a new kerasrnn cell (a subclass of
            `kerasrnn.layers.RecurrentCell`) at each call. The kit passes
            `RecurrentCell` options: `dtype`, `dropout`, `recurrent_dropout`,
            `zoneout` and `seed`.
        numpy_step: `numpy_step(x_t, states, weights) -> (output, new_states)`, the
            cell's equations in NumPy (float64): `x_t (batch, input_dim)`, `states`
            a list of `(batch, size)` arrays, `weights` the cell's weights by name
            (`"kernel"`, `"recurrent_kernel"`, `"bias"` and what the cell adds).
        checks: which checks to run (default all of `CHECKS`).
        input_dim, batch, time: the shape of the test sequences.
        seed: seed of the random weights and inputs.
        atol: tolerance of float32 results against the float64 reference.

    Raises:
        AssertionError: naming the check that failed and what differed.
        ValueError: for an unknown check name.
    """
    unknown = [c for c in checks if c not in CHECKS]
    if unknown:
        raise ValueError(f"`checks`: unknown {unknown}; the kit has {list(CHECKS)}.")
    kit = _Kit(make_cell, numpy_step, input_dim, batch, time, seed, atol)
    ran = []
    for name in checks:
        try:
            getattr(kit, name)()
        except AssertionError as error:
            raise AssertionError(f"check {name!r} failed for {type(make_cell()).__name__}: {error}") from None
        except Exception as error:  # the cell broke the layer (a state of the wrong size, ...)
            raise AssertionError(
                f"check {name!r} failed for {type(make_cell()).__name__}: the layer raised "
                f"{type(error).__name__}: {_first_line(error)}"
            ) from error
        ran.append(name)
    return ran


def _first_line(error):
    """The line of `error` that says what went wrong (not Keras's "Exception
    encountered when calling ..." header, nor its terminal colour codes)."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(error).splitlines()]
    lines = [line for line in lines if line and not line.startswith("Exception encountered")]
    return lines[0] if lines else ""


class _Kit:
    def __init__(self, make_cell, numpy_step, input_dim, batch, time, seed, atol):
        self.make_cell, self.numpy_step = make_cell, numpy_step
        self.input_dim, self.batch, self.time = input_dim, batch, time
        self.rng = np.random.default_rng(seed)
        self.atol = atol

    # ------------------------------------------------------------------ helpers
    def layer(self, cell=None, **options):
        from kerasrnn.layers import RNN

        layer = RNN(cell if cell is not None else self.make_cell(), return_sequences=True,
                    return_state=True, **options)
        layer.build((None, None, self.input_dim))
        return layer

    def randomize(self, layer):
        """Random weights without zeros, set on `layer`; `{name: float64 array}`."""
        values = {}
        for variable in layer.cell.trainable_variables:
            shape = tuple(variable.shape)
            value = self.rng.uniform(0.05, 0.6, shape) * self.rng.choice([-1.0, 1.0], shape)
            values[variable.name] = value
            variable.assign(value.astype(keras.backend.standardize_dtype(variable.dtype)))
        return values

    def inputs(self):
        x = self.rng.uniform(0.1, 1.0, (self.batch, self.time, self.input_dim))
        return x * self.rng.choice([-1.0, 1.0], x.shape)

    def zeros(self, layer):
        return [np.zeros((self.batch, s)) for s in layer.state_size]

    def step(self, weights):
        return lambda x_t, states: self.numpy_step(x_t, list(states), weights)

    def compare(self, got, expected, what, atol=None):
        got = [keras.ops.convert_to_numpy(g) for g in got]
        for i, (g, e) in enumerate(zip(got, expected)):
            np.testing.assert_allclose(
                g.astype("float64"), e, atol=atol or self.atol, rtol=1e-4,
                err_msg=f"{what}: {'outputs' if i == 0 else f'final state {i - 1}'}",
            )

    def expected(self, layer, weights, x, states=None, **run):
        outputs, final = reference.run_sequence(
            self.step(weights), x, states or self.zeros(layer), **run
        )
        return [outputs, *final]

    # ------------------------------------------------------------------- checks
    def golden(self):
        layer = self.layer()
        weights = self.randomize(layer)
        x = self.inputs()
        expected = self.expected(layer, weights, x)
        for hoist in (True, False):
            layer.hoist_inputs = hoist
            self.compare(layer(x.astype("float32")), expected, f"hoist_inputs={hoist}")

    def masks(self):
        x = self.inputs()
        lengths = np.linspace(1, self.time, self.batch).round().astype(int)
        right = np.arange(self.time)[None, :] < lengths[:, None]
        holes = self.rng.random((self.batch, self.time)) < 0.6
        holes[:, 0] = True
        for go_backwards in (False, True):
            layer = self.layer(go_backwards=go_backwards)
            weights = self.randomize(layer)
            for name, mask in (("right-padded", right), ("arbitrary", holes)):
                expected = self.expected(layer, weights, x, mask=mask, go_backwards=go_backwards)
                got = layer(x.astype("float32"), mask=mask)
                self.compare(got, expected, f"{name} mask, go_backwards={go_backwards}")

    def initial_state(self):
        layer = self.layer()
        weights = self.randomize(layer)
        x = self.inputs()
        states = [self.rng.normal(0, 0.5, (self.batch, s)) for s in layer.state_size]
        got = layer(x.astype("float32"), initial_state=[s.astype("float32") for s in states])
        self.compare(got, self.expected(layer, weights, x, states), "initial_state")

    def keras_rnn(self):
        ours = self.layer()
        weights = self.randomize(ours)
        cell = self.make_cell()
        theirs = keras.layers.RNN(cell, return_sequences=True, return_state=True)
        theirs.build((None, None, self.input_dim))
        cell.set_weights(ours.cell.get_weights())
        x = self.inputs()
        self.compare(theirs(x.astype("float32")), self.expected(ours, weights, x), "keras.layers.RNN")

    def gradients(self):
        with _float64():
            layer = self.layer(cell=self.make_cell(dtype="float64"), dtype="float64")
            self.randomize(layer)
            x = self.inputs()
            probes = [self.rng.normal(size=(self.batch, self.time, layer.cell.output_size))]
            probes += [self.rng.normal(size=(self.batch, s)) for s in layer.state_size]
            weights = [keras.ops.convert_to_numpy(v) for v in layer.trainable_variables]
            fixed = [v.value for v in layer.non_trainable_variables]

            def loss(weights, x):
                outputs, _ = layer.stateless_call(weights, fixed, x)
                return sum(keras.ops.sum(o * keras.ops.convert_to_tensor(p, "float64"))
                           for o, p in zip(outputs, probes))

            value, grads = _value_and_grads(loss, weights, x)
            # Steps of 1e-3 and a tolerance of 2e-3: some `keras.ops` narrow float64 to
            # float32 (`matmul` on torch, `tanh` on JAX), so a cell written with them is
            # float32-precise; central differences at that step still tell a right
            # gradient from a wrong one, which is off by far more. Their O(step²) error
            # is removed by Richardson extrapolation from the step and its half (alone,
            # it exceeded 2e-3 for a right GRU with layer norm, the Cho form).
            def difference(dw, dx):
                plus = float(keras.ops.convert_to_numpy(loss([w + d for w, d in zip(weights, dw)], x + dx)))
                minus = float(keras.ops.convert_to_numpy(loss([w - d for w, d in zip(weights, dw)], x - dx)))
                return (plus - minus) / 2

            for _ in range(2):
                dw = [self.rng.normal(size=w.shape) * 1e-3 for w in weights]
                dx = self.rng.normal(size=x.shape) * 1e-3
                half = difference([d / 2 for d in dw], dx / 2) * 2
                numeric = (4 * half - difference(dw, dx)) / 3
                analytic = sum(float((g * d).sum()) for g, d in zip(grads, [dx, *dw]))
                np.testing.assert_allclose(analytic, numeric, rtol=2e-3, atol=1e-9,
                                           err_msg="gradient along a random direction")
            assert np.isfinite(value)

    def save_load(self):
        inputs = keras.Input((self.time, self.input_dim))
        layer = self.layer()
        self.randomize(layer)
        model = keras.Model(inputs, layer(inputs)[0])
        x = self.inputs().astype("float32")
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "cell.keras")
            model.save(path)
            try:
                loaded = keras.saving.load_model(path)
            except (TypeError, ValueError) as error:
                raise AssertionError(
                    f"the saved model does not load ({error}); register the cell class "
                    "with keras.saving.register_keras_serializable and give it a "
                    "get_config that returns every __init__ argument"
                ) from None
        self.compare([loaded(x)], [keras.ops.convert_to_numpy(model(x)).astype("float64")], "loaded model", atol=1e-6)

    def deep(self):
        from kerasrnn.layers import RNN, DeepRNN

        deep = DeepRNN([RNN(self.make_cell()), RNN(self.make_cell())], return_sequences=True)
        deep.build((None, None, self.input_dim))
        x = self.inputs()
        h = x
        for sub in deep.rnn_layers:
            weights = {}
            for variable in sub.cell.trainable_variables:
                shape = tuple(variable.shape)
                value = self.rng.uniform(0.05, 0.6, shape) * self.rng.choice([-1.0, 1.0], shape)
                weights[variable.name] = value
                variable.assign(value.astype("float32"))
            h, _ = reference.run_sequence(self.step(weights), h, self.zeros(sub))
        self.compare([deep(x.astype("float32"))], [h], "DeepRNN of two cells")

    def mixed_precision(self):
        full = self.layer()
        self.randomize(full)
        x = self.inputs().astype("float32")
        reference_out = keras.ops.convert_to_numpy(full(x)[0])
        previous = keras.config.dtype_policy()
        try:
            for policy, tolerance in (("mixed_float16", 5e-3), ("mixed_bfloat16", 5e-2)):
                keras.config.set_dtype_policy(policy)
                half = self.layer()
                half.set_weights(full.get_weights())
                out = half(x)[0]
                dtype = keras.backend.standardize_dtype(out.dtype)
                assert dtype == policy.split("_")[1], f"{policy}: outputs are {dtype}"
                got = keras.ops.convert_to_numpy(keras.ops.cast(out, "float32"))
                np.testing.assert_allclose(got, reference_out, atol=tolerance, err_msg=policy)
        finally:
            keras.config.set_dtype_policy(previous)

    def regularization(self):
        x = self.inputs()
        plain = self.layer()
        weights = self.randomize(plain)
        # Each rate on its own: input dropout is the base class's (`project_inputs`), so
        # with both on, a step that never applies `constants.recurrent(h)` passed.
        for option in ("dropout", "recurrent_dropout"):
            noisy = self.layer(cell=self.make_cell(**{option: 0.4}, seed=1))
            noisy.set_weights(plain.get_weights())
            inference = keras.ops.convert_to_numpy(noisy(x.astype("float32"))[0])
            self.compare([inference], [keras.ops.convert_to_numpy(plain(x.astype("float32"))[0])],
                         f"{option} at inference")
            training = keras.ops.convert_to_numpy(noisy(x.astype("float32"), training=True)[0])
            assert np.abs(training - inference).max() > 1e-3, f"{option} does nothing in training"
        zoned = self.layer(cell=self.make_cell(zoneout=0.3, seed=2))
        zoned.set_weights(plain.get_weights())
        rates = [0.3] + [0.0] * (len(zoned.state_size) - 1)
        expected, _ = reference.run_sequence(
            reference.zoneout_step(self.step(weights), rates), x, self.zeros(zoned)
        )
        self.compare([zoned(x.astype("float32"))[0]], [expected], "zoneout's expectation at inference")
        training = keras.ops.convert_to_numpy(zoned(x.astype("float32"), training=True)[0])
        assert np.abs(training - expected).max() > 1e-3, "zoneout does nothing in training"

    def diagnostics(self):
        from kerasrnn.diagnostics import traced

        layer = self.layer()
        self.randomize(layer)
        x = self.inputs().astype("float32")
        records = {}
        with traced([layer], records=records):
            traced_out = layer(x)[0]
        plain = layer(x)[0]
        # The trace runs the loop; the layer, a fused kernel where one exists, which on a
        # GPU (cuDNN) rounds float32 in its own order: up to ~1e-5 at these sizes.
        fused_on_gpu = str(layer.last_path).startswith("fused:") and on_accelerator(plain)
        self.compare([traced_out], [keras.ops.convert_to_numpy(plain).astype("float64")],
                     "the diagnostics' trace", atol=2.5e-5 if fused_on_gpu else 1e-6)
        recorded = keras.ops.convert_to_numpy(records[layer.name]["h"])
        np.testing.assert_allclose(recorded, keras.ops.convert_to_numpy(traced_out), atol=1e-6,
                                   err_msg="the recorded h")


@contextlib.contextmanager
def _float64():
    """Lets the backend compute in float64 (JAX needs `jax_enable_x64`)."""
    if keras.backend.backend() == "jax":
        import jax

        with jax.enable_x64(True):
            yield
    else:
        yield


def _value_and_grads(loss, weights, x):
    """`(loss, [d/dx, d/dweights...])` as NumPy, by the backend's autodiff."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        value, (gw, gx) = jax.value_and_grad(loss, argnums=(0, 1))(weights, x)
    elif backend == "tensorflow":
        import tensorflow as tf

        w = [tf.constant(v) for v in weights]
        xt = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch([*w, xt])
            value = loss(w, xt)
        gx, *gw = tape.gradient(value, [xt, *w], unconnected_gradients=tf.UnconnectedGradients.ZERO)
    elif backend == "torch":
        import torch

        w = [torch.tensor(v, requires_grad=True) for v in weights]
        xt = torch.tensor(x, requires_grad=True)
        value = loss(w, xt)
        gx, *gw = torch.autograd.grad(value, [xt, *w], allow_unused=True, materialize_grads=True)
        value = value.detach()
    else:  # pragma: no cover
        raise NotImplementedError(backend)
    grads = [keras.ops.convert_to_numpy(g).astype("float64") for g in (gx, *gw)]
    return float(keras.ops.convert_to_numpy(value)), grads
