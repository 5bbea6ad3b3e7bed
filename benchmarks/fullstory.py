"""Seconds per decoded minute of story for the two full-story decoders, SmolLM2-135M, simulated story design.

  * Tang et al. 2023: beam search scored by the encoding model (fitted here on the other stories, few bootstraps);
  * BrainLLM full story: brain-conditioned beam search (an untrained adapter: the cost does not depend on training).
Both decode the same held-out story at the same (true) word times; the null sampler is timed too.

    .venv/bin/python benchmarks/fullstory.py [--tang-width 20] [--brain-width 3] [--seconds 120]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from _common import host_info, load_brainllm, matmul_peak, peak_rss_mb, print_table, write_json
from brainllm.baselines.tang.decoder import TangDecoderConfig, decode
from brainllm.baselines.tang.encoding import EncodingModel
from brainllm.baselines.tang.model import tr_features
from brainllm.data.simulate import simulate
from brainllm.decoding.beam import null_sequences
from brainllm.decoding.fullstory import BrainPrefix, StoryDecoderConfig, decode_brainllm
from brainllm.decoding.wordlm import WordLM


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tang-width", type=int, default=20)
    parser.add_argument("--brain-width", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=120.0, help="decode the first this many seconds")
    parser.add_argument("--backbone", default="smollm2-135m")
    args = parser.parse_args()
    info = host_info()
    peak = matmul_peak()
    print(f"host: {info}\nmeasured matmul peak float32: {peak:.1f} GFLOP/s")
    ds = simulate(design="story", passages=40, stories=4, voxels=900, components=200, snr=1.0, seed=0).dataset
    model, encoder = load_brainllm(args.backbone, ds)
    model.eval()
    lm = WordLM(model.backbone, encoder.tokenizer, context_words=10)
    train, test = ds.runs[:-1], ds.runs[-1]
    feats = [tr_features(lm, r) for r in train]
    enc = EncodingModel(n_boots=5, n_voxels=900).fit(
        [x for _, x in feats], [np.asarray(ds.raw[r.rows[0]:r.rows[1]]) for r in train],
        word_features=np.concatenate([w for w, _ in feats]))
    times = np.asarray(test.word_times)
    times = times[times < times[0] + args.seconds]
    minutes = (times[-1] - times[0]) / 60
    tr_times = np.asarray(test.tr_times)
    rows = []

    def run(name: str, fn) -> None:
        start = time.perf_counter()
        fn()
        sec = time.perf_counter() - start
        rows.append({"decoder": name, "words": len(times), "story_minutes": round(minutes, 2),
                     "seconds": round(sec, 1), "s_per_story_minute": round(sec / minutes, 1)})

    raw = np.asarray(ds.raw[test.rows[0]:test.rows[1]])
    run(f"tang (width {args.tang_width})",
        lambda: decode(lm, enc, raw, tr_times, times, TangDecoderConfig(width=args.tang_width), progress=False))
    prefix = BrainPrefix(model, ds.frames, test, 1, 4)
    run(f"brainllm (width {args.brain_width})",
        lambda: decode_brainllm(lm, times, tr_times, prefix, StoryDecoderConfig(width=args.brain_width),
                                progress=False))
    run("null sampler (10 sequences, beam 10 each, batched)", lambda: null_sequences(lm, len(times), 10))
    print_table(rows, ["decoder", "words", "story_minutes", "seconds", "s_per_story_minute"])
    print(f"peak RSS {peak_rss_mb():.0f} MB")
    print(f"wrote {write_json('fullstory', {'host': info, 'matmul_peak_gflops': peak, 'rows': rows})}")


if __name__ == "__main__":
    main()
