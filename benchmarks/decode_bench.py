"""Decoding speed: `Seq2Seq.translate` with compiled steps vs op by op, as a ratio.

The translation recipe's model (bi-GRU 256 encoder, GRU 512 decoder, Luong attention,
vocabularies of 6,000 and 4,000) with random weights decodes batches of random source
sentences of random lengths, as the recipe's evaluation does (batches of 100, each
padded to its longest sentence, 12 to 40 tokens). Each round decodes every batch greedily and with beam
search, once with the compiled steps and once op by op (`model.run_eagerly = True`), in
alternating order. The first round includes compiling (a new program per padded shape
on JAX; per-op compiles too, op by op on JAX); the later rounds show the steady state.

    python benchmarks/decode_bench.py                      # KERAS_BACKEND picks the backend
    python benchmarks/decode_bench.py --batches 4 --rounds 2 --steps 10

A random model never emits the end token, so every sentence runs `--steps` steps: a
fixed amount of work per batch, which is what a comparison needs.
"""

import argparse
import statistics
import time

import keras
import numpy as np

from kerasrnn.seq2seq import Seq2Seq


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=10, help="batches of 100 sentences (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the first includes compiling")
    parser.add_argument("--steps", type=int, default=30, help="decoder steps per sentence")
    parser.add_argument("--beam", type=int, default=5, help="beam size of the beam search")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="a tiny model and batches of 8 (smoke test)")
    return parser.parse_args(argv)


def decode_all(model, batches, beam, steps):
    started = time.perf_counter()
    for source in batches:
        model.translate(source, beam_size=beam, max_length=steps)
    return time.perf_counter() - started


def _later(times):
    """The rounds after the first (which compiles), or the one round there is."""
    return times[1:] or times


def main(argv=None):
    args = parse(argv)
    keras.utils.set_random_seed(args.seed)
    if args.tiny:
        vocab, size, rows = 30, {"embedding_dim": 4, "encoder_units": 4, "decoder_units": 8}, 8
    else:
        vocab, size, rows = 6000, {"embedding_dim": 256, "encoder_units": 256, "decoder_units": 512}, 100
    model = Seq2Seq(vocab, 4000 if not args.tiny else vocab, **size)
    model.build()
    rng = np.random.default_rng(args.seed)
    batches = []
    for _ in range(args.batches):
        longest = rng.integers(12, 41)  # each batch padded to its own longest sentence
        lengths = rng.integers(5, longest + 1, size=rows)
        lengths[0] = longest
        source = rng.integers(4, vocab, size=(rows, longest))
        batches.append(np.where(np.arange(longest) < lengths[:, None], source, 0))
    print(f"backend {keras.backend.backend()}: {args.batches} batches of {rows}, the longest "
          "sentence of each 12-40 tokens, "
          f"{args.steps} steps, seconds per pass over all batches", flush=True)
    for beam in sorted({1, args.beam}):
        times = {"compiled": [], "op by op": []}
        for r in range(args.rounds):
            order = ["compiled", "op by op"] if r % 2 == 0 else ["op by op", "compiled"]
            for mode in order:
                model.run_eagerly = mode == "op by op"
                times[mode].append(decode_all(model, batches, beam, args.steps))
        print(f"beam {beam}:", flush=True)
        for mode, ts in times.items():
            later = _later(ts)
            print(f"  {mode:9s} first round {ts[0]:7.2f} s   later rounds min {min(later):7.2f} s  "
                  f"median {statistics.median(later):7.2f} s", flush=True)
        c, e = times["compiled"], times["op by op"]
        print(f"  op by op / compiled: first round {e[0] / c[0]:.2f}x, later rounds (median) "
              f"{statistics.median(_later(e)) / statistics.median(_later(c)):.2f}x", flush=True)


if __name__ == "__main__":
    main()
