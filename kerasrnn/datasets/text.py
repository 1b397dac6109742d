"""Text classification data: IMDB reviews (Maas et al. 2011) and MR sentence polarity
(Pang & Lee 2005), plus the tokenization that turns them into padded id sequences.

Loaders return plain Python strings and NumPy labels (1 = positive, 0 = negative), so
any tokenizer can follow. The tokenizer used by the recipes,
`WordVectorizer`, is plain Python: it gives the ids Keras's `TextVectorization` gives,
without TensorFlow's string ops, so it runs wherever Keras runs. Its vocabulary is
written to a small JSON file beside a saved model so that the model can classify raw
text later, on any backend.
"""

import collections
import json
import numbers
import os
import re
import tarfile

import numpy as np

from kerasrnn.datasets._download import download
from kerasrnn.layers import _checks

__all__ = [
    "IMDB_URL",
    "MR_URL",
    "WordVectorizer",
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
# SHA-256 of the published archives: `keras.utils.get_file` checks every download (and
# the cached copy) against them, so a truncated or altered file fails there, by name.
IMDB_SHA256 = "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe"
MR_SHA256 = "a05befe52aafda71d458d188a1c54506a998b1308613ba76bbda2e5029409ce9"

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
        path = download(
            "aclImdb_v1.tar.gz", IMDB_URL, "`path` (the aclImdb folder or aclImdb_v1.tar.gz)",
            file_hash=IMDB_SHA256, cache_dir=cache_dir, cache_subdir="datasets",
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
        path = download(
            "rt-polaritydata.tar.gz", MR_URL, "`path` (the rt-polaritydata folder or its .tar.gz)",
            file_hash=MR_SHA256, cache_dir=cache_dir, cache_subdir="datasets",
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
# Word-level tokenization in plain Python, equal to `keras.layers.TextVectorization`
# (`output_mode="int"`, `split="whitespace"`) with the same standardization, which runs
# TensorFlow string ops under every Keras backend. Three details of those ops matter:
# `tf.strings.lower` lower-cases ASCII letters only; RE2's `\s` is `[\t\n\f\r ]`; and
# the whitespace split cuts at ASCII whitespace only (`\v` included, `\xa0` not).
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_PUNCTUATION = re.compile(r"[!\"#$%&()\*\+,\-\./:;<=>?@\[\\\]^_`{|}~']")  # Keras's set
_LINE_BREAK = re.compile(r"<br[\t\n\f\r ]*/?>")
_WHITESPACE = re.compile(r"[ \t\n\v\f\r]+")
PAD, OOV = "", "[UNK]"  # ids 0 and 1, as TextVectorization has them


def standardize_review(text):
    """Lower-cases ASCII letters, turns HTML line breaks (`<br />`, frequent in IMDB)
    into spaces and strips ASCII punctuation: Keras's `"lower_and_strip_punctuation"`
    plus the line breaks.

    Example:

    >>> from kerasrnn.datasets import standardize_review
    >>> standardize_review("A GREAT film!<br /><br />Très bien.")
    'a great film  très bien'
    """
    text = _LINE_BREAK.sub(" ", text.translate(_ASCII_LOWER))
    return _PUNCTUATION.sub("", text)


def _lower(text):
    return text.translate(_ASCII_LOWER)


def _strip_punctuation(text):
    return _PUNCTUATION.sub("", text)


def _lower_and_strip_punctuation(text):
    return _PUNCTUATION.sub("", text.translate(_ASCII_LOWER))


_STANDARDIZERS = {
    "review": standardize_review,
    "lower_and_strip_punctuation": _lower_and_strip_punctuation,
    "lower": _lower,
    "strip_punctuation": _strip_punctuation,
    None: lambda text: text,
}


class WordVectorizer:
    """Text → word ids, in plain Python: no TensorFlow on any backend.

    It computes what `keras.layers.TextVectorization(max_tokens, standardize,
    output_mode="int")` computes (tested equal on IMDB): the vocabulary holds the
    `max_tokens - 2` most frequent training words, ties broken as Keras breaks them;
    id 0 is padding and id 1 the out-of-vocabulary token, so the ids feed
    `keras.layers.Embedding(max_tokens, ..., mask_zero=True)` directly. Calling it on a
    list of texts returns their ids right-padded to the longest.

    Args:
        max_tokens: vocabulary size, padding and out-of-vocabulary ids included.
        standardize: `"review"` (`standardize_review`), `"lower_and_strip_punctuation"`,
            `"lower"`, `"strip_punctuation"`, `None`, or a function `str -> str`.
        vocabulary: the words of a vocabulary (as `get_vocabulary()` returns them),
            instead of learning one with `adapt`.

    Example:

    >>> from kerasrnn.datasets import WordVectorizer
    >>> v = WordVectorizer(max_tokens=10)
    >>> v.adapt(["A good film.", "a good one<br />a"])
    >>> v.get_vocabulary()[:4], v(["a GOOD plot"]).tolist()
    (['', '[UNK]', 'a', 'good'], [[2, 3, 1]])
    """

    def __init__(self, max_tokens=20000, standardize="review", vocabulary=None):
        if not isinstance(max_tokens, numbers.Integral) or isinstance(max_tokens, bool) or max_tokens < 3:
            raise ValueError(
                f"WordVectorizer: `max_tokens` must be an integer >= 3 (padding, unknown "
                f"and at least one word); received {max_tokens!r}."
            )
        if not callable(standardize) and standardize not in _STANDARDIZERS:
            raise ValueError(
                f"WordVectorizer: `standardize` must be one of {[k for k in _STANDARDIZERS if k]}, "
                f"None or a function str -> str; received {standardize!r}."
            )
        self.max_tokens = int(max_tokens)
        #: The `standardize` argument as given: a name, `None`, or the function.
        self.standardize_setting = standardize
        self.standardize = standardize if callable(standardize) else _STANDARDIZERS[standardize]
        self._set_vocabulary([] if vocabulary is None else vocabulary)

    def _set_vocabulary(self, words):
        words = [str(w) for w in words if w not in (PAD, OOV)]
        repeated = sorted({w for w, n in collections.Counter(words).items() if n > 1})
        if repeated:  # as TextVectorization: each word needs its own id
            raise ValueError(f"WordVectorizer: the vocabulary repeats {repeated[:5]}; each word must appear once.")
        self.vocabulary = [PAD, OOV, *words[: self.max_tokens - 2]]
        self.ids = {word: i for i, word in enumerate(self.vocabulary)}

    def tokenize(self, text):
        """The words of one text, after standardization."""
        return [word for word in _WHITESPACE.split(self.standardize(text)) if word]

    def adapt(self, texts):
        """Learns the vocabulary: the most frequent words of `texts`.

        Ties in frequency are broken as `TextVectorization` breaks them (the word whose
        UTF-8 bytes sort last comes first), so both give the same ids.
        """
        counts = collections.Counter()
        for text in texts:
            counts.update(self.tokenize(text))
        for special in (PAD, OOV):
            counts.pop(special, None)
        # "surrogatepass": a lone surrogate (text decoded with "surrogateescape") is a word too.
        ranked = sorted(counts.items(), key=lambda kv: (kv[1], kv[0].encode("utf-8", "surrogatepass")),
                        reverse=True)
        self._set_vocabulary([word for word, _ in ranked])

    def encode(self, text):
        """The ids of one text's words (unknown words: 1)."""
        ids = self.ids
        return [ids.get(word, 1) for word in self.tokenize(text)]

    def __call__(self, texts):
        rows = [self.encode(text) for text in texts]
        out = np.zeros((len(rows), max((len(r) for r in rows), default=0)), dtype="int32")
        for i, row in enumerate(rows):
            out[i, : len(row)] = row
        return out

    def get_vocabulary(self):
        return list(self.vocabulary)

    def vocabulary_size(self):
        return len(self.vocabulary)

    def get_config(self):
        return {"max_tokens": self.max_tokens, "standardize": self.standardize_setting,
                "vocabulary": self.get_vocabulary()}


def make_vectorizer(texts=None, *, max_tokens=20000, standardize="review", vocabulary=None):
    """A `WordVectorizer` adapted to `texts` (or holding `vocabulary`).

    Args:
        texts: list of strings to learn the vocabulary from (the most frequent
            `max_tokens - 2` words). Not needed when `vocabulary` is given.
        max_tokens: vocabulary size, padding and OOV included.
        standardize: see `WordVectorizer`.
        vocabulary: a list of words (as `get_vocabulary()` returns it) instead of
            adapting.

    Example:

    >>> from kerasrnn.datasets import make_vectorizer
    >>> v = make_vectorizer(["A good film.", "a good one<br />a"], max_tokens=10)
    >>> v.get_vocabulary()[:4], "br" in v.get_vocabulary()
    (['', '[UNK]', 'a', 'good'], False)
    """
    vectorizer = WordVectorizer(max_tokens=max_tokens, standardize=standardize, vocabulary=vocabulary)
    if vocabulary is None:
        if texts is None:
            raise ValueError("make_vectorizer: pass `texts` to adapt to, or a `vocabulary`.")
        vectorizer.adapt(texts)
    return vectorizer


class _NeedsFunction(ValueError):
    pass


def save_vectorizer(vectorizer, path):
    """Writes a vectorizer made by `make_vectorizer` to a JSON file (settings and
    vocabulary), atomically; `load_vectorizer` rebuilds it on any backend.

    A `standardize` function cannot be written: its name is, and `load_vectorizer`
    asks for the function back (`standardize=`)."""
    setting = vectorizer.standardize_setting
    if callable(setting):
        setting = {"function": f"{getattr(setting, '__module__', '?')}.{getattr(setting, '__qualname__', repr(setting))}"}
    config = {
        "max_tokens": vectorizer.max_tokens,
        "standardize": setting,
        "vocabulary": vectorizer.get_vocabulary(),
    }
    text = json.dumps(config, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate in a word: written as a \udcXX escape
        text = json.dumps(config)
    partial = f"{os.fspath(path)}.partial"
    with open(partial, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(partial, path)


def load_vectorizer(path, standardize=None):
    """The vectorizer saved by `save_vectorizer` at `path`.

    Args:
        path: the JSON file.
        standardize: the function a vectorizer was saved with, if it was saved with
            one (the file holds only its name); ignored otherwise.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"load_vectorizer: no vocabulary file at {os.fspath(path)!r}.")
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
        setting = config["standardize"]
        if isinstance(setting, dict):
            if not callable(standardize):
                raise _NeedsFunction(
                    f"load_vectorizer: {os.fspath(path)!r} was saved with the standardize "
                    f"function {setting.get('function')}; pass it back: "
                    f"`load_vectorizer(path, standardize={setting.get('function', 'f').rsplit('.', 1)[-1]})`."
                )
            setting = standardize
        return make_vectorizer(
            max_tokens=config["max_tokens"],
            standardize=setting,
            vocabulary=config["vocabulary"],
        )
    except _NeedsFunction:
        raise
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(
            f"load_vectorizer: {os.fspath(path)!r} is not a vocabulary written by "
            f"save_vectorizer ({type(err).__name__}: {err})."
        ) from err


def encode_texts(vectorizer, texts, max_length, *, truncate="pre", progress=None):
    """Word ids of `texts`, right-padded with 0 to `(len(texts), max_length)`.

    Args:
        vectorizer: a `WordVectorizer` (or anything with an `encode(text)` method
            that returns a list of ids).
        texts: list of strings.
        max_length: length of the rows; longer texts are cut.
        truncate: `"pre"` drops words from the beginning (keeps the end, where
            reviews tend to give their verdict), `"post"` from the end.
        progress: an optional `keras.utils.Progbar` (or anything with `update(n)`),
            told every 1,000 texts how many are done.

    Example:

    >>> from kerasrnn.datasets import encode_texts, make_vectorizer
    >>> v = make_vectorizer(vocabulary=["", "[UNK]", "a", "film", "good"])
    >>> encode_texts(v, ["a good film", "film"], 2).tolist()
    [[4, 3], [3, 0]]
    """
    if truncate not in ("pre", "post"):
        raise ValueError(f"encode_texts: `truncate` must be 'pre' or 'post'; received {truncate!r}.")
    max_length = _checks.positive_int("max_length", max_length)
    out = np.zeros((len(texts), max_length), dtype="int32")
    for row, text in enumerate(texts):
        ids = vectorizer.encode(text)
        ids = ids[-max_length:] if truncate == "pre" else ids[:max_length]
        out[row, : len(ids)] = ids
        if progress is not None and ((row + 1) % 1000 == 0 or row + 1 == len(texts)):
            progress.update(row + 1)
    return out
