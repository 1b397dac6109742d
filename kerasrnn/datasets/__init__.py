"""Data sets for the recipes: loaders that return plain arrays, and their tokenizers."""

from kerasrnn.datasets.text import (
    encode_texts,
    load_imdb,
    load_mr,
    load_vectorizer,
    make_vectorizer,
    save_vectorizer,
    standardize_review,
)
