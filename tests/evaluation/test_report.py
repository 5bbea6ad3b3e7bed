"""The report files: self-contained HTML, scores.json, table.md, and the report/analyze commands."""

import json
import re

from typer.testing import CliRunner

from brainllm.evaluation import metrics as M
from brainllm.evaluation.evaluate import EvalConfig
from brainllm.evaluation.report import build_report

FAST = M.MetricConfig(semantic=False)
CFG = EvalConfig(n_boot=300, n_permutations=1000)


def test_report_is_self_contained_and_complete(fake_runs, tmp_path):
    page = build_report(fake_runs, tmp_path / "rep", metric_config=FAST, config=CFG)
    html = page.read_text(encoding="utf-8")
    # nothing to fetch: no remote or relative src/href, no external stylesheet or script
    assert not re.search(r'(src|href)="(?!data:|#)', html)
    assert "<link" not in html and "<script src" not in html and "http://" not in html and "https://" not in html
    assert html.count("<img ") == 2 * 3 + 4  # per run: surprisal, prompt length; across: 3 analyses + training
    assert html.count('src="data:image/png;base64,') == html.count("<img ")
    for run in fake_runs:
        assert f'id="samples-{fake_runs.index(run)}"' in html
    assert "PerBrainLLM (permutation 0)" in html and "Runs compared" in html
    assert "st00-0" in html  # a sample row
    scores = json.loads((tmp_path / "rep" / "scores.json").read_text())
    assert [r["name"] for r in scores["runs"]] == [r.name for r in fake_runs]
    assert {a["name"] for a in scores["analyses"]} >= {"learning_curve", "by_backbone", "by_region"}
    md = (tmp_path / "rep" / "table.md").read_text()
    assert md.startswith("# Runs compared") and md.count("## Conditions") == 3


def test_report_escapes_text(tmp_path):
    from .fakeruns import write_fake_run

    run = write_fake_run(tmp_path / "r", n_stimuli=4)
    path = run / "predictions" / "test_brain.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[0]["prediction"] = "<script>alert(1)</script> & more"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    html = build_report([run], tmp_path / "rep", metric_config=FAST, config=CFG).read_text()
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in html


def test_cli_report_and_analyze(fake_runs, tmp_path):
    from brainllm.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["report", str(fake_runs[0]), "--out", str(tmp_path / "r"), "--no-semantic"])
    assert result.exit_code == 0, result.output
    assert "report written to" in result.output and (tmp_path / "r" / "report.html").is_file()
    result = runner.invoke(app, ["analyze", *map(str, fake_runs[1:]), "--out", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "a" / "learning_curve.png").is_file()
    result = runner.invoke(app, ["report", *map(str, fake_runs[:2]), "--no-semantic"])
    assert result.exit_code != 0  # several runs need --out


def test_report_flags_simulated_data(tmp_path):
    from .fakeruns import write_fake_run

    real = write_fake_run(tmp_path / "real", n_stimuli=4, dataset=str(tmp_path / "real_data"))
    sim_data = tmp_path / "sim_data"
    sim_data.mkdir()
    (sim_data / "dataset.json").write_text(json.dumps({"simulated": True}))
    sim = write_fake_run(tmp_path / "sim", n_stimuli=4, dataset=str(sim_data))
    html = build_report([real], tmp_path / "rep1", metric_config=FAST, config=CFG).read_text()
    assert "SIMULATED DATA" not in html
    html = build_report([real, sim], tmp_path / "rep2", metric_config=FAST, config=CFG).read_text()
    assert "SIMULATED DATA</strong> (sim)" in html
