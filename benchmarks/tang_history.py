"""Per-word cost of the Tang beam's feature bookkeeping at word i of a long story, before and after
`FeatureHistory` (parent pointers + rebuilding only the words inside the scored TRs' Lanczos support).

  before: every word, each hypothesis's whole feature history `(B, i, H)` was re-indexed by parent and the new word
          appended (a copy), and the past-feature einsum ran over all i words;
  after:  one `(B, H)` array per word; the einsum runs over the ~40 words the scored TRs can see.

Synthetic features (B = 20 hypotheses, H = 576 = SmolLM2-135M, 10 TR rows whose support is the last 40 words), one
thread. Word i = 1500 is the end of a 10-minute story at 2.5 words/s.

    .venv/bin/python benchmarks/tang_history.py [--words 150 750 1500]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from _common import host_info, print_table, write_json
from brainllm.baselines.tang.decoder import FeatureHistory

WIDTH, HIDDEN, TR_ROWS, SUPPORT = 20, 576, 10, 40


def _timed(fn, repeats: int = 5) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return 1e3 * (time.perf_counter() - start) / repeats


def measure(i: int) -> dict:
    rng = np.random.default_rng(0)
    copied = rng.standard_normal((WIDTH, i, HIDDEN)).astype(np.float32)
    history = FeatureHistory(HIDDEN)
    for _ in range(i):
        history.append(rng.integers(0, WIDTH, WIDTH), rng.standard_normal((WIDTH, HIDDEN)).astype(np.float32))
    rows = torch.zeros(TR_ROWS, i + 1)
    rows[:, i - SUPPORT:i] = torch.rand(TR_ROWS, SUPPORT)
    parents = rng.integers(0, WIDTH, WIDTH)
    new = rng.standard_normal((WIDTH, HIDDEN)).astype(np.float32)

    def before():
        torch.einsum("rw,bwh->brh", rows[:, :i], torch.as_tensor(copied))
        np.concatenate([copied[parents], new[:, None]], axis=1)

    def after():
        start = int(torch.nonzero(rows[:, :i].any(0)).flatten()[0])
        torch.einsum("rw,bwh->brh", rows[:, start:i], torch.from_numpy(history.window(start, np.arange(WIDTH))))

    b, a = _timed(before), _timed(after)
    return {"word": i, "before_ms": round(b, 2), "after_ms": round(a, 2), "speedup": round(b / a, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--words", type=int, nargs="+", default=[150, 750, 1500])
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [measure(i) for i in args.words]
    print_table(rows, ["word", "before_ms", "after_ms", "speedup"])
    print(f"wrote {write_json('tang_history', {'host': host_info(), 'rows': rows})}")


if __name__ == "__main__":
    main()
