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
    "tiny": {"batch": 2, "time": 3, "features": 2, "units": 4},  # the test's smoke run
}
KERAS_NAMES = {"lstm": "LSTM", "gru": "GRU", "simple_rnn": "SimpleRNN"}
TORCH_NAMES = {"lstm": "LSTM", "gru": "GRU", "simple_rnn": "RNN"}


def extension_variants(cell, shape, backend):
    """The options of issue 3 that `cell` has, as `--variants` entries (`--extensions`).

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


def contenders(cell, shape, variants, jit_compile="auto"):
    """name -> (train_step, infer_step) closures, each running one batch.

    `jit_compile` goes to every Keras model's `compile` ("auto": Keras's default, which
    is XLA on TensorFlow only with a GPU; JAX always compiles, torch never)."""
    import keras

    import kerasrnn

    rng = np.random.default_rng(0)
    x = rng.standard_normal((shape["batch"], shape["time"], shape["features"])).astype("float32")
    y = rng.standard_normal((shape["batch"], 1)).astype("float32")
    units = shape["units"]
    out = {}

    def add_keras(name, layer):
        model = keras_model(layer, shape, jit_compile)
        model.train_on_batch(x, y)  # compile outside the timing
        model.predict_on_batch(x)
        out[name] = (lambda: model.train_on_batch(x, y), lambda: model.predict_on_batch(x))

    add_keras("keras.layers", getattr(keras.layers, KERAS_NAMES[cell])(units))
    ours = getattr(kerasrnn.layers, KERAS_NAMES[cell])
    add_keras("kerasrnn", ours(units))
    for variant in variants:  # "key=value;key=value"
        settings = dict(item.split("=") for item in variant.split(";"))
        settings = {k: _literal(v) for k, v in settings.items()}
        add_keras(f"kerasrnn[{variant}]", ours(units, **settings))

    if keras.backend.backend() == "torch":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"  # where Keras puts tensors
        module = getattr(torch.nn, TORCH_NAMES[cell])(shape["features"], units, batch_first=True)
        head = torch.nn.Linear(units, 1)
        module.to(device)
        head.to(device)
        params = list(module.parameters()) + list(head.parameters())
        opt = torch.optim.Adam(params, lr=1e-3)
        xt, yt = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)

        def torch_train():
            opt.zero_grad()
            seq, _ = module(xt)
            loss = torch.nn.functional.mse_loss(head(seq[:, -1]), yt)
            loss.backward()
            opt.step()
            return loss.item()  # waits for the device, as train_on_batch does

        def torch_infer():
            with torch.no_grad():
                seq, _ = module(xt)
                return head(seq[:, -1]).cpu()

        out["torch.nn"] = (torch_train, torch_infer)
    return out


def _literal(text):
    """`"64"` -> 64, `"0.1"` -> 0.1, `"True"` -> True; other text stays a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def measure(fns, rounds, steps, which, clock=time.perf_counter):
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, pair in fns.items():
            fn = pair[which]
            start = clock()
            for _ in range(steps):
                fn()
            times[name].append((clock() - start) / steps * 1e3)
    return times


def table(title, times, baseline="keras.layers"):
    base = statistics.median(times[baseline])
    rows = [title, f"  {'contender':<48}{'min ms':>10}{'median ms':>11}{'ratio':>8}"]
    for name, ts in times.items():
        med = statistics.median(ts)
        rows.append(f"  {name:<48}{min(ts):>10.1f}{med:>11.1f}{med / base:>8.2f}")
    return "\n".join(rows)


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
    jit_compile = {"auto": "auto", "true": True, "false": False}[args.jit_compile]

    import keras

    print(
        f"backend={keras.backend.backend()} keras={keras.__version__} "
        f"python={sys.version.split()[0]} clock={args.clock} jit_compile={args.jit_compile}"
    )
    variants = [v for v in args.variants.split(",") if v]
    results = {}
    runs = [(c, s, SHAPES[s]) for c in args.cells.split(",") for s in args.shapes.split(",")]
    if args.scaling:
        runs += [("lstm", f"A-T{t}", dict(SHAPES["A"], time=t)) for t in (100, 400, 1600)]
    for cell, shape_name, shape in runs:
        extra = extension_variants(cell, shape, keras.backend.backend()) if args.extensions else []
        fns = contenders(cell, shape, variants + [v for v in extra if v not in variants], jit_compile)
        baseline = args.baseline or ("kerasrnn" if args.extensions else "keras.layers")
        if args.keras_max_time is not None and shape["time"] > args.keras_max_time:
            fns.pop("keras.layers", None)
            if baseline == "keras.layers":
                baseline = "kerasrnn"
        scale = max(1, shape["time"] // 200)
        rounds = args.rounds if scale == 1 else max(3, args.rounds // scale)
        steps = args.steps if scale == 1 else 1
        title = f"{cell} {shape_name} {shape}"
        clock = time.perf_counter if args.clock == "wall" else time.process_time
        train = measure(fns, rounds, steps, 0, clock)
        print(table(f"[train step] {title}", train, baseline), flush=True)
        results[f"train/{cell}/{shape_name}"] = train
        if args.inference:
            infer = measure(fns, rounds, steps, 1, clock)
            print(table(f"[inference] {title}", infer, baseline), flush=True)
            results[f"infer/{cell}/{shape_name}"] = infer
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"backend": keras.backend.backend(), "results": results}, f, indent=1)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main()
