"""Data loaders for the recipes (each module loads one kind of data)."""

from kerasrnn.datasets import translation
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
    "load_multi30k",
    "load_parallel_files",
    "load_parallel_tsv",
    "translation",
]
