"""One evaluation over the folds of an outer cross-validation (beyond the paper).

With `data.split: kfold_by_stimulus` a run holds one fold of N: its own training, its own model selection on
validation passages taken from the other folds, and its test passages, which no other fold tests. Trained, tuned
and decoded once per fold, every passage of the dataset is tested exactly once by a model that never saw it, so the
folds' test predictions together are one held-out test set N times as large as a single split's: the same
comparisons (`evaluate.evaluate_run`: every metric, every control, sign-flip tests over *all* the folds' passages)
with the power of the whole dataset. Each fold keeps its own decoder (nested selection), which is what a user who
trains on their data would get.

`load_folds` reads the fold runs and checks that they are one cross-validation (same splitter, seed and number of
folds, distinct folds, disjoint test passages, the same conditions and permutations); `evaluate_folds` scores them.
What needs every sample scored against every other sample's frames (identification from the cross-loss and
decoder-score matrices) is only defined within a fold: it is reported per fold and averaged over folds, weighted by
each fold's number of samples.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .controls import decoder_identification, verdicts
from .evaluate import EvalConfig, RunEvaluation, evaluate_run, json_safe
from .metrics import MetricConfig
from .rundata import Condition, EvaluationError, RunData, load_run_data

FOLD_SPLIT = "kfold_by_stimulus"


def _fold_of(run: RunData) -> tuple[int, int, int]:
    """(seed, n_folds, fold) of a fold run; an `EvaluationError` for a run that is not one."""
    info = run.split_info or {}
    if info.get("method") != FOLD_SPLIT:
        raise EvaluationError(f"{run.path} was not split by {FOLD_SPLIT} (split.json says "
                              f"{info.get('method', 'nothing')}); train each fold with --set data.split={FOLD_SPLIT} "
                              "--set data.fold=F.")
    return int(info.get("seed", 0)), int(info["info"]["n_folds"]), int(info["info"]["fold"])


def _merged(name: str, parts: Sequence[Condition]) -> Condition:
    """One condition over the folds' samples, in fold order."""
    if len({c.n_permutations for c in parts}) != 1:
        raise EvaluationError(f"condition {name}: the folds have {[c.n_permutations for c in parts]} permutations; "
                              "decode every fold with the same --permutations.")
    posterior = None
    if all(c.posterior_loss is not None for c in parts):
        posterior = np.concatenate([c.posterior_loss for c in parts])
    header = dict(parts[0].header)
    picks = [str(c.header.get("decoding", {}).get("pick")) for c in parts]
    if len(set(picks)) > 1:  # each fold's validation chose its own rule: say so, not the first fold's
        header["decoding"] = dict(header.get("decoding", {}), pick="per fold: " + ", ".join(picks))
    return Condition(name, header, [row for c in parts for row in c.predictions],
                     np.concatenate([c.loss for c in parts]), np.concatenate([c.fixed_point for c in parts]), posterior)


def load_folds(paths: Sequence[str | Path], split: str = "test") -> tuple[RunData, list[RunData]]:
    """The fold runs' `split` predictions as one `RunData` (at the folder that holds them all, no cross-loss or
    decoder-score matrices: those compare samples within one fold) and the fold runs themselves.

    Raises `EvaluationError` unless the runs are distinct folds of one cross-validation with disjoint test passages
    and the same conditions."""
    if len(paths) < 2:
        raise EvaluationError(f"pool at least two folds, got {len(paths)}.")
    runs = [load_run_data(p, split) for p in paths]
    folds = [_fold_of(r) for r in runs]
    if len({(seed, n) for seed, n, _ in folds}) != 1:
        raise EvaluationError(f"the runs are folds of different cross-validations (seed, n_folds, fold): {folds}.")
    if len({f for _, _, f in folds}) != len(folds):
        raise EvaluationError(f"a fold appears twice among {[str(r.path) for r in runs]}: {folds}.")
    seen: dict[str, Path] = {}
    for run in runs:
        for stimulus in set(run.stimuli):
            if stimulus in seen:
                raise EvaluationError(f"passage {stimulus} is tested by both {seen[stimulus]} and {run.path}.")
            seen[stimulus] = run.path
    names = [set(r.conditions) for r in runs]
    if any(n != names[0] for n in names):
        raise EvaluationError(f"the folds decoded different conditions: {[sorted(n) for n in names]}; generate the "
                              "same conditions on every fold.")
    first = runs[0]
    common = Path(os.path.commonpath([str(r.path) for r in runs]))  # the folder that holds the folds
    conditions = {name: _merged(name, [r.conditions[name] for r in runs]) for name in first.conditions}
    return RunData(common, split, first.config, [i for r in runs for i in r.ids],
                   [s for r in runs for s in r.stimuli], [p for r in runs for p in r.prompts],
                   [t for r in runs for t in r.references], conditions), runs


def fold_identification(runs: Sequence[RunData]) -> dict[str, Any]:
    """The decoder's identification (`controls.decoder_identification`) per fold and its mean over folds weighted
    by samples; `{"available": False}` unless every fold has its decoder-score file."""
    per_fold = [decoder_identification(r.decoder_scores, r.crossloss) for r in runs]
    if not all(f["available"] for f in per_fold):
        return {"available": False, "reason": "a fold has no decoderscore file (generate with --crossloss)"}
    weights = np.array([f["n"] for f in per_fold], dtype=np.float64)
    out: dict[str, Any] = {"available": True, "n": int(weights.sum()), "chance": 0.5,
                           "pooled": "within each fold, mean over folds weighted by samples",
                           "per_fold": [{"run": str(r.path), **f} for r, f in zip(runs, per_fold)]}
    for key in ("encoding_model", "length_position_model"):
        out[key] = {side: float(np.average([f[key][side] for f in per_fold], weights=weights))
                    for side in ("across", "within")}
    return out


def evaluate_folds(paths: Sequence[str | Path], split: str = "test", metric_config: MetricConfig = MetricConfig(),
                   config: EvalConfig = EvalConfig()) -> RunEvaluation:
    """`evaluate.evaluate_run` over the folds' samples together (see the module docstring); the summary names
    the folds and carries the per-fold decoder identification."""
    pooled, runs = load_folds(paths, split)
    ev = evaluate_run(pooled, split, metric_config, config)
    summary = dict(ev.summary)
    summary["name"] = f"{len(runs)} folds of {pooled.path.name}"
    summary["folds"] = [{"run": str(r.path), "fold": _fold_of(r)[2], "n_samples": len(r.ids),
                         "n_stimuli": len(set(r.stimuli)), "decoding": r.conditions["brain"].header.get("decoding", {})}
                        for r in runs]
    summary["decoder_identification"] = json_safe(fold_identification(runs))
    summary["identification"] = {"available": False, "reason": "the cross-loss compares samples within one fold: "
                                                               "see each fold's own evaluation"}
    summary["verdicts"] = verdicts(summary)
    return RunEvaluation(pooled, ev.metric_config, ev.metrics, ev.per_sample, summary)
