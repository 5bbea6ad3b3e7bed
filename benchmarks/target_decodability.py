"""How much of each candidate adapter target can a linear decoder read from the frames? (docs/calibration.md)

For a trained run (its split and backbone), ridge from each training sample's frames (mean over its frames,
standardised with training statistics) to one target per sample, the penalty chosen by CV over training stimuli
(`brainllm.ridge.cv_ridge`, centred cosine), then scored on the validation samples: centred cosine with the true
target and 2-way identification (a sample's prediction closer, by centred cosine, to its own target than to the
target of a sample from another stimulus; chance 0.5). Targets: the MiniLM sentence embedding of the perceived
text (one of the spaces the simulator mixes since issue 24; before, its only space), the backbone's mean input
embedding of the continuation / the whole text (plain and idf-weighted), and its mean hidden state of the text
after layers 2, 4, 8, 16. Validation only; test is never read. For datasets, `brainllm inspect DIR --profile`
(docs/realism.md) is the broader check.

    .venv/bin/python benchmarks/target_decodability.py RUN [--layers 2 4 8 16]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from brainllm.evaluation.semantic import MiniLMScorer
from brainllm.ridge import cv_ridge
from brainllm.runs import load_run


def centred_cosine(pred: np.ndarray, truth: np.ndarray, _held=None) -> float:
    p, t = pred - pred.mean(0), truth - truth.mean(0)
    return float(np.mean((p * t).sum(1) / (np.linalg.norm(p, axis=1) * np.linalg.norm(t, axis=1) + 1e-12)))


def identification(pred: np.ndarray, truth: np.ndarray, stimuli: list[str]) -> float:
    p, t = pred - pred.mean(0), truth - truth.mean(0)
    sim = (p / np.linalg.norm(p, axis=1, keepdims=True)) @ (t / np.linalg.norm(t, axis=1, keepdims=True)).T
    n = len(sim)
    return float(np.mean([sim[i, i] > sim[i, j] for i in range(n) for j in range(n) if stimuli[i] != stimuli[j]]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run")
    parser.add_argument("--layers", type=int, nargs="*", default=[2, 4, 8, 16])
    args = parser.parse_args()
    run = load_run(args.run)
    model = run.model.eval()
    train = run.encoder.encode_all(run.dataset, run.split.train)
    valid = run.encoder.encode_all(run.dataset, run.split.valid)
    frames = np.asarray(run.dataset.frames, dtype=np.float64)
    x_train = np.stack([frames[list(s.frame_rows)].mean(0) for s in train])
    x_valid = np.stack([frames[list(s.frame_rows)].mean(0) for s in valid])
    mean, std = x_train.mean(0), x_train.std(0) + 1e-8
    x_train, x_valid = (x_train - mean) / std, (x_valid - mean) / std

    emb = model.backbone.get_input_embeddings().weight.detach().float().numpy()
    counts = np.bincount(np.concatenate([s.prompt_ids + s.continuation_ids for s in train]), minlength=len(emb))
    idf = np.log((1 + len(train)) / (1 + counts))

    def mean_embedding(samples, part: str, weights=None) -> np.ndarray:
        out = []
        for s in samples:
            ids = np.array(s.continuation_ids if part == "continuation" else s.prompt_ids + s.continuation_ids)
            w = np.ones(len(ids)) if weights is None else weights[ids]
            out.append((emb[ids] * w[:, None]).sum(0) / w.sum())
        return np.stack(out)

    @torch.no_grad()
    def states(samples) -> dict[int, np.ndarray]:
        res = {layer: [] for layer in args.layers}
        bos = [run.encoder.bos_id] if run.encoder.bos_id is not None else []
        for s in samples:
            ids = torch.tensor([bos + list(s.prompt_ids + s.continuation_ids)])
            hidden = model.backbone(input_ids=ids, output_hidden_states=True).hidden_states
            for layer in args.layers:
                res[layer].append(hidden[layer][0, len(bos):].float().mean(0).numpy())
        return {layer: np.stack(v) for layer, v in res.items()}

    def texts(samples):
        by_id = {s.id: s for s in run.dataset}
        return [f"{by_id[s.id].prompt} {by_id[s.id].continuation}".strip() for s in samples]

    scorer = MiniLMScorer()
    targets = {"MiniLM sentence embedding":
               (scorer.sentence_vectors(texts(train)), scorer.sentence_vectors(texts(valid))),
               "mean input embedding, continuation": (mean_embedding(train, "continuation"),
                                                      mean_embedding(valid, "continuation")),
               "mean input embedding, text": (mean_embedding(train, "text"), mean_embedding(valid, "text")),
               "idf-weighted input embedding, text": (mean_embedding(train, "text", idf),
                                                      mean_embedding(valid, "text", idf))}
    st, sv = states(train), states(valid)
    for layer in args.layers:
        targets[f"mean state after layer {layer}, text"] = (st[layer], sv[layer])
    stimuli_train, stimuli_valid = [s.stimulus for s in train], [s.stimulus for s in valid]
    print(f"| target | alpha | CV centred cosine | valid centred cosine | valid 2-way identification |")
    print("|---|---|---|---|---|")
    for name, (y_train, y_valid) in targets.items():
        coef, icpt, alpha, cv = cv_ridge(x_train, y_train, stimuli_train, centred_cosine)
        pred = x_valid @ coef + icpt
        print(f"| {name} | {alpha:.0f} | {cv:.3f} | {centred_cosine(pred, y_valid):.3f} | "
              f"{identification(pred, y_valid, stimuli_valid):.3f} |", flush=True)


if __name__ == "__main__":
    main()
