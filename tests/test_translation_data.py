"""kerasrnn.datasets.translation on generated files: Multi30k layout, TSV, tokenizer, batches."""

import gzip
import os

import numpy as np
import pytest
from conftest import SHARED_DATA, requires_shared_data

from kerasrnn.datasets import translation as data

SHARED_MULTI30K = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "multi30k")


def _write_gz(path, lines):
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))


@pytest.fixture
def multi30k_dir(tmp_path):
    sentences = {
        "de": ["Ein Hund läuft.", "Zwei Männer spielen Fußball.", "Eine Frau liest."],
        "en": ["A dog runs.", "Two men play soccer.", "A woman reads."],
    }
    for split in ("train", "val", "test_2016_flickr"):
        for lang, lines in sentences.items():
            _write_gz(tmp_path / f"{split}.{lang}.gz", lines)
    return tmp_path


def test_multi30k_from_a_folder(multi30k_dir):
    splits = data.load_multi30k("de", "en", path=str(multi30k_dir))
    assert set(splits) == {"train", "val", "test_2016_flickr"}
    source, target = splits["test_2016_flickr"]
    assert source[1] == "Zwei Männer spielen Fußball." and target[1] == "Two men play soccer."
    reverse = data.load_multi30k("en", "de", splits=("val",), path=str(multi30k_dir))["val"]
    assert reverse == (target, source)


def test_multi30k_downloads_each_file_once_with_get_file(monkeypatch, multi30k_dir):
    calls = []

    def fake_get_file(fname, origin, file_hash, cache_subdir):
        calls.append((fname, origin, file_hash, cache_subdir))
        return str(multi30k_dir / fname)

    monkeypatch.setattr(data.keras.utils, "get_file", fake_get_file)
    data.load_multi30k("de", "en", splits=("train",))
    folder = os.path.join("datasets", "multi30k")
    assert calls == [
        ("train.de.gz", data.MULTI30K_URL + "train.de.gz", data.MULTI30K_SHA256["train.de.gz"], folder),
        ("train.en.gz", data.MULTI30K_URL + "train.en.gz", data.MULTI30K_SHA256["train.en.gz"], folder),
    ]
    assert data.MULTI30K_URL.startswith("https://raw.githubusercontent.com/multi30k/dataset/")
    # Every file a split and language can ask for has its SHA-256.
    for split, languages in data.MULTI30K_SPLITS.items():
        for lang in languages:
            assert len(data.MULTI30K_SHA256[f"{split}.{lang}.gz"]) == 64


@requires_shared_data("multi30k")
def test_shared_multi30k_files_match_their_hashes():
    import hashlib

    folder = os.path.join(SHARED_DATA, "multi30k")
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == data.MULTI30K_SHA256[name], name


def test_unknown_language_split_and_missing_file(multi30k_dir):
    with pytest.raises(ValueError, match="Unknown Multi30k language `src='xx'`"):
        data.load_multi30k("xx", "en", path=str(multi30k_dir))
    with pytest.raises(ValueError, match="has no 'cs' side"):
        data.load_multi30k("cs", "en", splits=("test_2017_flickr",), path=str(multi30k_dir))
    with pytest.raises(ValueError, match="Unknown Multi30k split"):
        data.load_multi30k("de", "en", splits=("dev",), path=str(multi30k_dir))
    with pytest.raises(ValueError, match="must differ"):
        data.load_multi30k("de", "de", path=str(multi30k_dir))
    with pytest.raises(FileNotFoundError, match="train.fr.gz"):
        data.load_multi30k("fr", "en", path=str(multi30k_dir))


def test_mismatched_parallel_files(tmp_path):
    _write_gz(tmp_path / "a.gz", ["eins", "zwei", "drei"])
    _write_gz(tmp_path / "b.gz", ["one", "two"])
    with pytest.raises(ValueError, match="has 3 lines and .* has 2"):
        data.load_parallel_files(tmp_path / "a.gz", tmp_path / "b.gz")


def test_parallel_tsv(tmp_path):
    path = tmp_path / "deu.txt"
    path.write_text("Go.\tGeh.\tCC-BY 2.0\n\nRun!\tLauf!\tCC-BY 2.0\nWow!\tPotzdonner!\tCC\n", encoding="utf-8")
    assert data.load_parallel_tsv(path) == (["Go.", "Run!", "Wow!"], ["Geh.", "Lauf!", "Potzdonner!"])
    assert data.load_parallel_tsv(path, columns=(1, 0), limit=2) == (["Geh.", "Lauf!"], ["Go.", "Run!"])
    assert data.load_parallel_tsv(path, limit=0) == ([], [])  # read none (it returned one pair)
    for limit in (-1, 1.5, True):
        with pytest.raises(ValueError, match="`limit` must be None"):
            data.load_parallel_tsv(path, limit=limit)
    assert data.load_parallel_tsv(path, limit=np.int64(1)) == (["Go."], ["Geh."])
    # A byte-order mark (Notepad's UTF-8) is not part of the first sentence.
    marked = tmp_path / "bom.tsv"
    marked.write_text("Go.\tGeh.\nHi.\tHallo\n", encoding="utf-8-sig")
    assert data.load_parallel_tsv(marked) == (["Go.", "Hi."], ["Geh.", "Hallo"])
    assert data.pad_batch([]).shape == (0, 0) and data.pad_batch([]).dtype == np.int32
    bad = tmp_path / "bad.tsv"
    bad.write_text("Go.\tGeh.\nno tab here\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.tsv:2: expected at least 2"):
        data.load_parallel_tsv(bad)


def test_split_pairs_is_a_partition():
    source = [f"s{i}" for i in range(100)]
    target = [f"t{i}" for i in range(100)]
    parts = data.split_pairs(source, target, seed=3)
    seen = sorted(s for k in parts for s in parts[k][0])
    assert seen == sorted(source)
    for src, tgt in parts.values():
        assert all(s[1:] == t[1:] for s, t in zip(src, tgt))  # still aligned


@pytest.mark.parametrize("n, fractions, sizes", [
    (10, (0.45, 0.45, 0.1), [4, 5, 1]),  # each share rounded on its own gave 4/4/2
    (5, (0.5, 0.5, 0.0), [2, 3, 0]),  # an empty share stays empty (was 2/2/1)
    (20, (0.9, 0.05, 0.05), [18, 1, 1]),
    (1200, (0.8, 0.1, 0.1), [960, 120, 120]),
    (7, (0.0, 1.0, 0.0), [0, 7, 0]),
])
def test_split_pairs_sizes_follow_the_cumulative_shares(n, fractions, sizes):
    source = [str(i) for i in range(n)]
    parts = data.split_pairs(source, source, fractions)
    assert [len(parts[k][0]) for k in ("train", "val", "test")] == sizes


def test_subword_tokenizer_round_trip(tmp_path):
    sentences = ["Ein Hund läuft über die Wiese.", "Zwei Hunde spielen im Schnee.", "Ein Mann fährt Fahrrad."] * 30
    tok = data.SubwordTokenizer.train(sentences, vocab_size=60)
    ids = tok.encode(["Ein Hund spielt im Schnee."])[0]
    assert ids[-1] == tok.eos_id and min(ids) >= tok.unk_id
    assert tok.decode(ids) == "Ein Hund spielt im Schnee."  # detokenized: the raw text
    tok.save(tmp_path / "t.spm")
    again = data.SubwordTokenizer.load(tmp_path / "t.spm")
    assert again.encode(["Ein Mann."]) == tok.encode(["Ein Mann."])
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, 2, 3)
    assert tok.processor.id_to_piece(0) == "<pad>"


def test_translation_batches_pair_up_and_shift():
    rng = np.random.default_rng(0)
    source = [list(rng.integers(4, 50, rng.integers(2, 20))) + [3] for _ in range(250)]
    target = [list(rng.integers(4, 50, rng.integers(2, 20))) + [3] for _ in range(250)]
    batches = data.TranslationBatches(source, target, batch_size=32, shuffle=True, multiple=8)
    seen = 0
    for (src, target_in), target_out in (batches[i] for i in range(len(batches))):
        assert src.shape[1] % 8 == 0 and target_out.shape == target_in.shape
        np.testing.assert_array_equal(target_in[:, 0], 2)
        np.testing.assert_array_equal(target_in[:, 1:], target_out[:, :-1])
        for row_src, row_out in zip(src, target_out):
            i = source.index(list(row_src[row_src != 0]))
            assert list(row_out[row_out != 0]) == target[i]
        seen += len(src)
    assert seen == 250
    with pytest.raises(ValueError, match="must pair up"):
        data.TranslationBatches(source, target[:-1])


def test_synthetic_pairs():
    source, target = data.synthetic_pairs(5, task="copy", seed=2)
    assert source == target
    source, target = data.synthetic_pairs(5, seed=2)
    assert all(s.split()[::-1] == t.split() for s, t in zip(source, target))


@requires_shared_data("multi30k", "train.de.gz")
def test_real_multi30k_sizes():
    splits = data.load_multi30k("de", "en", path=SHARED_MULTI30K)
    assert [len(splits[k][0]) for k in ("train", "val", "test_2016_flickr")] == [29000, 1014, 1000]
