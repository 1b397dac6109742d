"""Data for the recipes: loaders and generators (NumPy out; downloads only when asked)."""

from kerasrnn.datasets import digits, timeseries, translation
from kerasrnn.datasets.translation import (
    SubwordTokenizer,
    TranslationBatches,
    load_multi30k,
    load_parallel_files,
    load_parallel_tsv,
)

__all__ = [
    "SubwordTokenizer",
    "TranslationBatches",
    "digits",
    "load_multi30k",
    "load_parallel_files",
    "load_parallel_tsv",
    "timeseries",
    "translation",
]
