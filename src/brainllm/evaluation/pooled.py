"""Several decoded stories scored together: one test-set number per condition and metric.

One 100-s story holds about five independent 20-s windows, so a single story's z swings widely by chance; real
evaluations decode every held-out story and pool them. Pooling rule (per metric):

* score S = the mean over ALL windows of all stories, i.e. the stories' scores weighted by their window counts
  K_s: S = sum_s K_s S_s / sum_s K_s;
* null n: the same weighted mean of each story's n-th null, S_n = sum_s K_s S_{n,s} / sum_s K_s. The nulls of a
  story are exchangeable brain-free samples, so pairing the n-th of every story gives N samples of the pooled
  statistic under the null (stories with more nulls contribute their first N = min_s N_s);
* z = (S - mean_n S_n) / sd_n S_n (ddof 1), p = (1 + #{S_n >= S}) / (1 + N), one-sided;
* identification: the mean percentile rank over all windows (each window ranked within its own story; chance 0.5).

The per-story z of every condition is kept next to the pooled one, so a result carried by one story shows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..io import read_json, write_json
from .rundata import EvaluationError
from .story_results import NULL, NULL_KINDS, StoryEvaluation, format_score
from .story_scoring import describe_metric
from .story_stats import empirical_p, safe_z
from .tables import render_text

log = logging.getLogger(__name__)

FORMAT = "brainllm.pooled_story_evaluation"
VERSION = 1
EVALUATION_FILE = "story_evaluation.json"


@dataclass
class PooledCondition:
    """One condition over all stories. Every dict maps a metric name to a value.

    Attributes:
        score: window-weighted mean score S over the stories.
        z: (S - mean_n S_n) / sd_n S_n against the pooled nulls (ddof 1).
        p_value: (1 + #{S_n >= S}) / (1 + N), one-sided.
        story_z: metric -> {story: that story's own story-level z}.
        identification: mean percentile rank of the true window over all windows (NaN if not computed).
    """

    score: dict[str, float]
    z: dict[str, float]
    p_value: dict[str, float]
    story_z: dict[str, dict[str, float]]
    identification: float


@dataclass
class PooledStoryEvaluation:
    """Condition name -> `PooledCondition` over `stories`, with the pooled null scores `(N,)` per metric and what
    the nulls are (`null_kind`, a key of `story.NULL_KINDS`)."""

    stories: list[str]
    n_windows: dict[str, int]
    variants: dict[str, str]
    conditions: dict[str, PooledCondition]
    null_scores: dict[str, np.ndarray]
    null_kind: str = "lm"

    @property
    def metrics(self) -> list[str]:
        return list(self.variants)

    @property
    def n_nulls(self) -> int:
        return len(next(iter(self.null_scores.values()))) if self.null_scores else 0

    def to_json(self) -> dict[str, Any]:
        from .evaluate import json_safe

        return json_safe({
            "format": FORMAT, "version": VERSION, "stories": self.stories, "n_windows": self.n_windows,
            "n_nulls": self.n_nulls, "null_kind": self.null_kind, "null": NULL_KINDS[self.null_kind],
            "variants": self.variants,
            "descriptions": {m: describe_metric(m, v) for m, v in self.variants.items()},
            "pooling": "S = window-weighted mean over stories; null n = the same mean of each story's n-th null; "
                       "z = (S - mean_n S_n) / sd_n S_n (ddof 1); p = (1 + #{S_n >= S}) / (1 + N); "
                       "identification = mean percentile rank over all windows (chance 0.5)",
            "conditions": {k: vars(c) for k, c in self.conditions.items()},
            "nulls": {m: v.tolist() for m, v in self.null_scores.items()}})

    def summary_table(self) -> str:
        """Plain text: per condition and metric the pooled score, z and p, each story's z, and identification."""
        fmt = format_score
        header = ["condition"]
        for m in self.metrics:
            header += [m, f"{m} z", f"{m} p", f"{m} z per story"]
        header.append("ident")
        rows = []
        for name, c in self.conditions.items():
            row = [name]
            for m in self.metrics:
                row += [fmt(c.score[m]), fmt(c.z[m]), fmt(c.p_value[m]),
                        " ".join(fmt(c.story_z[m][s]) for s in self.stories)]
            rows.append(row + [fmt(c.identification)])
        rows.append([f"{NULL} (mean of {self.n_nulls})"]
                    + [v for m in self.metrics for v in (fmt(float(np.mean(self.null_scores[m]))), "-", "-", "-")]
                    + ["-"])
        out = render_text(header, rows, right_align=True).split("\n")
        total = sum(self.n_windows.values())
        out += ["", f"{len(self.stories)} stories ({', '.join(self.stories)}), {total} windows; pooled score = "
                    f"mean over all windows; z and p against {self.n_nulls} pooled nulls (the n-th null of every "
                    "story); 'z per story' in the order of the stories; ident = mean percentile rank (chance 0.5).",
                f"nulls: {NULL_KINDS[self.null_kind]}."]
        out += [f"{m} = {v}: {describe_metric(m, v)}" for m, v in self.variants.items()]
        return "\n".join(out)


def pool_story_evaluations(evaluations: Mapping[str, StoryEvaluation]) -> PooledStoryEvaluation:
    """Pool the evaluations of several stories (story name -> `StoryEvaluation`); see the module docstring.

    Only conditions and metrics present in every story are pooled (the others are named in a warning). Raises
    `EvaluationError` when there is no story, no common condition, or fewer than 2 nulls in some story.
    """
    if not evaluations:
        raise EvaluationError("No story evaluation to pool.")
    stories = list(evaluations)
    evs = [evaluations[s] for s in stories]
    metrics = [m for m in evs[0].metrics if all(m in e.metrics for e in evs)]
    names = [c for c in evs[0].conditions if all(c in e.conditions for e in evs)]
    dropped = sorted({c for e in evs for c in e.conditions} - set(names))
    if dropped:
        log.warning("Conditions %s are missing from some stories and are not pooled.", dropped)
    if not names or not metrics:
        raise EvaluationError(f"The stories {stories} share no condition or metric; nothing to pool.")
    for s, e in zip(stories, evs):
        if any(e.variants[m] != evs[0].variants[m] for m in metrics):
            raise EvaluationError(f"Story {s} was scored with other metric variants ({e.variants}) than "
                                  f"{stories[0]} ({evs[0].variants}); re-evaluate them the same way.")
    kinds = {e.null_kind for e in evs}
    if len(kinds) > 1:
        raise EvaluationError(f"The stories {stories} were scored against different kinds of null ({sorted(kinds)}); "
                              "pool stories scored against the same kind.")
    n_nulls = min(e.n_nulls for e in evs)
    if n_nulls < 2:
        raise EvaluationError(f"Pooled z-scores need at least 2 nulls in every story; the fewest is {n_nulls}.")
    if any(e.n_nulls != n_nulls for e in evs):
        log.warning("Stories have different numbers of nulls; the first %d of each are pooled.", n_nulls)
    k = np.array([len(e.bounds) for e in evs], dtype=np.float64)
    weights = k / k.sum()
    nulls = {m: sum(w * e.null_story_scores[m][:n_nulls] for w, e in zip(weights, evs)) for m in metrics}
    conditions = {}
    for name in names:
        cs = [e.conditions[name] for e in evs]
        score = {m: float(sum(w * c.story_score[m] for w, c in zip(weights, cs))) for m in metrics}
        z = {m: float(safe_z(np.array(score[m]), nulls[m].mean(), nulls[m].std(ddof=1), f"pooled {name} {m}"))
             for m in metrics}
        ranks = [c.identification.percentile_rank for c in cs if c.identification is not None]
        ranks = np.concatenate(ranks) if len(ranks) == len(cs) else np.array([np.nan])
        conditions[name] = PooledCondition(
            score, z, {m: empirical_p(score[m], nulls[m]) for m in metrics},
            {m: {s: c.story_z[m] for s, c in zip(stories, cs)} for m in metrics},
            float(np.nanmean(ranks)) if np.isfinite(ranks).any() else float("nan"))
    return PooledStoryEvaluation(stories, {s: int(n) for s, n in zip(stories, k)},
                                 {m: evs[0].variants[m] for m in metrics}, conditions, nulls, evs[0].null_kind)


def load_story_evaluation(path: str | Path) -> tuple[str, StoryEvaluation]:
    """(story name, evaluation) from a decode folder (or its `story_evaluation.json`); the name comes from the
    folder's `decoded.json` when present, else the folder name."""
    path = Path(path)
    folder, file = (path, path / EVALUATION_FILE) if path.is_dir() else (path.parent, path)
    if not file.exists():
        raise EvaluationError(f"{file} does not exist; give the folders written by `brainllm decode-story` or "
                              "`brainllm tang decode`.")
    decoded = folder / "decoded.json"
    story = str(read_json(decoded).get("story", folder.name)) if decoded.exists() else folder.name
    return story, StoryEvaluation.from_json(read_json(file))


def pool_folders(paths: list[str | Path]) -> PooledStoryEvaluation:
    """`pool_story_evaluations` over decode folders; a story given twice is an error (it would count double)."""
    loaded: dict[str, StoryEvaluation] = {}
    for p in paths:
        story, ev = load_story_evaluation(p)
        if story in loaded:
            raise EvaluationError(f"Story {story} is given twice ({p}); pool each story once.")
        loaded[story] = ev
    return pool_story_evaluations(loaded)


def write_pooled(pooled: PooledStoryEvaluation, path: str | Path) -> None:
    """Write `pooled.to_json()` atomically."""
    write_json(path, pooled.to_json())
