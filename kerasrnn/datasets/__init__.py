"""Data for the recipes: loaders and generators (NumPy out; downloads only when asked)."""

from kerasrnn.datasets import digits, text, timeseries, translation
from kerasrnn.datasets.text import (
    WordVectorizer,
    encode_texts,
    load_imdb,
    load_mr,
    load_vectorizer,
    make_vectorizer,
    save_vectorizer,
    standardize_review,
)
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
    "WordVectorizer",
    "digits",
    "encode_texts",
    "load_imdb",
    "load_mr",
    "load_multi30k",
    "load_parallel_files",
    "load_parallel_tsv",
    "load_vectorizer",
    "make_vectorizer",
    "save_vectorizer",
    "standardize_review",
    "text",
    "timeseries",
    "translation",
]
