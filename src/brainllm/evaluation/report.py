"""The report: one self-contained HTML page (plots embedded as base64 PNG, inline CSS and a few lines of inline
JavaScript for the sample filter; nothing is fetched), `scores.json` and `table.md`, for one or several runs.

Per run: the condition table (BrainLLM, PerBrainLLM, StdLLM side by side, 95 % CIs over stimuli, differences and
p-values), pairwise and identification accuracy with chance levels, tests and effect sizes, corpus-level metrics,
the contamination check, decoding settings, the per-run analyses, and a browsable sample table (prompt, reference,
BrainLLM, PerBrainLLM (first permutation) and StdLLM outputs, pad/eos strings removed). Then the analyses across
runs (learning curve, backbone, brain region) and the training curves.
"""

from __future__ import annotations

import base64
import html
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional, Sequence

from .. import __version__
from ..io import write_json, write_text
from ..runpaths import RunPaths
from . import analyses as A
from . import tables as T
from .evaluate import EvalConfig, RunEvaluation, evaluate_run, json_safe
from .metrics import MetricConfig
from .rundata import DISPLAY, EvaluationError
from .text import clean

log = logging.getLogger(__name__)

MAX_SAMPLE_ROWS = 500

CSS = """
.simulated { background: #fff3cd; border: 1px solid #e0c060; padding: 0.5em; }
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0 auto;max-width:1400px;padding:1em 2em;
color:#222;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
h3{margin-top:1.5em}.meta,.note{color:#555;font-size:.9em}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:.85em}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f3f3f3;position:sticky;top:0}tr:nth-child(even) td{background:#fafafa}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.scroll{max-height:36em;overflow:auto;border:1px solid #ddd}.wide{overflow-x:auto}
.samples td{max-width:22em}.samples td.ref{background:#eef6ee}
figure{display:inline-block;margin:.5em 1em .5em 0}figure img{max-width:640px;border:1px solid #eee}
figcaption{font-size:.85em;color:#444;max-width:640px}
input.filter{padding:.3em;width:24em;margin:.3em 0}
code{background:#f3f3f3;padding:0 .2em}
"""

FILTER_JS = """
function brainllmFilter(input, tableId){
  var q = input.value.toLowerCase();
  var rows = document.getElementById(tableId).tBodies[0].rows;
  for (var i = 0; i < rows.length; i++) {
    rows[i].style.display = rows[i].textContent.toLowerCase().indexOf(q) >= 0 ? '' : 'none';
  }
}
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def html_table(header: Sequence[str], rows: Sequence[Sequence[str]], css_class: str = "", table_id: str = "") -> str:
    """An escaped HTML table; cells that look numeric are right-aligned."""
    def cell(value: str) -> str:
        v = str(value)
        numeric = v[:1].isdigit() or (v[:1] in "-<" and v[1:2].isdigit())
        return f"<td class=\"num\">{_e(v)}</td>" if numeric else f"<td>{_e(v)}</td>"

    attrs = (f' class="{css_class}"' if css_class else "") + (f' id="{table_id}"' if table_id else "")
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(cell(c) for c in row) + "</tr>" for row in rows)
    return f"<table{attrs}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(analysis: A.Analysis) -> str:
    if analysis.figure is None:
        return f"<p class=\"note\">{_e(analysis.title)}: not shown ({_e(analysis.note)}).</p>"
    data = base64.b64encode(analysis.png()).decode("ascii")
    return (f"<figure><img alt=\"{_e(analysis.title)}\" src=\"data:image/png;base64,{data}\">"
            f"<figcaption>{_e(analysis.title)}</figcaption></figure>")


def _sample_table(ev: RunEvaluation, index: int, max_rows: int) -> str:
    run = ev.run
    conds = [c for c in ("brain", "permuted", "no_brain", "no_text") if c in run.conditions]
    metric = A.resolve_metric(ev, "bleu1_per_sample")
    header = ["id", "stimulus", "prompt", "reference"] + [
        DISPLAY[c] + (" (permutation 0)" if c == "permuted" else "") for c in conds] + [f"{metric} BrainLLM"]
    rows_html = []
    for i, sid in enumerate(run.ids[:max_rows]):
        cells = [f"<td>{_e(sid)}</td>", f"<td>{_e(run.stimuli[i])}</td>", f"<td>{_e(clean(run.prompts[i]))}</td>",
                 f"<td class=\"ref\">{_e(clean(run.references[i]))}</td>"]
        cells += [f"<td>{_e(clean(run.conditions[c].predictions[i][0]))}</td>" for c in conds]
        cells.append(f"<td class=\"num\">{T.fmt(ev.per_sample['brain'][metric][i])}</td>")
        rows_html.append("<tr>" + "".join(cells) + "</tr>")
    table_id = f"samples-{index}"
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    note = (f"<p class=\"note\">First {max_rows} of {len(run.ids)} samples shown; all are in "
            f"per_sample.jsonl of <code>brainllm evaluate</code>.</p>" if len(run.ids) > max_rows else "")
    return (f"<input class=\"filter\" type=\"search\" placeholder=\"Filter samples…\" "
            f"oninput=\"brainllmFilter(this, '{table_id}')\">{note}<div class=\"scroll\">"
            f"<table class=\"samples\" id=\"{table_id}\"><thead><tr>{head}</tr></thead><tbody>"
            f"{''.join(rows_html)}</tbody></table></div>")


def _run_section(ev: RunEvaluation, index: int, run_analyses: Sequence[A.Analysis], max_rows: int) -> str:
    s = ev.summary
    parts = [f"<section id=\"run-{index}\"><h2>{_e(T.run_title(s))}</h2>",
             "<ul class=\"verdict\">" + "".join(f"<li><strong>{_e(line)}</strong></li>" for line in
                                              s.get("verdicts", [])) + "</ul>",
             "<ul class=\"meta\">" + "".join(f"<li>{_e(line)}</li>" for line in T.settings_lines(s)) + "</ul>",
             "<h3>Conditions</h3>",
             "<p class=\"note\">Mean [95 % CI] per condition; Δ = BrainLLM − control; p = paired sign-flip test over "
             "stimuli. ↑ higher is better, ↓ lower is better (WER and loss are errors). PerBrainLLM = the same model "
             "with brain inputs permuted across test samples; StdLLM = the bare LLM with the text prompt only.</p>",
             html_table(*T.condition_rows(s), css_class="conditions"),
             "<h3>Pairwise and identification accuracy</h3>", html_table(*T.accuracy_rows(s), css_class="accuracy")]
    ident = s.get("identification", {})
    if ident.get("available"):
        parts.append("<ul class=\"note\">" + "".join(
            f"<li><b>{_e(k)}</b>: {_e(v['description'])}</li>" for k, v in ident["variants"].items()) + "</ul>")
    parts += ["<h3>Tests and effect sizes</h3><details><summary>All comparisons (both p-values, Holm-adjusted p, "
              "Cohen's d<sub>z</sub>, rank-biserial r)</summary>", html_table(*T.effect_rows(s)), "</details>",
              "<h3>Corpus-level metrics</h3>", html_table(*T.corpus_rows(s)),
              "<h3>Contamination check</h3><p class=\"note\">Verbatim overlap of predictions with their references "
              "(words); a shared run of ≥ 6 words is flagged (memorised stimuli inflate scores).</p>",
              html_table(*T.contamination_rows(s))]
    flagged = [(c, f) for c, e in s.get("contamination", {}).items() for f in e["flagged"][:10]]
    if flagged:
        parts.append(html_table(["condition", "id", "run length", "shared run"],
                                [[DISPLAY.get(c, c), f["id"], str(f["run_length"]), f["run"]] for c, f in flagged]))
    decoding = s.get("decoding", {})
    if decoding:
        keys = sorted({k for d in decoding.values() for k in d})
        parts += ["<h3>Decoding settings</h3>",
                  html_table(["condition"] + keys, [[DISPLAY.get(c, c)] + [str(d.get(k, "–")) for k in keys]
                                                    for c, d in decoding.items()])]
    parts += ["<h3>Analyses</h3>", *[_figure(a) for a in run_analyses],
              "<h3>Samples</h3>", _sample_table(ev, index, max_rows), "</section>"]
    return "\n".join(parts)


def render_html(evs: Sequence[RunEvaluation], analyses: Sequence[A.Analysis], max_rows: int = MAX_SAMPLE_ROWS) -> str:
    """The whole report page as a string."""
    per_run = {id(ev): [a for a in analyses if a.run == str(ev.run.path)] for ev in evs}
    across = [a for a in analyses if not a.run]
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    nav = "".join(f"<li><a href=\"#run-{k}\">{_e(ev.run.name)}</a> ({_e(ev.run.backbone)}, "
                  f"{_e(ev.run.dataset_name)})</li>" for k, ev in enumerate(evs))
    body = [f"<h1>brainllm evaluation report</h1><p class=\"meta\">brainllm {_e(__version__)}, {stamp}; "
            f"{len(evs)} run(s). Self-contained: plots are embedded, nothing is loaded from the network.</p>",
            f"<ul>{nav}</ul>"]
    simulated = [ev.run.name for ev in evs if ev.run.simulated]
    if simulated:
        body.insert(1, f"<p class=\"simulated\"><strong>SIMULATED DATA</strong> ({_e(', '.join(simulated))}): a "
                       "simulated participant (brainllm.data.simulate), not real fMRI. Its numbers say what the "
                       "pipeline can detect, not what a brain encodes.</p>")
    if len(evs) > 1:
        body += ["<h2>Runs compared</h2><div class=\"wide\">",
                 html_table(*T.cross_run_rows([ev.summary for ev in evs])), "</div>"]
    body += [_run_section(ev, k, per_run[id(ev)], max_rows) for k, ev in enumerate(evs)]
    body += ["<h2>Across runs and training</h2>", *[_figure(a) for a in across]]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>brainllm report</title><style>{CSS}</style><script>{FILTER_JS}</script></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def build_report(runs: Sequence[str | Path], out_dir: Path, split: str = "test",
                 metric_config: MetricConfig = MetricConfig(), config: EvalConfig = EvalConfig(),
                 metric: str = A.DEFAULT_METRIC, max_rows: int = MAX_SAMPLE_ROWS) -> Path:
    """Evaluate `runs`, run the analyses and write report.html, scores.json and table.md to `out_dir`.

    Returns the path of report.html.
    """
    if not runs:
        raise EvaluationError("No run folder given; pass at least one RUN.")
    scorer = None
    if metric_config.semantic:
        from .semantic import MiniLMScorer

        scorer = MiniLMScorer()
    evs = [evaluate_run(run, split, metric_config, config, scorer) for run in runs]
    names = [ev.run.name for ev in evs]
    if len(set(names)) != len(names):
        for k, ev in enumerate(evs):
            ev.summary["name"] = f"{ev.run.name} [{k}]"
    analyses = A.run_all(evs, metric)
    out = Path(out_dir)
    write_json(out / "scores.json", json_safe({
        "brainllm_version": __version__, "split": split, "runs": [ev.summary for ev in evs],
        "analyses": [{"name": a.name, "title": a.title, "note": a.note, "run": a.run, "data": a.data}
                     for a in analyses]}))
    write_text(out / "table.md", T.markdown_report_tables([ev.summary for ev in evs]))
    page = out / "report.html"
    write_text(page, render_html(evs, analyses, max_rows))
    return page


def report_command(runs: Sequence[Path], out: Optional[Path] = None, split: str = "test", truncate: bool = False,
                   semantic: bool = True, seed: int = 0, metric: str = A.DEFAULT_METRIC) -> Path:
    """What `brainllm report` does; `out` defaults to RUN/report for a single run."""
    if out is None:
        if len(runs) != 1:
            raise EvaluationError("Several runs: say where the report goes with --out DIR.")
        out = RunPaths(runs[0]).report_dir
    return build_report(runs, out, split, MetricConfig(truncate_to_reference=truncate, semantic=semantic),
                        EvalConfig(seed=seed), metric)


def analyze_command(runs: Sequence[Path], out: Optional[Path] = None, split: str = "test", metric: str =
                    A.DEFAULT_METRIC, truncate: bool = False, seed: int = 0) -> list[Path]:
    """What `brainllm analyze` does: the analyses' PNGs and analyses.json (default RUN/evaluation/analyses)."""
    if out is None:
        if len(runs) != 1:
            raise EvaluationError("Several runs: say where the analyses go with --out DIR.")
        out = RunPaths(runs[0]).analyses_dir
    semantic = metric.startswith(("semsim", "bertscore"))
    mc = MetricConfig(truncate_to_reference=truncate, semantic=semantic)
    evs = [evaluate_run(run, split, mc, EvalConfig(seed=seed)) for run in runs]
    return A.write_analyses(A.run_all(evs, metric), out)
