"""Text loaders (IMDB in the Stanford layout, MR) and tokenization, on generated files."""

import io
import os
import tarfile

import numpy as np
import pytest
from conftest import SHARED_DATA, requires_shared_data

from kerasrnn.datasets import (
    WordVectorizer,
    encode_texts,
    load_imdb,
    load_mr,
    load_vectorizer,
    make_vectorizer,
    save_vectorizer,
)

# Generated reviews: (split, label, file name, text). Ids sort numerically (2 before 10).
REVIEWS = [
    ("train", "pos", "10_9.txt", "a fine film<br />truly"),
    ("train", "pos", "2_8.txt", "loved it"),
    ("train", "neg", "0_1.txt", "dull and slow"),
    ("test", "pos", "5_10.txt", "superb acting"),
    ("test", "neg", "3_2.txt", "weak plot, caf\u00e9 scene"),
    ("test", "neg", "1_4.txt", "not good"),
]


def _expected(split):
    rows = [r for r in REVIEWS if r[0] == split]
    rows.sort(key=lambda r: (r[1], int(r[2].split("_")[0])))
    return [r[3] for r in rows], [1 if r[1] == "pos" else 0 for r in rows]


def _write_folder(root):
    base = os.path.join(root, "aclImdb")
    for split, label, name, text in REVIEWS:
        os.makedirs(os.path.join(base, split, label), exist_ok=True)
        with open(os.path.join(base, split, label, name), "w", encoding="utf-8") as f:
            f.write(text)
    # Files the loader must ignore: the unlabeled reviews, the vocabulary, a README.
    os.makedirs(os.path.join(base, "train", "unsup"))
    with open(os.path.join(base, "train", "unsup", "0_0.txt"), "w") as f:
        f.write("unlabeled")
    for name in ("imdb.vocab", "README"):
        with open(os.path.join(base, name), "w") as f:
            f.write("x")
    return base


def _write_tarball(path, members):
    with tarfile.open(path, "w:gz") as archive:
        for name, text in members:
            data = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def _check_imdb(result):
    (x_train, y_train), (x_test, y_test) = result
    assert (x_train, y_train.tolist()) == _expected("train")
    assert (x_test, y_test.tolist()) == _expected("test")
    assert y_train.dtype == np.int32


def test_imdb_from_folder(tmp_path):
    base = _write_folder(tmp_path)
    _check_imdb(load_imdb(base))
    _check_imdb(load_imdb(tmp_path))  # the folder that holds aclImdb/ works too
    (_, _, train_ids), (_, _, test_ids) = load_imdb(base, return_ids=True)
    assert train_ids.tolist() == [0, 2, 10] and test_ids.tolist() == [1, 3, 5]


def test_imdb_from_tarball_streams_members(tmp_path):
    members = [(f"aclImdb/{s}/{label}/{n}", t) for s, label, n, t in REVIEWS]
    members += [("aclImdb/train/unsup/0_0.txt", "unlabeled"), ("aclImdb/imdb.vocab", "x")]
    path = _write_tarball(tmp_path / "aclImdb_v1.tar.gz", members[::-1])  # any member order
    _check_imdb(load_imdb(path))
    assert not os.path.exists(tmp_path / "aclImdb")  # nothing extracted


def test_imdb_errors_name_the_path_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_imdb(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"no reviews in train/neg, train/pos.*aclImdb layout"):
        load_imdb(tmp_path / "empty")
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"this is not an archive")
    with pytest.raises(ValueError, match="cannot read .* archive"):
        load_imdb(bad)
    only_train = [(f"aclImdb/{s}/{label}/{n}", t) for s, label, n, t in REVIEWS if s == "train"]
    with pytest.raises(ValueError, match="test/neg, test/pos"):
        load_imdb(_write_tarball(tmp_path / "train_only.tar.gz", only_train))


def _write_mr(folder, n=20, encoding="utf-8"):
    os.makedirs(folder, exist_ok=True)
    for label, word in (("pos", "good"), ("neg", "bad")):
        lines = [f"{word} caf\u00e9 {i}" for i in range(n)]
        with open(os.path.join(folder, f"rt-polarity.{label}"), "wb") as f:
            f.write(("\n".join(lines) + "\n").encode(encoding))


def test_mr_split_is_stratified_seeded_and_disjoint(tmp_path):
    _write_mr(tmp_path, n=20)
    (x_train, y_train), (x_test, y_test) = load_mr(tmp_path)
    assert (len(x_train), len(x_test)) == (36, 4)
    assert y_test.tolist().count(1) == 2 and y_train.tolist().count(1) == 18
    assert not set(x_train) & set(x_test)
    assert all(("good" in t) == bool(y) for t, y in zip(x_train + x_test, [*y_train, *y_test]))
    again = load_mr(tmp_path)
    assert again[1][0] == x_test and again[0][0] == x_train  # fixed split
    assert load_mr(tmp_path, seed=1)[1][0] != x_test


def test_mr_reads_latin1_and_the_tarball(tmp_path):
    _write_mr(tmp_path / "latin", encoding="latin-1")
    (x_train, _), _ = load_mr(tmp_path / "latin")
    assert any("caf\u00e9" in t for t in x_train)  # decoded, not mojibake
    _write_mr(tmp_path / "utf")
    members = []
    for label in ("pos", "neg"):
        with open(tmp_path / "utf" / f"rt-polarity.{label}", encoding="utf-8") as f:
            members.append((f"rt-polaritydata/rt-polarity.{label}", f.read()))
    from_tar = load_mr(_write_tarball(tmp_path / "rt.tar.gz", members))
    from_folder = load_mr(tmp_path / "utf")
    assert from_tar[1][0] == from_folder[1][0]


def test_mr_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_mr(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="no rt-polarity.pos and rt-polarity.neg"):
        load_mr(tmp_path)
    with pytest.raises(ValueError, match="test_fraction"):
        load_mr(tmp_path, test_fraction=1.5)


def test_vectorizer_encodes_truncates_and_round_trips(tmp_path):
    texts = ["the film was good", "the film<br />was BAD!", "the the the"]
    vectorizer = make_vectorizer(texts, max_tokens=10)
    vocab = [str(w) for w in vectorizer.get_vocabulary()]
    assert vocab[:5] == ["", "[UNK]", "the", "was", "film"] and "br" not in vocab
    ids = {w: i for i, w in enumerate(vocab)}
    encoded = encode_texts(vectorizer, ["The film was great", "film"], 3, truncate="pre")
    assert encoded.tolist() == [[ids["film"], ids["was"], 1], [ids["film"], 0, 0]]
    post = encode_texts(vectorizer, ["The film was great"], 3, truncate="post")
    assert post.tolist() == [[ids["the"], ids["film"], ids["was"]]]
    save_vectorizer(vectorizer, tmp_path / "vocabulary.json")
    restored = load_vectorizer(tmp_path / "vocabulary.json")
    np.testing.assert_array_equal(
        encode_texts(restored, texts, 6), encode_texts(vectorizer, texts, 6)
    )
    with pytest.raises(ValueError, match="truncate"):
        encode_texts(vectorizer, texts, 3, truncate="middle")


def test_a_word_with_a_lone_surrogate_is_learned_and_saved(tmp_path):
    # Text read with errors="surrogateescape" keeps undecodable bytes as lone
    # surrogates: `adapt` raised UnicodeEncodeError ranking them, `save_vectorizer` too.
    texts = ["caf\udce9 ok ok", "x café"]
    vectorizer = make_vectorizer(texts, max_tokens=10)
    assert vectorizer.get_vocabulary() == ["", "[UNK]", "ok", "x", "caf\udce9", "café"]
    save_vectorizer(vectorizer, tmp_path / "v.json")
    restored = load_vectorizer(tmp_path / "v.json")
    assert restored.get_vocabulary() == vectorizer.get_vocabulary()
    np.testing.assert_array_equal(restored(texts), vectorizer(texts))
    save_vectorizer(make_vectorizer(["café"], max_tokens=5), tmp_path / "plain.json")
    assert "café" in (tmp_path / "plain.json").read_text(encoding="utf-8")  # readable where it can be


def _shout(text):
    return text.upper()


@pytest.mark.parametrize("standardize", [None, "lower", "review"])
def test_a_saved_vectorizer_keeps_its_standardization(standardize, tmp_path):
    # Every setting but a name came back as "review" (None read "Good!" as "good").
    texts = ["Good film!", "good, GOOD film"]
    vectorizer = make_vectorizer(texts, max_tokens=10, standardize=standardize)
    save_vectorizer(vectorizer, tmp_path / "v.json")
    restored = load_vectorizer(tmp_path / "v.json")
    assert restored.get_config() == vectorizer.get_config()
    np.testing.assert_array_equal(restored(texts), vectorizer(texts))


def test_a_vectorizer_with_a_function_needs_it_back_to_load(tmp_path):
    texts = ["good film", "Good GOOD"]
    vectorizer = make_vectorizer(texts, max_tokens=10, standardize=_shout)
    save_vectorizer(vectorizer, tmp_path / "v.json")
    with pytest.raises(ValueError, match="standardize=.*_shout"):
        load_vectorizer(tmp_path / "v.json")
    restored = load_vectorizer(tmp_path / "v.json", standardize=_shout)
    np.testing.assert_array_equal(restored(texts), vectorizer(texts))
    assert restored.get_vocabulary() == ["", "[UNK]", "GOOD", "FILM"]


@requires_shared_data("rt-polarity")
def test_mr_real_split_sizes():
    (x_train, _y_train), (x_test, y_test) = load_mr(os.path.join(SHARED_DATA, "rt-polarity"))
    assert (len(x_train), len(x_test)) == (9596, 1066)
    assert int(y_test.sum()) == 533


# Texts that exercise every detail of TensorFlow's string ops: ASCII-only lower-casing,
# RE2's `\s` (no `\v`) in the line-break pattern, the ASCII-whitespace split (`\v` cuts,
# `\xa0`, `\u2003`, `\x1c`, `\x85` do not), punctuation inside and around words, and ties
# in frequency (broken by the words' UTF-8 bytes).
TRICKY_TEXTS = [
    "ÉCOLE Été A\xa0B C\u2003D E\vF G\x1cH I\x85J K\u3000L",
    "x<br\t/>y<br\x0b/>z<BR />w<br>v<br/>u",
    "It's a GREAT film!!! (10/10) -- don't miss it; [UNK] is not a word",
    "İstanbul ΣΑΣ naïve café ﬁne  tabs\tand\nnewlines\r\nend",
    "b a c a b c z y x zz yy xx ä á a",
]


def _tensorflow_vectorizer(texts, max_tokens):
    tf = pytest.importorskip("tensorflow")
    import keras

    def standardize(x):
        x = tf.strings.lower(x)
        x = tf.strings.regex_replace(x, r"<br\s*/?>", " ")
        return tf.strings.regex_replace(x, r"[!\"#$%&()\*\+,\-\./:;<=>?@\[\\\]^_`{|}~']", "")

    layer = keras.layers.TextVectorization(max_tokens=max_tokens, standardize=standardize, output_mode="int")
    layer.adapt(list(texts), batch_size=1024)
    return layer


def _assert_same_as_text_vectorization(texts, max_tokens, probe):
    import keras

    reference = _tensorflow_vectorizer(texts, max_tokens)
    ours = make_vectorizer(texts, max_tokens=max_tokens)
    assert ours.get_vocabulary() == [w.decode() if isinstance(w, bytes) else str(w)
                                     for w in reference.get_vocabulary()]
    expected = keras.ops.convert_to_numpy(reference(probe))  # a tensor of this backend
    np.testing.assert_array_equal(ours(probe), expected)


def test_word_vectorizer_equals_text_vectorization_on_tricky_text():
    _assert_same_as_text_vectorization(TRICKY_TEXTS, 40, TRICKY_TEXTS + ["unseen words É é"])
    _assert_same_as_text_vectorization(TRICKY_TEXTS, 8, TRICKY_TEXTS)  # the ties at the cut


@pytest.mark.slow
@requires_shared_data("aclImdb_v1_labeled.tar.gz")
def test_word_vectorizer_equals_text_vectorization_on_imdb():
    (train, _), (test, _) = load_imdb(os.path.join(SHARED_DATA, "aclImdb_v1_labeled.tar.gz"))
    _assert_same_as_text_vectorization(train, 30000, test[:2000])


def test_word_vectorizer_needs_no_tensorflow_and_checks_its_arguments():
    import subprocess
    import sys

    # Block TensorFlow in a fresh process: the vectorizer still works (JAX backend).
    code = (
        "import sys; sys.modules['tensorflow'] = None\n"
        "from kerasrnn.datasets import make_vectorizer, encode_texts\n"
        "v = make_vectorizer(['a b b', 'c'], max_tokens=5)\n"
        "print(encode_texts(v, ['b a d'], 4).tolist())\n"
    )
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    if "No module named 'jax'" in done.stderr:
        pytest.skip("jax is not installed")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[[2, 4, 1, 0]]"  # b (twice), then the tie c before a
    with pytest.raises(ValueError, match="max_tokens"):
        WordVectorizer(max_tokens=2)
    assert WordVectorizer(max_tokens=np.int64(5)).max_tokens == 5
    # As TextVectorization: a repeated word would leave an id that never comes out.
    with pytest.raises(ValueError, match=r"the vocabulary repeats \['a'\]"):
        WordVectorizer(vocabulary=["", "[UNK]", "a", "a", "b"])
    with pytest.raises(ValueError, match="standardize"):
        WordVectorizer(standardize="upper")


@pytest.mark.parametrize("load", ["load_imdb", "load_mr"])
def test_a_failed_download_says_how_to_go_on_offline(monkeypatch, load):
    import keras

    from kerasrnn import datasets

    def offline(*args, **kwargs):  # keras.utils.get_file's own bare Exception
        raise Exception("URL fetch failure on https://x: None -- [Errno -2] Name or service not known")  # noqa: TRY002

    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(ConnectionError, match=r"could not download https://.*pass the local copy as `path`"):
        getattr(datasets, load)()

    def corrupt(*args, **kwargs):  # a bad hash: get_file's ValueError, as raised
        raise ValueError("Incomplete or corrupted file detected.")

    monkeypatch.setattr(keras.utils, "get_file", corrupt)
    with pytest.raises(ValueError, match="corrupted"):
        getattr(datasets, load)()
