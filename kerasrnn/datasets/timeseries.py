"""Time series for forecasting: Géron's synthetic series, sunspots, CSV columns, windows.

Everything here is NumPy (no Keras): arrays in, arrays out, so the same data feed every
backend. Inputs are `(batch, n_steps, 1)` float32; targets depend on the task:

| task         | target `y`                 | what it is                                        |
|--------------|----------------------------|---------------------------------------------------|
| `one_step`   | `(batch, 1)`               | the value right after the window                  |
| `multi_step` | `(batch, horizon)`         | the next `horizon` values, all at once            |
| `seq2seq`    | `(batch, n_steps, horizon)`| at every step `t`, the `horizon` values after `t` |
| `iterative`  | `(batch, horizon)`         | as `multi_step`, forecast one step at a time      |

The `seq2seq` target is Géron's: `y[:, t, k] = series[:, t + 1 + k]`, so the model is
causal and is scored on its last step only (`forecast_mse`).
"""

import csv
import math
import numbers
import os

import numpy as np

from kerasrnn.layers import _checks

__all__ = [
    "TASKS",
    "fit_linear_forecaster",
    "forecast_mse",
    "generate_time_series",
    "geron_dataset",
    "iterative_forecast",
    "linear_forecast",
    "load_csv_column",
    "load_sunspots",
    "naive_forecast",
    "split_bounds",
    "task_targets",
    "window_dataset",
]

TASKS = ("one_step", "multi_step", "seq2seq", "iterative")


def _check_task(task):
    if task not in TASKS:
        raise ValueError(f"`task` must be one of {TASKS}; received {task!r}.")
    return task


def _check_lengths(task, n_steps, horizon):
    """`n_steps` and, where the task reads it, `horizon`: positive integers."""
    _checks.positive_int("n_steps", n_steps)
    if task != "one_step":
        _checks.positive_int("horizon", horizon)


def _random_state(seed):
    if seed is None:
        return np.random  # the global state, as `np.random.seed(42)` in Géron's notebook
    if isinstance(seed, np.random.RandomState):
        return seed
    return np.random.RandomState(seed)


def generate_time_series(batch_size, n_steps, seed=None):
    r"""Géron's synthetic series: two sine waves of random frequency and phase, plus noise.

    ```
    x(t) = 0.5 sin((t − o₁)(10 f₁ + 10)) + 0.2 sin((t − o₂)(20 f₂ + 20)) + 0.1 (u(t) − 0.5)
    ```

    with `t = linspace(0, 1, n_steps)`, `f₁, f₂, o₁, o₂ ~ U[0, 1]` drawn once per series
    and `u(t) ~ U[0, 1]` drawn once per step. The draws come in the notebook's order
    (one `rand(4, batch_size, 1)` for `f₁, f₂, o₁, o₂`, then `rand(batch_size, n_steps)`
    for the noise), so `np.random.seed(42)` followed by `generate_time_series(10000, 51)`
    gives exactly the series of the book.

    Args:
        batch_size: number of series.
        n_steps: length of each series.
        seed: `None` (draw from NumPy's global random state, as the book does), an int,
            or a `np.random.RandomState`.

    Returns:
        float32 array `(batch_size, n_steps, 1)`.

    Example:

    >>> from kerasrnn.datasets import timeseries
    >>> series = timeseries.generate_time_series(3, 51, seed=42)
    >>> series.shape, str(series.dtype)
    ((3, 51, 1), 'float32')
    >>> bool(np.all(np.abs(series) < 0.8))
    True

    Reference:
        Géron, *Hands-On Machine Learning with Scikit-Learn, Keras and TensorFlow*,
        2nd ed., O'Reilly 2019, chapter 15.
    """
    _checks.positive_int("n_steps", n_steps)
    rng = _random_state(seed)
    freq1, freq2, offset1, offset2 = rng.rand(4, batch_size, 1)
    t = np.linspace(0, 1, n_steps)
    wave1 = 0.5 * np.sin((t - offset1) * (10 * freq1 + 10))
    wave2 = 0.2 * np.sin((t - offset2) * (20 * freq2 + 20))
    noise = 0.1 * (rng.rand(batch_size, n_steps) - 0.5)
    return ((wave1 + wave2) + noise)[..., np.newaxis].astype(np.float32)


def task_targets(series, n_steps, task, horizon=10):
    """Split series `(batch, time, 1)` into inputs (the first `n_steps`) and the task's targets.

    Args:
        series: array `(batch, time, 1)` with `time ≥ n_steps + 1` for `one_step` and
            `time ≥ n_steps + horizon` otherwise.
        n_steps: input length.
        task: one of `TASKS`.
        horizon: how many steps ahead (`multi_step`, `seq2seq`, `iterative`).

    Returns:
        `(x, y)`: `x` is `(batch, n_steps, 1)`; `y` as in the module's table.

    Example:

    >>> series = np.arange(8, dtype="float32").reshape(1, 8, 1)
    >>> x, y = task_targets(series, 5, "seq2seq", horizon=3)
    >>> y[0, -1].tolist()   # at the last input step (t = 4): values 5, 6, 7
    [5.0, 6.0, 7.0]
    """
    _check_task(task)
    _check_lengths(task, n_steps, horizon)
    series = np.asarray(series)
    if series.ndim != 3:
        raise ValueError(f"`series` must be (batch, time, features); received shape {series.shape}.")
    ahead = 1 if task == "one_step" else horizon
    if series.shape[1] < n_steps + ahead:
        raise ValueError(
            f"`series` has {series.shape[1]} steps; task {task!r} needs n_steps + "
            f"{ahead} = {n_steps + ahead}."
        )
    x = series[:, :n_steps]
    if task == "one_step":
        return x, series[:, n_steps, :1]
    if task in ("multi_step", "iterative"):
        return x, series[:, n_steps:n_steps + horizon, 0]
    y = np.stack([series[:, k:k + n_steps, 0] for k in range(1, horizon + 1)], axis=-1)
    return x, y


def geron_dataset(task, n_steps=50, horizon=10, sizes=(7000, 2000, 1000), seed=42):
    """Géron's chapter-15 data for a task: train/valid/test splits of synthetic series.

    As in the book, the series are regenerated for each task from the same seed: `one_step`
    uses series of `n_steps + 1` values, the others `n_steps + horizon` values (so the
    frequencies and phases are the same, the noise differs).

    Args:
        task: one of `TASKS`.
        n_steps: input length (50 in the book).
        horizon: steps ahead for the multi-step tasks (10).
        sizes: number of train, validation and test series (7,000 / 2,000 / 1,000).
        seed: seed of `np.random.RandomState` (42).

    Returns:
        dict `{"train": (x, y), "valid": (x, y), "test": (x, y)}`.

    Example:

    >>> data = geron_dataset("one_step", sizes=(70, 20, 10))
    >>> [data[s][0].shape for s in ("train", "valid", "test")]
    [(70, 50, 1), (20, 50, 1), (10, 50, 1)]
    """
    _check_task(task)
    _check_lengths(task, n_steps, horizon)
    if (
        not isinstance(sizes, (list, tuple)) or len(sizes) != 3
        or any(isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0 for n in sizes)
    ):
        raise ValueError(
            f"`sizes` must be three integers >= 0, the numbers of train, validation and test "
            f"series; received {sizes!r}."
        )
    n_train, n_valid, n_test = (int(n) for n in sizes)
    length = n_steps + (1 if task == "one_step" else horizon)
    series = generate_time_series(n_train + n_valid + n_test, length, seed=seed)
    x, y = task_targets(series, n_steps, task, horizon)
    cuts = {"train": slice(0, n_train), "valid": slice(n_train, n_train + n_valid),
            "test": slice(n_train + n_valid, n_train + n_valid + n_test)}
    return {name: (x[cut], y[cut]) for name, cut in cuts.items()}


def split_bounds(length, fractions=(0.7, 0.15, 0.15)):
    """Chronological split points `(train_end, valid_end)` of a series of `length` values.

    Example:

    >>> split_bounds(309)
    (216, 263)
    """
    _checks.positive_int("length", length)
    if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(
            f"`fractions` must be three positive numbers (train, valid, test) summing to 1; "
            f"received {fractions}."
        )
    train_end = round(fractions[0] * length)
    valid_end = round((fractions[0] + fractions[1]) * length)
    return train_end, valid_end


def window_dataset(values, n_steps, task, horizon=10, fractions=(0.7, 0.15, 0.15)):
    """Sliding windows over one series, split chronologically by the time of their targets.

    The series is cut at `split_bounds(len(values), fractions)`. A window belongs to the
    split that holds all the values it is scored on (the next value for `one_step`; the
    next `horizon` values otherwise), so no test-period value is ever a training target;
    its inputs may reach back into the earlier periods, as a forecaster's history would.

    Args:
        values: 1-D array (already scaled as you wish).
        n_steps: input window length.
        task: one of `TASKS`.
        horizon: steps ahead for the multi-step tasks.
        fractions: train, validation and test fractions of the series.

    Returns:
        dict `{"train": (x, y), "valid": (x, y), "test": (x, y)}`, shapes as in
        `task_targets`.

    Example:

    >>> data = window_dataset(np.arange(40.0), n_steps=5, task="one_step")
    >>> data["test"][0][0, :, 0].tolist(), data["test"][1][0].tolist()
    ([29.0, 30.0, 31.0, 32.0, 33.0], [34.0])
    """
    _check_task(task)
    _check_lengths(task, n_steps, horizon)
    values = np.asarray(values, dtype="float32")
    if values.ndim != 1:
        raise ValueError(f"`values` must be a 1-D series; received shape {values.shape}.")
    ahead = 1 if task == "one_step" else horizon
    train_end, valid_end = split_bounds(len(values), fractions)
    ranges = {"train": (0, train_end), "valid": (train_end, valid_end),
              "test": (valid_end, len(values))}
    starts = np.arange(len(values) - n_steps - ahead + 1)
    if len(starts) == 0:
        raise ValueError(
            f"The series has {len(values)} values: too short for windows of "
            f"n_steps={n_steps} plus {ahead} target step(s)."
        )
    windows = np.stack([values[s:s + n_steps + ahead] for s in starts])[..., np.newaxis]
    x, y = task_targets(windows, n_steps, task, horizon)
    first_target = starts + n_steps
    data = {}
    for name, (lo, hi) in ranges.items():
        keep = (first_target >= lo) & (first_target + ahead <= hi)
        if not keep.any():
            raise ValueError(
                f"No {name} window: the {name} period ({hi - lo} values) is shorter than "
                f"the {ahead} target step(s), or the series is too short for n_steps={n_steps}."
            )
        data[name] = (x[keep], y[keep])
    return data


def load_sunspots():
    """Yearly mean sunspot numbers 1700–2008 (309 values), as bundled in statsmodels.

    No download: the data ship inside the `statsmodels` package
    (`statsmodels.datasets.sunspots`, from the Royal Observatory of Belgium's SIDC).

    Returns:
        `(years, values)`: int array of years and float64 array of sunspot numbers.

    Example:

    >>> years, values = load_sunspots()  # doctest: +SKIP
    >>> int(years[0]), int(years[-1]), len(values)  # doctest: +SKIP
    (1700, 2008, 309)
    """
    try:
        from statsmodels.datasets import sunspots
    except ImportError as err:
        raise ImportError(
            "The sunspots series ships with statsmodels: `pip install statsmodels` "
            "(or `pip install kerasrnn[recipes]`)."
        ) from err
    frame = sunspots.load_pandas().data
    return frame["YEAR"].to_numpy().astype(int), frame["SUNACTIVITY"].to_numpy(dtype="float64")


def load_csv_column(path, column):
    """One numeric column of a CSV file (with a header row), in file order.

    Args:
        path: the CSV file.
        column: the header name of the column to read.

    Returns:
        float64 array of the column's values.

    Raises:
        ValueError: the column is missing (the message lists the columns there are) or
            holds a value that is not a finite number (`nan` and `inf` included).

    Example:

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "t.csv")
    >>> _ = open(path, "w").write("day,temp\\n1,20.5\\n2,21.0\\n")
    >>> load_csv_column(path, "temp").tolist()
    [20.5, 21.0]
    """
    if not os.path.isfile(path):
        raise ValueError(f"CSV file not found: {path!r}.")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        if column is None or column not in columns:
            what = "No `column` given" if column is None else f"Column {column!r} is not in {path!r}"
            raise ValueError(
                f"{what}; the file's columns are {columns}. Pass one of them as `column`."
            )
        values = []
        for line, row in enumerate(reader, start=2):
            text = (row.get(column) or "").strip()
            try:
                value = float(text)
            except ValueError:
                value = None
            # "nan" and "inf" parse as floats, but a series with a gap or an infinity
            # cannot be scaled or fitted: one NaN made every forecast and score NaN.
            if value is None or not math.isfinite(value):
                raise ValueError(
                    f"{path!r} line {line}: column {column!r} holds {text!r}, not a finite number. "
                    "Clean or fill the column first."
                )
            values.append(value)
    return np.asarray(values, dtype="float64")


def naive_forecast(x, task, horizon=10):
    """The naive forecast: every future value equals the last observed one.

    Args:
        x: inputs `(batch, n_steps, 1)`.
        task: one of `TASKS` (the prediction has the task's target shape).
        horizon: steps ahead for the multi-step tasks.

    Example:

    >>> x = np.array([[[1.0], [2.0], [3.0]]])
    >>> naive_forecast(x, "multi_step", horizon=2).tolist()
    [[3.0, 3.0]]
    >>> naive_forecast(x, "seq2seq", horizon=2)[0].tolist()   # at each step t: x_t
    [[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]
    """
    _check_task(task)
    if task != "one_step":
        _checks.positive_int("horizon", horizon)
    x = np.asarray(x)
    if task == "one_step":
        return x[:, -1, :1]
    if task == "seq2seq":
        return np.repeat(x[..., :1], horizon, axis=-1)
    return np.repeat(x[:, -1, :1], horizon, axis=-1)


def fit_linear_forecaster(x, y):
    """Least-squares linear forecaster: `ŷ = vec(x) W + b`, the best linear model in closed form.

    Args:
        x: inputs `(batch, n_steps, 1)`.
        y: targets `(batch, outputs)` (`one_step`, `multi_step`).

    Returns:
        `(W, b)` with `W (n_steps, outputs)`, `b (outputs,)`.

    Example:

    >>> t = np.arange(20.0)
    >>> x = np.stack([t[i:i + 3] for i in range(16)])[..., None]
    >>> y = t[3:19, None]                       # x_{t+1} = 2 x_t − x_{t−1} on a line
    >>> W, b = fit_linear_forecaster(x, y)
    >>> np.round(linear_forecast(np.array([[[30.0], [31.0], [32.0]]]), W, b), 6).tolist()
    [[33.0]]
    """
    x = np.asarray(x, dtype="float64").reshape(len(x), -1)
    y = np.asarray(y, dtype="float64").reshape(len(y), -1)
    design = np.concatenate([x, np.ones((len(x), 1))], axis=1)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    return coef[:-1], coef[-1]


def linear_forecast(x, W, b):
    """`vec(x) W + b` for inputs `(batch, n_steps, 1)`: the forecast of `fit_linear_forecaster`."""
    x = np.asarray(x, dtype="float64").reshape(len(x), -1)
    return x @ W + b


def iterative_forecast(predict_one, x, horizon=10):
    """Forecast `horizon` steps by feeding each one-step forecast back as the newest input.

    The window slides: each call sees the last `n_steps` values (observed, then forecast),
    so any one-step model works, including one with a fixed input length.

    Args:
        predict_one: callable `(batch, n_steps, 1) -> (batch, 1)`.
        x: inputs `(batch, n_steps, 1)`.
        horizon: number of steps.

    Returns:
        `(batch, horizon)`.

    Example:

    >>> x = np.array([[[1.0], [2.0], [3.0]]])
    >>> iterative_forecast(lambda w: w[:, -1] + 1.0, x, horizon=3).tolist()
    [[4.0, 5.0, 6.0]]
    """
    _checks.positive_int("horizon", horizon)
    window = np.asarray(x, dtype="float32")
    n_steps = window.shape[1]
    forecasts = []
    for _ in range(horizon):
        step = np.asarray(predict_one(window[:, -n_steps:]), dtype="float32").reshape(len(window), 1)
        forecasts.append(step[:, 0])
        window = np.concatenate([window, step[:, np.newaxis, :]], axis=1)
    return np.stack(forecasts, axis=1)


def forecast_mse(y_true, y_pred, task):
    """Mean squared error as the book scores each task (`seq2seq`: last time step only).

    Example:

    >>> y = np.zeros((2, 3, 4)); p = np.ones((2, 3, 4)); p[:, -1] = 0.5
    >>> float(forecast_mse(y, p, "seq2seq"))
    0.25
    """
    _check_task(task)
    y_true = np.asarray(y_true, dtype="float64")
    y_pred = np.asarray(y_pred, dtype="float64")
    if y_true.shape != y_pred.shape:
        raise ValueError(f"Shapes differ: y_true {y_true.shape}, y_pred {y_pred.shape}.")
    if task == "seq2seq":
        y_true, y_pred = y_true[:, -1], y_pred[:, -1]
    return float(np.mean((y_true - y_pred) ** 2))
