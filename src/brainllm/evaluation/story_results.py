"""The result types of a story evaluation: identification, one condition's scores, the whole evaluation, with
their JSON form and the summary table (`evaluation.story` computes them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from .rundata import EvaluationError
from .story_scoring import StoryEvalConfig, describe_metric
from .tables import render_text

FORMAT = "brainllm.story_evaluation"
VERSION = 1
NULL = "null"
# What the null sequences are. A z-score is only as meaningful as its null: Tang's brain-free LM samples test a
# decoder against the bare language model, which a decoder with a trained soft prompt beats without any brain input;
# the decoder null feeds the same trained decoder brain data unrelated to the story.
NULL_KINDS = {
    "lm": "brain-free LM samples at the prediction's word times (Tang's null)",
    "decoder": "the same trained decoder at the same word times, fed the frames of other stories (brain input "
               "unrelated to this story)",
}


def check_null_kind(kind: str) -> str:
    """`kind` if it is a key of `NULL_KINDS`, else an `EvaluationError`."""
    if kind not in NULL_KINDS:
        raise EvaluationError(f"Unknown null kind {kind!r}; expected one of {sorted(NULL_KINDS)}.")
    return kind


def format_score(x: float | None) -> str:
    """A score for a plain-text table: 3 decimals, `-` for None/NaN/inf."""
    return "-" if x is None or not math.isfinite(x) else f"{x:.3f}"


@dataclass
class Identification:
    """Identification of the true window among all reference windows.

    Attributes:
        metric: the similarity used (`semsim` or `bleu1`).
        similarity: `(K, K)`, [i, j] = similarity of prediction window i to reference window j.
        percentile_rank: `(K,)` per prediction window, the percentile rank of its true window (chance 0.5).
    """

    metric: str
    similarity: Optional[np.ndarray]
    percentile_rank: np.ndarray

    @property
    def mean_percentile_rank(self) -> float:
        r = self.percentile_rank[np.isfinite(self.percentile_rank)]
        return float(r.mean()) if r.size else float("nan")

    def to_json(self, matrix: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"metric": self.metric, "chance": 0.5, "mean_percentile_rank": self.mean_percentile_rank,
                               "percentile_rank": self.percentile_rank.tolist()}
        if matrix and self.similarity is not None:
            out["similarity"] = np.asarray(self.similarity).tolist()
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "Identification":
        sim = obj.get("similarity")
        return cls(obj["metric"], None if sim is None else _arr(sim), _arr(obj["percentile_rank"]))


@dataclass
class ConditionResult:
    """Scores of one condition (the prediction or a control) against the reference and the nulls.

    Attributes:
        name: condition name ("prediction", "permuted", "no_brain", ...).
        window_scores: metric -> `(K,)` per-window scores s_w.
        window_z: metric -> `(K,)` (s_w - mean_n s_{n,w}) / sd_n s_{n,w} (ddof 1); NaN where sd is 0 or no nulls.
        mean_window_z: metric -> mean of the finite window z (NaN if none).
        story_score: metric -> mean_w s_w.
        story_z: metric -> (story_score - mean_n S_n) / sd_n S_n (ddof 1).
        p_value: metric -> (1 + #{S_n >= story_score}) / (1 + N), one-sided.
        identification: the identification result, or None when not computed.
    """

    name: str
    window_scores: dict[str, np.ndarray]
    window_z: dict[str, np.ndarray]
    mean_window_z: dict[str, float]
    story_score: dict[str, float]
    story_z: dict[str, float]
    p_value: dict[str, float]
    identification: Optional[Identification] = None

    def to_json(self, matrix: bool = False) -> dict[str, Any]:
        return {"name": self.name,
                "story_score": self.story_score, "story_z": self.story_z, "p_value": self.p_value,
                "mean_window_z": self.mean_window_z,
                "window_scores": {m: v.tolist() for m, v in self.window_scores.items()},
                "window_z": {m: v.tolist() for m, v in self.window_z.items()},
                "identification": None if self.identification is None else self.identification.to_json(matrix)}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "ConditionResult":
        ident = obj.get("identification")
        return cls(obj["name"], {m: _arr(v) for m, v in obj["window_scores"].items()},
                   {m: _arr(v) for m, v in obj["window_z"].items()}, _floats(obj["mean_window_z"]),
                   _floats(obj["story_score"]), _floats(obj["story_z"]), _floats(obj["p_value"]),
                   None if ident is None else Identification.from_json(ident))


def _arr(values: Any) -> np.ndarray:
    return np.array(values, dtype=np.float64)  # None -> NaN


def _floats(d: dict[str, Any]) -> dict[str, float]:
    return {k: float("nan") if v is None else float(v) for k, v in d.items()}


@dataclass
class StoryEvaluation:
    """The windowed evaluation of one decoded story.

    Attributes:
        config: the settings used.
        variants: metric name -> precise variant name (e.g. `meteor` -> `meteor_nltk_wordnet`).
        start, end: the evaluated segment in seconds.
        bounds: `(K, 2)` window bounds [lo, hi) in seconds.
        conditions: condition name -> result; the prediction first, then the controls in the order given.
        null_window_scores: metric -> `(N, K)` window scores of the nulls (`(0, K)` when `null_z` is off).
        n_words: words of the reference inside [start, end).
        null_kind: what the nulls are, a key of `NULL_KINDS`.
    """

    config: StoryEvalConfig
    variants: dict[str, str]
    start: float
    end: float
    bounds: np.ndarray
    conditions: dict[str, ConditionResult]
    null_window_scores: dict[str, np.ndarray] = field(default_factory=dict)
    n_words: int = 0
    null_kind: str = "lm"

    @property
    def metrics(self) -> tuple[str, ...]:
        return self.config.metrics

    @property
    def n_nulls(self) -> int:
        arrays = list(self.null_window_scores.values())
        return int(arrays[0].shape[0]) if arrays else 0

    @property
    def null_story_scores(self) -> dict[str, np.ndarray]:
        """metric -> `(N,)` story scores S_n of the nulls (window means)."""
        return {m: v.mean(axis=1) if v.size else np.zeros(0) for m, v in self.null_window_scores.items()}

    def to_json(self, matrices: bool = False) -> dict[str, Any]:
        """A JSON-safe dict (NaN and inf become null). `matrices=True` adds each (K, K) identification matrix."""
        from .evaluate import json_safe

        obj = {"format": FORMAT, "version": VERSION, "config": self.config.to_json(), "variants": self.variants,
               "descriptions": {m: describe_metric(m, v) for m, v in self.variants.items()},
               "statistics": {"window_z": "(s_w - mean_n s_nw) / sd_n s_nw, sd ddof=1",
                              "story_z": "(mean_w s_w - mean_n S_n) / sd_n S_n, S_n = mean_w s_nw, sd ddof=1",
                              "p_value": "(1 + #{S_n >= S}) / (1 + N), one-sided, higher is better",
                              "identification": "per prediction window, fraction of other reference windows less "
                                                "similar than the true one (ties 0.5); chance 0.5"},
               "start": self.start, "end": self.end, "n_windows": int(len(self.bounds)), "n_words": self.n_words,
               "n_nulls": self.n_nulls, "null_kind": self.null_kind, "null": NULL_KINDS[self.null_kind],
               "bounds": np.asarray(self.bounds).tolist(),
               "conditions": {k: c.to_json(matrices) for k, c in self.conditions.items()},
               "nulls": {"story_scores": {m: v.tolist() for m, v in self.null_story_scores.items()},
                         "window_scores": {m: v.tolist() for m, v in self.null_window_scores.items()}}}
        return json_safe(obj)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "StoryEvaluation":
        """Inverse of `to_json` (NaN restored from null)."""
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            found = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
            raise EvaluationError(f"Not a story evaluation: format {found!r}, expected {FORMAT!r}.")
        try:
            k = int(obj["n_windows"])
            nulls = {m: _arr(v).reshape(-1, k) for m, v in obj["nulls"]["window_scores"].items()}
            return cls(StoryEvalConfig.from_json(obj["config"]), dict(obj["variants"]), float(obj["start"]),
                       float(obj["end"]), _arr(obj["bounds"]).reshape(-1, 2),
                       {name: ConditionResult.from_json(c) for name, c in obj["conditions"].items()}, nulls,
                       int(obj.get("n_words", 0)), check_null_kind(obj.get("null_kind", "lm")))
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise EvaluationError(f"Incomplete or malformed story evaluation ({type(err).__name__}: {err}); "
                                  "re-run the decode that wrote it.") from err

    def summary_table(self) -> str:
        """Plain-text table: one row per condition (then the nulls' mean), per metric story score, story z and p,
        then the mean identification percentile rank; the variants are listed below."""
        fmt = format_score
        header = ["condition"]
        for m in self.metrics:
            header += [f"{m}", f"{m} z", f"{m} p"]
        header.append("ident")
        rows = []
        for name, c in self.conditions.items():
            row = [name]
            for m in self.metrics:
                row += [fmt(c.story_score[m]), fmt(c.story_z[m]), fmt(c.p_value[m])]
            row.append(fmt(c.identification.mean_percentile_rank) if c.identification else "-")
            rows.append(row)
        if self.n_nulls:
            row = [f"{NULL} (mean of {self.n_nulls})"]
            for m in self.metrics:
                s = self.null_story_scores[m]
                row += [fmt(float(s.mean())), "-", "-"]
            rows.append(row + ["-"])
        out = render_text(header, rows, right_align=True).split("\n")
        out.append("")
        out.append(f"{len(self.bounds)} windows of {self.config.window:g} s every {self.config.step:g} s in "
                   f"[{self.start:g}, {self.end:g}) s; z against {self.n_nulls} nulls (sd ddof=1): "
                   f"{NULL_KINDS[self.null_kind]}; "
                   "p = (1 + #{S_n >= S})/(1 + N); ident = mean percentile rank of the true window "
                   f"({self.config.identification_metric}, chance 0.5).")
        for m, v in self.variants.items():
            out.append(f"{m} = {v}: {describe_metric(m, v)}")
        return "\n".join(out)
