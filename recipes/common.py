"""What every recipe shares: its command line, the backend, the output folder, the report.

A recipe declares a `@dataclass` config that extends `RunConfig` (the flags every recipe
has) with commented defaults. `parse_config` turns every field into a flag spelled with
dashes (`batch_size` → `--batch-size`; booleans: `--name` / `--no-name`), and resolves a
run's settings in one order for all recipes:

    dataclass defaults < presets (e.g. a data set's) < --smoke settings
        < the interrupted run's config.json (with --resume) < the flags given

Keras reads `KERAS_BACKEND` once, when it is first imported, so a recipe run as a script
calls `select_backend(sys.argv[1:])` before its `import keras`; `start` then checks that
the Keras it got is the one asked for, creates the output folder and saves the resolved
config. `Run.write_results` writes the one `results.json` schema of all recipes:

    {"recipe", "backend", "device", "seconds", "config", "distribution": {...},
     "metrics": {...}, "history": {...}}

where `distribution` says how the devices were used (`--distribute`, the global batch,
the learning-rate factor of `--lr-scaling`: `recipes.distribute`), `metrics` holds what
the recipe measured (under the names it reports) and `history` maps each trained
model's name to its per-epoch records.

Every file a recipe writes goes through `atomic_path`/`write_json`: a temporary file,
flushed to disk, then renamed over the final name, so a killed run never leaves half a
file under a name that a later `--resume` reads.
"""

import argparse
import contextlib
import dataclasses
import importlib.util
import inspect
import json
import math
import numbers
import os
import re
import sys
import time
import typing

BACKENDS = ("jax", "tensorflow", "torch")
# Settings of one invocation, never taken from the interrupted run's config.json.
#: The command that runs the recipe, for its `--help` (`kerasrnn-recipe NAME` sets it;
#: `None`: the recipe's own `python -m recipes.NAME`).
COMMAND = None

PER_INVOCATION = ("backend", "output", "resume", "verbose", "tensorboard", "threads")
# Flags every recipe lets `--resume` change from the saved run: train longer, and on
# other devices (the checkpoints hold the same weights for any layout of them). A
# recipe's `Config.RESUMABLE` adds its own (what it evaluates, models it trains apart).
RESUMABLE = (*PER_INVOCATION, "epochs", "distribute", "model_shards")
# The `--distribute` modes every recipe has (translation adds "model").
DISTRIBUTE = ("none", "data")


#: The largest `--seed`: 31 bits, so that the seeds a recipe derives from it (an
#: ensemble member's `seed + 100 · k`, a layer's `seed + 3`) still fit NumPy's 32.
MAX_SEED = 2**31 - 1


class UsageError(ValueError):
    """A problem with the command line, the data or the output folder, said in one line."""


@dataclasses.dataclass
class RunConfig:
    """The flags every recipe has (a recipe's `Config` extends it)."""

    backend: str = ""  # tensorflow | jax | torch; "": $KERAS_BACKEND, else the recipe's preferred one installed
    output: str = "runs/recipe"  # the folder for results.json, checkpoints, figures, logs
    resume: bool = False  # continue from the last finished epoch in --output
    smoke: bool = False  # seconds, on tiny generated data (what the tests run)
    seed: int = 0  # weights, dropout masks, data order
    verbose: str = "auto"  # 0 silent, 1 progress bars, 2 one line per epoch; auto: bars on a terminal, lines otherwise
    tensorboard: bool = False  # TensorBoard logs in OUTPUT/tensorboard/ (fit and diagnostics)
    threads: int = 0  # CPU threads of the backend (0: its default; 1 is fastest on a busy CPU)
    distribute: str = "none"  # none | data: copy the model to every local device (JAX: also across hosts) and split each batch
    lr_scaling: str = "none"  # none | linear: learning rates × batch size / the default batch size


# ------------------------------------------------------------------ backend and threads
def select_backend(argv, prefer=BACKENDS):
    """Set `KERAS_BACKEND` (and thread counts) from `argv`, before Keras is imported.

    The backend is `--backend NAME` if given, else `$KERAS_BACKEND`, else the first
    installed of `prefer`. Does nothing to the backend once Keras is imported.
    """
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    parser.add_argument("--backend", default="")
    parser.add_argument("--threads", default="0")
    try:
        known, _ = parser.parse_known_args(argv)
    except argparse.ArgumentError:  # `--backend` without a name: the recipe's parser says so
        known = argparse.Namespace(backend="", threads="0")
    # Called at the command line, before the recipe's `main` and its `user_errors`: one
    # line and no traceback here too.
    if known.backend and known.backend not in BACKENDS:
        raise SystemExit(f"error: --backend must be one of {BACKENDS}; received {known.backend!r}.")
    known.threads = int(known.threads) if known.threads.lstrip("-").isdigit() else 0  # else: the parser's error
    if "keras" not in sys.modules:
        installed = [name for name in prefer if importlib.util.find_spec(name) is not None]
        chosen = known.backend or os.environ.get("KERAS_BACKEND") or (installed or ["tensorflow"])[0]
        os.environ["KERAS_BACKEND"] = chosen
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if known.threads > 0:
        # Read by OpenMP (torch) and XLA (JAX, TensorFlow) when they start.
        os.environ["OMP_NUM_THREADS"] = str(known.threads)
        eigen = "true" if known.threads > 1 else "false"
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_cpu_multi_thread_eigen={eigen}".strip()


def _limit_threads(backend, threads):
    if threads <= 0:
        return
    if backend == "torch":
        import torch

        torch.set_num_threads(threads)
    elif backend == "tensorflow":
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:  # TensorFlow already ran an op: its pools are fixed
            print(f"note: --threads {threads} came after TensorFlow started; its default is kept.")


# ------------------------------------------------------------------------ command line
def flag(name):
    """The command-line spelling of a config field: `batch_size` → `--batch-size`."""
    return "--" + name.replace("_", "-")


def _verbosity(text):
    if text in ("auto", "0", "1", "2"):
        return text if text == "auto" else int(text)
    raise argparse.ArgumentTypeError(f"must be auto, 0, 1 or 2; received {text!r}")


def _value_type(hint):
    """The argparse `type` for a field annotated `hint` (`str | None` → str)."""
    for candidate in (bool, int, float):
        if hint is candidate or candidate in typing.get_args(hint):
            return candidate
    return str


class _Alias(argparse.Action):
    """An old spelling of a flag: accepted, with a note that names the new one."""

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"note: {option_string} is deprecated; use {self.metavar}.", file=sys.stderr)
        setattr(namespace, self.dest, values)


def field_comments(config_class):
    """`{field: its comment}` read from the config classes' source (`name: type = x  # ...`)."""
    comments = {}
    for cls in reversed(config_class.__mro__):
        try:
            source = inspect.getsource(cls)
        except (OSError, TypeError):
            continue
        for name, comment in re.findall(r"^\s+(\w+): [^#\n]*#\s*(.+)$", source, re.MULTILINE):
            comments[name] = comment.strip()
    return comments


def build_parser(config_class, *, prog=None, description=None, aliases=None):
    """An `ArgumentParser` with one flag per field of `config_class`, its help the
    field's comment (no defaults set: `parse_config` knows which flags were given)."""
    parser = argparse.ArgumentParser(prog=prog, description=description, allow_abbrev=False,
                                     argument_default=argparse.SUPPRESS)
    hints = typing.get_type_hints(config_class)
    comments = field_comments(config_class)
    old_names = {}
    for old, new in (aliases or {}).items():
        old_names.setdefault(new, []).append(old)
    for field in dataclasses.fields(config_class):
        kind = _value_type(hints[field.name])
        help_text = f"{comments.get(field.name, '')} (default: {field.default!r})".strip().replace("%", "%%")
        old = [flag(name) for name in old_names.get(field.name, [])]
        if "_" in field.name:
            old.append("--" + field.name)  # the underscore spelling
        if kind is bool:
            parser.add_argument(flag(field.name), dest=field.name, action=argparse.BooleanOptionalAction,
                                help=help_text)
            for spelling in old:
                parser.add_argument(spelling, dest=field.name, action="store_const", const=True,
                                    help=argparse.SUPPRESS)
            continue
        kind = _verbosity if field.name == "verbose" else kind
        parser.add_argument(flag(field.name), dest=field.name, type=kind, help=help_text)
        for spelling in old:
            parser.add_argument(spelling, dest=field.name, type=kind, action=_Alias,
                                metavar=flag(field.name), help=argparse.SUPPRESS)
    return parser


def parse_config(config_class, argv=None, *, prog=None, description=None, presets=None, smoke=None,
                 aliases=None):
    """The config of a run: `config_class`'s defaults, overridden in this order by

    - `presets(given)`: settings that depend on the flags given (a data set's defaults);
    - `smoke`: the settings of `--smoke`;
    - with `--resume`, the settings saved in `OUTPUT/config.json` by the interrupted run
      (except `PER_INVOCATION` ones);
    - the flags given, which always win (`--resume --epochs 20` trains longer).

    With `--resume`, a flag given with another value than the saved run's is an error
    unless it is `RESUMABLE` (or in the recipe's `Config.RESUMABLE`): the checkpoints
    hold that run's model, so `--units 64` would go on training its 16 units while
    `results.json` said 64.

    `aliases` maps old flag names to fields (`{"model": "models"}`); the underscore
    spelling of every field is accepted too. Both print a deprecation note.
    """
    parser = build_parser(config_class, prog=COMMAND or prog, description=description, aliases=aliases)
    given = vars(parser.parse_args(sys.argv[1:] if argv is None else list(argv)))
    settings = {}
    if presets is not None:
        settings.update(presets(given))
    if given.get("smoke") and smoke:
        settings.update(smoke)
    output = given.get("output", _default(config_class, "output"))
    saved = os.path.join(output, "config.json")
    if given.get("resume") and os.path.exists(saved):
        names = {f.name for f in dataclasses.fields(config_class)}
        previous = read_json(saved)
        _check_resumable(config_class, given, previous, saved)
        settings.update({k: v for k, v in previous.items() if k in names and k not in PER_INVOCATION})
    settings.update(given)
    config = config_class(**settings)
    check_run_config(config)
    return config


def _check_resumable(config_class, given, previous, saved):
    """UsageError for the flags given to `--resume` that change what the saved run trains."""
    free = {*RESUMABLE, *getattr(config_class, "RESUMABLE", ())}
    changed = [(name, value, previous[name]) for name, value in given.items()
               if name in previous and name not in free and value != previous[name]]
    if changed:
        given_text = " ".join(f"{flag(n)} {v}" for n, v, _ in changed)
        saved_text = ", ".join(f"{flag(n)} {p}" for n, _, p in changed)
        raise UsageError(
            f"--resume continues the run in {os.path.dirname(saved) or '.'}, trained with {saved_text} "
            f"({saved}); {given_text} would mix another run into its checkpoints. Drop "
            f"{'that flag' if len(changed) == 1 else 'those flags'} to continue it, or give a new --output "
            "to start the other run.")


def _check_numbers(config):
    """The rules every recipe's float flags share, by name: a number (not `nan` or
    `inf`, which slipped past each recipe's `< 0` checks and trained on NaN); a dropout
    rate in [0, 1); a learning rate > 0 (>= 0 where 0 stands for the recipe's own); a
    clip norm >= 0 (0 turns clipping off). A recipe's `__post_init__` checks only what
    is its own (translation's `--label-smoothing`, say)."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if field.type not in (float, "float") or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        name = flag(field.name)
        if not math.isfinite(value):
            raise UsageError(f"{name} must be a finite number; received {value}.")
        if "dropout" in field.name and not 0 <= value < 1:
            raise UsageError(f"{name} must be in [0, 1) (the fraction dropped); received {value}.")
        if field.name == "learning_rate" or field.name.endswith("_lr"):
            if field.default == 0 and value < 0:
                raise UsageError(f"{name} must be >= 0 (0: the recipe's own); received {value}.")
            if field.default != 0 and value <= 0:
                raise UsageError(f"{name} must be > 0; received {value}.")
        if field.name == "clipnorm" and value < 0:
            raise UsageError(f"{name} must be >= 0 (0 turns clipping off); received {value}.")


def _default(config_class, name):
    return next(f.default for f in dataclasses.fields(config_class) if f.name == name)


def check_run_config(config):
    """Clear errors for the `RunConfig` flags."""
    if config.backend and config.backend not in BACKENDS:
        raise UsageError(f"--backend must be one of {BACKENDS}; received {config.backend!r}.")
    if config.verbose not in ("auto", 0, 1, 2):
        raise UsageError(f"--verbose must be auto, 0, 1 or 2; received {config.verbose!r}.")
    if config.threads < 0:
        raise UsageError(f"--threads must be >= 0 (0: the backend's default); received {config.threads}.")
    if not 0 <= config.seed <= MAX_SEED:
        # NumPy's legacy seeding (Keras's `set_random_seed`, the data's shuffling) takes
        # 32 bits, and recipes derive further seeds from this one by small additions.
        raise UsageError(f"--seed must be between 0 and 2**31 - 1; received {config.seed}.")
    _check_numbers(config)
    modes = getattr(config, "DISTRIBUTE_MODES", DISTRIBUTE)
    if config.distribute not in modes:
        raise UsageError(f"--distribute must be one of {modes}; received {config.distribute!r}.")
    if config.lr_scaling not in ("none", "linear"):
        raise UsageError(f"--lr-scaling must be none or linear; received {config.lr_scaling!r}.")
    if config.tensorboard and not any(importlib.util.find_spec(m) for m in ("tensorflow", "tensorboard", "tensorboardX")):
        raise UsageError("--tensorboard writes event files with tensorflow, tensorboard or tensorboardX; "
                         "install one (pip install tensorboard).")


def lr_factor(config):
    """What `--lr-scaling` multiplies the learning rates by: 1 (`none`), or (`linear`, the
    rule of Goyal et al. 2017) the batch size over the recipe's default batch size, the
    one its learning rates were chosen for."""
    if config.lr_scaling == "none":
        return 1.0
    return config.batch_size / _default(type(config), "batch_size")


def learning_rate(config, value):
    """A learning rate of the recipe under `--lr-scaling`."""
    return value * lr_factor(config)


def check_choice(config, name, choices):
    """UsageError unless `config.<name>` is one of `choices`."""
    value = getattr(config, name)
    if value not in choices:
        raise UsageError(f"{flag(name)} must be one of {tuple(choices)}; received {value!r}.")


def check_positive(config, *names):
    """UsageError unless every `config.<name>` is an integer >= 1."""
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UsageError(f"{flag(name)} must be a positive integer; received {value!r}.")


def split_list(text, choices, name):
    """`"a,b"` → `["a", "b"]`, `"all"` → all `choices`; unknown entries are an error."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if items == ["all"]:
        return list(choices)
    unknown = [item for item in items if item not in choices]
    if unknown or not items:
        raise UsageError(f"{flag(name)} takes a comma list of {list(choices)} or 'all'; received {text!r}.")
    return items


def check_data_path(path, what):
    """UsageError naming `--data` when `path` is given but does not exist."""
    if path and not os.path.exists(path):
        raise UsageError(f"--data {path}: no such file or folder (expected {what}).")


@contextlib.contextmanager
def data_errors(path):
    """Turns a loader's error about an unreadable `--data` into a one-line UsageError."""
    try:
        yield
    except (OSError, EOFError, ValueError) as err:
        if isinstance(err, UsageError):
            raise
        raise UsageError(f"--data {path or '(download)'}: {err}") from None


def smoke_slice(columns, size, seed):
    """`size` rows (all, if fewer) picked at random with `seed` from `columns`, parallel
    sequences (texts, labels, ...), in their original order: what `--smoke` trains on
    when `--data` is given, so that a run of seconds reads the data as a real run does."""
    import numpy as np

    keep = np.sort(np.random.default_rng(seed).permutation(len(columns[0]))[:size])
    return tuple(c[keep] if isinstance(c, np.ndarray) else [c[i] for i in keep] for c in columns)


def note_smoke_slice(config, what):
    """Says that `--smoke` trains on a slice of `--data` (`what`: how much of it)."""
    print(f"note: --smoke trains its small model on a random slice of --data {config.data}: {what} (drop "
          "--smoke to train on all of it).", file=sys.stderr, flush=True)


@contextlib.contextmanager
def user_errors():
    """The command-line boundary: a UsageError ends the program with one line, no traceback."""
    try:
        yield
    except UsageError as err:
        raise SystemExit(f"error: {err}") from None


# ------------------------------------------------------------------------- one run
def start(recipe, config, layouts=None):
    """Checks the backend, sets up `--distribute`, prepares `config.output` and returns
    the `Run` (`layouts`: the sharded weights of `--distribute model`, see
    `recipes.distribute.configure`)."""
    import keras

    from recipes import distribute

    backend = keras.backend.backend()
    if config.backend and config.backend != backend:
        raise UsageError(
            f"--backend {config.backend} was given, but Keras was already imported with the "
            f"{backend!r} backend. Run `python -m recipes.{recipe} --backend {config.backend}` "
            f"in a fresh process, or set KERAS_BACKEND={config.backend} before importing keras."
        )
    config.backend = backend
    _limit_threads(backend, config.threads)
    parallel = distribute.configure(config, layouts)
    if os.path.exists(config.output) and not os.path.isdir(config.output):
        raise UsageError(f"--output {config.output} is a file; give a folder (made if missing).")
    try:
        os.makedirs(config.output, exist_ok=True)
    except OSError as err:  # a file in the path, no permission, a read-only disk
        raise UsageError(f"--output {config.output}: cannot make the folder ({err.strerror or err}).") from None
    resolved = dataclasses.asdict(config)
    print("Config:\n" + "\n".join(f"  {k} = {v!r}" for k, v in resolved.items()), flush=True)
    if parallel.distributed:
        print(f"Distribution: {parallel.api} over {len(parallel.devices)} device(s), {parallel.replicas} "
              f"replica(s) of {config.batch_size // parallel.replicas} examples each; learning rates × "
              f"{parallel.lr_factor:g} (--lr-scaling {config.lr_scaling})", flush=True)
    write_json(os.path.join(config.output, "config.json"), resolved)
    return Run(recipe, config, parallel)


class Run:
    """One recipe run: its config, its output folder, its verbosity, its devices
    (`parallel`, a `recipes.distribute.Parallel`) and its report."""

    def __init__(self, recipe, config, parallel=None):
        from recipes import distribute

        self.recipe, self.config = recipe, config
        self.parallel = parallel or distribute.Parallel(batch_size=getattr(config, "batch_size", 0))
        self.started = time.time()
        verbose = config.verbose
        if verbose == "auto":
            verbose = 1 if sys.stdout.isatty() else 2
        self.verbose = int(verbose)

    def path(self, *parts):
        """A path inside the output folder (its folder created)."""
        path = os.path.join(self.config.output, *parts)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path

    def tensorboard_dir(self, *parts):
        """`OUTPUT/tensorboard/...` with `--tensorboard`, else None."""
        return os.path.join(self.config.output, "tensorboard", *parts) if self.config.tensorboard else None

    def progress(self, target, title):
        """A `keras.utils.Progbar` for a long step outside `fit`: a bar on a terminal,
        one line when done otherwise, nothing with `--verbose 0`."""
        import keras

        if self.verbose:
            print(f"{title}:", flush=True)
        return keras.utils.Progbar(target, verbose=self.verbose, unit_name="item")

    def write_results(self, metrics, history):
        """Writes `OUTPUT/results.json` in the schema every recipe shares (a number that
        is not finite, as a diverged run's loss, as `null`); returns it."""
        results = {
            "recipe": self.recipe,
            "backend": self.config.backend,
            "device": device_name(),
            "seconds": round(time.time() - self.started, 1),
            "config": dataclasses.asdict(self.config),
            "distribution": self.parallel.describe(),
            "metrics": metrics,
            "history": history,
        }
        write_json(os.path.join(self.config.output, "results.json"), finite_json(results))
        return results


def finite_json(value):
    """`value` with every float that is not finite (a diverged run's NaN loss) as
    `None`: JSON has no NaN or Infinity, and strict readers refuse Python's tokens."""
    if isinstance(value, dict):
        return {key: finite_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(item) for item in value]
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral) and not math.isfinite(value):
        return None  # a float, NumPy's too
    return value


def device_name():
    """What the backend computes on, in words ("CPU, 2 cores" or the accelerator)."""
    import keras

    from kerasrnn.ops.device import on_accelerator

    if on_accelerator(keras.ops.zeros((1,))):
        return "accelerator (GPU/TPU)"
    return f"CPU, {os.cpu_count()} cores"


# --------------------------------------------------------------------- atomic files
@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path to write `path` to; on success it is flushed to disk and
    renamed to `path` (atomic on POSIX), on failure removed. The temporary name keeps
    the extension, as Keras's savers require (`x.keras` → `x.partial.keras`)."""
    path = os.fspath(path)
    folder, name = os.path.split(path)
    stem, dot, extension = name.partition(".")
    partial = os.path.join(folder, f"{stem}.partial{dot}{extension}")
    try:
        yield partial
        with open(partial, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def write_json(path, data):
    """Write JSON atomically (a killed run never leaves half a file)."""
    with atomic_path(path) as partial, open(partial, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, ensure_ascii=False)


def read_json(path, default=None):
    """The JSON in `path`, `default` if there is none; a corrupt file is a UsageError."""
    if not os.path.exists(path):
        return default
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except ValueError as err:
        raise UsageError(f"{path} is not valid JSON ({err}); delete it or use another --output.") from None


# ---------------------------------------------------------------------------- figures
def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path):
    """Save a figure as PNG (atomically, creating its folder) and free it; returns the path."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.tight_layout()
    with atomic_path(path) as partial:
        fig.savefig(partial, dpi=100, format="png")
    pyplot().close(fig)
    return path


def plot_history(history, path, metrics=("loss",), title=None):
    """Training curves: one panel per metric, training (solid) and validation (dashed)
    for every model of `history` (`{name: [{"epoch", metric, "val_" + metric}, ...]}`)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(metrics), figsize=(max(6, 5 * len(metrics)), 3.8), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        drawn = []
        for i, (name, records) in enumerate(history.items()):
            epochs = [r["epoch"] for r in records]
            label = f"{name} " if len(history) > 1 else ""
            for key, style in ((metric, "o-"), (f"val_{metric}", "o--")):
                values = [r.get(key) for r in records]
                if any(v is not None for v in values):
                    kind = "validation" if key.startswith("val_") else "training"
                    ax.plot(epochs, values, style, color=f"C{i}", label=f"{label}{kind}", markersize=3)
                    drawn += [v for v in values if v is not None]
        if drawn and min(drawn) > 0 and max(drawn) > 20 * min(drawn):
            ax.set_yscale("log")  # a loss falling by orders of magnitude
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)
