"""kerasrnn.datasets.timeseries: Géron's generator, windows, baselines, loaders (NumPy only)."""

import importlib.util

import numpy as np
import pytest

from kerasrnn.datasets import timeseries as ts

has_statsmodels = importlib.util.find_spec("statsmodels") is not None


# ------------------------------------------------------------------ Géron's series
def test_generator_reproduces_the_book_exactly():
    # Values of np.random.seed(42); generate_time_series(10000, 51) in Géron's notebook
    # (computed with the notebook's own function), and its naive validation MSE, which
    # the notebook prints as 0.020211367 (float32 there).
    series = ts.generate_time_series(10000, 51, seed=42)
    assert series.dtype == np.float32 and series.shape == (10000, 51, 1)
    first = np.float32([0.4596948028, 0.3148667812, 0.1249712259])
    last = np.float32([0.2177458256, 0.1602828801, 0.0505282320])
    np.testing.assert_array_equal(series[0, :3, 0], first)
    np.testing.assert_array_equal(series[9999, -3:, 0], last)
    assert series[7000, 10, 0] == np.float32(-0.3827576339)
    x_valid, y_valid = series[7000:9000, :50], series[7000:9000, -1]
    naive = np.mean((x_valid[:, -1] - y_valid) ** 2)
    assert naive == pytest.approx(0.020211367, abs=1e-8)


def test_generator_seed_none_draws_from_the_global_state_like_the_book():
    np.random.seed(42)
    from_global = ts.generate_time_series(5, 60)
    np.testing.assert_array_equal(from_global, ts.generate_time_series(5, 60, seed=42))
    np.testing.assert_array_equal(
        ts.generate_time_series(5, 60, seed=np.random.RandomState(42)), from_global)


def test_generator_is_deterministic_per_seed():
    a = ts.generate_time_series(50, 30, seed=7)
    np.testing.assert_array_equal(a, ts.generate_time_series(50, 30, seed=7))
    assert not np.allclose(a, ts.generate_time_series(50, 30, seed=8))


def test_generator_moments_match_the_formula():
    # E[x(t)] and E[x(t)^2] by integrating the formula over f, o ~ U[0, 1] on a grid
    # (the two waves are independent; the noise 0.1(u − 0.5) has variance 0.01/12).
    series = ts.generate_time_series(10000, 51, seed=0)[..., 0]
    grid = (np.arange(300) + 0.5) / 300
    t = np.linspace(0, 1, 51)
    f, o = grid[:, None, None], grid[None, :, None]
    wave1 = 0.5 * np.sin((t - o) * (10 * f + 10))
    wave2 = 0.2 * np.sin((t - o) * (20 * f + 20))
    m1, m2 = wave1.mean((0, 1)), wave2.mean((0, 1))
    second = (wave1**2).mean((0, 1)) + (wave2**2).mean((0, 1)) + 2 * m1 * m2 + 0.01 / 12
    np.testing.assert_allclose(series.mean(0), m1 + m2, atol=0.02)
    np.testing.assert_allclose((series**2).mean(0), second, atol=0.008)
    assert np.abs(series).max() <= 0.75


def test_geron_dataset_splits_and_task_targets():
    full = ts.generate_time_series(10000, 60, seed=42)
    data = ts.geron_dataset("seq2seq")
    x, y = data["valid"]
    np.testing.assert_array_equal(x, full[7000:9000, :50])
    assert y.shape == (2000, 50, 10)
    # y[:, t, k] is the value k + 1 steps after t.
    np.testing.assert_array_equal(y[:, 3, 4], full[7000:9000, 3 + 5, 0])
    np.testing.assert_array_equal(y[:, -1], full[7000:9000, 50:60, 0])
    x, y = ts.geron_dataset("multi_step")["test"]
    np.testing.assert_array_equal(y, full[9000:, 50:, 0])
    x, y = ts.geron_dataset("one_step", sizes=(7, 2, 1))["train"]
    assert x.shape == (7, 50, 1) and y.shape == (7, 1)


def test_bad_task_is_a_clear_error():
    with pytest.raises(ValueError, match="`task` must be one of"):
        ts.geron_dataset("two_step")


# ---------------------------------------------------------------- baselines
def test_naive_and_mse_exact_values_on_a_tiny_series():
    series = np.float32([1, 2, 4, 7, 11, 16])[None, :, None]  # differences 1, 2, 3, 4, 5
    x, y = ts.task_targets(series, 3, "multi_step", horizon=3)  # x = 1 2 4 → 7 11 16
    prediction = ts.naive_forecast(x, "multi_step", 3)
    np.testing.assert_array_equal(prediction, [[4, 4, 4]])
    assert ts.forecast_mse(y, prediction, "multi_step") == pytest.approx((9 + 49 + 144) / 3)
    x, y = ts.task_targets(series, 5, "one_step")
    assert ts.forecast_mse(y, ts.naive_forecast(x, "one_step"), "one_step") == 25.0
    x, y = ts.task_targets(series, 3, "seq2seq", horizon=3)  # scored at t = 2 only
    assert ts.forecast_mse(y, ts.naive_forecast(x, "seq2seq", 3), "seq2seq") == pytest.approx(202 / 3)


def test_linear_least_squares_is_exact_on_an_ar2_series():
    # A sine obeys x_t = 2 cos(ω) x_{t−1} − x_{t−2}: the best linear forecaster is exact,
    # one step and iterated 10 steps.
    omega = 0.3
    values = np.sin(omega * np.arange(80) + 0.4)
    data = ts.window_dataset(values, n_steps=4, task="one_step")
    W, b = ts.fit_linear_forecaster(*data["train"])
    x, y = data["test"]
    assert ts.forecast_mse(y, ts.linear_forecast(x, W, b), "one_step") < 1e-10
    x10, y10 = ts.window_dataset(values, n_steps=4, task="iterative")["test"]
    prediction = ts.iterative_forecast(lambda w: ts.linear_forecast(w, W, b), x10, 10)
    np.testing.assert_allclose(prediction, y10, atol=1e-5)
    assert ts.forecast_mse(y10, ts.naive_forecast(x10, "iterative"), "iterative") > 0.1


def test_iterative_forecast_slides_the_window():
    seen = []

    def predict(window):
        seen.append(window[0, :, 0].tolist())
        return window[:, -1] * 2

    out = ts.iterative_forecast(predict, np.float32([[[1], [2]]]), horizon=3)
    np.testing.assert_array_equal(out, [[4, 8, 16]])
    assert seen == [[1, 2], [2, 4], [4, 8]]


# ------------------------------------------------------------ real series
def test_window_dataset_is_chronological():
    values = np.arange(309.0)
    train_end, valid_end = ts.split_bounds(len(values))
    assert (train_end, valid_end) == (216, 263)
    data = ts.window_dataset(values, n_steps=24, task="multi_step", horizon=10)
    for split, (lo, hi) in {"train": (0, train_end), "valid": (train_end, valid_end),
                            "test": (valid_end, 309)}.items():
        x, y = data[split]
        assert y.min() >= lo and y.max() < hi  # every target inside its own period
        np.testing.assert_array_equal(x[:, -1, 0] + 1, y[:, 0])  # targets follow inputs
    assert len(data["test"][0]) == 309 - valid_end - 10 + 1
    one = ts.window_dataset(values, n_steps=24, task="one_step")
    assert [len(one[s][0]) for s in ("train", "valid", "test")] == [192, 47, 46]


def test_window_dataset_too_short_is_a_clear_error():
    with pytest.raises(ValueError, match="too short"):
        ts.window_dataset(np.arange(10.0), n_steps=20, task="one_step")


def test_csv_column(tmp_path):
    path = tmp_path / "load.csv"
    path.write_text("day,load,note\n1,3.5,a\n2,4.0,b\n3,-1,c\n")
    np.testing.assert_array_equal(ts.load_csv_column(str(path), "load"), [3.5, 4.0, -1.0])
    with pytest.raises(ValueError, match=r"'price' is not in .*\['day', 'load', 'note'\]"):
        ts.load_csv_column(str(path), "price")
    with pytest.raises(ValueError, match="line 2: column 'note' holds 'a'"):
        ts.load_csv_column(str(path), "note")
    with pytest.raises(ValueError, match="No `column` given"):
        ts.load_csv_column(str(path), None)


@pytest.mark.parametrize("text", ["nan", "NaN", "inf", "-Infinity"])
def test_a_csv_value_that_is_not_finite_is_named(text, tmp_path):
    # float() reads these: one NaN made every forecast and score NaN (results.json held
    # NaN tokens), or stopped the least-squares fit with an SVD error.
    path = tmp_path / "load.csv"
    path.write_text(f"day,load\n1,3.5\n2,{text}\n3,-1\n")
    with pytest.raises(ValueError, match=f"line 3: column 'load' holds '{text}', not a finite number"):
        ts.load_csv_column(str(path), "load")


@pytest.mark.skipif(not has_statsmodels, reason="statsmodels is not installed")
def test_sunspots_are_the_bundled_yearly_series():
    years, values = ts.load_sunspots()
    assert len(values) == 309 and years[0] == 1700 and years[-1] == 2008
    np.testing.assert_array_equal(values[:3], [5.0, 11.0, 16.0])
    assert values.max() == pytest.approx(190.2)  # 1957
