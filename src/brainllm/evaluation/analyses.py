"""The paper's analyses as functions: each returns its data (JSON-able) and a matplotlib figure.

Single-run analyses split the test samples into quantile bins of a per-sample quantity and show each condition's
mean score per bin with 95 % CIs (bootstrap over the bin's stimuli):

* `by_surprisal`: bins of the continuation's surprisal under the bare LLM (the StdLLM / `no_brain` teacher-forced
  loss, nats per token): does the brain help more where the text is hard to predict?
* `by_prompt_length`: bins of the text prompt's length in words.

Multi-run analyses put several evaluated runs side by side:

* `learning_curve`: scores against the number of training samples (`training.max_train_samples` of brainllm.json,
  capped by the split's train size, else the split's train size);
* `by_backbone`: one group of bars per backbone (brainllm.json `backbone`);
* `by_region`: one group per brain region, i.e. per ROI-restricted dataset the run was trained on (the name of
  brainllm.json `dataset`);
* `training_curves`: train/valid loss per epoch from metrics.jsonl.

Figures are `matplotlib.figure.Figure` objects made without pyplot (no global state, no display needed).
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
from matplotlib.figure import Figure

from ..io import write_json
from .evaluate import LOSS, EvalConfig, RunEvaluation, json_safe
from .rundata import CONTROLS, DISPLAY, RunData
from .stats import StimulusBootstrap, finite_or_none
from .text import tokenize

log = logging.getLogger(__name__)

COLORS = {"brain": "#1f77b4", "permuted": "#ff7f0e", "no_brain": "#2ca02c", "no_text": "#9467bd"}
DEFAULT_METRIC = "bleu1_per_sample"


@dataclass
class Analysis:
    """One analysis: `data` is JSON-able, `figure` is None when the analysis does not apply (see `note`);
    `run` is the run folder of a single-run analysis ('' for analyses across runs)."""

    name: str
    title: str
    data: dict[str, Any] = field(default_factory=dict)
    figure: Optional[Figure] = None
    note: str = ""
    run: str = ""

    def png(self, dpi: int = 100) -> bytes:
        """The figure as PNG bytes (b'' without a figure)."""
        if self.figure is None:
            return b""
        buf = io.BytesIO()
        self.figure.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
        return buf.getvalue()


def resolve_metric(ev: RunEvaluation, metric: str) -> str:
    """The run's variant name for `metric` (adds `_truncref` when the run was scored with truncation)."""
    if metric in ev.metrics:
        return metric
    if metric + "_truncref" in ev.metrics:
        return metric + "_truncref"
    raise KeyError(f"Metric '{metric}' was not computed for {ev.run.name}; available: {ev.metrics}.")


def _mean_ci(values: np.ndarray, stimuli: Sequence[str], n_boot: int, seed: int) -> dict[str, Optional[float]]:
    ok = np.isfinite(values)
    if not ok.any():
        return {"mean": None, "ci_low": None, "ci_high": None, "n": 0}
    boot = StimulusBootstrap(np.asarray(stimuli)[ok], n_boot, seed)
    low, high = boot.ci(values[ok])
    return {"mean": float(values[ok].mean()), "ci_low": finite_or_none(low), "ci_high": finite_or_none(high),
            "n": int(ok.sum())}


def quantile_bins(x: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """(bin index per sample `(N,)`, edges `(B+1,)`) for quantile bins of `x`; ties can merge bins."""
    x = np.asarray(x, dtype=np.float64)
    edges = np.unique(np.quantile(x[np.isfinite(x)], np.linspace(0, 1, n_bins + 1)))
    if len(edges) < 2:
        return np.zeros(len(x), dtype=int), np.array([edges[0], edges[0]])
    return np.clip(np.searchsorted(edges[1:-1], x, side="right"), 0, len(edges) - 2), edges


def _binned(ev: RunEvaluation, x: np.ndarray, n_bins: int, metric: str, cfg: EvalConfig) -> dict[str, Any]:
    bins, edges = quantile_bins(x, n_bins)
    stimuli = np.asarray(ev.run.stimuli)
    out: dict[str, Any] = {"metric": metric, "edges": edges.tolist(), "bins": []}
    for b in range(len(edges) - 1):
        mask = bins == b
        row: dict[str, Any] = {"bin": b, "low": float(edges[b]), "high": float(edges[b + 1]),
                               "x_mean": float(np.mean(x[mask])) if mask.any() else None, "n": int(mask.sum()),
                               "n_stimuli": int(len(set(stimuli[mask])))}
        for cond, values in ev.per_sample.items():
            row[cond] = _mean_ci(values[metric][mask], stimuli[mask], cfg.n_boot, cfg.seed)
        if "permuted" in ev.per_sample:
            diff = ev.per_sample["brain"][metric][mask] - ev.per_sample["permuted"][metric][mask]
            row["brain_minus_permuted"] = _mean_ci(diff, stimuli[mask], cfg.n_boot, cfg.seed)
        out["bins"].append(row)
    return out


def _line_figure(data: dict[str, Any], conditions: Sequence[str], xlabel: str, title: str) -> Figure:
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.add_subplot(1, 1, 1)
    bins = [b for b in data["bins"] if b["n"]]
    x = np.arange(len(bins))
    for k, cond in enumerate(conditions):
        means = np.array([np.nan if b[cond]["mean"] is None else b[cond]["mean"] for b in bins], dtype=float)
        low = np.array([np.nan if b[cond]["ci_low"] is None else b[cond]["ci_low"] for b in bins], dtype=float)
        high = np.array([np.nan if b[cond]["ci_high"] is None else b[cond]["ci_high"] for b in bins], dtype=float)
        err = np.vstack([np.clip(means - low, 0, None), np.clip(high - means, 0, None)])
        ax.errorbar(x + (k - (len(conditions) - 1) / 2) * 0.06, means, yerr=np.nan_to_num(err), marker="o",
                    capsize=3, label=DISPLAY.get(cond, cond), color=COLORS.get(cond))
    ax.set_xticks(x, [f"{b['low']:.2f}–{b['high']:.2f}\n(n={b['n']})" for b in bins], fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(data["metric"])
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def by_surprisal(ev: RunEvaluation, metric: str = DEFAULT_METRIC, n_bins: int = 4,
                 config: EvalConfig = EvalConfig(n_boot=1000)) -> Analysis:
    """Scores per quantile bin of the continuation's surprisal under the bare LLM (no_brain loss, nats/token)."""
    metric = resolve_metric(ev, metric)
    title = f"{metric} by continuation surprisal (StdLLM loss quantiles) — {ev.run.name}"
    if "no_brain" not in ev.per_sample:
        return Analysis("by_surprisal", title, note="needs the no_brain (StdLLM) predictions for the surprisal",
                        run=str(ev.run.path))
    data = _binned(ev, ev.per_sample["no_brain"][LOSS], n_bins, metric, config)
    data["x"] = "StdLLM teacher-forced loss (nats per continuation token)"
    fig = _line_figure(data, list(ev.per_sample), data["x"], title)
    return Analysis("by_surprisal", title, data, fig, run=str(ev.run.path))


def by_prompt_length(ev: RunEvaluation, metric: str = DEFAULT_METRIC, n_bins: int = 4,
                     config: EvalConfig = EvalConfig(n_boot=1000)) -> Analysis:
    """Scores per quantile bin of the text prompt's length in words."""
    metric = resolve_metric(ev, metric)
    title = f"{metric} by prompt length — {ev.run.name}"
    lengths = np.array([len(tokenize(p, keep_punct=False)) for p in ev.run.prompts], dtype=np.float64)
    data = _binned(ev, lengths, n_bins, metric, config)
    data["x"] = "prompt length (words)"
    fig = _line_figure(data, list(ev.per_sample), data["x"], title)
    return Analysis("by_prompt_length", title, data, fig, run=str(ev.run.path))


def _run_point(ev: RunEvaluation, metric: str) -> dict[str, Any]:
    conds = ev.summary["conditions"]
    point = {"run": ev.run.name, "backbone": ev.run.backbone, "dataset": ev.run.dataset_name,
             "train_size": ev.run.train_size()}
    for cond in conds:
        point[cond] = conds[cond][metric]
    comp = ev.summary["comparisons"].get("brain_vs_permuted", {}).get(metric)
    if comp:
        point["brain_minus_permuted"] = comp
    return point


def _err(entry: dict) -> tuple[float, float, float]:
    mean = entry["mean"] if entry.get("mean") is not None else np.nan
    low = entry["ci_low"] if entry.get("ci_low") is not None else mean
    high = entry["ci_high"] if entry.get("ci_high") is not None else mean
    return mean, max(mean - low, 0.0), max(high - mean, 0.0)


def learning_curve(evs: Sequence[RunEvaluation], metric: str = DEFAULT_METRIC) -> Analysis:
    """Scores against the number of training samples, one point per run (needs >= 2 distinct sizes)."""
    title = f"{metric} by number of training samples"
    points = [_run_point(ev, resolve_metric(ev, metric)) for ev in evs if ev.run.train_size() is not None]
    sizes = sorted({p["train_size"] for p in points})
    if len(sizes) < 2:
        return Analysis("learning_curve", title, {"points": points},
                        note="needs runs trained on at least two different numbers of training samples")
    points.sort(key=lambda p: p["train_size"])
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.add_subplot(1, 1, 1)
    for cond in ("brain",) + CONTROLS:
        pts = [p for p in points if cond in p]
        if not pts:
            continue
        m = np.array([_err(p[cond]) for p in pts])
        ax.errorbar([p["train_size"] for p in pts], m[:, 0], yerr=m[:, 1:].T, marker="o", capsize=3,
                    label=DISPLAY[cond], color=COLORS.get(cond))
    ax.set_xscale("log")
    ax.set_xticks(sizes, [str(x) for x in sizes])
    ax.minorticks_off()
    ax.set_xlabel("training samples")
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return Analysis("learning_curve", title, {"metric": metric, "points": points}, fig)


def _grouped(evs: Sequence[RunEvaluation], metric: str, key: Callable[[RunData], str], name: str, title: str,
             what: str) -> Analysis:
    points = [_run_point(ev, resolve_metric(ev, metric)) | {"group": key(ev.run)} for ev in evs]
    groups = [p["group"] for p in points]
    if len(set(groups)) < 2:
        return Analysis(name, title, {"points": points}, note=f"needs runs on at least two different {what}")
    labels = [g if groups.count(g) == 1 else f"{g}\n({p['run']})" for g, p in zip(groups, points)]
    conds = [c for c in ("brain",) + CONTROLS if any(c in p for p in points)]
    fig = Figure(figsize=(max(6.4, 1.4 * len(points) + 2), 4.0))
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(conds)
    x = np.arange(len(points))
    for k, cond in enumerate(conds):
        m = np.array([_err(p[cond]) if cond in p else (np.nan, 0.0, 0.0) for p in points])
        ax.bar(x + (k - (len(conds) - 1) / 2) * width, m[:, 0], width, yerr=m[:, 1:].T, capsize=3,
               label=DISPLAY[cond], color=COLORS.get(cond))
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return Analysis(name, title, {"metric": metric, "points": points}, fig)


def by_backbone(evs: Sequence[RunEvaluation], metric: str = DEFAULT_METRIC) -> Analysis:
    """Scores per backbone (brainllm.json `backbone`), one group of bars per run."""
    return _grouped(evs, metric, lambda run: run.backbone, "by_backbone", f"{metric} by backbone", "backbones")


def by_region(evs: Sequence[RunEvaluation], metric: str = DEFAULT_METRIC) -> Analysis:
    """Scores per brain region: runs trained on ROI-restricted datasets, named by their dataset folder."""
    return _grouped(evs, metric, lambda run: run.dataset_name, "by_region",
                    f"{metric} by brain region (dataset)", "datasets (ROIs)")


def training_curves(runs: Sequence[RunData]) -> Analysis:
    """Train and validation loss per epoch from each run's metrics.jsonl (warm-up epochs marked)."""
    title = "Training curves (metrics.jsonl)"
    data = {run.name: run.training_log for run in runs}
    if not any(data.values()):
        return Analysis("training_curves", title, data, note="no metrics.jsonl in the runs")
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.add_subplot(1, 1, 1)
    for k, run in enumerate(runs):
        rows = run.training_log
        if not rows:
            continue
        color = f"C{k % 10}"
        step = np.arange(len(rows))
        train = [r.get("train_loss") for r in rows]
        valid = [r.get("valid_loss") for r in rows]
        ax.plot(step, [np.nan if v is None else v for v in train], "-o", color=color, label=f"{run.name} train")
        ax.plot(step, [np.nan if v is None else v for v in valid], "--s", color=color, label=f"{run.name} valid")
        warm = [i for i, r in enumerate(rows) if r.get("stage") == "warmup"]
        if warm:
            ax.axvspan(min(warm) - 0.5, max(warm) + 0.5, color=color, alpha=0.08)
    ax.set_xlabel("epoch (warm-up shaded, then main)")
    ax.set_ylabel("loss (nats per token)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return Analysis("training_curves", title, data, fig)


def run_all(evs: Sequence[RunEvaluation], metric: str = DEFAULT_METRIC) -> list[Analysis]:
    """Every analysis that applies: per-run surprisal and prompt length, then the multi-run ones."""
    out: list[Analysis] = []
    for ev in evs:
        out += [by_surprisal(ev, metric), by_prompt_length(ev, metric)]
    out += [learning_curve(evs, metric), by_backbone(evs, metric), by_region(evs, metric),
            training_curves([ev.run for ev in evs])]
    return out


def write_analyses(analyses: Sequence[Analysis], out_dir: Path) -> list[Path]:
    """Write each figure as PNG and all data to analyses.json in `out_dir`; returns the PNG paths."""
    from ..io import atomic_path

    out_dir = Path(out_dir)
    paths = []
    seen: dict[str, int] = {}
    for a in analyses:
        if a.figure is None:
            continue
        stem = f"{a.name}_{Path(a.run).name}" if a.run else a.name
        seen[stem] = seen.get(stem, 0) + 1
        path = out_dir / (f"{stem}.png" if seen[stem] == 1 else f"{stem}_{seen[stem]}.png")
        with atomic_path(path) as tmp:
            tmp.write_bytes(a.png())
        paths.append(path)
    write_json(out_dir / "analyses.json", json_safe([{"name": a.name, "title": a.title, "note": a.note,
                                                      "run": a.run, "data": a.data} for a in analyses]))
    return paths
