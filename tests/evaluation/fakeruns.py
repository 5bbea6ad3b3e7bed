"""Fake run folders written in exactly the format training and generation produce (the evaluation contract).

`write_fake_run` makes a run whose BrainLLM predictions share `signal` of their words with the reference, whose
PerBrainLLM predictions echo the reference of the sample whose frames they got, and whose StdLLM predictions are
random words; teacher-forced losses are lower with the true frames by `0.3 * signal` nats.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

WORDS = ("the river ran past old mills and quiet farms where children played near stone walls while "
         "farmers watched clouds gather over green hills before rain came down on roofs of small houses").split()


def _sentence(rng: np.random.Generator, n: int) -> str:
    return " ".join(rng.choice(WORDS, size=n))


def _noisy_copy(rng: np.random.Generator, text: str, keep: float) -> str:
    return " ".join(w if rng.random() < keep else str(rng.choice(WORDS)) for w in text.split())


def _write_jsonl(path: Path, rows: Sequence[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def write_fake_run(folder: Path, n_stimuli: int = 12, per_stimulus: int = 3, permutations: int = 3,
                   signal: float = 1.0, seed: int = 0, backbone: str = "tiny-llama",
                   dataset: str = "/data/sim_sentence", max_train_samples: Optional[int] = None, n_train: int = 40,
                   crossloss: bool = True, conditions: Sequence[str] = ("brain", "permuted", "no_brain"),
                   split: str = "test", epochs: int = 3, prefix: str = "st",
                   split_info: Optional[dict] = None) -> Path:
    """Write a run folder with predictions for `split` (stimuli `<prefix>00`, ...; split.json's method, seed and
    info from `split_info`, default by_stimulus); returns `folder`."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    (folder / "predictions").mkdir(parents=True, exist_ok=True)
    ids = [f"{prefix}{s:02d}-{k}" for s in range(n_stimuli) for k in range(per_stimulus)]
    stimuli = [f"{prefix}{s:02d}" for s in range(n_stimuli) for _ in range(per_stimulus)]
    n = len(ids)
    prompts = [_sentence(rng, int(rng.integers(3, 15))) for _ in range(n)]
    refs = [_sentence(rng, 8) for _ in range(n)]
    difficulty = rng.normal(3.0, 0.4, size=n) + np.repeat(rng.normal(0, 0.3, size=n_stimuli), per_stimulus)
    keep = min(0.9, 0.6 * signal)

    config = {"backbone": backbone, "adapter": {"name": "mlp", "hidden": 64}, "feature_dim": 32,
              "dataset": dataset, "training": {"max_train_samples": max_train_samples, "seed": seed, "epochs": epochs},
              "package_version": "0.1.0", "condition": "brain"}
    (folder / "brainllm.json").write_text(json.dumps(config), encoding="utf-8")
    train_ids = [f"train-{k}" for k in range(n_train)]
    made = split_info or {"method": "by_stimulus", "seed": 0, "info": {}}
    (folder / "split.json").write_text(json.dumps({**made, "train": train_ids, "valid": ["valid-0"], "test": ids}),
                                       encoding="utf-8")
    log = [{"stage": "warmup", "epoch": 0, "train_loss": 5.0, "valid_loss": None, "lr": 1e-3, "seconds": 1.0,
            "samples_per_s": 40.0}]
    log += [{"stage": "main", "epoch": e, "train_loss": 4.0 / (e + 1) + 1, "valid_loss": 4.2 / (e + 1) + 1.2,
             "lr": 1e-4, "seconds": 2.0, "samples_per_s": 20.0} for e in range(epochs)]
    _write_jsonl(folder / "metrics.jsonl", log)

    decoding = {"method": "beam", "num_beams": 5, "repetition_penalty": 2.0, "min_new_tokens": 4,
                "max_new_tokens": 32}
    brain_loss = difficulty - 0.3 * signal + rng.normal(0, 0.15, size=n)

    def header(cond: str, extra: Optional[dict] = None) -> dict:
        return {"split": split, "condition": cond, "n_samples": n, "decoding": decoding, "backbone": backbone,
                **(extra or {})}

    base = folder / "predictions"
    if "brain" in conditions:
        rows = [{"id": ids[i], "stimulus": stimuli[i], "prompt": prompts[i], "reference": refs[i],
                 "prediction": _noisy_copy(rng, refs[i], keep) + ("<|im_end|>" if i % 5 == 0 else ""),
                 "loss": float(brain_loss[i])} for i in range(n)]
        _write_jsonl(base / f"{split}_brain.jsonl", rows)
        (base / f"{split}_brain.json").write_text(json.dumps(header("brain")), encoding="utf-8")
    if "permuted" in conditions:
        rows = []
        for p in range(permutations):
            order = rng.permutation(n)
            for i in range(n):
                j = int(order[i])
                rows.append({"id": ids[i], "stimulus": stimuli[i], "prompt": prompts[i], "reference": refs[i],
                             "prediction": _noisy_copy(rng, refs[j], keep),
                             "loss": float(difficulty[i] + rng.normal(0, 0.15)), "permutation": p,
                             "frames_from": ids[j]})
        _write_jsonl(base / f"{split}_permuted.jsonl", rows)
        (base / f"{split}_permuted.json").write_text(json.dumps(header("permuted", {"permutations": permutations})),
                                                     encoding="utf-8")
    if "no_brain" in conditions:
        rows = [{"id": ids[i], "stimulus": stimuli[i], "prompt": prompts[i], "reference": refs[i],
                 "prediction": _sentence(rng, 8), "loss": float(difficulty[i] + 0.2 + rng.normal(0, 0.15))}
                for i in range(n)]
        _write_jsonl(base / f"{split}_no_brain.jsonl", rows)
        (base / f"{split}_no_brain.json").write_text(json.dumps(header("no_brain")), encoding="utf-8")
    if crossloss:
        matrix = difficulty[:, None] + rng.normal(0, 0.15, size=(n, n))
        matrix[np.arange(n), np.arange(n)] -= 0.3 * signal
        np.savez(base / f"{split}_crossloss.npz", ids=np.array(ids), loss=matrix)
    return folder
