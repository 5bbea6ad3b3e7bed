"""How much does the Bayesian decoder's output depend on the frames, as a function of λ and of the number of
candidates? Validation split only (never test).

For a run with a tuned decoder: BrainLLM's candidates for every validation sample are proposed and scored once
under the true frames and once under a derangement of them (other passages' frames: PerBrainLLM), then for each λ
and number of candidates the picked texts' mean BLEU-1 (the evaluation's `bleu1_per_sample`) under both, their
difference, and the sign-flip p over passages. `brainllm tune-decoder` picks λ by the true-frames BLEU-1 alone; this
table shows what that choice leaves of the brain dependence.

    .venv/bin/python benchmarks/bayes_weight.py RUN [--weights 0 0.3 1 3 10] [--candidates 4 16]
"""

from __future__ import annotations

import argparse

import numpy as np

from _common import host_info, print_table, write_json
from brainllm.decoding.bayes import load_scorer, score_candidates
from brainllm.evaluation.stats import sign_flip_test
from brainllm.experiments.decoder_tuning import bleu1
from brainllm.model.collate import permute_frames
from brainllm.runs import load_run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run")
    parser.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.3, 1.0, 3.0, 10.0])
    parser.add_argument("--candidates", type=int, nargs="+", default=[4, 16])
    args = parser.parse_args()
    run = load_run(args.run)
    cfg = run.config.generation
    if cfg.rerank != "encoding":
        raise SystemExit(f"{args.run} has no tuned Bayesian decoder: run `brainllm tune-decoder {args.run}` first.")
    scorer = load_scorer(run)
    valid = run.encoder.encode_all(run.dataset, run.split.valid)
    refs = [run.dataset.by_id(s.id).continuation for s in valid]
    stimuli = [s.stimulus for s in valid]
    true = score_candidates(run, valid, "brain", cfg, scorer, desc="valid/true")
    perm = score_candidates(run, permute_frames(valid, cfg.seed), "brain", cfg, scorer, desc="valid/permuted")
    rows = []
    for n in args.candidates:
        for w in args.weights:
            a = bleu1([t[k] for t, k in zip(true.texts, true.pick(w, n))], refs)
            b = bleu1([t[k] for t, k in zip(perm.texts, perm.pick(w, n))], refs)
            rows.append({"candidates": n, "weight": w, "bleu1_true": round(float(a.mean()), 4),
                         "bleu1_permuted": round(float(b.mean()), 4), "diff": round(float((a - b).mean()), 4),
                         "p_signflip_passages": round(sign_flip_test(a - b, stimuli, 10000, 0), 4)})
    print_table(rows, ["candidates", "weight", "bleu1_true", "bleu1_permuted", "diff", "p_signflip_passages"])
    print(f"wrote {write_json('bayes_weight', {'host': host_info(), 'run': args.run, 'rows': rows})}")


if __name__ == "__main__":
    main()
