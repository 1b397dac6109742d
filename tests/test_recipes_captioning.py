"""recipes/captioning.py: digit image → its name spelled by a decoder RNN (--smoke)."""

import importlib.util
import json
import os

import keras
import numpy as np
import pytest

from recipes import captioning

has_sklearn = importlib.util.find_spec("sklearn") is not None


def test_encode_decode_and_scores():
    inputs, targets = captioning.encode(["six", "seven"])
    ids = captioning.CHAR_ID
    assert inputs[0].tolist() == [captioning.START, ids["s"], ids["i"], ids["x"], 0, 0]
    assert targets[0].tolist() == [ids["s"], ids["i"], ids["x"], captioning.END, 0, 0]
    assert captioning.MAX_LEN == 6  # "three", "seven", "eight" + </s>
    assert [captioning.decode(t) for t in targets] == ["six", "seven"]
    assert captioning.decode([ids["o"], ids["n"], ids["e"], captioning.END, ids["e"]]) == "one"
    # exact match 1/2; characters: "six$" vs "six$" 4/4, "sevem$" vs "seven$" 5/6.
    scores = captioning.scores(["six", "sevem"], ["six", "seven"])
    assert scores["exact_match"] == 0.5
    assert scores["char_accuracy"] == pytest.approx((1 + 5 / 6) / 2)


@pytest.mark.skipif(not has_sklearn, reason="scikit-learn is not installed")
def test_smoke(tmp_path):
    out = str(tmp_path / "cap")
    results = captioning.main(["--smoke", "--verbose", "0", "--output", out,
                               "--backend", keras.backend.backend()])
    with open(os.path.join(out, "results.json")) as f:
        assert json.load(f)["metrics"]["rows"] == results["metrics"]["rows"]
    test = next(r for r in results["metrics"]["rows"] if r["split"] == "test")
    assert test["n"] == 60 and 0 <= test["exact_match"] <= 1
    assert [r["epoch"] for r in results["history"]["speller_gru"]] == [1]
    for name in ("plots/test_captions.png", "plots/training_curves.png", "checkpoints/speller_gru/epoch-001.keras"):
        assert os.path.exists(os.path.join(out, name)), name


@pytest.mark.skipif(not has_sklearn, reason="scikit-learn is not installed")
def test_lstm_decoder_takes_two_initial_states():
    config = captioning.Config(decoder="lstm", units=8)
    model = captioning.build_model(config)
    images = np.random.RandomState(0).rand(3, 64).astype("float32")
    tokens = np.zeros((3, captioning.MAX_LEN), "int32")
    tokens[:, 0] = captioning.START
    logits = keras.ops.convert_to_numpy(model([images, tokens]))
    assert logits.shape == (3, captioning.MAX_LEN, len(captioning.VOCAB))
    # The image sets the initial state: different images, different first letters' logits.
    assert not np.allclose(logits[0, 0], logits[1, 0])


def test_bad_decoder_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="--decoder must be one of"):
        captioning.main(["--decoder", "transformer", "--output", str(tmp_path)])


@pytest.mark.skipif(not has_sklearn, reason="the digits come from scikit-learn")
@pytest.mark.parametrize("fractions, empty", [(("0.5", "0.4999"), "0 train"), (("0.2", "0.001"), "0 valid")])
def test_fractions_that_round_a_split_to_nothing_are_a_clear_error(tmp_path, fractions, empty):
    # They pass the (0, 1) checks; the rounding left no training images (fit then
    # failed with StopIteration) or no validation images (NaN scores in results.json).
    test, valid = fractions
    with pytest.raises(SystemExit, match=rf"leave a split empty \(.*{empty}.*\): each needs at least one"):
        captioning.main(["--smoke", "--test-fraction", test, "--valid-fraction", valid, "--output", str(tmp_path)])
    assert not os.path.exists(tmp_path / "results.json")
