"""Which score of a text for fixed frames identifies best? Training passages only.

Issue 23 named contrastive linear alignment of frames and text features (Ciferri et al. 2026: linear + contrastive
beats ridge) as a route for the Bayesian decoder. This benchmark compares, by 2-way identification of texts for
fixed frames (`identification.two_way`, across stimuli and within one), cross-validated over folds of whole
training stimuli exactly as `brainllm tune-decoder` validates its encoding model:
- `encoding`: the decoder's encoding model (`voxelwise.sentence_encoding`: ridge text -> frames, shrunk Gaussian
  noise), log p(frames | text);
- `decoding`: ridge frames -> text features (penalty by inner CV), cosine of the prediction with each text's;
- `contrastive`: two linear maps, of the text features and of the frames, into one `rank`-dimensional space,
  trained with a symmetric InfoNCE loss over the fold's training sentences (AdamW, dropout 0.3 on both inputs,
  a learned temperature); cosine in that space;
- `encoding + X`: the sum of both scores, each standardised over the texts for fixed frames.
Text features: the backbone's mean state after `--layer` plus length and position (the decoder's design, the
length/position band scaled by `--nuisance-weight` for the encoding model); frames: the first `--dims` components.
Validation and test are never read.

    .venv/bin/python benchmarks/identification_scores.py RUN [--layer 8] [--dims 200] [--nuisance-weight 6]
        [--ranks 32 128] [--weight-decays 0.01 0.1] [--steps 25 200 600]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from _common import host_info, print_table, write_json
from brainllm.decoding.encoding_choice import training_samples
from brainllm.decoding.encoding_model import positions_of, reference_texts, sample_frames, text_design
from brainllm.identification import two_way
from brainllm.model.text_features import NUISANCE_NAMES
from brainllm.ridge import cv_ridge, stimulus_folds
from brainllm.voxelwise.sentence_encoding import (SentenceEncodingConfig, SentenceEncodingModel, _safe_std,
                                                  column_correlation)


def standardiser(train: np.ndarray):
    """A function that standardises rows with `train`'s column means and spreads."""
    mean, std = train.mean(0), _safe_std(train)
    return lambda a: (a - mean) / std


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`(m, n)` cosine of row i of `a` with row j of `b`."""
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return a @ b.T


def decoding_scores(x_tr, y_tr, groups, x_te, y_te) -> np.ndarray:
    """`(m, m)` [i, j]: cosine of text i's features with the ridge decoding of frames j (standardised units)."""
    zx, zy = standardiser(x_tr), standardiser(y_tr)
    coef, icpt, _, _ = cv_ridge(zy(y_tr), zx(x_tr), groups, column_correlation)
    return cosine_matrix(zx(x_te), zy(y_te) @ coef + icpt)


def contrastive_scores(x_tr, y_tr, x_te, y_te, rank: int, weight_decay: float, steps: int, seed: int = 0
                       ) -> np.ndarray:
    """`(m, m)` [i, j]: cosine of text i and frames j in the space of two linear maps trained with symmetric
    InfoNCE on the training pairs (rows of `x_tr` `(n, F)` and `y_tr` `(n, D)`, one per sentence)."""
    torch.manual_seed(seed)
    zx, zy = standardiser(x_tr), standardiser(y_tr)
    xt, yt = (torch.tensor(a, dtype=torch.float32) for a in (zx(x_tr), zy(y_tr)))
    text_map = torch.nn.Linear(xt.shape[1], rank, bias=False)
    frame_map = torch.nn.Linear(yt.shape[1], rank, bias=False)
    log_scale = torch.nn.Parameter(torch.tensor(np.log(10.0), dtype=torch.float32))
    opt = torch.optim.AdamW([*text_map.parameters(), *frame_map.parameters(), log_scale], lr=3e-3,
                            weight_decay=weight_decay)
    labels = torch.arange(len(xt))
    for _ in range(steps):
        t = F.normalize(text_map(F.dropout(xt, 0.3)), dim=1)
        f = F.normalize(frame_map(F.dropout(yt, 0.3)), dim=1)
        logits = log_scale.exp() * t @ f.T
        loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        t = text_map(torch.tensor(zx(x_te), dtype=torch.float32)).numpy()
        f = frame_map(torch.tensor(zy(y_te), dtype=torch.float32)).numpy()
    return cosine_matrix(t, f)


def per_frames(m: np.ndarray) -> np.ndarray:
    """Scores standardised over the texts (rows) for each frames (column), so that two scores can be added."""
    return (m - m.mean(0, keepdims=True)) / np.maximum(m.std(0, keepdims=True), 1e-12)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run")
    parser.add_argument("--layer", type=int, default=8)
    parser.add_argument("--dims", type=int, default=200)
    parser.add_argument("--nuisance-weight", type=float, default=6.0)
    parser.add_argument("--ranks", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--weight-decays", type=float, nargs="+", default=[0.01, 0.1])
    parser.add_argument("--steps", type=int, nargs="+", default=[25, 200, 600])
    args = parser.parse_args()
    from brainllm.runs import load_run

    run = load_run(args.run)
    samples = training_samples(run)
    stimuli, keys = [s.stimulus for s in samples], [str(s.frame_rows) for s in samples]
    x = text_design(run, reference_texts(run, samples), positions_of(run, samples), args.layer)
    y = sample_frames(run, samples, args.dims)
    cfg = SentenceEncodingConfig(nuisance_columns=len(NUISANCE_NAMES), nuisance_weight=args.nuisance_weight)
    contrastive = [(r, wd, st) for r in args.ranks for wd in args.weight_decays for st in args.steps]
    held_out: dict[str, list[tuple[float, float]]] = {}
    for held in stimulus_folds(stimuli, 5, 0):
        tr, te = np.flatnonzero(~held), np.flatnonzero(held)
        groups = [stimuli[i] for i in tr]
        # the two samples of a sentence share text and frames: the contrastive loss sees each sentence once
        _, first = np.unique([keys[i] for i in tr], return_index=True)
        once = tr[np.sort(first)]
        encoding = SentenceEncodingModel(cfg).fit(x[tr], y[tr], groups).log_likelihood_matrix(x[te], y[te])
        scores = {"encoding": encoding}
        scores["decoding"] = decoding_scores(x[tr], y[tr], groups, x[te], y[te])
        for rank, wd, steps in contrastive:
            scores[f"contrastive rank {rank}, decay {wd}, {steps} steps"] = contrastive_scores(
                x[once], y[once], x[te], y[te], rank, wd, steps)
        for name in [n for n in scores if n != "encoding"]:
            scores[f"encoding + {name}"] = per_frames(encoding) + per_frames(scores[name])
        for name, m in scores.items():
            ident = two_way(m, [stimuli[i] for i in te], [keys[i] for i in te])
            held_out.setdefault(name, []).append((ident["across"], ident["within"]))
    rows = [{"score": name, "across": round(float(np.mean(v, 0)[0]), 3), "within": round(float(np.mean(v, 0)[1]), 3)}
            for name, v in held_out.items()]
    print_table(rows, ["score", "across", "within"])
    meta = {"host": host_info(), "run": args.run, "layer": args.layer, "dims": args.dims,
            "nuisance_weight": args.nuisance_weight, "rows": rows}
    print(f"wrote {write_json('identification_scores', meta)}")


if __name__ == "__main__":
    main()
