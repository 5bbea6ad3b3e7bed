"""Variants of a tuned Bayesian decoder on its run's validation split (never test): the encoding-guided search's
widths and a length-contrast pick, against the tuned decoder's own sampled candidates.

On a run whose decoder `brainllm tune-decoder` chose (its temperature, number of candidates, λ), prints the mean
validation BLEU-1 (`decoder_tuning.bleu1`, the tuner's own) of the MAP picks under the true frames, PerBrainLLM's
(frames deranged across validation samples, their own candidates) and the length/position decoder's:
  * `sampled`: the tuned decoder's candidates alone, at each λ of `--weights`;
  * `guided W`: the same plus the texts of a `W`-beam encoding-guided search at the run's λ (`decoding.guided`; the
    permuted and length/position decoders run their own searches), with the seconds one search of the true frames
    took;
  * `contrast`: the sampled candidates picked by the encoding model's log-likelihood minus the length/position
    model's (what the frames say beyond length and position), at each λ, with the picks' mean length in words.

    .venv/bin/python benchmarks/valid_variants.py RUN [--guided-beams 4 8 16] [--weights 1 3 10 30 100 300]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np

from _common import host_info, print_table, write_json
from brainllm.decoding.bayes import encoding_scores, score_candidates, with_guided
from brainllm.decoding.encoding_model import load_scorer
from brainllm.experiments.decoder_tuning import bleu1
from brainllm.model.collate import permute_frames
from brainllm.runs import RunPaths, load_run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run")
    parser.add_argument("--guided-beams", type=int, nargs="*", default=[4, 8, 16])
    parser.add_argument("--weights", type=float, nargs="*", default=[1, 3, 10, 30, 100, 300])
    args = parser.parse_args()
    run = load_run(args.run)
    cfg = replace(run.config.generation, guided_beams=0)
    if cfg.rerank != "encoding":
        raise SystemExit(f"{args.run} has no tuned Bayesian decoder: run `brainllm tune-decoder {args.run}` first.")
    scorer, nuisance = load_scorer(run), load_scorer(run, "nuisance")
    valid = run.encoder.encode_all(run.dataset, run.split.valid)
    permuted = permute_frames(valid, cfg.seed)
    refs = [run.dataset.by_id(s.id).continuation for s in valid]
    store = RunPaths(run.path).candidates("valid_variants")  # the sampled candidates, kept for a rerun
    own = score_candidates(run, valid, "brain", cfg, scorer, store=store)
    other = score_candidates(run, permuted, "brain", cfg, scorer, store=store)
    by_nuisance = own.rescored(encoding_scores(run, nuisance, valid, own.texts))
    length = {name: [np.asarray(n) for n in encoding_scores(run, nuisance, ss, c.texts)]
              for name, ss, c in (("own", valid, own), ("other", permuted, other))}
    contrast = [c.rescored([e - n for e, n in zip(c.encoding, length[name])])
                for name, c in (("own", own), ("other", other))]

    def row(variant: str, weight: float, sets, seconds: float | None = None) -> dict:
        b = [float(bleu1(c.picks(weight), refs).mean()) for c in sets]
        words = float(np.mean([len(t.split()) for t in sets[0].picks(weight)]))
        return {"variant": variant, "weight": weight, "bleu1": round(b[0], 4), "bleu1_permuted": round(b[1], 4),
                "bleu1_nuisance": round(b[2], 4), "words": round(words, 1),
                "seconds": None if seconds is None else round(seconds, 1)}

    rows = [row("sampled", w, (own, other, by_nuisance)) for w in args.weights]
    rows += [row("contrast", w, (*contrast, by_nuisance)) for w in args.weights]
    for beams in args.guided_beams:
        g = replace(cfg, guided_beams=beams)
        start = time.perf_counter()
        first = with_guided(run, valid, "brain", g, scorer, own, desc=f"guided {beams}")
        seconds = time.perf_counter() - start
        sets = (first, with_guided(run, permuted, "brain", g, scorer, other, desc=f"guided {beams} permuted"),
                with_guided(run, valid, "brain", g, nuisance, by_nuisance, desc=f"guided {beams} nuisance"))
        rows.append(row(f"guided {beams}", cfg.encoding_weight, sets, seconds))
    print(f"{args.run}: validation, {len(valid)} samples; tuned decoder t {cfg.temperature}, {cfg.n_candidates} "
          f"candidates, λ {cfg.encoding_weight}")
    print_table(rows, ["variant", "weight", "bleu1", "bleu1_permuted", "bleu1_nuisance", "words", "seconds"])
    print(f"wrote {write_json('valid_variants', {'host': host_info(), 'run': args.run, 'rows': rows})}")


if __name__ == "__main__":
    main()
