"""What the recipes share: config from the command line, the backend, the output folder.

A recipe declares a `@dataclass` config with commented defaults; `parse_config` turns
every field into a `--name value` flag (booleans: `--name` / `--no-name`). The backend
must be chosen before Keras is imported, so a recipe run as a script calls
`select_backend(sys.argv[1:])` at the very top, and `main` checks that the Keras it got
is the one asked for.
"""

import argparse
import dataclasses
import json
import os
import sys

BACKENDS = ("tensorflow", "jax", "torch")


def select_backend(argv):
    """Set `KERAS_BACKEND` from `--backend NAME` in `argv` (call it before importing keras)."""
    for i, arg in enumerate(argv):
        name = None
        if arg == "--backend" and i + 1 < len(argv):
            name = argv[i + 1]
        elif arg.startswith("--backend="):
            name = arg.split("=", 1)[1]
        if name:
            if name not in BACKENDS:
                raise ValueError(f"--backend must be one of {BACKENDS}; received {name!r}.")
            os.environ["KERAS_BACKEND"] = name
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def parse_config(config_class, argv=None, description=None):
    """Build `config_class` from its defaults and `--field value` overrides in `argv`."""
    parser = argparse.ArgumentParser(description=description)
    for field in dataclasses.fields(config_class):
        default = field.default
        flag = f"--{field.name}"
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        else:
            parser.add_argument(flag, type=type(default), default=default,
                                help=f"default: {default!r}")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    return config_class(**vars(args))


def configure(config_class, argv, doc):
    """`(config, backend)`: the parsed config, after checking the backend Keras runs on."""
    config = parse_config(config_class, argv, description=doc.strip().splitlines()[0])
    return config, check_backend(config)


def check_backend(config):
    """Fail clearly when `--backend` asks for another backend than the Keras imported."""
    import keras

    if config.backend and keras.backend.backend() != config.backend:
        raise ValueError(
            f"--backend {config.backend} was given, but Keras was already imported with "
            f"the {keras.backend.backend()!r} backend. Run the recipe as "
            f"`python -m recipes.NAME --backend {config.backend}` or set "
            f"KERAS_BACKEND={config.backend} before importing keras."
        )
    return keras.backend.backend()


def prepare_output(config):
    """Create the output folder, print the resolved config and save it as `config.json`."""
    os.makedirs(config.output, exist_ok=True)
    resolved = dataclasses.asdict(config)
    print("Config:\n" + "\n".join(f"  {k} = {v!r}" for k, v in resolved.items()))
    write_json(os.path.join(config.output, "config.json"), resolved)
    return resolved


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path):
    """Save a figure as PNG (creating its folder) and free it."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    pyplot().close(fig)


def write_json(path, data):
    """Write JSON atomically (a killed run never leaves half a file)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


def read_json(path, default=None):
    if not os.path.exists(path):
        return default
    with open(path) as f:
        return json.load(f)


def split_list(text, choices, name):
    """`"a,b"` → `["a", "b"]`, `"all"` → all `choices`; unknown entries are an error."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if items == ["all"]:
        return list(choices)
    unknown = [item for item in items if item not in choices]
    if unknown or not items:
        raise ValueError(f"--{name} takes a comma list of {list(choices)} or 'all'; received {text!r}.")
    return items


def fit_with_checkpoints(build_model, path, *, resume, epochs, every=1, callbacks=(), **fit_kwargs):
    """`model.fit` that saves the whole model (weights + optimizer) every `every` epochs.

    `PATH.keras` holds the model and `PATH.json` the epoch reached. With `resume`, a fit
    continues after the saved epoch, and a finished one is loaded instead of refit.

    Args:
        build_model: callable returning a compiled model (used when not resuming).
        path: checkpoint path without extension.
        resume: whether to continue from `PATH.keras`.
        epochs: total number of epochs.
        every: epochs between checkpoints.
        callbacks: more Keras callbacks.
        **fit_kwargs: the rest of `model.fit`'s arguments (data, batch size, ...).
    """
    import keras

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    state = read_json(f"{path}.json", {}) if resume else {}
    if state.get("epoch"):
        model = keras.saving.load_model(f"{path}.keras")
        if state.get("done"):
            print(f"loaded the finished model {path}.keras")
            return model
        print(f"resuming {path}.keras after epoch {state['epoch']}")
    else:
        model = build_model()

    def save(epoch, logs=None):
        if (epoch + 1) % every == 0:
            model.save(f"{path}.keras")
            write_json(f"{path}.json", {"epoch": epoch + 1, "done": False})

    model.fit(
        epochs=epochs, initial_epoch=state.get("epoch", 0),
        callbacks=[keras.callbacks.LambdaCallback(on_epoch_end=save), *callbacks],
        **fit_kwargs,
    )
    model.save(f"{path}.keras")
    write_json(f"{path}.json", {"epoch": epochs, "done": True})
    return model
