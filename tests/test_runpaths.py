"""The run folder has one owner of its file names: `runpaths.RunPaths` (re-exported by `brainllm.runs`)."""

from __future__ import annotations

import ast
from pathlib import Path

from brainllm.runpaths import CheckpointPaths, RunPaths

SRC = Path(__file__).resolve().parents[1] / "src" / "brainllm"
#: names only a run folder uses (a string literal equal to one, or ending in `_crossloss.npz`, is one of its files)
NAMES = ("brainllm.json", "split.json", "adapter.safetensors", "backbone.safetensors", "metrics.jsonl", "checkpoint",
         "trainable.safetensors", "optimizer.pt", "trainer_state.json", "predictions")


def test_every_path_of_a_run_folder(tmp_path):
    p = RunPaths(str(tmp_path))
    assert p.root == tmp_path and p == RunPaths(tmp_path)
    assert [x.relative_to(tmp_path).as_posix() for x in (p.run_file, p.split, p.adapter, p.backbone, p.metrics)] == \
        ["brainllm.json", "split.json", "adapter.safetensors", "backbone.safetensors", "metrics.jsonl"]
    assert p.checkpoint == CheckpointPaths(tmp_path / "checkpoint")
    assert [x.name for x in (p.checkpoint.trainable, p.checkpoint.optimizer, p.checkpoint.trainer_state)] == \
        ["trainable.safetensors", "optimizer.pt", "trainer_state.json"]
    rel = {k: v.relative_to(tmp_path).as_posix() for k, v in {
        "pred": p.predictions("test", "brain"), "header": p.predictions_header("test", "permuted"),
        "cl": p.crossloss("valid"), "ceiling": p.ceiling("valid"), "analyses": p.analyses_dir,
        "report": p.report_dir}.items()}
    assert rel == {"pred": "predictions/test_brain.jsonl", "header": "predictions/test_permuted.json",
                   "cl": "predictions/valid_crossloss.npz", "ceiling": "evaluation/ceiling_valid.json",
                   "analyses": "evaluation/analyses", "report": "report"}


def _string_literals(path: Path) -> list[tuple[int, str]]:
    """String constants of a module that are not docstrings (with their line)."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def test_no_other_module_spells_a_run_file_name():
    found = [f"{path.relative_to(SRC)}:{line}: {value!r}" for path in sorted(SRC.rglob("*.py"))
             if path.name != "runpaths.py" for line, value in _string_literals(path)
             if value in NAMES or value.endswith("_crossloss.npz") or value.startswith("predictions/")]
    assert not found, "run-folder names outside runpaths.py (ask RunPaths instead):\n" + "\n".join(found)
