"""How torch's fused kernels get their weights and where their tensors live (CPU guards
for what cuDNN needs on a GPU).

cuDNN reads an RNN's weights from one flat buffer. Weights that are views of the Keras
variables in another layout make it fail ("view size is not compatible with input
tensor's size and stride"); weights in several chunks make it copy them at every call
("not part of single contiguous chunk of memory"). torch's CPU kernel accepts both, so
these tests check on the CPU what the GPU needs: one buffer, in the layout's order, no
copy of the weights per call, and no tensor made on another device than the inputs'.
"""

import functools

import keras
import numpy as np
import pytest
from conftest import BACKEND, TORCH_CUDNN, fused_tolerance, to_numpy

import kerasrnn
from kerasrnn.ops import fused
from kerasrnn.seq2seq import MaskedSequenceLoss, Seq2Seq

pytestmark = pytest.mark.skipif(BACKEND != "torch", reason="torch's fused kernels")

B, T, I, U = 3, 6, 5, 4

MAKERS = {
    "lstm": lambda **kw: kerasrnn.LSTM(U, **kw),
    "lstm_nobias": lambda **kw: kerasrnn.LSTM(U, use_bias=False, **kw),
    "lstm_proj": lambda **kw: kerasrnn.LSTM(U, proj_size=2, **kw),
    "gru": lambda **kw: kerasrnn.GRU(U, **kw),
    "gru_nobias": lambda **kw: kerasrnn.GRU(U, use_bias=False, **kw),
    "simple_tanh": lambda **kw: kerasrnn.SimpleRNN(U, **kw),
    "irnn": lambda **kw: kerasrnn.IRNN(U, **kw),
    "deep_bidirectional": lambda **kw: kerasrnn.DeepRNN.repeat(
        kerasrnn.LSTM(U), 2, bidirectional=True, **kw
    ),
    "deep_gru": lambda **kw: kerasrnn.DeepRNN.repeat(kerasrnn.GRU(U), 3, **kw),
}
#: Each maker's twin that runs the `keras.ops` loop alone (a stack's `fused=False` still
#: lets each of its layers run a kernel).
LOOP_TWINS = {
    **{name: functools.partial(make, fused=False) for name, make in MAKERS.items()},
    "deep_bidirectional": lambda **kw: kerasrnn.DeepRNN.repeat(
        kerasrnn.LSTM(U, fused=False), 2, bidirectional=True, fused=False, **kw
    ),
    "deep_gru": lambda **kw: kerasrnn.DeepRNN.repeat(kerasrnn.GRU(U, fused=False), 3, fused=False, **kw),
}
#: Whose kernel weights are the variables themselves (torch's gate order is Keras's).
ZERO_COPY = {"lstm", "lstm_nobias", "lstm_proj", "simple_tanh", "irnn", "deep_bidirectional"}


def _params_of(args):
    # padded: (input, hx, params, ...); packed: (data, batch_sizes, hx, params, ...)
    return args[2] if not _is_batch_sizes(args[1]) else args[3]


def _is_batch_sizes(x):
    import torch

    return isinstance(x, torch.Tensor) and x.dim() == 1 and x.dtype == torch.int64


def _spy(monkeypatch):
    import torch

    calls, state = [], {"inside": False}
    for name in ("lstm", "gru", "rnn_tanh", "rnn_relu"):
        kernel = getattr(torch._VF, name)

        def spy(*args, _kernel=kernel):
            calls.append(list(_params_of(args)))
            state["inside"] = True
            try:
                return _kernel(*args)
            finally:
                state["inside"] = False

        monkeypatch.setattr(torch._VF, name, spy)
    return calls, state


def _x(rng):
    return (rng.random((B, T, I)) + 0.1).astype("float32")


def _cells(layer):
    if isinstance(layer, kerasrnn.DeepRNN):
        out = []
        for i in range(len(layer.rnn_layers)):
            sub = layer.rnn_layers[i]
            out += [sub.forward_layer.cell, sub.backward_layer.cell] if layer.bidirectional[i] else [sub.cell]
        return out
    return [layer.cell]


def _spec_of(layer, x):
    """The `FusedSpec` a call of `layer` (a layer or a `DeepRNN`) on `x` runs with, made
    outside a call."""
    specs = [c.fused_spec(c.loop_constants(x), False) for c in _cells(layer)]
    if isinstance(layer, kerasrnn.DeepRNN):
        return fused.stack_fused_specs(specs, layer.bidirectional[0], owner=layer)[0]
    return specs[0]


def _storage(t):
    return t.untyped_storage().data_ptr()


@pytest.mark.parametrize("masked", [False, True], ids=["full", "right-padded"])
@pytest.mark.parametrize("name", MAKERS)
def test_kernel_gets_one_flat_buffer_and_no_copy_per_call(name, masked, rng, monkeypatch):
    import torch

    layer = MAKERS[name]()
    x = _x(rng)
    mask = np.arange(T)[None, :] < np.array([T, 2, 4])[:, None] if masked else None
    layer(x, mask=mask)  # builds, and puts the weights in place
    calls, _ = _spy(monkeypatch)
    outputs = [to_numpy(layer(x, mask=mask)) for _ in range(2)]
    assert layer.last_path.startswith("fused:"), layer.last_path_reason
    assert len(calls) == 2
    for params in calls:
        # One storage, each parameter contiguous, at the layout's offset.
        assert len({_storage(p) for p in params}) == 1
        assert all(p.is_contiguous() for p in params)
        spec_owner = layer if isinstance(layer, kerasrnn.DeepRNN) else layer.cell
        buffers = spec_owner._kerasrnn_flat_weights.buffers
        (layout, buffer), = buffers.items()
        assert _storage(params[0]) == _storage(buffer)
        assert [p.storage_offset() for p in params] == layout.offsets
        assert buffer.numel() == layout.size
    # The same buffer on both calls: nothing was copied or re-laid out in between.
    assert [p.data_ptr() for p in calls[0]] == [p.data_ptr() for p in calls[1]]
    np.testing.assert_array_equal(outputs[0], outputs[1])
    variables = [v.value for cell in _cells(layer) for v in cell.trainable_variables]
    if name in ZERO_COPY:  # the variables are the buffer
        assert all(_storage(v) == _storage(buffer) for v in variables)
    else:  # a mirror of them
        assert not any(_storage(v) == _storage(buffer) for v in variables)
    # The variables keep their Keras shapes and values.
    reference = LOOP_TWINS[name]()
    reference(x, mask=mask)
    reference.set_weights(layer.get_weights())
    # Fused against the loop: cuDNN's rounding on a GPU.
    np.testing.assert_allclose(outputs[0], to_numpy(reference(x, mask=mask)), **fused_tolerance("outputs", atol=1e-6))
    assert torch.is_tensor(buffer)


@pytest.mark.parametrize("masked", [False, True], ids=["full", "right-padded"])
@pytest.mark.parametrize("name", ["lstm", "lstm_proj", "gru", "simple_tanh", "deep_bidirectional", "deep_gru"])
def test_kernel_gets_contiguous_states(name, masked, rng, monkeypatch):
    """cuDNN refuses states that are not contiguous ("rnn: hx is not contiguous"), where
    torch's CPU kernel takes any. Given initial states that are strided views (a slice
    of a larger tensor, a transpose: what a decoder may get from an encoder), the kernel
    receives contiguous ones, and the results are the loop's."""
    import torch

    xt = torch.tensor(_x(rng))
    mask = torch.tensor(np.arange(T)[None, :] < np.array([T, 2, 4])[:, None]) if masked else None
    layer, reference = MAKERS[name](return_state=True), LOOP_TWINS[name](return_state=True)
    _, *states = layer(xt, mask=mask)
    reference(xt, mask=mask)
    reference.set_weights(layer.get_weights())
    # Made where Keras computes (a GPU there), so that no copy to it makes them contiguous.
    given = [keras.ops.convert_to_tensor(rng.random((2 * s.shape[-1], B)).astype("float32")).t()[:, ::2]
             for s in states]
    assert not any(g.is_contiguous() for g in given)
    seen = []
    for kernel_name in ("lstm", "gru", "rnn_tanh", "rnn_relu"):
        kernel = getattr(torch._VF, kernel_name)

        def spy(*args, _kernel=kernel):
            hx = args[2] if _is_batch_sizes(args[1]) else args[1]
            seen.extend(hx if isinstance(hx, (tuple, list)) else [hx])
            return _kernel(*args)

        monkeypatch.setattr(torch._VF, kernel_name, spy)
    got = layer(xt, initial_state=given, mask=mask)
    assert layer.last_path.startswith("fused:"), layer.last_path_reason
    assert seen and all(h.is_contiguous() for h in seen), [h.stride() for h in seen]
    expected = reference(xt, initial_state=given, mask=mask)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(to_numpy(g), to_numpy(e), **fused_tolerance("outputs", atol=1e-6))


def _count_weight_copies(fn, state, layer):
    """Copies that read or write the weights (the variables or a flat buffer), made by
    `fn` outside the kernels."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    owners = [layer, *_cells(layer)]
    storages = {_storage(v.value) for v in layer.weights}
    storages |= {
        _storage(b) for o in owners for b in getattr(o, "_kerasrnn_flat_weights", fused._FlatWeights()).buffers.values()
    }
    copying = {"aten.copy_.default", "aten.clone.default", "aten.cat.default", "aten._to_copy.default",
               "aten.index_select.default", "aten.index_select.out"}

    def touches(args):
        for a in args:
            if isinstance(a, (list, tuple)) and touches(a):
                return True
            if isinstance(a, torch.Tensor) and _storage(a) in storages:
                return True
        return False

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.copies = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if not state["inside"] and str(func) in copying and touches([*args, *(kwargs or {}).values()]):
                self.copies.append(str(func))
            return func(*args, **(kwargs or {}))

    with Count() as counter:
        fn()
    return counter.copies


@pytest.mark.parametrize("name", ["lstm", "gru", "simple_tanh", "deep_bidirectional", "deep_gru"])
def test_training_steps_copy_weights_only_when_they_changed(name, rng, monkeypatch):
    import torch

    layer = MAKERS[name]()
    xt = torch.tensor(_x(rng))
    layer(xt)
    _, state = _spy(monkeypatch)

    outputs = []

    def forward():
        outputs.append(layer(xt))

    def update():  # backward, then an optimizer's in-place update
        (outputs[-1] ** 2).sum().backward()
        with torch.no_grad():
            for v in layer.trainable_variables:
                v.value.sub_(0.01 * v.value.grad)
                v.value.grad = None

    assert _count_weight_copies(forward, state, layer) == []  # unchanged weights: no copy
    update()
    copies = _count_weight_copies(forward, state, layer)
    if name in ZERO_COPY:
        assert copies == []  # the kernel reads the updated variables in place
    else:  # the mirror is refreshed after the update only, by one gather of all of them
        assert copies == ["aten.cat.default", "aten.index_select.out"]
        assert _count_weight_copies(forward, state, layer) == []
    # The updated weights are the ones computed with.
    reference = LOOP_TWINS[name]()
    reference(xt)
    reference.set_weights(layer.get_weights())
    np.testing.assert_allclose(to_numpy(outputs[-1]), to_numpy(reference(xt)), **fused_tolerance("outputs", atol=1e-6))


@pytest.mark.parametrize("name", ["lstm", "gru", "simple_tanh", "deep_bidirectional"])
def test_variables_stay_the_source_of_truth(name, rng, tmp_path):
    """set_weights, assign and save/load act on what the kernel reads."""
    x = _x(rng)
    layer = MAKERS[name]()
    first = to_numpy(layer(x))
    weights = layer.get_weights()
    layer.set_weights([w * 0.5 for w in weights])
    halved = to_numpy(layer(x))
    assert not np.allclose(first, halved)
    reference = LOOP_TWINS[name]()
    reference(x)
    reference.set_weights([w * 0.5 for w in weights])
    np.testing.assert_allclose(halved, to_numpy(reference(x)), **fused_tolerance("outputs", atol=1e-6))
    layer.set_weights(weights)
    np.testing.assert_allclose(to_numpy(layer(x)), first, atol=1e-7)

    model = keras.Sequential([keras.Input((T, I)), layer])
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(to_numpy(loaded(x)), first, atol=1e-7)


def test_a_cell_alone_and_in_a_stack_each_get_their_buffer(rng):
    x = _x(rng)
    deep = kerasrnn.DeepRNN.repeat(kerasrnn.LSTM(U), 2, return_sequences=True)
    stacked = to_numpy(deep(x))
    assert "num_layers=2" in deep.last_path
    first = deep.rnn_layers[0]
    alone = to_numpy(first(x)[0])  # the first layer by itself: its own buffer
    assert first.last_path == "fused:torch._VF.lstm"
    np.testing.assert_allclose(to_numpy(deep(x)), stacked, atol=1e-7)  # and back
    reference = kerasrnn.LSTM(U, return_sequences=True, fused=False)
    reference(x)
    reference.set_weights(first.get_weights())
    np.testing.assert_allclose(alone, to_numpy(reference(x)), **fused_tolerance("outputs", atol=1e-6))


@pytest.mark.parametrize("general", [False, True], ids=["gathered", "slot-by-slot"])
@pytest.mark.parametrize("name", ["gru", "gru_nobias", "deep_gru"])
def test_mirror_gradients_reach_each_variable(name, general, rng, monkeypatch):
    """The mirror (the GRU's buffer: torch orders its gates `r, z, n`, Keras `z, r, h`)
    gives each variable its gradient in Keras's layout: by one gather where the kernel
    reads every variable element once (`inverse`), else slot by slot, as a cell whose
    parameters read only some rows of a variable would need."""
    import torch

    if general:
        gather = fused._mirror_gather
        monkeypatch.setattr(fused, "_mirror_gather", lambda *args: (*gather(*args)[:2], None))
    xt = torch.tensor(_x(rng))
    layer, reference = MAKERS[name](), LOOP_TWINS[name]()
    layer(xt)
    reference(xt)
    reference.set_weights(layer.get_weights())
    calls, _ = _spy(monkeypatch)
    (_, grads), (_, expected) = _train_step(layer, xt, None), _train_step(reference, xt, None)
    assert layer.last_path.startswith("fused:"), layer.last_path_reason
    assert len(calls) == 1  # the reference ran the loop alone
    assert len(grads) == len(expected) > 0
    for got, want in zip(grads, expected):
        np.testing.assert_allclose(got, want, **fused_tolerance("gradients", rtol=1e-5, atol=1e-6))


@pytest.mark.parametrize("name", ["gru", "gru_nobias", "deep_gru"])
def test_mirror_without_gradients(name, rng, monkeypatch):
    """Where no gradient can reach the variables (inference under `torch.no_grad`, a frozen
    layer in training) the mirror's views come without its autograd.Function, which then
    must never run; they are still refreshed once after each change of the weights, and
    the inputs' gradient still flows through the kernel."""
    import torch

    class Unused:
        def apply(self, *args):
            raise AssertionError("the mirror's autograd.Function ran without gradients")

    xt = torch.tensor(_x(rng))
    layer, reference = MAKERS[name](), LOOP_TWINS[name]()
    layer(xt)
    reference(xt)
    weights = [w * 0.5 for w in layer.get_weights()]
    monkeypatch.setattr(fused, "_MIRROR", [Unused()])
    _, state = _spy(monkeypatch)
    outputs = []

    def infer():
        with torch.no_grad():
            outputs.append(layer(xt))

    # Inference after a change of the weights: one refresh, then none; the new weights'
    # outputs.
    layer.set_weights(weights)
    reference.set_weights(weights)
    assert _count_weight_copies(infer, state, layer) == ["aten.cat.default", "aten.index_select.out"]
    assert _count_weight_copies(infer, state, layer) == []
    assert layer.last_path.startswith("fused:"), layer.last_path_reason
    for out in outputs:
        np.testing.assert_allclose(to_numpy(out), to_numpy(reference(xt)), **fused_tolerance("outputs", atol=1e-6))

    # Frozen, in a training step: no variable gets a gradient, the inputs get the loop's.
    layer.trainable = reference.trainable = False
    grads = []
    for model in (layer, reference):
        x = xt.clone().requires_grad_(True)
        (model(x, training=True) ** 2).sum().backward()
        grads.append(to_numpy(x.grad))
        assert all(v.value.grad is None for v in model.weights)
    assert layer.last_path.startswith("fused:"), layer.last_path_reason
    np.testing.assert_allclose(grads[0], grads[1], **fused_tolerance("gradients", rtol=1e-5, atol=1e-6))


@pytest.mark.parametrize("name", MAKERS)
def test_first_call_under_inference_mode_then_training(name, rng):
    """What `torch.inference_mode()` makes are inference tensors, which no training step
    can use afterwards ("Inference tensors cannot be saved for backward"). The flat
    buffer and the GRU's gather index outlive the call that makes them, so a built
    layer first called there (an evaluation before training, as PyTorch code often
    does) must make them as normal tensors; it then trains as the loop does."""
    import torch

    xt = torch.tensor(_x(rng))
    layer, reference = MAKERS[name](), LOOP_TWINS[name]()
    layer.build(tuple(xt.shape))
    reference.build(tuple(xt.shape))
    reference.set_weights(layer.get_weights())
    with torch.inference_mode():
        first = layer(xt)
    assert layer.last_path.startswith("fused:"), layer.last_path_reason
    np.testing.assert_allclose(to_numpy(first), to_numpy(reference(xt)), **fused_tolerance("outputs", atol=1e-6))
    for _ in range(2):
        (out, grads), (want, expected) = _train_step(layer, xt, None), _train_step(reference, xt, None)
        np.testing.assert_allclose(out, want, **fused_tolerance("outputs", atol=1e-6))
        assert len(grads) == len(expected) > 0
        for got, exp in zip(grads, expected):
            np.testing.assert_allclose(got, exp, **fused_tolerance("gradients", rtol=1e-5, atol=1e-6))
    with torch.inference_mode():
        after = layer(xt)
    np.testing.assert_allclose(to_numpy(after), to_numpy(reference(xt)), **fused_tolerance("outputs", atol=1e-6))


@pytest.mark.parametrize("name", MAKERS)
def test_layer_built_under_inference_mode_trains(name, rng):
    """A layer built by its first call under `torch.inference_mode()` (an evaluation
    before training, as PyTorch code often does) gets normal tensors for variables,
    not inference tensors (Keras makes those there: a `keras.layers.LSTM` built so
    fails its first training step, and before the fix a kerasrnn layer's kernel packed
    them at each call and training raised "does not require grad"). It then runs
    fused and trains exactly as a twin built outside that mode."""
    import torch

    xt = torch.tensor(_x(rng))
    layer, reference = MAKERS[name](), LOOP_TWINS[name]()
    with torch.inference_mode():
        inside = layer(xt)
    assert layer.weights and not any(v.value.is_inference() for v in layer.weights)
    reference(xt)
    reference.set_weights(layer.get_weights())
    np.testing.assert_allclose(to_numpy(inside), to_numpy(reference(xt)), **fused_tolerance("outputs", atol=1e-6))
    for _ in range(2):
        (out, grads), (want, expected) = _train_step(layer, xt, None), _train_step(reference, xt, None)
        assert layer.last_path.startswith("fused:"), layer.last_path_reason
        np.testing.assert_allclose(out, want, **fused_tolerance("outputs", atol=1e-6))
        assert len(grads) == len(expected) == len(layer.trainable_variables) > 0
        for got, exp in zip(grads, expected):
            np.testing.assert_allclose(got, exp, **fused_tolerance("gradients", rtol=1e-5, atol=1e-6))


class _UserCell(kerasrnn.RecurrentCell):
    """A cell written against the cell contract, with a `build` of its own."""

    def build(self, input_shape):
        super().build(input_shape)
        self.scale = self.add_weight(shape=(self.units,), name="scale", initializer="ones")

    def step(self, projected, states, constants):
        h = keras.ops.tanh(projected + keras.ops.matmul(constants.recurrent(states[0]), self.recurrent_kernel))
        h = h * self.scale
        return h, [h]


BUILT_UNDER_INFERENCE_MODE = {
    "keras_rnn_of_lstm_cell": lambda: keras.layers.RNN(kerasrnn.LSTMCell(U)),
    "keras_bidirectional_gru": lambda: keras.layers.Bidirectional(kerasrnn.GRU(U)),
    "stateful_lstm": lambda: kerasrnn.LSTM(U, stateful=True),
    "user_cell": lambda: kerasrnn.RNN(_UserCell(U)),
}


@pytest.mark.parametrize("name", BUILT_UNDER_INFERENCE_MODE)
def test_every_kind_of_layer_built_under_inference_mode_gets_normal_variables(name, rng):
    """The same for a kerasrnn cell inside a Keras wrapper, a stateful layer's states and
    a user's own cell (its `build` overrides the base class's); every trainable weight
    then gets a gradient. (A Keras layer built there beside ours, a `Dense` in a
    `Sequential`, still gets inference tensors: Keras builds it.)"""
    import torch

    model = BUILT_UNDER_INFERENCE_MODE[name]()
    x = torch.tensor(_x(rng))
    with torch.inference_mode():
        model(x)
    assert model.weights and not any(v.value.is_inference() for v in model.weights)
    out = model(x, training=True)
    (out**2).sum().backward()
    assert model.trainable_variables
    for v in model.trainable_variables:
        assert v.value.grad is not None and bool(v.value.grad.abs().sum() > 0), v.path


def test_seq2seq_built_under_inference_mode_gets_normal_variables():
    """`Seq2Seq` builds its embeddings, encoder, decoder and attention in `build`."""
    import torch

    model = Seq2Seq(9, 9, embedding_dim=4, encoder_units=U, decoder_units=U)
    ids = torch.tensor([[3, 4, 5, 0], [6, 7, 0, 0]], dtype=torch.int32)
    with torch.inference_mode():
        model((ids, ids))
    assert not any(v.value.is_inference() for v in model.weights)
    model.compile(optimizer="adam", loss=MaskedSequenceLoss())  # Adam: a tiny gradient moves too
    before = [v.numpy().copy() for v in model.trainable_variables]
    model.train_on_batch((ids, ids), ids.long())
    assert all(not np.array_equal(b, v.numpy()) for b, v in zip(before, model.trainable_variables))


def test_stateless_call_packs_the_substituted_weights(rng):
    """Values that are not the variables (a stateless call) run on the kernel too."""
    x = _x(rng)
    layer = kerasrnn.GRU(U)
    layer(x)
    halved = [v * 0.5 for v in layer.trainable_variables]
    out, _ = layer.stateless_call(
        [keras.ops.convert_to_tensor(h) for h in halved], layer.non_trainable_variables, x
    )
    assert layer.last_path == "fused:torch._VF.gru"
    reference = kerasrnn.GRU(U, fused=False)
    reference(x)
    reference.set_weights([to_numpy(h) for h in halved])
    np.testing.assert_allclose(to_numpy(out), to_numpy(reference(x)), **fused_tolerance("outputs", atol=1e-6))


# ------------------------------------------------------------------------- devices
@pytest.mark.parametrize("name", MAKERS)
def test_everything_lives_on_the_device_keras_computes_on(name, rng):
    """CPU input tensors under Keras's `meta` device: every tensor of the call must be
    made on that device (a CPU tensor among meta ones raises), as on a GPU."""
    import torch

    layer = MAKERS[name](return_sequences=True)
    x = torch.tensor(_x(rng))
    layer(x)
    with keras.device("meta"):
        out = layer(x, initial_state=None)
    assert out.device.type == "meta"
    assert layer.last_path.startswith("fused:")


@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("zero_output", [False, True])
@pytest.mark.parametrize("name", ["lstm", "gru", "simple_tanh", "deep_bidirectional"])
def test_packed_path_makes_its_tensors_on_the_inputs_device(name, go_backwards, zero_output, rng):
    """`run_fused` on right-padded sequences with every tensor on `meta`: the lengths the
    packing reads are the only host tensor."""
    import torch

    layer = MAKERS[name]()
    layer(_x(rng))
    spec = _spec_of(layer, _x(rng))
    if isinstance(layer, kerasrnn.DeepRNN):
        states = [torch.zeros(B, U, device="meta") for _ in range(8)]
    else:
        states = [torch.zeros(B, s, device="meta") for s in layer.state_size]
    for slot in spec.slots:  # values a symbolic call sees
        if slot.variable is not None:
            slot.value = torch.empty(tuple(slot.value.shape), device="meta")
    x = torch.empty(B, T, I, device="meta")
    lengths = torch.tensor([T, 2, 4])
    last, out, final = fused.run_fused(
        spec, x, states, lengths=fused.Lengths(lengths.to("meta"), lengths),
        go_backwards=go_backwards, zero_output_for_mask=zero_output,
    )
    assert {t.device.type for t in [last, out, *final]} == {"meta"}


# ------------------------------------------------------------- cuDNN's buffer layout
def _cudnn_like_layout(spec, shapes, dtype, device):
    """A layout unlike the CPU's, as cuDNN's may be: layer by layer and direction by
    direction (`w_ih, w_hh, w_hr, b_ih, b_hh` each), every parameter after a gap, at a
    multiple of 8 elements, and padding after the last one."""
    names, per_layer = spec.slot_names(), spec.per_layer
    rank = {"w_ih": 0, "w_hh": 1, "w_hr": 2, "b_ih": 3, "b_hh": 4}
    order = sorted(range(len(shapes)), key=lambda i: (i // per_layer, rank[names[i]]))
    offsets, position = [0] * len(shapes), 0
    for i in order:
        position = (position // 8 + 1) * 8  # at least one element of gap
        offsets[i] = position
        position += fused._numel(shapes[i])
    return fused._Layout(offsets, position + 5)


@pytest.fixture
def cudnn_like_layout(monkeypatch):
    """Every flat buffer made in the test gets `_cudnn_like_layout`."""
    monkeypatch.setattr(fused, "_new_layout", _cudnn_like_layout)
    monkeypatch.setattr(fused, "_LAYOUTS", {})


def _train_step(model, x, mask):
    """Outputs and gradients of `sum(outputs**2)`, then an in-place SGD update."""
    import torch

    out = model(x, mask=mask)
    (out**2).sum().backward()
    grads = [to_numpy(v.value.grad) for v in model.trainable_variables]
    with torch.no_grad():
        for v in model.trainable_variables:
            v.value.sub_(0.1 * v.value.grad)
            v.value.grad = None
    return to_numpy(out), grads


@pytest.mark.skipif(TORCH_CUDNN, reason="simulates cuDNN's layout on a CPU; a GPU has the real one")
@pytest.mark.parametrize("masked", [False, True], ids=["full", "right-padded"])
@pytest.mark.parametrize("name", MAKERS)
def test_any_buffer_layout_torch_asks_of_cudnn(name, masked, rng, monkeypatch, cudnn_like_layout):
    """On CUDA the buffer's layout is cuDNN's, asked of torch; the CPU's never shows
    another order or gaps. With a layout in another order and with gaps, the kernel
    reads each parameter at its offset, training updates what it reads, the gaps stay
    zero, and outputs and gradients are those of the `keras.ops` loop, before and
    after an update."""
    import torch

    xt = torch.tensor(_x(rng))
    mask = torch.tensor(np.arange(T)[None, :] < np.array([T, 2, 4])[:, None]) if masked else None
    layer, reference = MAKERS[name](), LOOP_TWINS[name]()
    layer(xt, mask=mask)
    reference(xt, mask=mask)
    reference.set_weights(layer.get_weights())
    (calls, _), ours = _spy(monkeypatch), []
    for _ in range(2):  # before and after an update
        out, grads = _train_step(layer, xt, mask)
        ours += calls
        expected, expected_grads = _train_step(reference, xt, mask)
        assert len(calls) == 1  # ours; the reference ran the loop alone
        calls.clear()
        assert layer.last_path.startswith("fused:"), layer.last_path_reason
        np.testing.assert_allclose(out, expected, **fused_tolerance("outputs", atol=1e-6))
        for got, want in zip(grads, expected_grads):
            np.testing.assert_allclose(got, want, **fused_tolerance("gradients", rtol=1e-5, atol=1e-6))
    spec_owner = layer if isinstance(layer, kerasrnn.DeepRNN) else layer.cell
    (layout, buffer), = spec_owner._kerasrnn_flat_weights.buffers.items()
    assert any(made is layout for made in fused._LAYOUTS.values())  # the simulated one
    assert buffer.numel() == layout.size
    assert len(ours) == 2
    for params in ours:
        assert {_storage(p) for p in params} == {_storage(buffer)}
        assert [p.storage_offset() for p in params] == layout.offsets
    free = torch.ones(buffer.numel(), dtype=torch.bool)
    for offset, param in zip(layout.offsets, ours[-1]):
        free[offset : offset + param.numel()] = False
    assert int(free.sum()) > len(ours[-1])  # a gap before each parameter, and the end
    assert not buffer.detach()[free].any()


@pytest.mark.skipif(TORCH_CUDNN, reason="simulates cuDNN's layout on a CPU; a GPU has the real one")
@pytest.mark.parametrize("name", ["lstm_proj", "gru", "deep_bidirectional"])
def test_substituted_weights_packed_into_cudnns_layout(name, rng, monkeypatch, cudnn_like_layout):
    """Values that are not the variables (a stateless call; a cast under mixed precision
    on a GPU) are packed into the layout, gaps included, by one concatenation."""
    import torch

    x = _x(rng)
    layer, reference = MAKERS[name](), LOOP_TWINS[name]()
    layer(x)
    reference(x)
    halved = [to_numpy(v) * 0.5 for v in layer.trainable_variables]
    reference.set_weights(halved)
    calls, _ = _spy(monkeypatch)
    out, _ = layer.stateless_call([torch.tensor(h) for h in halved], layer.non_trainable_variables, x)
    assert layer.last_path.startswith("fused:"), layer.last_path_reason
    (params,) = calls
    layout = fused._layout(_spec_of(layer, x), params[0].dtype, params[0].device)
    assert len({_storage(p) for p in params}) == 1
    assert [p.storage_offset() for p in params] == layout.offsets
    np.testing.assert_allclose(to_numpy(out), to_numpy(reference(x)), **fused_tolerance("outputs", atol=1e-6))


# ------------------------------------------------------------------ mixed precision
def _mixed_precision_model(name, masked, loop):
    layer = LOOP_TWINS[name]() if loop else MAKERS[name]()
    head = [keras.layers.Masking(0.0)] if masked else []
    model = keras.Sequential([keras.Input((T, I)), *head, layer, keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    return model, layer


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("masked", [False, True], ids=["full", "right-padded"])
@pytest.mark.parametrize("name", ["lstm", "lstm_proj", "gru", "simple_tanh", "deep_bidirectional"])
def test_mixed_precision_trains_on_the_kernel(name, masked, policy, rng, monkeypatch):
    """Under mixed precision a GPU runs the kernel in float16 or bfloat16 on float32
    variables: their casts are packed into the buffer's layout at each call, and the
    gradients flow back through the casts. A CPU runs the loop in half precision
    instead, so there the planner is told the inputs are on a GPU and the buffer gets a
    layout like cuDNN's. Keras's trainer (with a LossScaleOptimizer under float16) then
    trains the fused model as it trains the loop: the kernel reads half-precision
    weights, the variables stay float32, and losses and weights agree within half
    precision's rounding."""
    import torch

    from kerasrnn.ops import plan

    if not TORCH_CUDNN:
        monkeypatch.setattr(plan, "on_accelerator", lambda x: True)
        monkeypatch.setattr(fused, "_new_layout", _cudnn_like_layout)
        monkeypatch.setattr(fused, "_LAYOUTS", {})
    x = _x(rng)
    if masked:
        x[1, 2:] = 0.0  # right-padded: lengths 6, 2, 4
        x[2, 4:] = 0.0
    y = rng.standard_normal((B, 1)).astype("float32")
    keras.config.set_dtype_policy(policy)  # the conftest fixture restores float32
    model, layer = _mixed_precision_model(name, masked, loop=False)
    reference, _ = _mixed_precision_model(name, masked, loop=True)
    reference.set_weights(model.get_weights())
    calls, _ = _spy(monkeypatch)
    losses = [float(model.train_on_batch(x, y)) for _ in range(4)]
    assert layer.last_path.startswith("fused:"), layer.last_path_reason
    compute = getattr(torch, policy.split("_")[1])
    assert calls and all(p.dtype == compute for params in calls for p in params)
    calls.clear()
    expected = [float(reference.train_on_batch(x, y)) for _ in range(4)]
    assert not calls, "the reference ran a fused kernel"
    assert all(str(v.dtype) == "float32" for v in layer.weights)
    # Measured here (the CPU's half-precision kernel against the loop, 4 steps): losses
    # within 1.6e-4 relative under float16 and 2.8e-3 under bfloat16. cuDNN's
    # half-precision arithmetic is unmeasured: five times more room on a GPU.
    rtol = (2e-2 if policy == "mixed_bfloat16" else 2e-3) * (5 if TORCH_CUDNN else 1)
    np.testing.assert_allclose(losses, expected, rtol=rtol)
    assert losses[-1] < losses[0]
    for got, want in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol / 10)


# -------------------------------------------------------------------- torch.compile
def _compiled_model_cases():
    """(inputs, layers, their `last_path`s): whole sequences; right-padded ones (a
    packed run) through torch's multi-layer kernel and a reversed layer."""
    whole = (
        lambda: [keras.Input((T, I)), kerasrnn.LSTM(U, return_sequences=True), kerasrnn.SimpleRNN(U)],
        ["fused:torch._VF.lstm", "fused:torch._VF.rnn_tanh"],
    )
    padded = (
        lambda: [
            keras.Input((T,), dtype="int32"),
            keras.layers.Embedding(7, I, mask_zero=True),
            kerasrnn.DeepRNN.repeat(kerasrnn.LSTM(U), 2, bidirectional=True, return_sequences=True),
            kerasrnn.GRU(U, go_backwards=True),
        ],
        ["fused:torch._VF.lstm(num_layers=2, bidirectional=True)", "fused:torch._VF.gru"],
    )
    return {"whole": whole, "right-padded": padded}


@pytest.mark.slow
@pytest.mark.parametrize("case", ["whole", "right-padded"])
def test_trains_under_torch_compile(case, rng, monkeypatch):
    """`jit_compile=True` (torch.compile) trains as eager Keras does. The kernel runs
    outside the compiled graphs, as dynamo does for `torch.nn.LSTM`, with what prepares
    it: its weights (the flat buffer, no copy per call), their layout (on CUDA, asked of
    cuDNN with real tensors), the packing. Traced, the CPU's LSTM fails ("expected
    Tensor() for op: torch.ops.aten.mkldnn_rnn_layer"), and so do unpacking and the
    GRU's mirrored buffer."""
    import torch

    asked = []

    def new_layout(*args, _make=fused._new_layout):
        asked.append(torch.compiler.is_compiling())
        return _make(*args)

    monkeypatch.setattr(fused, "_new_layout", new_layout)
    monkeypatch.setattr(fused, "_LAYOUTS", {})
    layers, paths = _compiled_model_cases()[case]
    if case == "whole":
        x = _x(rng)
    else:
        x = rng.integers(1, 7, (B, T))
        x[np.arange(T)[None, :] >= np.array([T, 2, 4])[:, None]] = 0
    y = rng.random((B, 1)).astype("float32")
    losses = {}
    for jit_compile in (True, False):  # compiled first: its calls ask for the layouts
        keras.utils.set_random_seed(0)
        m = keras.Sequential([*layers(), keras.layers.Dense(1)])
        m.compile(keras.optimizers.SGD(0.1), "mse", jit_compile=jit_compile)
        calls, _ = _spy(monkeypatch)
        losses[jit_compile] = m.fit(x, y, batch_size=B, epochs=3, shuffle=False, verbose=0).history["loss"]
        fused_layers = [layer for layer in m.layers if hasattr(layer, "last_path")]
        assert [layer.last_path for layer in fused_layers] == paths
        owners = [layer if isinstance(layer, kerasrnn.DeepRNN) else layer.cell for layer in fused_layers]
        buffers = {_storage(b) for o in owners for b in o._kerasrnn_flat_weights.buffers.values()}
        real = [params for params in calls if params[0].device.type != "meta"]  # not a build
        assert len(real) == 3 * len(fused_layers)  # one kernel call per layer and step
        assert all({_storage(p) for p in params} <= buffers for params in real)
    assert losses[True][-1] < losses[True][0]
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-5)
    assert asked and not any(asked)  # asked for, and never while dynamo traced
