"""Parallel text for translation: Multi30k, tab-separated pairs, subword tokenizers, batches.

- `load_multi30k`: Multi30k task 1 (Elliott et al. 2016), downloaded once with
  `keras.utils.get_file` and cached, or read from a folder of `{split}.{lang}.gz` files.
- `load_parallel_tsv`: `source<TAB>target[<TAB>...]` lines (the Tatoeba/Anki format).
- `load_parallel_files`: two aligned files, one sentence per line.
- `SubwordTokenizer`: a sentencepiece model trained on the training side only, saved as
  one file beside the Keras model.
- `TranslationBatches`: length-bucketed, padded `((source, target_in), target_out)`
  batches as a `keras.utils.PyDataset`.
- `synthetic_pairs`: a tiny generated task (reverse a sequence of words) for tests.
"""

import gzip
import io
import numbers
import os

import keras
import numpy as np

from kerasrnn.datasets._download import download
from kerasrnn.layers import _checks

__all__ = [
    "MULTI30K_LANGUAGES",
    "MULTI30K_SPLITS",
    "SubwordTokenizer",
    "TranslationBatches",
    "load_multi30k",
    "load_parallel_files",
    "load_parallel_tsv",
    "split_pairs",
    "synthetic_pairs",
]

MULTI30K_URL = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/"
#: Splits of Multi30k task 1 and the languages each one has.
MULTI30K_SPLITS = {
    "train": ("en", "de", "fr", "cs"),
    "val": ("en", "de", "fr", "cs"),
    "test_2016_flickr": ("en", "de", "fr", "cs"),
    "test_2017_flickr": ("en", "de", "fr"),
    "test_2017_mscoco": ("en", "de", "fr"),
    "test_2018_flickr": ("en", "de", "fr", "cs"),
}
MULTI30K_LANGUAGES = ("en", "de", "fr", "cs")
#: SHA-256 of every file under MULTI30K_URL (the repository's master branch):
#: `keras.utils.get_file` checks each download and cached copy against it.
MULTI30K_SHA256 = {
    "test_2016_flickr.cs.gz": "200a4a74cc9560f051924abb9803be008d1908d77f747e9141aeb86dfd2797f1",
    "test_2016_flickr.de.gz": "9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8",
    "test_2016_flickr.en.gz": "611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9",
    "test_2016_flickr.fr.gz": "6d326e188d259fb1d04ac19eae3af956559b3a0b93d7635e56c90987c40c8b90",
    "test_2017_flickr.de.gz": "a2c89666db00c495cd8513b9d708d5a3acc205d7de312ef2bf5fb7ebc1540aee",
    "test_2017_flickr.en.gz": "76a444ee25172e72695cddb13ae4a3bda59430617be88e0bb46b60504f054074",
    "test_2017_flickr.fr.gz": "3ba671ceb2299f3304ffafefea7a833d08632fbaf0ba18546f8a2ec2391af496",
    "test_2017_mscoco.de.gz": "799e4854c25d601cb6cb6be29eabe5667734c61ace2f495e03e429031a0bc338",
    "test_2017_mscoco.en.gz": "aab300bfb4427697987e02cd0aacd44bfe8aa50456231b6474c08038bbed2b58",
    "test_2017_mscoco.fr.gz": "754f3072ba9f124569ba5258b32730fc1d214bbf8e0c6dfb2b74401676220db0",
    "test_2018_flickr.cs.gz": "7d0a9db904f94c554a8c58049a9f3a5357c27f46cc3d710d70cb0b4a2585b8c2",
    "test_2018_flickr.de.gz": "ddd0130c7d97482dc5197a02141dae8dd79f20f03586c480d675c09a32daf608",
    "test_2018_flickr.en.gz": "ef4f4844037d4c5dea75c9a8ed5fd78905967a26f67c255e230cc9780032654d",
    "test_2018_flickr.fr.gz": "fb2b83fcceb937a4f7e3e93c1c51c22aba92f1e342391e6b5ba392b16a920501",
    "train.cs.gz": "a65adb8b32e3bc664f21ecba7a6e7f6950fd1f405e135f7c312faabdb6255077",
    "train.de.gz": "726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6",
    "train.en.gz": "d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f",
    "train.fr.gz": "622e75069e9f4c577425c4f277116ce66e63a2401c0a2312d90073cb12379a3c",
    "val.cs.gz": "b63226e05c4bd5dd6a42897d74b86a1b9d2c31498252c572b1ea7f7996927fcc",
    "val.de.gz": "f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a",
    "val.en.gz": "14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28",
    "val.fr.gz": "ca3106f1a72390591d25f6c45cb4cd39dec4cd3f123e099748a3ce5256c160e9",
}


def _read_lines(path):
    """The lines of a UTF-8 text file, plain or gzip-compressed (by its `.gz` name).

    A file that cannot be read (truncated or not gzip, not UTF-8) is a `ValueError`
    naming it; a missing one a `FileNotFoundError`.
    """
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8-sig") as f:  # a byte-order mark is not text
            return [line.rstrip("\r\n") for line in f]
    except FileNotFoundError:
        raise FileNotFoundError(f"{os.fspath(path)}: no such file.") from None
    except (OSError, EOFError, UnicodeDecodeError) as err:
        kind = "a gzip-compressed" if opener is gzip.open else "a"
        raise ValueError(
            f"{os.fspath(path)}: cannot be read as {kind} UTF-8 text file "
            f"({type(err).__name__}: {err})."
        ) from None


def load_parallel_files(source_path, target_path):
    """Aligned sentences from two files (plain or `.gz`), one sentence per line.

    Raises:
        ValueError: if the files have different numbers of lines.

    Example:

    >>> import os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> for name, text in [("a.txt", "ein Hund\\nzwei Katzen\\n"), ("b.txt", "a dog\\ntwo cats\\n")]:
    ...     _ = open(os.path.join(d, name), "w").write(text)
    >>> load_parallel_files(os.path.join(d, "a.txt"), os.path.join(d, "b.txt"))
    (['ein Hund', 'zwei Katzen'], ['a dog', 'two cats'])
    """
    source, target = _read_lines(source_path), _read_lines(target_path)
    if len(source) != len(target):
        raise ValueError(
            f"Parallel files must have one line per sentence pair, but {source_path} has "
            f"{len(source)} lines and {target_path} has {len(target)}. Check that they "
            "are the two sides of the same split (and that no line holds a newline)."
        )
    return source, target


def _check_language(name, lang, split):
    if lang not in MULTI30K_LANGUAGES:
        raise ValueError(
            f"Unknown Multi30k language `{name}={lang!r}`; Multi30k task 1 has "
            f"{MULTI30K_LANGUAGES}."
        )
    if lang not in MULTI30K_SPLITS[split]:
        raise ValueError(
            f"Multi30k split {split!r} has no {lang!r} side (it has {MULTI30K_SPLITS[split]})."
        )


def load_multi30k(src="de", tgt="en", splits=("train", "val", "test_2016_flickr"), path=None):
    """Multi30k task 1 sentence pairs (raw text: cased, untokenized).

    Args:
        src, tgt: languages, among `"en"`, `"de"`, `"fr"`, `"cs"`.
        splits: which splits (see `MULTI30K_SPLITS`): train 29,000 pairs, val 1,014,
            test_2016_flickr 1,000.
        path: a folder holding `{split}.{lang}.gz` (or uncompressed `{split}.{lang}`);
            `None` downloads each file once from the Multi30k repository with
            `keras.utils.get_file` into `~/.keras/datasets/multi30k/`.

    Returns:
        `{split: (source_sentences, target_sentences)}`.

    Reference:
        Elliott, Frank, Sima'an & Specia, "Multi30K: Multilingual English-German Image
        Descriptions", 5th Workshop on Vision and Language, 2016.
    """
    if src == tgt:
        raise ValueError(f"`src` and `tgt` must differ; both are {src!r}.")
    result = {}
    for split in splits:
        if split not in MULTI30K_SPLITS:
            raise ValueError(f"Unknown Multi30k split {split!r}; expected one of {sorted(MULTI30K_SPLITS)}.")
        _check_language("src", src, split)
        _check_language("tgt", tgt, split)
        files = [_multi30k_file(split, lang, path) for lang in (src, tgt)]
        result[split] = load_parallel_files(*files)
    return result


def _multi30k_file(split, lang, path):
    name = f"{split}.{lang}.gz"
    if path is None:
        return download(
            name, MULTI30K_URL + name, "`path` (a folder of {split}.{lang}.gz files)",
            file_hash=MULTI30K_SHA256[name], cache_subdir=os.path.join("datasets", "multi30k"),
        )
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: no such folder (expected one holding {name}).")
    for candidate in (os.path.join(path, name), os.path.join(path, name[:-3])):
        if os.path.exists(candidate):
            return candidate
    raise FileNotFoundError(f"Multi30k file {name} (or {name[:-3]}) not found in {path}.")


def load_parallel_tsv(path, columns=(0, 1), limit=None):
    """Sentence pairs from a tab-separated file: `source<TAB>target[<TAB>anything]` per line.

    This reads the Tatoeba/Anki files (`eng<TAB>deu<TAB>attribution`); pick the sides with
    `columns` (e.g. `(1, 0)` to translate into the first column's language).

    Args:
        path: the file (plain or `.gz`).
        columns: `(source_column, target_column)`.
        limit: read at most this many pairs.

    Returns:
        `(source_sentences, target_sentences)`.

    Raises:
        ValueError: on a line with too few columns (the line number is given).

    Example:

    >>> import os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "deu.txt")
    >>> _ = open(p, "w").write("Go.\\tGeh.\\tCC-BY\\nHi.\\tHallo!\\tCC-BY\\n")
    >>> load_parallel_tsv(p, columns=(1, 0))
    (['Geh.', 'Hallo!'], ['Go.', 'Hi.'])
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, numbers.Integral) or limit < 0):
        raise ValueError(f"`limit` must be None (every pair) or an integer >= 0; received {limit!r}.")
    source, target = [], []
    need = max(columns) + 1
    for number, line in enumerate(_read_lines(path), start=1):
        if limit is not None and len(source) >= limit:  # checked first: `limit=0` reads none
            break
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < need:
            raise ValueError(
                f"{path}:{number}: expected at least {need} tab-separated columns "
                f"(source<TAB>target), found {len(fields)}: {line[:80]!r}."
            )
        source.append(fields[columns[0]].strip())
        target.append(fields[columns[1]].strip())
    return source, target


def split_pairs(source, target, fractions=(0.9, 0.05, 0.05), seed=0):
    """Shuffles pairs and splits them into `{"train", "val", "test"}` by `fractions`.

    Example:

    >>> parts = split_pairs([str(i) for i in range(20)], [str(-i) for i in range(20)])
    >>> [len(parts[k][0]) for k in ("train", "val", "test")]
    [18, 1, 1]
    """
    if len(source) != len(target):
        raise ValueError(f"split_pairs: {len(source)} source and {len(target)} target sentences: they must pair up.")
    try:
        parts = [float(f) for f in fractions]
    except (TypeError, ValueError):
        parts = None
    if parts is None or len(parts) != 3 or min(parts) < 0 or abs(sum(parts) - 1.0) > 1e-6:
        raise ValueError(
            "split_pairs: `fractions` must be three numbers >= 0 that sum to 1 (train, val, "
            f"test), e.g. (0.9, 0.05, 0.05); received {fractions!r}."
        )
    order = np.random.default_rng(seed).permutation(len(source))
    # Cut points from the cumulative shares, each rounded once: the three sizes add up to
    # the whole and an empty share stays empty ((0.5, 0.5, 0) of 5 is 2/3/0, not 2/2/1).
    total = sum(parts)
    n_train = round(parts[0] / total * len(source))
    n_seen = min(len(source), round((parts[0] + parts[1]) / total * len(source)))
    if parts[2] == 0:
        n_seen = len(source)
    cuts = {"train": order[:n_train], "val": order[n_train:n_seen], "test": order[n_seen:]}
    return {k: ([source[i] for i in idx], [target[i] for i in idx]) for k, idx in cuts.items()}


def synthetic_pairs(n, vocab=12, min_len=3, max_len=8, task="reverse", seed=0):
    """A generated parallel corpus: random "words" and their reversal (or copy).

    Example:

    >>> synthetic_pairs(1, seed=1)
    (['w6 w9 w11 w0 w1'], ['w1 w0 w11 w9 w6'])
    """
    if task not in ("reverse", "copy"):
        raise ValueError(f"`task` must be 'reverse' or 'copy'; received {task!r}.")
    rng = np.random.default_rng(seed)
    source, target = [], []
    for _ in range(n):
        words = [f"w{i}" for i in rng.integers(0, vocab, rng.integers(min_len, max_len + 1))]
        source.append(" ".join(words))
        target.append(" ".join(words[::-1] if task == "reverse" else words))
    return source, target


class SubwordTokenizer:
    """A sentencepiece subword tokenizer with the ids `Seq2Seq` expects.

    Ids: `pad=0, unk=1, bos=2, eos=3`. `encode` appends EOS; `decode` returns detokenized
    text (sentencepiece keeps the whitespace, so decoding restores the raw sentence).
    The whole model is one protobuf: `save`/`load` write and read one file.

    Args:
        model_proto: the serialized sentencepiece model (bytes).

    Example:

    >>> src, _ = synthetic_pairs(200)
    >>> tok = SubwordTokenizer.train(src, vocab_size=20, model_type="word")
    >>> ids = tok.encode(["w1 w2"])[0]
    >>> ids[-1] == tok.eos_id, tok.decode(ids)
    (True, 'w1 w2')

    Reference:
        Kudo & Richardson, "SentencePiece: A simple and language independent subword
        tokenizer and detokenizer for Neural Text Processing", EMNLP 2018.
    """

    pad_id, unk_id, bos_id, eos_id = 0, 1, 2, 3

    def __init__(self, model_proto):
        import sentencepiece as spm

        self.model_proto = bytes(model_proto)
        self.processor = spm.SentencePieceProcessor(model_proto=self.model_proto)

    @classmethod
    def train(cls, sentences, vocab_size=8000, model_type="unigram", character_coverage=1.0, seed=0):
        """Trains on `sentences` (the training side only, never val/test)."""
        try:
            import sentencepiece as spm
        except ImportError as err:
            raise ImportError("SubwordTokenizer needs sentencepiece: `pip install sentencepiece`.") from err
        spm.set_random_generator_seed(seed)
        buffer = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_writer=buffer,
            vocab_size=int(vocab_size),
            model_type=model_type,
            character_coverage=character_coverage,
            pad_id=cls.pad_id,
            unk_id=cls.unk_id,
            bos_id=cls.bos_id,
            eos_id=cls.eos_id,
            hard_vocab_limit=False,
            minloglevel=2,
            num_threads=1,
        )
        return cls(buffer.getvalue())

    @property
    def vocab_size(self):
        return self.processor.get_piece_size()

    def encode(self, sentences, add_eos=True):
        """Lists of ids (EOS appended) for a list of sentences."""
        return [ids + [self.eos_id] if add_eos else ids for ids in self.processor.encode(list(sentences))]

    def decode(self, ids):
        """Text for one list of ids (special ids dropped)."""
        return self.processor.decode([int(i) for i in ids if int(i) > self.eos_id])

    def pieces(self, ids):
        """The subword strings of `ids` (for plots)."""
        return [self.processor.id_to_piece(int(i)) for i in ids]

    def save(self, path):
        with open(path, "wb") as f:
            f.write(self.model_proto)

    @classmethod
    def load(cls, path):
        with open(path, "rb") as f:
            return cls(f.read())


def pad_batch(sequences, pad_id=0, multiple=1):
    """Right-pads lists of ids into an int32 array, its length a multiple of `multiple`.

    Example:

    >>> pad_batch([[5, 6, 3], [7, 3]]).tolist()
    [[5, 6, 3], [7, 3, 0]]
    """
    multiple = _checks.positive_int("multiple", multiple)
    length = max((len(s) for s in sequences), default=0)
    length = -(-length // multiple) * multiple
    out = np.full((len(sequences), length), pad_id, "int32")
    for i, s in enumerate(sequences):
        out[i, : len(s)] = s
    return out


class TranslationBatches(keras.utils.PyDataset):
    """Teacher-forcing batches `((source, target_in), target_out)` bucketed by length.

    Pairs of similar length are batched together (sorted by source and target length
    within shuffled chunks), so little of a batch is padding; lengths are rounded up to a
    multiple of `multiple` so that compiled backends (JAX, TensorFlow) see few shapes.
    `target_in` is BOS + target without its EOS, `target_out` the target with EOS.

    Args:
        source_ids, target_ids: lists of id lists (EOS at the end of each).
        batch_size: pairs per batch.
        shuffle: reshuffle the batches (and the chunks) every epoch.
        bos_id, pad_id: special ids.
        multiple: length rounding.
        seed: the shuffling seed; `set_epoch(e)` gives epoch `e`'s batches.
        remainder: what becomes of the pairs that do not fill a last batch: `"keep"` them
            in a shorter batch, `"drop"` them (other pairs each epoch when shuffling), or
            `"pad"` the batch up to `batch_size` rows whose target is all padding (the
            source is a copy of the batch's first), which a masked loss and metric
            (`MaskedSequenceLoss`, `masked_accuracy`) leave out: every batch has the same
            number of rows, as data parallelism over several devices needs.

    Example:

    >>> data = TranslationBatches([[5, 3], [6, 7, 3]], [[8, 3], [9, 3]], batch_size=2, multiple=1)
    >>> (source, target_in), target_out = data[0]
    >>> source.tolist(), target_in.tolist(), target_out.tolist()
    ([[5, 3, 0], [6, 7, 3]], [[2, 8], [2, 9]], [[8, 3], [9, 3]])
    >>> padded = TranslationBatches([[5, 3], [6, 7, 3], [4, 3]], [[8, 3], [9, 3], [7, 3]], batch_size=2,
    ...                             multiple=1, remainder="pad")
    >>> (source, target_in), target_out = padded[1]
    >>> source.tolist(), target_in.tolist(), target_out.tolist()
    ([[6, 7, 3], [6, 7, 3]], [[2, 9], [2, 0]], [[9, 3], [0, 0]])
    """

    def __init__(self, source_ids, target_ids, batch_size=64, shuffle=False, bos_id=2, pad_id=0, multiple=8, seed=0,
                 remainder="keep", **kwargs):
        super().__init__(**kwargs)
        if len(source_ids) != len(target_ids):
            raise ValueError(f"{len(source_ids)} source and {len(target_ids)} target sequences: they must pair up.")
        if remainder not in ("keep", "drop", "pad"):
            raise ValueError(f"`remainder` must be 'keep', 'drop' or 'pad'; received {remainder!r}.")
        self.remainder = remainder
        self.source_ids, self.target_ids = source_ids, target_ids
        self.batch_size = _checks.positive_int("batch_size", batch_size)
        self.shuffle = bool(shuffle)
        self.bos_id, self.pad_id = bos_id, pad_id
        self.multiple = _checks.positive_int("multiple", multiple)
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self._make_batches()
        self.epoch = 0

    def set_epoch(self, epoch):
        """The batches of epoch `epoch` (0-based): a function of `(seed, epoch)` only, the
        same that `on_epoch_end` reaches after `epoch` epochs, so that a resumed run sees
        what an uninterrupted one saw."""
        if epoch == self.epoch:
            return
        self.rng = np.random.default_rng(self.seed)
        for _ in range(epoch + 1):
            self._make_batches()
        self.epoch = epoch

    def _make_batches(self):
        n = len(self.source_ids)
        order = self.rng.permutation(n) if self.shuffle else np.arange(n)
        chunk = self.batch_size * 50
        batches = []
        for start in range(0, n, chunk):
            part = order[start : start + chunk]
            part = sorted(part, key=lambda i: (len(self.source_ids[i]), len(self.target_ids[i])))
            batches += [part[i : i + self.batch_size] for i in range(0, len(part), self.batch_size)]
        if self.remainder == "drop":
            batches = [b for b in batches if len(b) == self.batch_size]
        if self.shuffle:
            self.rng.shuffle(batches)
        self.batches = batches

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, index):
        rows = self.batches[index]
        fill = self.batch_size - len(rows) if self.remainder == "pad" else 0
        source = pad_batch([self.source_ids[i] for i in rows] + [self.source_ids[rows[0]]] * fill,
                           self.pad_id, self.multiple)
        target_out = pad_batch([self.target_ids[i] for i in rows] + [[]] * fill, self.pad_id, self.multiple)
        target_in = np.concatenate([np.full((len(target_out), 1), self.bos_id, "int32"), target_out[:, :-1]], axis=1)
        return (source, target_in), target_out

    def on_epoch_end(self):
        if self.shuffle:
            self._make_batches()
            self.epoch += 1
