"""Datasets for the recipes: NumPy arrays in, NumPy arrays out (no downloads at import)."""

from kerasrnn.datasets import digits, timeseries

__all__ = ["digits", "timeseries"]
