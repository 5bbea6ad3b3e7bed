"""The prompt-length axis: how much of the brain's gain survives as the prompt grows, as the paper analyses its gain
against the prompt's length.

Reads evaluated runs (`brainllm evaluate` wrote `evaluation/per_sample.jsonl`: test samples only) and splits their
samples by how many chunks of the sentence the prompt holds: the released Pereira example's samples `*_k{k}` have
k chunks of prompt (k = 0 is the sentence task, `-o task=sentence`: no prompt, the whole sentence to decode). Per
k and metric: BrainLLM's mean, PerBrainLLM's and the length/position decoder's (`--condition nuisance`), the ratio
to PerBrainLLM and the two differences' sign-flip p over passages (stimuli). Metrics: `bleu1_per_sample` (BLEU-1
of each sample) and `semsim_minilm_cosine` (cosine of all-MiniLM-L6-v2 sentence embeddings).

    .venv/bin/python benchmarks/prompt_axis.py runs/real-dev-sentence-s3/decoded/brain runs/real-dev-s3/decoded/brain
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from _common import print_table, write_json
from brainllm.evaluation.stats import sign_flip_test

METRICS = ("bleu1_per_sample", "semsim_minilm_cosine")
CONTROLS = ("permuted", "nuisance")


def prompt_chunks(sample_id: str) -> int:
    """k of a released-example sample id `..._k{k}`: the chunks of its sentence in the prompt."""
    head, sep, k = sample_id.rpartition("_k")
    if not sep or not k.isdigit():
        raise SystemExit(f"sample id {sample_id!r} does not end in _k<chunks> (a released Pereira example's).")
    return int(k)


def axis_rows(rows: list[dict], run: str) -> list[dict]:
    """One row per (k, metric) of one run's per-sample scores."""
    out = []
    for k in sorted({prompt_chunks(r["id"]) for r in rows}):
        group = [r for r in rows if prompt_chunks(r["id"]) == k]
        stimuli = [r["stimulus"] for r in group]
        for metric in METRICS:
            def values(condition: str) -> np.ndarray:
                return np.array([r.get(condition, {}).get(metric, np.nan) for r in group], dtype=np.float64)

            brain = values("brain")
            row = {"run": run, "prompt_chunks": k, "samples": len(group), "passages": len(set(stimuli)),
                   "metric": metric, "brain": round(float(np.nanmean(brain)), 4)}
            for control in CONTROLS:
                other = values(control)
                if np.isnan(other).all():
                    continue
                row[control] = round(float(np.nanmean(other)), 4)
                row[f"vs_{control}_p"] = float(f"{sign_flip_test(brain - other, stimuli):.3g}")
            if row.get("permuted"):
                row["ratio_permuted"] = round(row["brain"] / row["permuted"], 2)
            out.append(row)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("runs", nargs="+", help="evaluated run (or decoded recipe) folders")
    args = parser.parse_args()
    rows = []
    for run in args.runs:
        path = Path(run) / "evaluation" / "per_sample.jsonl"
        if not path.exists():
            raise SystemExit(f"{path} is missing: run `brainllm evaluate {run}` first.")
        rows += axis_rows([json.loads(line) for line in path.read_text().splitlines() if line.strip()], run)
    print_table(rows, ["run", "prompt_chunks", "samples", "passages", "metric", "brain", "permuted",
                       "ratio_permuted", "vs_permuted_p", "nuisance", "vs_nuisance_p"])
    print(f"wrote {write_json('prompt_axis', {'runs': args.runs, 'rows': rows})}")


if __name__ == "__main__":
    main()
