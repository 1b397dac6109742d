"""Training-step and inference speed of kerasrnn vs keras.layers (and torch.nn on torch).

Run with the backend chosen by KERAS_BACKEND, e.g.

    KERAS_BACKEND=jax python benchmarks/rnn_bench.py --cells lstm,gru,simple_rnn

or through nox (`nox -s bench`). Contenders are interleaved in one process: each round
times every contender once, so slow drifts of the machine hit all of them alike. The
table gives min and median milliseconds per step and the ratio of medians to
`keras.layers`. Only ratios measured in the same run mean anything on a shared machine.
"""

import argparse
import ast
import json
import os
import statistics
import sys
import time

import numpy as np

SHAPES = {
    "A": {"batch": 64, "time": 100, "features": 32, "units": 128},
    "B": {"batch": 32, "time": 200, "features": 64, "units": 256},
    "GPU": {"batch": 128, "time": 200, "features": 256, "units": 512},  # the GPU table's
    "tiny": {"batch": 2, "time": 3, "features": 2, "units": 4},  # the test's smoke run
}
KERAS_NAMES = {"lstm": "LSTM", "gru": "GRU", "simple_rnn": "SimpleRNN"}
TORCH_NAMES = {"lstm": "LSTM", "gru": "GRU", "simple_rnn": "RNN"}


def extension_variants(cell, shape, backend):
    """The options (extensions) that `cell` has, as `--variants` entries (`--extensions`).

    On torch the plain layer runs torch's fused kernel and the options the `keras.ops`
    loop, so the loop itself (`fused=False`) is a row too.
    """
    rows = ["fused=False"] if backend == "torch" else []
    rows.append("layer_norm=True")
    if cell == "lstm":
        rows += ["use_peepholes=True", f"proj_size={shape['units'] // 2}", "zoneout=0.1;zoneout_cell=0.1"]
    else:
        rows.append("zoneout=0.1")
    return rows


def keras_model(layer, shape, jit_compile="auto"):
    import keras

    inputs = keras.Input((shape["time"], shape["features"]), batch_size=shape["batch"])
    outputs = keras.layers.Dense(1)(layer(inputs))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse", jit_compile=jit_compile)
    return model


def contenders(cell, shape, variants, jit_compile="auto", hand_written=True, inference=False):
    """name -> (train_step, infer_step) closures, each running one batch.

    `jit_compile` goes to every Keras model's `compile` ("auto": Keras's default, which
    is XLA on TensorFlow only with a GPU; JAX always compiles, torch never). Every
    contender's inputs are put on the device before timing (`keras.ops.convert_to_tensor`
    places them where Keras computes), so no row pays a host-to-device copy. With
    `hand_written`, the backend's own recurrent code runs beside Keras's, `torch.nn` on
    torch and a hand-written `lax.scan` (input projection hoisted) on JAX, and kerasrnn's
    layer runs in that same plain training step too (`kerasrnn (same step)`), which
    separates the layer's cost from the Keras trainer's. Each contender's training step
    is compiled (run once) before timing, and its inference step too with `inference`
    (otherwise it is never run: on a GPU lease the compilations are most of the time).
    """
    import keras

    import kerasrnn

    rng = np.random.default_rng(0)
    x = rng.standard_normal((shape["batch"], shape["time"], shape["features"])).astype("float32")
    y = rng.standard_normal((shape["batch"], 1)).astype("float32")
    units = shape["units"]
    out = {}
    if keras.backend.backend() != "tensorflow":  # TF's trainer takes host arrays (tf.data)
        x, y = keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y)

    def add_keras(name, layer):
        model = keras_model(layer, shape, jit_compile)
        model.train_on_batch(x, y)  # compile outside the timing
        if inference:
            model.predict_on_batch(x)
        out[name] = (lambda: model.train_on_batch(x, y), lambda: model.predict_on_batch(x))

    add_keras("keras.layers", getattr(keras.layers, KERAS_NAMES[cell])(units))
    ours = getattr(kerasrnn.layers, KERAS_NAMES[cell])
    add_keras("kerasrnn", ours(units))
    for variant in variants:  # "key=value;key=value"
        settings = dict(item.split("=") for item in variant.split(";"))
        settings = {k: _literal(v) for k, v in settings.items()}
        add_keras(f"kerasrnn[{variant}]", ours(units, **settings))

    if hand_written and keras.backend.backend() == "jax":
        out.update(jax_contenders(cell, shape, x, y, ours(units), inference))
    if hand_written and keras.backend.backend() == "torch":
        out.update(torch_contenders(cell, shape, x, y, ours(units), inference))
    return out


def torch_contenders(cell, shape, x, y, layer, inference=False):
    """`torch.nn`'s layer and kerasrnn's, each in one plain torch training step: a
    `Linear(1)` head on the last output, MSE, `torch.optim.Adam`, inputs on the device.

    kerasrnn's layer is a `torch.nn.Module` on this backend and its Keras variables are
    torch parameters (views of the kernel's flat buffer), so the same loop trains it:
    the difference from the `kerasrnn` row is the Keras trainer's cost per step.
    """
    import torch

    device = x.device  # where Keras puts tensors
    units = shape["units"]
    module = getattr(torch.nn, TORCH_NAMES[cell])(shape["features"], units, batch_first=True)
    module.to(device)  # torch.nn flattens its weights into one buffer on CUDA
    layer.build((None, shape["time"], shape["features"]))

    def make(last_output, params):
        head = torch.nn.Linear(units, 1).to(device)
        opt = torch.optim.Adam(list(params) + list(head.parameters()), lr=1e-3)

        def train_step():
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(head(last_output(x)), y)
            loss.backward()
            opt.step()
            return loss.item()  # waits for the device, as train_on_batch does

        def infer_step():
            with torch.no_grad():
                return head(last_output(x)).cpu()

        train_step()
        if inference:
            infer_step()
        return train_step, infer_step

    return {
        "torch.nn": make(lambda x: module(x)[0][:, -1], module.parameters()),
        "kerasrnn (same step)": make(layer, [v.value for v in layer.trainable_variables]),
    }


def hand_written_layer(cell, units):
    """`f(params, x) -> h_T`: the recurrent layer as one writes it by hand for speed, with
    Keras's weights (`kernel`, `recurrent`, `bias` of shape `(1 or 2, G·units)`), gate
    order and GRU reset-after form: the input projection of the whole sequence as one
    matrix product, then `lax.scan` over time of the recurrent product and the gates."""
    import jax
    import jax.numpy as jnp

    def layer(p, x):
        z = jnp.einsum("bti,ig->tbg", x, p["kernel"]) + p["bias"][0]  # hoisted, time-major
        h0 = jnp.zeros((x.shape[0], units), x.dtype)

        def step(carry, z_t):
            if cell == "lstm":
                h, c = carry
                i, f, g, o = jnp.split(z_t + h @ p["recurrent"], 4, axis=-1)
                c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
                h = jax.nn.sigmoid(o) * jnp.tanh(c)
                return (h, c), None
            h = carry[0]
            if cell == "gru":
                r_z, r_r, r_h = jnp.split(h @ p["recurrent"] + p["bias"][1], 3, axis=-1)
                x_z, x_r, x_h = jnp.split(z_t, 3, axis=-1)
                zg, rg = jax.nn.sigmoid(x_z + r_z), jax.nn.sigmoid(x_r + r_r)
                h = zg * h + (1 - zg) * jnp.tanh(x_h + rg * r_h)
                return (h,), None
            return (jnp.tanh(z_t + h @ p["recurrent"]),), None

        carry = (h0, h0) if cell == "lstm" else (h0,)
        (h, *_), _ = jax.lax.scan(step, carry, z)
        return h

    return layer


def jax_contenders(cell, shape, x, y, layer, inference=False):
    """A hand-written JAX recurrent layer and kerasrnn's, in one hand-written training
    step: Dense(1) head, MSE, Adam, `jax.jit`, inputs already on the device.

    The hand-written layer is what one writes for speed: the input projection of the
    whole sequence as one matrix product, then `lax.scan` over time of the recurrent
    product and the gates (Keras's gate order and GRU reset-after form).
    """
    import jax
    import jax.numpy as jnp

    units, features = shape["units"], shape["features"]
    gates = {"lstm": 4, "gru": 3, "simple_rnn": 1}[cell]
    rng = np.random.default_rng(1)

    def init(*dims):
        return jnp.asarray(rng.standard_normal(dims).astype("float32") / np.sqrt(dims[0]))

    hand = {
        "kernel": init(features, gates * units),
        "recurrent": init(units, gates * units),
        "bias": jnp.zeros((2 if cell == "gru" else 1, gates * units), "float32"),
    }

    layer.build((None, shape["time"], features))
    ours_trainable = [v.value for v in layer.trainable_variables]
    ours_fixed = [v.value for v in layer.non_trainable_variables]

    def ours_layer(p, x):
        return layer.stateless_call(p["layer"], ours_fixed, x)[0]

    def make(apply, params):
        params = {"layer": params, "w": init(units, 1), "b": jnp.zeros((1,), "float32")}
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        state = [params, zeros, zeros, jnp.zeros((), "float32")]

        def loss_fn(p, x, y):
            return jnp.mean((apply(p, x) @ p["w"] + p["b"] - y) ** 2)

        @jax.jit
        def train(params, m, v, t, x, y):  # one Adam step
            loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
            t = t + 1
            m = jax.tree_util.tree_map(lambda m, g: 0.9 * m + 0.1 * g, m, grads)
            v = jax.tree_util.tree_map(lambda v, g: 0.999 * v + 0.001 * g * g, v, grads)
            scale = 1e-3 * jnp.sqrt(1 - 0.999**t) / (1 - 0.9**t)
            params = jax.tree_util.tree_map(lambda p, m, v: p - scale * m / (jnp.sqrt(v) + 1e-7), params, m, v)
            return params, m, v, t, loss

        infer = jax.jit(lambda p, x: apply(p, x) @ p["w"] + p["b"])

        def train_step():
            *state[:], loss = train(*state, x, y)  # the new parameters and Adam moments
            return float(loss)  # waits for the device, as train_on_batch does

        def infer_step():
            return np.asarray(infer(state[0], x))

        train_step()
        if inference:
            infer_step()
        return train_step, infer_step

    hand_layer = hand_written_layer(cell, units)

    def apply_hand(p, x):
        return hand_layer(p["layer"], x)

    def apply_ours(p, x):
        return ours_layer(p, x)

    return {
        "jax lax.scan (hand-written)": make(apply_hand, hand),
        "kerasrnn (same step)": make(apply_ours, ours_trainable),
    }


def device_name():
    """The accelerator the backend computes on, or "cpu"."""
    import keras

    backend = keras.backend.backend()
    try:
        if backend == "torch":
            import torch

            return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
        if backend == "jax":
            import jax

            device = jax.devices()[0]
            return device.device_kind if device.platform != "cpu" else "cpu"
        if backend == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU") if gpus else "cpu"
    except Exception:  # noqa: BLE001 (a name is only informative)
        return "unknown"
    return "cpu"


def _literal(text):
    """`"64"` -> 64, `"0.1"` -> 0.1, `"True"` -> True; other text stays a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def measure(fns, rounds, steps, which, clock=time.perf_counter, after_round=None):
    """`{contender: [ms per step, one per round]}`, the contenders interleaved in each
    round; `after_round(times)` is called after every round with what is measured so far."""
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, pair in fns.items():
            fn = pair[which]
            start = clock()
            for _ in range(steps):
                fn()
            times[name].append((clock() - start) / steps * 1e3)
        if after_round is not None:
            after_round(times)
    return times


def table(title, times, baseline="keras.layers"):
    base = statistics.median(times[baseline])
    rows = [title, f"  {'contender':<48}{'min ms':>10}{'median ms':>11}{'ratio':>8}"]
    for name, ts in times.items():
        med = statistics.median(ts)
        rows.append(f"  {name:<48}{min(ts):>10.1f}{med:>11.1f}{med / base:>8.2f}")
    return "\n".join(rows)


def check_args(parser, args):
    """argparse's one-line error (before Keras is imported, before any timing) for a
    value that would end in a traceback later."""
    for flag, value, known in (("--cells", args.cells, KERAS_NAMES), ("--shapes", args.shapes, SHAPES)):
        unknown = [v for v in value.split(",") if v not in known]
        if unknown:
            parser.error(f"{flag}: unknown {', '.join(map(repr, unknown))}; choose from {', '.join(known)} "
                         "(comma-separated)")
    for flag, value in (("--rounds", args.rounds), ("--steps", args.steps)):
        if value < 1:
            parser.error(f"{flag} must be >= 1; received {value}")
    for variant in (v for v in args.variants.split(",") if v):
        items = variant.split(";")
        if not all(item.count("=") == 1 and item.split("=")[0] for item in items):
            parser.error(f"--variants: {variant!r} is not key=value;key=value (e.g. layer_norm=True;zoneout=0.1)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default="lstm,gru,simple_rnn")
    parser.add_argument("--shapes", default="A,B")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--variants", default="", help="extra kerasrnn settings: comma-separated variants, each key=value;key=value")
    parser.add_argument("--scaling", action="store_true", help="also T in {100, 400, 1600} (LSTM, shape A otherwise)")
    parser.add_argument("--inference", action="store_true", help="also time inference")
    parser.add_argument("--json", help="write all timings to this file")
    parser.add_argument(
        "--no-hand-written", action="store_true",
        help="leave out torch.nn (torch) and the hand-written lax.scan (JAX)",
    )
    parser.add_argument(
        "--extensions", action="store_true",
        help="also each option of the cell (layer norm, peepholes, projection, zoneout), "
        "with ratios to the plain kerasrnn layer unless --baseline says otherwise",
    )
    parser.add_argument("--baseline", default=None, help="contender the ratios divide by (default keras.layers; e.g. kerasrnn)")
    parser.add_argument(
        "--keras-max-time", type=int, default=None,
        help="leave keras.layers out above this many steps (on torch its step time grows "
        "as T²: 12.8 s at T=400 on a CPU); ratios then divide by kerasrnn",
    )
    parser.add_argument(
        "--clock", choices=("wall", "process"), default="wall",
        help="wall time, or CPU time of this process (all its threads): steadier on an "
        "oversubscribed machine, but it counts parallel work instead of latency",
    )
    parser.add_argument(
        "--jit-compile", choices=("auto", "true", "false"), default="auto",
        help="`jit_compile` of the Keras models (TensorFlow: 'true' runs the training "
        "step under XLA, which Keras's 'auto' does only with a GPU)",
    )
    args = parser.parse_args(argv)
    check_args(parser, args)
    jit_compile = {"auto": "auto", "true": True, "false": False}[args.jit_compile]

    import keras

    print(
        f"backend={keras.backend.backend()} keras={keras.__version__} device={device_name()} "
        f"python={sys.version.split()[0]} clock={args.clock} jit_compile={args.jit_compile}"
    )
    variants = [v for v in args.variants.split(",") if v]
    results = {}

    def write(results):
        if args.json:
            with open(args.json + ".tmp", "w") as f:
                json.dump({"backend": keras.backend.backend(), "device": device_name(), "results": results}, f, indent=1)
            os.replace(args.json + ".tmp", args.json)  # never half a file, if stopped while writing
    runs = [(c, s, SHAPES[s]) for c in args.cells.split(",") for s in args.shapes.split(",")]
    if args.scaling:
        runs += [("lstm", f"A-T{t}", dict(SHAPES["A"], time=t)) for t in (100, 400, 1600)]
    for cell, shape_name, shape in runs:
        extra = extension_variants(cell, shape, keras.backend.backend()) if args.extensions else []
        fns = contenders(cell, shape, variants + [v for v in extra if v not in variants], jit_compile,
                         hand_written=not args.no_hand_written, inference=args.inference)
        baseline = args.baseline or ("kerasrnn" if args.extensions else "keras.layers")
        if args.keras_max_time is not None and shape["time"] > args.keras_max_time:
            fns.pop("keras.layers", None)
            if baseline == "keras.layers":
                baseline = "kerasrnn"
        if baseline not in fns:  # before the rounds, not in the table after them
            parser.error(f"--baseline {baseline!r} is not a contender here; the contenders: {', '.join(fns)}")
        scale = max(1, shape["time"] // 200)
        rounds = args.rounds if scale == 1 else max(3, args.rounds // scale)
        steps = args.steps if scale == 1 else 1
        title = f"{cell} {shape_name} {shape}"
        clock = time.perf_counter if args.clock == "wall" else time.process_time
        for kind, which, label in (("train", 0, "train step"), ("infer", 1, "inference"))[: 1 + args.inference]:
            key = f"{kind}/{cell}/{shape_name}"
            # The JSON is rewritten after every round: a run stopped by a time limit (a GPU
            # lease) keeps every round it finished, even of the table it was in.
            times = measure(fns, rounds, steps, which, clock,
                            after_round=lambda times, key=key: write({**results, key: times}))
            print(table(f"[{label}] {title}", times, baseline), flush=True)
            results[key] = times
            write(results)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main()
