"""Scores of one run: every metric variant per condition, BrainLLM vs each control, pairwise and identification
accuracy, contamination. `brainllm evaluate RUN` writes them to RUN/evaluation/.

Per condition a metric is averaged per sample first (for `permuted`: over its N permutations, leaving out any
permutation that gave a sample its own frames), then over samples; CIs resample stimuli. `loss_nats` is the
teacher-forced loss from the predictions files; `posterior_loss_nats` (runs decoded by the Bayesian decoder) the
same loss under the decoder's own distribution (`decoding.bayes.posterior_losses`), with its own pairwise accuracy
(`posterior_vs_permuted`; and the length/position decoder's, `nuisance_posterior_vs_permuted`, against the same
PerBrainLLM); StdLLM has no frames, so no posterior loss.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
from tqdm.auto import tqdm

from .. import __version__
from ..config import recipe_description
from ..io import write_json, write_jsonl, write_text
from ..runpaths import RunPaths
from . import metrics as M
from . import stats as S
from .controls import decoder_identification, verdicts
from .rundata import CONTROLS, DISPLAY, EvaluationError, RunData, decoding_summary, load_run_data
from .text import tokenize

log = logging.getLogger(__name__)

LOSS, POSTERIOR_LOSS = M.LOSS, M.POSTERIOR_LOSS


@dataclass(frozen=True)
class EvalConfig:
    """Statistics settings.

    Attributes:
        n_boot: bootstrap draws over stimuli for 95 % CIs (default 2000).
        n_permutations: sign-flip draws (exact enumeration when 2^stimuli is smaller; default 10000).
        ci_level: confidence level (default 0.95).
        seed: seed of the bootstrap and the permutation test.
        min_run: verbatim word run length flagged by the contamination check (default 6).
    """

    n_boot: int = 2000
    n_permutations: int = 10000
    ci_level: float = 0.95
    seed: int = 0
    min_run: int = 6


@dataclass
class RunEvaluation:
    """The evaluation of one run.

    Attributes:
        run: the loaded run.
        metric_config: how texts were scored.
        metrics: metric variant names in display order (per-sample metrics, then `loss_nats`).
        per_sample: condition -> metric -> `(N,)` per-sample values (permuted: mean over permutations).
        summary: the JSON-able scores (what scores.json holds for this run).
    """

    run: RunData
    metric_config: M.MetricConfig
    metrics: list[str]
    per_sample: dict[str, dict[str, np.ndarray]]
    summary: dict[str, Any]

    @property
    def conditions(self) -> list[str]:
        return list(self.per_sample)


def _row_mean(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Mean over columns of `(N, P)` values where `valid`; NaN for rows with no valid column."""
    valid = valid & np.isfinite(values)
    counts = valid.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, np.where(valid, values, 0.0).sum(axis=1) / counts, np.nan)


def _score_condition(run: RunData, name: str, config: M.MetricConfig, scorer: Any) -> dict[str, np.ndarray]:
    cond = run.conditions[name]
    n, p = cond.loss.shape
    preds = [cond.predictions[i][j] for i in range(n) for j in range(p)]
    refs = [run.references[i] for i in range(n) for _ in range(p)]
    scores = M.score_texts(preds, refs, config, scorer)
    valid = ~cond.fixed_point
    out = {metric: _row_mean(values.reshape(n, p), valid) for metric, values in scores.items()}
    if np.isfinite(cond.loss).any():  # the retrieval baseline has no loss
        out[LOSS] = _row_mean(cond.loss, valid)
    if cond.posterior_loss is not None:
        out[POSTERIOR_LOSS] = _row_mean(cond.posterior_loss, valid)
    return out


def json_safe(obj: Any) -> Any:
    """Replace NaN/inf by None and numpy scalars by Python ones, recursively."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return S.finite_or_none(float(obj))
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def _accuracy_summary(per_sample: np.ndarray, chance: float, run: RunData, boot: S.StimulusBootstrap,
                      cfg: EvalConfig, stimuli: Optional[list[str]] = None) -> dict[str, Any]:
    out = S.summarize(per_sample, boot, cfg.ci_level)
    out["chance"] = chance
    out["p_signflip_stimuli"] = S.sign_flip_test(per_sample - chance, stimuli or run.stimuli, cfg.n_permutations,
                                                 cfg.seed)
    return out


def _identification(run: RunData, per_sample: dict[str, dict[str, np.ndarray]], cfg: EvalConfig
                    ) -> dict[str, Any]:
    if run.crossloss is None:
        path = RunPaths(run.path).crossloss(run.split)
        return {"available": False, "reason": f"{path.parent.name}/{path.name} not found"}
    ids, matrix = run.crossloss
    index = {sid: i for i, sid in enumerate(run.ids)}
    unknown = [sid for sid in ids if sid not in index]
    if unknown:
        raise EvaluationError(f"{run.path}: crossloss ids {unknown[:3]} are not among the evaluated samples.")
    rows = [index[sid] for sid in ids]
    stimuli = [run.stimuli[i] for i in rows]
    boot = S.StimulusBootstrap(stimuli, cfg.n_boot, cfg.seed)
    n = len(ids)
    chance = S.identification_chance(n)
    variants = {"frames_given_text": ("rank of the true frames among all N frames for a fixed text (row of the "
                                      "cross-loss matrix, raw losses)", None)}
    variants["text_given_frames_rowmean"] = ("rank of the true text among all N texts under fixed frames, each "
                                             "text's loss centred on its row mean", None)
    if "no_brain" in per_sample:
        baseline = per_sample["no_brain"][LOSS][rows]
        if np.isfinite(baseline).all():
            variants["text_given_frames_nobrain"] = ("rank of the true text among all N texts under fixed frames, "
                                                     "each text's loss minus its no-brain loss", baseline)
    out: dict[str, Any] = {"available": True, "n_candidates": n, "chance": chance, "variants": {}}
    for name, (description, baseline) in variants.items():
        result = S.identification(matrix, baseline)
        key = "frames_given_text" if name == "frames_given_text" else "text_given_frames"
        scores = result[key]
        entry: dict[str, Any] = {"description": description}
        entry["two_way"] = _accuracy_summary(scores["two_way"], 0.5, run, boot, cfg, stimuli)
        entry["top1"] = S.summarize(scores["top1"], boot, cfg.ci_level) | {"chance": chance["top1"]}
        entry["rank"] = S.summarize(scores["rank"], boot, cfg.ci_level) | {"chance": chance["rank"]}
        out["variants"][name] = entry
    return out


def evaluate_run(path: str | Path | RunData, split: str = "test", metric_config: M.MetricConfig = M.MetricConfig(),
                 config: EvalConfig = EvalConfig(), scorer: Any = None) -> RunEvaluation:
    """Score every condition of a run's `split` and compare BrainLLM with each control (see the module docstring).

    `scorer` is a `semantic.MiniLMScorer` to share between runs (made when semantic metrics are on).
    """
    run = path if isinstance(path, RunData) else load_run_data(path, split)
    if "brain" not in run.conditions:
        raise EvaluationError(f"{run.path}: no brain predictions for split '{run.split}'.")
    if metric_config.semantic and scorer is None:
        from .semantic import MiniLMScorer

        scorer = MiniLMScorer()
    per_sample: dict[str, dict[str, np.ndarray]] = {}
    for name in tqdm(list(run.conditions), desc=f"scoring {run.name}", unit="condition", disable=None):
        log.info("Scoring %s / %s (%d samples x %d)", run.name, name, len(run.ids),
                 run.conditions[name].n_permutations)
        per_sample[name] = _score_condition(run, name, metric_config, scorer)
    metric_names = list(per_sample["brain"])
    boot = S.StimulusBootstrap(run.stimuli, config.n_boot, config.seed)
    if boot.n_clusters < 10:
        log.warning("%s: only %d test stimuli; CIs and p-values over stimuli are coarse.", run.name, boot.n_clusters)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        conditions = {c: {m: S.summarize(v, boot, config.ci_level) for m, v in per_sample[c].items()}
                      for c in per_sample}
        comparisons: dict[str, Any] = {}
        for control in CONTROLS:
            if control not in per_sample:
                continue
            shared = [m for m in metric_names if m in per_sample[control]]  # StdLLM has no posterior loss
            rows = {m: S.compare(per_sample["brain"][m], per_sample[control][m], run.stimuli, boot,
                                 config.n_permutations, config.seed) for m in shared}
            adjusted = S.holm([rows[m]["p_signflip_stimuli"] for m in shared])
            for m, p in zip(shared, adjusted):
                rows[m]["p_signflip_stimuli_holm"] = p
            comparisons[f"brain_vs_{control}"] = rows

        pairwise: dict[str, Any] = {}
        brain_loss = per_sample["brain"][LOSS]
        if "permuted" in run.conditions:
            cond = run.conditions["permuted"]
            # the length/position decoder's distribution against the same PerBrainLLM: how much of the decoder's
            # own pairwise accuracy length and position alone give
            nuisance = per_sample.get("nuisance", {}).get(POSTERIOR_LOSS)
            for key, mine, theirs in (("vs_permuted", brain_loss, cond.loss),
                                      ("posterior_vs_permuted", per_sample["brain"].get(POSTERIOR_LOSS),
                                       cond.posterior_loss),
                                      ("nuisance_posterior_vs_permuted", nuisance, cond.posterior_loss)):
                if mine is None or theirs is None:  # the posterior loss: only where the Bayesian decoder decoded
                    continue
                acc = S.pairwise_accuracy(mine, theirs, cond.fixed_point)
                pairwise[key] = _accuracy_summary(acc, 0.5, run, boot, config)
                pairwise[key]["permutations"] = cond.n_permutations
        if "no_brain" in run.conditions:
            acc = S.pairwise_accuracy(brain_loss, run.conditions["no_brain"].loss)
            pairwise["vs_no_brain"] = _accuracy_summary(acc, 0.5, run, boot, config)

        identification = _identification(run, per_sample, config)
        decoder_ident = decoder_identification(run.decoder_scores, run.crossloss)

    corpus = {}
    for name, cond in run.conditions.items():
        n, p = cond.loss.shape
        pairs = [(cond.predictions[i][j], run.references[i]) for i in range(n) for j in range(p)
                 if not cond.fixed_point[i, j]]
        corpus[name] = M.corpus_scores([a for a, _ in pairs], [b for _, b in pairs], metric_config)

    contamination = {}
    for name, cond in run.conditions.items():
        # one prediction per sample: the first permutation that did not give the sample its own frames
        first = [next((j for j in range(cond.n_permutations) if not cond.fixed_point[i, j]), 0)
                 for i in range(len(run.ids))]
        preds = [tokenize(row[j], keep_punct=False) for row, j in zip(cond.predictions, first)]
        refs = [tokenize(r, keep_punct=False) for r in run.references]
        contamination[name] = S.contamination(preds, refs, run.ids, config.min_run)

    metric_info = {m: {"higher_is_better": M.describe(m).higher_is_better,
                       "description": M.describe(m).description} for m in metric_names}
    for m in next(iter(corpus.values()), {}):
        metric_info[m] = {"higher_is_better": M.describe(m).higher_is_better, "description": M.describe(m).description}
    summary = {
        "run": str(run.path), "name": run.name, "split": run.split, "backbone": run.backbone,
        "dataset": run.config.get("dataset"), "task": run.task, "adapter": (run.config.get("adapter") or {}).get("name"),
        "trained_condition": run.config.get("condition"), "train_size": run.train_size(),
        "training_recipe": recipe_description(run.config.get("training") or {}),
        "model_package_version": run.config.get("package_version"), "evaluated_with": __version__,
        "n_samples": len(run.ids), "n_stimuli": boot.n_clusters,
        "n_permutations": run.conditions["permuted"].n_permutations if "permuted" in run.conditions else 0,
        "permuted_fixed_points": int(run.conditions["permuted"].fixed_point.sum()) if "permuted" in run.conditions
        else 0,
        "conditions_present": list(run.conditions), "display_names": {c: DISPLAY[c] for c in run.conditions},
        "settings": M.settings(metric_config) | {
            "ci": f"{config.ci_level:.0%} percentile bootstrap over stimuli, {config.n_boot} draws, seed "
                  f"{config.seed}",
            "p_signflip_stimuli": f"two-sided paired sign-flip permutation test, signs flipped per stimulus, "
                                  f"{config.n_permutations} draws (exact when 2^stimuli is fewer); Holm-adjusted "
                                  "across metrics in p_signflip_stimuli_holm",
            "p_wilcoxon_samples": "two-sided Wilcoxon signed-rank over samples (assumes independent samples; the "
                                  "paper's test)",
            "effect_sizes": "cohens_dz = mean(diff)/sd(diff); rank_biserial = matched-pairs rank-biserial r",
            "diff": "BrainLLM minus control (for lower-is-better metrics, negative is better)"},
        "decoding": decoding_summary(run),
        "metrics": metric_info,
        "conditions": conditions, "comparisons": comparisons, "corpus": corpus,
        "pairwise_accuracy": pairwise, "identification": identification, "contamination": contamination,
        "decoder_identification": decoder_ident,
    }
    summary["verdicts"] = verdicts(json_safe(summary))
    return RunEvaluation(run, metric_config, metric_names, per_sample, json_safe(summary))


def per_sample_rows(ev: RunEvaluation) -> list[dict[str, Any]]:
    """One JSON-able row per sample: id, stimulus, and every condition's per-sample metric values."""
    rows = []
    for i, sid in enumerate(ev.run.ids):
        row: dict[str, Any] = {"id": sid, "stimulus": ev.run.stimuli[i]}
        for cond, values in ev.per_sample.items():
            row[cond] = {m: S.finite_or_none(float(v[i])) for m, v in values.items()}
        rows.append(row)
    return rows


def write_evaluation(ev: RunEvaluation, out_dir: Optional[Path] = None) -> Path:
    """Write scores.json, table.md and per_sample.jsonl to `out_dir` (default RUN/evaluation). Returns the folder."""
    from .tables import markdown_report_tables

    out = Path(out_dir) if out_dir else RunPaths(ev.run.path).evaluation_dir
    write_json(out / "scores.json", ev.summary)
    write_text(out / "table.md", markdown_report_tables([ev.summary]))
    write_jsonl(out / "per_sample.jsonl", per_sample_rows(ev))
    return out


def evaluate_command(run: Path, split: str = "test", truncate: bool = False, semantic: bool = True,
                     seed: int = 0) -> tuple[Path, str]:
    """What `brainllm evaluate` does: evaluate, write RUN/evaluation/, return (folder, terminal table)."""
    from .tables import text_condition_table

    ev = evaluate_run(run, split, M.MetricConfig(truncate_to_reference=truncate, semantic=semantic),
                      EvalConfig(seed=seed))
    return write_evaluation(ev), text_condition_table(ev.summary)
