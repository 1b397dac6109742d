"""keras-hub's samplers driving a kerasrnn decoder (`kerasrnn.seq2seq.generate`).

keras-hub is optional and pulls TensorFlow: these tests run in `nox -s hub`, which
installs it from PyPI, and skip elsewhere. The greedy choices of every sampler must be
`Seq2Seq.translate`'s greedy decoding, token for token: that checks the plumbing (the
prompt, the index, the cache of decoder states and attention memory).
"""

import numpy as np
import pytest

keras_hub = pytest.importorskip("keras_hub")

from kerasrnn.seq2seq import Seq2Seq, generate

SOURCE = np.array([[5, 6, 7, 8, 3], [9, 10, 3, 0, 0], [11, 3, 0, 0, 0]], "int32")


@pytest.fixture(scope="module", params=["luong", "bahdanau"])
def model(request):
    import keras

    keras.utils.set_random_seed(0)
    model = Seq2Seq(16, 16, embedding_dim=8, encoder_units=8, decoder_units=12, attention=request.param)
    model.build()
    return model


@pytest.mark.parametrize("sampler", [
    lambda: keras_hub.samplers.GreedySampler(),
    lambda: keras_hub.samplers.BeamSampler(num_beams=1),
    lambda: keras_hub.samplers.TopKSampler(k=1, seed=0),
    lambda: keras_hub.samplers.ContrastiveSampler(k=3, alpha=0.0),
], ids=["greedy", "beam1", "topk1", "contrastive_alpha0"])
def test_greedy_choices_equal_translate(model, sampler):
    expected, _ = model.translate(SOURCE, beam_size=1, max_length=9)
    assert generate(model, SOURCE, sampler(), max_length=9) == expected


@pytest.mark.parametrize("sampler", [
    lambda: keras_hub.samplers.BeamSampler(num_beams=3),
    lambda: keras_hub.samplers.TopPSampler(p=0.9, seed=1),
    lambda: keras_hub.samplers.RandomSampler(seed=2),
    lambda: keras_hub.samplers.ContrastiveSampler(k=3, alpha=0.6),
], ids=["beam3", "topp", "random", "contrastive"])
def test_every_sampler_decodes(model, sampler):
    tokens = generate(model, SOURCE, sampler(), max_length=9)
    assert len(tokens) == len(SOURCE)
    for row in tokens:
        assert len(row) <= 9 and all(0 <= t < 16 and t != model.eos_id for t in row)
