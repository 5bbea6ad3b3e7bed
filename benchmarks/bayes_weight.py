"""How much does the Bayesian decoder's output depend on the frames, as a function of λ and of the number of
candidates? Validation split only (never test).

For a run with a tuned decoder: BrainLLM's candidates for every validation sample are proposed and scored once
under the true frames and once under a derangement of them (other passages' frames: PerBrainLLM), then for each λ
and number of candidates the picked texts' mean BLEU-1 (the evaluation's `bleu1_per_sample`) under both, their
difference, and the sign-flip p over passages. `brainllm tune-decoder` reads the same contrast (its default
`brain_gain` criterion, without the p); this table adds the p and any grid.

A second table gives, per λ, the paper's loss test under the decoder's own distribution
(`decoding.bayes.posterior_losses`, its normaliser from the nucleus samples of the largest `--candidates`): the mean
posterior loss of the reference continuation under the true frames (the held-out likelihood a λ fit would
minimise), under the permuted ones, Δ with its sign-flip p, and the pairwise accuracy (true < permuted, per sample);
then the same with the decoder's length/position model in place of its encoding model (the nuisance baseline of
this test: what the frames' length and position alone give).

    .venv/bin/python benchmarks/bayes_weight.py RUN [--weights 0 0.3 1 3 10] [--candidates 4 16]
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np

from _common import host_info, print_table, write_json
from brainllm.decoding.bayes import encoding_scores, posterior_losses, reference_scores, score_candidates
from brainllm.decoding.encoding_model import load_scorer, scorer_splits
from brainllm.decoding.sentences import teacher_forced_losses
from brainllm.evaluation.stats import pairwise_accuracy, sign_flip_test
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
    if "valid" in scorer_splits(run):
        raise SystemExit(f"{args.run}'s encoding model was refitted on the validation samples this probes: tune it "
                         f"with `brainllm tune-decoder {args.run} --no-refit-with-valid` first.")
    scorer = load_scorer(run)
    valid = run.encoder.encode_all(run.dataset, run.split.valid)
    refs = [run.dataset.by_id(s.id).continuation for s in valid]
    stimuli = [s.stimulus for s in valid]
    cfg = replace(cfg, n_candidates=max(args.candidates))
    permuted = permute_frames(valid, cfg.seed)
    true = score_candidates(run, valid, "brain", cfg, scorer, desc="valid/true")
    perm = score_candidates(run, permuted, "brain", cfg, scorer, desc="valid/permuted")
    rows = []
    for n in args.candidates:
        for w in args.weights:
            a, b = bleu1(true.picks(w, n), refs), bleu1(perm.picks(w, n), refs)
            rows.append({"candidates": n, "weight": w, "bleu1_true": round(float(a.mean()), 4),
                         "bleu1_permuted": round(float(b.mean()), 4), "diff": round(float((a - b).mean()), 4),
                         "p_signflip_passages": round(sign_flip_test(a - b, stimuli, 10000, 0), 4)})
    print_table(rows, ["candidates", "weight", "bleu1_true", "bleu1_permuted", "diff", "p_signflip_passages"])
    conditions = [(valid, true), (permuted, perm)]
    lm = [teacher_forced_losses(run, v, "brain", cfg.batch_size) for v, _ in conditions]
    nuisance = load_scorer(run, "nuisance")  # the same candidates, scored by length and position alone
    loss_rows = []
    for name, model in (("encoding", scorer), ("length+position", nuisance)):
        scored = [(loss, *reference_scores(run, model, v),
                   c if model is scorer else replace(c, encoding=encoding_scores(run, model, v, c.texts)))
                  for loss, (v, c) in zip(lm, conditions)]
        for w in args.weights:
            a, b = (posterior_losses(*args_, w) for args_ in scored)
            loss_rows.append({"scorer": name, "weight": w, "loss_true": round(float(np.nanmean(a)), 4),
                              "loss_permuted": round(float(np.nanmean(b)), 4),
                              "diff": round(float(np.nanmean(a - b)), 4),
                              "p_signflip_passages": round(sign_flip_test(a - b, stimuli, 10000, 0), 4),
                              "pairwise": round(float(np.nanmean(pairwise_accuracy(a, b))), 3)})
    print()
    print_table(loss_rows, ["scorer", "weight", "loss_true", "loss_permuted", "diff", "p_signflip_passages",
                            "pairwise"])
    result = {"host": host_info(), "run": args.run, "rows": rows, "posterior": loss_rows}
    print(f"wrote {write_json('bayes_weight', result)}")


if __name__ == "__main__":
    main()
