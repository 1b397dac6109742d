"""Text classification data: IMDB reviews (Maas et al. 2011) and MR sentence polarity
(Pang & Lee 2005), plus the tokenization that turns them into padded id sequences.

Loaders return plain Python strings and NumPy labels (1 = positive, 0 = negative), so
any tokenizer can follow. The tokenizer used by the recipes is Keras's
`TextVectorization` (its string ops run on TensorFlow under every Keras backend); its
vocabulary is written to a small JSON file beside a saved model so that the model can
classify raw text later, on any backend.
"""

import json
import os
import re
import tarfile

import keras
import numpy as np

__all__ = [
    "IMDB_URL",
    "MR_URL",
    "encode_texts",
    "load_imdb",
    "load_mr",
    "load_vectorizer",
    "make_vectorizer",
    "save_vectorizer",
    "standardize_review",
]

IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
MR_URL = "https://www.cs.cornell.edu/people/pabo/movie-review-data/rt-polaritydata.tar.gz"

_LABELS = {"neg": 0, "pos": 1}
# A review file inside the Stanford layout: .../{train,test}/{pos,neg}/<id>_<rating>.txt
_IMDB_MEMBER = re.compile(r"(?:^|/)(train|test)/(pos|neg)/([^/]+\.txt)$")


# ------------------------------------------------------------------------------ IMDB
def load_imdb(path=None, *, return_ids=False, cache_dir=None):
    """The Large Movie Review Dataset (IMDB): 25,000 train and 25,000 test reviews.

    Reads the Stanford `aclImdb` layout (`{train,test}/{pos,neg}/<id>_<rating>.txt`)
    from an extracted folder or straight from the `.tar.gz` (members are streamed; the
    archive is never extracted). The unlabeled `train/unsup` reviews are skipped.

    Args:
        path: the `aclImdb` folder (or a folder holding it), or the
            `aclImdb_v1.tar.gz` archive. `None` downloads the archive once from
            `IMDB_URL` with `keras.utils.get_file` and reuses the cached copy.
        return_ids: also return each review's id (the `<id>` of its file name).
            Ids follow the order in which reviews were collected, movie by movie:
            neighbouring ids of one class mostly review the same film, so holding
            out blocks of consecutive ids gives a validation set with (nearly) unseen
            movies, as the test set has.
        cache_dir: where `keras.utils.get_file` caches the download (default
            `~/.keras`).

    Returns:
        `((train_texts, train_labels), (test_texts, test_labels))`: lists of `str` and
        `int32` arrays (1 = positive, 0 = negative), ordered by split, label, file name;
        with `return_ids`, `(texts, labels, ids)` for each split.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: `path` is neither an `aclImdb` folder nor a readable archive, or
            it lacks a split or a class.

    Example:

    >>> import os, tempfile
    >>> from kerasrnn.datasets import load_imdb
    >>> root = tempfile.mkdtemp()
    >>> for split in ("train", "test"):
    ...     for label in ("pos", "neg"):
    ...         os.makedirs(os.path.join(root, "aclImdb", split, label))
    ...         with open(os.path.join(root, "aclImdb", split, label, "0_5.txt"), "w") as f:
    ...             _ = f.write(f"a {label} review")
    >>> (x_train, y_train), (x_test, y_test) = load_imdb(root)
    >>> x_train, y_train.tolist()
    (['a neg review', 'a pos review'], [0, 1])

    Reference:
        Maas et al., "Learning Word Vectors for Sentiment Analysis", ACL 2011.
    """
    if path is None:
        path = keras.utils.get_file(
            "aclImdb_v1.tar.gz", origin=IMDB_URL, cache_dir=cache_dir, cache_subdir="datasets"
        )
    path = _existing(path, "load_imdb", "the aclImdb folder or aclImdb_v1.tar.gz")
    if os.path.isdir(path):
        reviews = _imdb_from_folder(path)
    else:
        reviews = _imdb_from_archive(path)
    splits = tuple(_imdb_split(reviews, split, path) for split in ("train", "test"))
    return splits if return_ids else tuple(split[:2] for split in splits)


def _imdb_from_folder(path):
    root = path
    if not os.path.isdir(os.path.join(root, "train")) and os.path.isdir(os.path.join(root, "aclImdb")):
        root = os.path.join(root, "aclImdb")
    reviews = []
    for split in ("train", "test"):
        for label in _LABELS:
            folder = os.path.join(root, split, label)
            if not os.path.isdir(folder):
                continue
            for name in os.listdir(folder):
                if name.endswith(".txt"):
                    with open(os.path.join(folder, name), encoding="utf-8") as f:
                        reviews.append((split, label, name, f.read()))
    return reviews


def _imdb_from_archive(path):
    reviews = []
    try:
        # "r|*" streams the members in archive order: no seeking, nothing extracted.
        with tarfile.open(path, mode="r|*") as archive:
            for member in archive:
                match = _IMDB_MEMBER.search(member.name)
                if member.isfile() and match:
                    text = archive.extractfile(member).read().decode("utf-8")
                    reviews.append((*match.groups(), text))
    except (tarfile.TarError, EOFError, OSError) as err:
        raise ValueError(
            f"load_imdb: cannot read {path!r} as a .tar.gz archive ({err}). Pass the "
            "aclImdb folder or the aclImdb_v1.tar.gz file (path=None downloads it)."
        ) from err
    return reviews


def _imdb_split(reviews, split, path):
    rows = sorted((r for r in reviews if r[0] == split), key=lambda r: (r[1], _file_key(r[2])))
    counts = {label: sum(r[1] == label for r in rows) for label in _LABELS}
    missing = [f"{split}/{label}" for label, n in counts.items() if n == 0]
    if missing:
        raise ValueError(
            f"load_imdb: {path!r} holds no reviews in {', '.join(missing)}. Expected the "
            "Stanford aclImdb layout: {train,test}/{pos,neg}/<id>_<rating>.txt, as a "
            "folder or as the aclImdb_v1.tar.gz archive."
        )
    texts = [r[3] for r in rows]
    labels = np.array([_LABELS[r[1]] for r in rows], dtype="int32")
    ids = np.array([_review_id(r[2]) for r in rows], dtype="int64")
    return texts, labels, ids


def _review_id(name):
    """The `<id>` of `<id>_<rating>.txt` (-1 for other names)."""
    head = name.split("_")[0]
    return int(head) if head.isdigit() else -1


def _file_key(name):
    return (_review_id(name), name)


# -------------------------------------------------------------------------------- MR
def load_mr(path=None, *, test_fraction=0.1, seed=0, encoding=None, cache_dir=None):
    """Movie-review sentence polarity (MR, "sentence polarity dataset v1.0").

    5,331 positive and 5,331 negative review snippets (`rt-polarity.pos`,
    `rt-polarity.neg`, one sentence a line), split into train and test by a fixed,
    seeded, class-stratified permutation, so every run tests on the same sentences.

    Args:
        path: a folder holding `rt-polarity.pos` and `rt-polarity.neg` (directly or
            in `rt-polaritydata/`), or the `rt-polaritydata.tar.gz` archive. `None`
            downloads the archive once from `MR_URL` with `keras.utils.get_file`.
        test_fraction: the fraction of each class held out for testing (default
            0.1, the usual 90/10 split; the data set has no official split).
        seed: seed of the split permutation (default 0, the recipe's fixed split).
        encoding: the files' text encoding. `None` tries UTF-8 and falls back to
            latin-1 (the encoding of the original release).
        cache_dir: where `keras.utils.get_file` caches the download.

    Returns:
        `((train_texts, train_labels), (test_texts, test_labels))`, labels 1 =
        positive, 0 = negative, each split in the seeded shuffled order.

    Example:

    >>> import os, tempfile
    >>> from kerasrnn.datasets import load_mr
    >>> root = tempfile.mkdtemp()
    >>> for name, word in (("pos", "good"), ("neg", "bad")):
    ...     with open(os.path.join(root, f"rt-polarity.{name}"), "w") as f:
    ...         _ = f.write("".join(f"{word} film {i}\\n" for i in range(10)))
    >>> (x_train, y_train), (x_test, y_test) = load_mr(root)
    >>> len(x_train), len(x_test), int(y_test.sum())
    (18, 2, 1)

    Reference:
        Pang & Lee, "Seeing stars: Exploiting class relationships for sentiment
        categorization with respect to rating scales", ACL 2005.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"load_mr: `test_fraction` must be in (0, 1); received {test_fraction}.")
    if path is None:
        path = keras.utils.get_file(
            "rt-polaritydata.tar.gz", origin=MR_URL, cache_dir=cache_dir, cache_subdir="datasets"
        )
    path = _existing(path, "load_mr", "the folder with rt-polarity.pos/.neg")
    raw = _mr_files_from_folder(path) if os.path.isdir(path) else _mr_files_from_archive(path)
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in ("neg", "pos"):
        lines = [s.strip() for s in _decode(raw[label], encoding, path).splitlines()]
        lines = [s for s in lines if s]
        if not lines:
            raise ValueError(f"load_mr: rt-polarity.{label} in {path!r} has no sentences.")
        order = rng.permutation(len(lines))
        n_test = max(1, round(test_fraction * len(lines)))
        test += [(lines[i], _LABELS[label]) for i in order[:n_test]]
        train += [(lines[i], _LABELS[label]) for i in order[n_test:]]
    return _shuffled(train, rng), _shuffled(test, rng)


def _mr_files_from_folder(path):
    for folder in (path, os.path.join(path, "rt-polaritydata")):
        files = {label: os.path.join(folder, f"rt-polarity.{label}") for label in _LABELS}
        if all(os.path.isfile(f) for f in files.values()):
            raw = {}
            for label, file in files.items():
                with open(file, "rb") as f:
                    raw[label] = f.read()
            return raw
    raise ValueError(
        f"load_mr: {path!r} has no rt-polarity.pos and rt-polarity.neg (looked in the "
        "folder and in rt-polaritydata/). Pass the folder that holds both files or the "
        "rt-polaritydata.tar.gz archive (path=None downloads it)."
    )


def _mr_files_from_archive(path):
    raw = {}
    try:
        with tarfile.open(path, mode="r|*") as archive:
            for member in archive:
                match = re.search(r"(?:^|/)rt-polarity\.(pos|neg)$", member.name)
                if member.isfile() and match:
                    raw[match.group(1)] = archive.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError) as err:
        raise ValueError(
            f"load_mr: cannot read {path!r} as a .tar.gz archive ({err}). Pass the folder "
            "with rt-polarity.pos/.neg or the rt-polaritydata.tar.gz file."
        ) from err
    if set(raw) != set(_LABELS):
        raise ValueError(f"load_mr: the archive {path!r} lacks rt-polarity.pos or rt-polarity.neg.")
    return raw


def _decode(data, encoding, path):
    if encoding is not None:
        return data.decode(encoding)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")  # the original 2005 release


def _shuffled(rows, rng):
    rows = [rows[i] for i in rng.permutation(len(rows))]
    return [r[0] for r in rows], np.array([r[1] for r in rows], dtype="int32")


def _existing(path, caller, what):
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{caller}: the data path {path!r} does not exist. Pass {what} "
            "(or leave the path unset to download the data set)."
        )
    return path


# ---------------------------------------------------------------------- tokenization
@keras.saving.register_keras_serializable(package="kerasrnn")
def standardize_review(texts):
    """Lower-cases, turns HTML line breaks (`<br />`, frequent in IMDB) into spaces and
    strips punctuation: Keras's `"lower_and_strip_punctuation"` plus the line breaks.

    A `TextVectorization` `standardize` callable (TensorFlow string ops).
    """
    import tensorflow as tf

    texts = tf.strings.lower(texts)
    texts = tf.strings.regex_replace(texts, r"<br\s*/?>", " ")
    return tf.strings.regex_replace(texts, r"[!\"#$%&()\*\+,\-\./:;<=>?@\[\\\]^_`{|}~']", "")


_STANDARDIZERS = {"review": standardize_review}


def make_vectorizer(texts=None, *, max_tokens=20000, standardize="review", vocabulary=None):
    """A `keras.layers.TextVectorization` (word ids) adapted to `texts`.

    Id 0 is padding and id 1 the out-of-vocabulary token, so the ids feed
    `keras.layers.Embedding(max_tokens, ..., mask_zero=True)` directly.

    Args:
        texts: list of strings to learn the vocabulary from (the most frequent
            `max_tokens - 2` words). Not needed when `vocabulary` is given.
        max_tokens: vocabulary size, padding and OOV included.
        standardize: `"review"` (`standardize_review`) or any `TextVectorization`
            option (`"lower_and_strip_punctuation"`, `"lower"`, ...).
        vocabulary: a list of words (as `get_vocabulary()` returns it) instead of
            adapting.

    Example:

    >>> from kerasrnn.datasets import make_vectorizer
    >>> v = make_vectorizer(["A good film.", "a good one<br />a"], max_tokens=10)
    >>> [str(word) for word in v.get_vocabulary()[:4]], "br" in v.get_vocabulary()
    (['', '[UNK]', 'a', 'good'], False)
    """
    standardize_fn = _STANDARDIZERS.get(standardize, standardize)
    if vocabulary is not None:
        vocabulary = [w for w in vocabulary if w not in ("", "[UNK]")]
    vectorizer = keras.layers.TextVectorization(
        max_tokens=max_tokens,
        standardize=standardize_fn,
        output_mode="int",
        vocabulary=vocabulary,
    )
    vectorizer.standardize_name = standardize
    if vocabulary is None:
        if texts is None:
            raise ValueError("make_vectorizer: pass `texts` to adapt to, or a `vocabulary`.")
        vectorizer.adapt(list(texts), batch_size=1024)
    return vectorizer


def save_vectorizer(vectorizer, path):
    """Writes a vectorizer made by `make_vectorizer` to a JSON file (settings and
    vocabulary); `load_vectorizer` rebuilds it on any backend."""
    config = {
        "max_tokens": vectorizer.get_config()["max_tokens"],
        "standardize": getattr(vectorizer, "standardize_name", "review"),
        "vocabulary": [str(word) for word in vectorizer.get_vocabulary()],
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(config, f, ensure_ascii=False)


def load_vectorizer(path):
    """The vectorizer saved by `save_vectorizer` at `path`."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"load_vectorizer: no vocabulary file at {path!r}.")
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    return make_vectorizer(
        max_tokens=config["max_tokens"],
        standardize=config["standardize"],
        vocabulary=config["vocabulary"],
    )


def encode_texts(vectorizer, texts, max_length, *, truncate="pre", chunk_size=1024):
    """Word ids of `texts`, right-padded with 0 to `(len(texts), max_length)`.

    Args:
        vectorizer: a `TextVectorization` with `output_mode="int"`.
        texts: list of strings.
        max_length: length of the rows; longer texts are cut.
        truncate: `"pre"` drops words from the beginning (keeps the end, where
            reviews tend to give their verdict), `"post"` from the end.
        chunk_size: texts vectorized per call.

    Example:

    >>> from kerasrnn.datasets import encode_texts, make_vectorizer
    >>> v = make_vectorizer(vocabulary=["", "[UNK]", "a", "film", "good"])
    >>> encode_texts(v, ["a good film", "film"], 2).tolist()
    [[4, 3], [3, 0]]
    """
    if truncate not in ("pre", "post"):
        raise ValueError(f"encode_texts: `truncate` must be 'pre' or 'post'; received {truncate!r}.")
    out = np.zeros((len(texts), max_length), dtype="int32")
    for start in range(0, len(texts), chunk_size):
        chunk = list(texts[start : start + chunk_size])
        ids = np.asarray(keras.ops.convert_to_numpy(vectorizer(chunk)))
        lengths = (ids != 0).sum(axis=1)  # rows are right-padded; no word has id 0
        for row, (seq, n) in enumerate(zip(ids, lengths)):
            seq = seq[:n]
            seq = seq[-max_length:] if truncate == "pre" else seq[:max_length]
            out[start + row, : len(seq)] = seq
    return out
