"""The condition table and the accuracy tables as rows of strings, rendered for the terminal and for Markdown.

One table per run: a row per metric variant (↑ higher is better, ↓ lower is better), a column per condition
(mean [95 % CI]), and per control the difference BrainLLM - control [CI] with the stimulus sign-flip p-value.
The HTML report renders the same rows (`condition_rows`).
"""

from __future__ import annotations

from typing import Optional, Sequence

from .rundata import CONTROLS, DISPLAY


def fmt(x: Optional[float], digits: int = 3) -> str:
    """A number for a table; '–' for missing; no '-0.000'."""
    if x is None:
        return "–"
    text = f"{x:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def fmt_p(p: Optional[float]) -> str:
    """A p-value with two significant digits ('<1e-04' below 1e-4)."""
    if p is None:
        return "–"
    return "<1e-04" if p < 1e-4 else f"{p:.2g}"


def fmt_ci(entry: dict, key: str = "mean", digits: int = 3) -> str:
    """'value [low, high]' from a summary entry."""
    return f"{fmt(entry.get(key), digits)} [{fmt(entry.get('ci_low'), digits)}, {fmt(entry.get('ci_high'), digits)}]"


def arrow(summary: dict, metric: str) -> str:
    info = summary.get("metrics", {}).get(metric, {})
    return "↑" if info.get("higher_is_better", True) else "↓"


def condition_rows(summary: dict) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the condition table of one run's summary."""
    present = [c for c in ("brain",) + CONTROLS if c in summary["conditions"]]
    controls = [c for c in CONTROLS if f"brain_vs_{c}" in summary["comparisons"]]
    header = ["metric"] + [DISPLAY[c] for c in present]
    header += [f"Δ vs {DISPLAY[c]} [CI]" for c in controls] + [f"p vs {DISPLAY[c]}" for c in controls]
    rows = []
    for metric in summary["conditions"]["brain"]:
        row = [f"{metric} {arrow(summary, metric)}"]
        # a metric some conditions lack (StdLLM has no posterior loss) shows "–" there
        row += [fmt_ci(summary["conditions"][c].get(metric, {})) for c in present]
        comps = [summary["comparisons"][f"brain_vs_{c}"].get(metric, {}) for c in controls]
        row += [fmt_ci(comp, "diff") for comp in comps]
        row += [fmt_p(comp.get("p_signflip_stimuli")) for comp in comps]
        rows.append(row)
    return header, rows


def effect_rows(summary: dict) -> tuple[list[str], list[list[str]]]:
    """(header, rows): per comparison and metric, both p-values, Holm-adjusted p and both effect sizes."""
    header = ["comparison", "metric", "diff", "p sign-flip (stimuli)", "p Holm", "p Wilcoxon (samples)",
              "Cohen's d_z", "rank-biserial r", "n"]
    rows = []
    for comp_name, comp in summary["comparisons"].items():
        control = comp_name.removeprefix("brain_vs_")
        for metric, e in comp.items():
            rows.append([f"BrainLLM − {DISPLAY.get(control, control)}", metric, fmt(e["diff"], 4),
                         fmt_p(e["p_signflip_stimuli"]), fmt_p(e["p_signflip_stimuli_holm"]),
                         fmt_p(e["p_wilcoxon_samples"]), fmt(e["cohens_dz"], 2), fmt(e["rank_biserial"], 2),
                         str(e["n"])])
    return header, rows


def corpus_rows(summary: dict) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of corpus-level metrics per condition (no CIs)."""
    present = [c for c in ("brain",) + CONTROLS if c in summary["corpus"]]
    header = ["corpus metric"] + [DISPLAY[c] for c in present]
    names = list(summary["corpus"].get("brain", {}))
    return header, [[f"{m} {arrow(summary, m)}"] + [fmt(summary["corpus"][c].get(m)) for c in present] for m in names]


#: pairwise tests under a Bayesian decoder's distribution (`evaluate`): whose distribution, against PerBrainLLM's
PAIRWISE_LABELS = {
    "posterior_vs_permuted": "the decoder's distribution, loss(true frames) < loss(PerBrainLLM)",
    "nuisance_posterior_vs_permuted": "the length/position decoder's distribution, loss(its frames) < "
                                      "loss(PerBrainLLM)",
}


def accuracy_rows(summary: dict) -> tuple[list[str], list[list[str]]]:
    """(header, rows): pairwise accuracy and identification accuracy with chance levels."""
    header = ["measure", "value [95% CI]", "chance", "p vs chance (sign-flip, stimuli)", "n"]
    rows = []
    for key, entry in summary.get("pairwise_accuracy", {}).items():
        label = PAIRWISE_LABELS.get(key)
        if label is None:
            control = key.removeprefix("vs_")
            label = f"loss(true frames) < loss({DISPLAY.get(control, control)})"
        rows.append([f"pairwise accuracy: {label}",
                     fmt_ci(entry), fmt(entry["chance"], 2), fmt_p(entry.get("p_signflip_stimuli")), str(entry["n"])])
    ident = summary.get("identification", {})
    if ident.get("available"):
        for name, entry in ident["variants"].items():
            rows.append([f"identification {name}: 2-way", fmt_ci(entry["two_way"]), fmt(0.5, 2),
                         fmt_p(entry["two_way"].get("p_signflip_stimuli")), str(entry["two_way"]["n"])])
            rows.append([f"identification {name}: top-1 of {ident['n_candidates']}", fmt_ci(entry["top1"]),
                         fmt(entry["top1"]["chance"], 3), "–", str(entry["top1"]["n"])])
            rows.append([f"identification {name}: mean rank (1 = best)", fmt_ci(entry["rank"], digits=1),
                         fmt(entry["rank"]["chance"], 1), "–", str(entry["rank"]["n"])])
    elif ident:
        rows.append(["identification", f"not computed: {ident.get('reason')}", "–", "–", "–"])
    return header, rows


def contamination_rows(summary: dict) -> tuple[list[str], list[list[str]]]:
    """(header, rows): verbatim overlap of each condition's predictions with the references."""
    header = ["condition", "mean longest shared run (words)", "max run", "fraction with run ≥ 6",
              "1-gram overlap", "2-gram overlap", "4-gram overlap"]
    rows = []
    for cond, e in summary.get("contamination", {}).items():
        ov = e["ngram_overlap"]
        rows.append([DISPLAY.get(cond, cond), fmt(e["mean_longest_run"], 2), str(e["max_longest_run"]),
                     fmt(e["fraction_flagged"]), fmt(ov.get("1")), fmt(ov.get("2")), fmt(ov.get("4"))])
    return header, rows


def render_text(header: Sequence[str], rows: Sequence[Sequence[str]], right_align: bool = False) -> str:
    """A fixed-width table for the terminal; `right_align`: every column but the first right-aligned (numbers)."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    pad = lambda i, c, w: str(c).rjust(w) if right_align and i else str(c).ljust(w)  # noqa: E731
    line = lambda cells: "  ".join(pad(i, c, w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *[line(r) for r in rows]])


def render_markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A pipe table (cells' '|' escaped)."""
    esc = lambda c: str(c).replace("|", "\\|")  # noqa: E731
    out = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


TASK_TITLES = {"continuation": "continuation (the paper's: a prompt of earlier words, the next words)",
               "sentence": "sentence (no prompt: the whole sentence from its image)"}


def run_title(summary: dict) -> str:
    task = TASK_TITLES.get(summary.get("task", "continuation"), summary.get("task"))
    return (f"{summary['name']} — backbone {summary['backbone']}, dataset {summary.get('dataset')}, task {task}, "
            f"split {summary['split']}: {summary['n_samples']} samples from {summary['n_stimuli']} stimuli, "
            f"{summary['n_permutations']} permutations")


def settings_lines(summary: dict) -> list[str]:
    s = summary["settings"]
    recipe = [f"training recipe: {summary['training_recipe']}"] if summary.get("training_recipe") else []
    return recipe + [f"tokenisation {s['tokenization']}; truncate to reference: {s['truncate_to_reference']}; METEOR "
            f"variant {s['meteor_variant']}; WER: {s['wer']}", f"CIs: {s['ci']}",
            f"p: {s['p_signflip_stimuli']}"]


def text_condition_table(summary: dict) -> str:
    """What `brainllm evaluate` prints: the condition table, then pairwise and identification accuracy."""
    parts = [run_title(summary), *[f"VERDICT {line}" for line in summary.get("verdicts", [])],
             *settings_lines(summary), "", render_text(*condition_rows(summary)), "",
             render_text(*accuracy_rows(summary))]
    flagged = {c: e["fraction_flagged"] for c, e in summary.get("contamination", {}).items() if e["flagged"]}
    if flagged:
        parts += ["", "Contamination: predictions sharing a verbatim run of >= 6 words with the reference: "
                  + ", ".join(f"{DISPLAY.get(c, c)} {fmt(v)}" for c, v in flagged.items())]
    return "\n".join(parts)


def markdown_report_tables(summaries: Sequence[dict]) -> str:
    """The Markdown tables of one or several runs (table.md)."""
    parts: list[str] = []
    if len(summaries) > 1:
        parts += ["# Runs compared", "", render_markdown(*cross_run_rows(summaries)), ""]
    for summary in summaries:
        parts += [f"# {run_title(summary)}", "", *[f"**Verdict** {line}" for line in summary.get("verdicts", [])],
                  "", *[f"- {line}" for line in settings_lines(summary)], "",
                  "## Conditions", "", render_markdown(*condition_rows(summary)), "",
                  "## Pairwise and identification accuracy", "", render_markdown(*accuracy_rows(summary)), "",
                  "## Tests and effect sizes", "", render_markdown(*effect_rows(summary)), "",
                  "## Corpus-level metrics", "", render_markdown(*corpus_rows(summary)), "",
                  "## Contamination check", "", render_markdown(*contamination_rows(summary)), ""]
    return "\n".join(parts)


KEY_METRICS = ("bleu1_per_sample", "rouge1_recall", "wer_per_sample", "loss_nats")


def cross_run_rows(summaries: Sequence[dict], metrics: Sequence[str] = KEY_METRICS
                   ) -> tuple[list[str], list[list[str]]]:
    """(header, rows) comparing runs: BrainLLM mean and BrainLLM − PerBrainLLM [CI] (p) for key metrics."""
    header = ["run", "backbone", "dataset", "train size"]
    for m in metrics:
        header += [f"{m} BrainLLM", f"{m} Δ vs PerBrainLLM (p)"]
    header += ["pairwise acc. vs PerBrainLLM"]
    rows = []
    for s in summaries:
        row = [s["name"], s["backbone"], str(s.get("dataset")), str(s.get("train_size"))]
        for m in metrics:
            suffixed = m + ("_truncref" if s["settings"]["truncate_to_reference"] and m != "loss_nats" else "")
            brain = s["conditions"]["brain"].get(suffixed)
            row.append(fmt_ci(brain) if brain else "–")
            comp = s["comparisons"].get("brain_vs_permuted", {}).get(suffixed)
            row.append(f"{fmt_ci(comp, 'diff')} ({fmt_p(comp['p_signflip_stimuli'])})" if comp else "–")
        pa = s.get("pairwise_accuracy", {}).get("vs_permuted")
        row.append(fmt_ci(pa) if pa else "–")
        rows.append(row)
    return header, rows
