"""Reading a run folder's predictions: the contract between generation and evaluation.

A run folder RUN/ holds `brainllm.json`, `metrics.jsonl`, `split.json` and `predictions/` (`runpaths.RunPaths` names
each file):

* `predictions/<split>_<condition>.jsonl`, condition in `CONDITIONS`: one row per sample (per sample and
  permutation for `permuted`) with `id, stimulus, prompt, reference, prediction, loss` (teacher-forced mean
  cross-entropy per continuation token, nats), plus `permutation` (0..N-1) and `frames_from` (the id whose
  frames were used) for `permuted`, and `posterior_loss` (optional: the same under the Bayesian decoder's own
  distribution, `decoding.bayes.posterior_losses`);
* `predictions/<split>_<condition>.json`: header with `split, condition, n_samples, permutations, decoding,
  backbone`;
* `predictions/<split>_decoderscore.npz` (optional, `decoding.decoder_identification.decoder_crossscore`): the Bayesian decoder's
  encoding and length/position log-likelihood matrices `(N, N)` for every sample of the split, with `ids`,
  `stimuli`, `frame_keys`, `n_tokens`, `weight`;
* `predictions/<split>_crossloss.npz` (optional): `ids (N,)` and `loss (N, N)`, loss[i, j] = loss of sample i's
  continuation given sample j's frames.

`load_run_data` checks what evaluation relies on: every control covers the same ids as `brain`, every condition scores
against the same reference text per id (the authors' released files did not), and no evaluated id is a training id.
"""

from __future__ import annotations

import json

import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..config import PREDICTION_CONDITIONS
from ..errors import BrainLLMError
from ..io import read_json, read_jsonl
from ..runpaths import RunPaths
from .text import clean

log = logging.getLogger(__name__)

CONDITIONS = PREDICTION_CONDITIONS
CONTROLS = ("permuted", "no_brain", "no_text", "nuisance", "retrieval")
DISPLAY = {"brain": "BrainLLM", "permuted": "PerBrainLLM", "no_brain": "StdLLM", "no_text": "BrainLLM (no text)",
           "nuisance": "length/position decoder", "retrieval": "retrieval (nearest training text)"}
_REQUIRED = ("id", "stimulus", "prompt", "reference", "prediction", "loss")


class EvaluationError(BrainLLMError, ValueError):
    """A run folder or predictions file does not match the format evaluation reads."""


@dataclass
class Condition:
    """The predictions of one condition, aligned to the run's sample order.

    Attributes:
        name: condition name.
        header: the predictions header JSON ({} when the file is missing).
        predictions: `(N, P)` list of lists of strings: P = 1 except for `permuted` (P permutations).
        loss: `(N, P)` float64 teacher-forced loss, nats per continuation token (NaN where missing).
        posterior_loss: `(N, P)` the same under the Bayesian decoder's distribution; None when no row has one.
        fixed_point: `(N, P)` bool, True where a permuted sample got its own frames (not a real control).
    """

    name: str
    header: dict
    predictions: list[list[str]]
    loss: np.ndarray
    fixed_point: np.ndarray
    posterior_loss: Optional[np.ndarray] = None

    @property
    def n_permutations(self) -> int:
        return self.loss.shape[1]


@dataclass
class RunData:
    """Everything evaluation reads from one run folder for one split. Samples are in `brain` file order."""

    path: Path
    split: str
    config: dict
    ids: list[str]
    stimuli: list[str]
    prompts: list[str]
    references: list[str]
    conditions: dict[str, Condition]
    crossloss: Optional[tuple[list[str], np.ndarray]] = None
    training_log: list[dict] = field(default_factory=list)
    split_info: Optional[dict] = None
    decoder_scores: Optional[dict[str, np.ndarray]] = None  # the Bayesian decoder's identification matrices

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def backbone(self) -> str:
        return str(self.config.get("backbone", "?"))

    @property
    def dataset_name(self) -> str:
        dataset = self.config.get("dataset")
        return Path(str(dataset)).name if dataset else "?"

    @cached_property
    def dataset_meta(self) -> dict:
        """The run's dataset.json, read once ({} when the dataset folder is not where training saw it)."""
        dataset = self.config.get("dataset")
        if not dataset:
            return {}
        try:  # the path as training saw it (relative to where `brainllm train` ran)
            meta = json.loads((Path(str(dataset)) / "dataset.json").read_text())
        except (OSError, ValueError):
            return {}
        return meta if isinstance(meta, dict) else {}

    @property
    def simulated(self) -> bool:
        """Whether the run's dataset is a simulated participant (its dataset.json says so)."""
        return bool(self.dataset_meta.get("simulated", False))

    @property
    def task(self) -> str:
        """The samples' task (`data.tasks`): `continuation` unless the dataset records `sentence`."""
        return str(self.dataset_meta.get("task", "continuation"))

    def train_size(self) -> Optional[int]:
        """Training samples used: training.max_train_samples if set, else the split's train size, else None."""
        cap = (self.config.get("training") or {}).get("max_train_samples")
        n_split = len(self.split_info["train"]) if self.split_info and "train" in self.split_info else None
        if cap is not None:
            return int(cap) if n_split is None else min(int(cap), n_split)
        return n_split


def available_conditions(run: Path, split: str) -> list[str]:
    """Conditions whose predictions file exists for `split`."""
    return [c for c in CONDITIONS if RunPaths(run).predictions(split, c).is_file()]


def _read_rows(path: Path) -> list[dict]:
    rows = read_jsonl(path)
    for lineno, row in enumerate(rows, 1):
        missing = [k for k in _REQUIRED if k not in row]
        if missing:
            raise EvaluationError(f"{path}: row {lineno} lacks {missing}; each row needs {list(_REQUIRED)}.")
    return rows


def _number(row: dict, key: str, path: Path) -> float:
    """`row[key]` as a float; NaN when the field is null or absent. Anything else is an EvaluationError naming the
    file, the sample and the value (a damaged or hand-edited predictions file)."""
    value = row.get(key)
    if value is None:
        return float("nan")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise EvaluationError(f"{path}: '{key}' of sample '{row.get('id')}' must be a number or null, got {value!r}; "
                              "re-run `brainllm generate` for this condition.")
    return float(value)


def _condition(run: Path, split: str, name: str, ids: list[str], references: dict[str, str]) -> Condition:
    path = RunPaths(run).predictions(split, name)
    rows = _read_rows(path)
    header_path = RunPaths(run).predictions_header(split, name)
    header = read_json(header_path) if header_path.is_file() else {}
    index = {sid: i for i, sid in enumerate(ids)}
    by_perm: dict[int, dict[str, dict]] = {}
    for row in rows:
        sid = str(row["id"])
        if sid not in index:
            raise EvaluationError(f"{path}: id '{sid}' is not in the brain predictions; every condition must cover "
                                  "the same samples (re-run generation for all conditions).")
        if clean(row["reference"]) != references[sid]:
            raise EvaluationError(
                f"{path}: the reference of '{sid}' differs from the one in the brain predictions "
                f"({row['reference']!r} vs {references[sid]!r}); conditions must be scored against the same text.")
        perm = int(row.get("permutation", 0)) if name == "permuted" else 0
        if sid in by_perm.setdefault(perm, {}):
            raise EvaluationError(f"{path}: id '{sid}' appears twice" + (f" in permutation {perm}" if name ==
                                                                          "permuted" else "") + ".")
        by_perm[perm][sid] = row
    perms = sorted(by_perm)
    n, p = len(ids), len(perms)
    preds = [[""] * p for _ in range(n)]
    loss = np.full((n, p), np.nan)
    posterior = np.full((n, p), np.nan)
    fixed = np.zeros((n, p), dtype=bool)
    for j, perm in enumerate(perms):
        missing = [sid for sid in ids if sid not in by_perm[perm]]
        if missing:
            raise EvaluationError(f"{path}: {len(missing)} sample(s) missing" + (f" in permutation {perm}" if name ==
                                  "permuted" else "") + f", e.g. {missing[:3]}.")
        for sid, row in by_perm[perm].items():
            i = index[sid]
            preds[i][j] = str(row["prediction"] or "")
            loss[i, j] = _number(row, "loss", path)
            posterior[i, j] = _number(row, "posterior_loss", path)
            fixed[i, j] = name == "permuted" and str(row.get("frames_from", "")) == sid
    if fixed.any():
        log.warning("%s: %d (sample, permutation) pairs got their own frames; they are left out of the permuted "
                    "control.", path, int(fixed.sum()))
    return Condition(name, header, preds, loss, fixed, posterior if np.isfinite(posterior).any() else None)


def load_run_data(path: str | Path, split: str = "test") -> RunData:
    """Read a run folder's predictions for `split` (see the module docstring). Raises EvaluationError."""
    run = Path(path)
    paths = RunPaths(run)
    if not paths.run_file.is_file():
        raise EvaluationError(f"{run} is not a run folder: {paths.run_file.name} is missing (train a model first).")
    config = read_json(paths.run_file)
    brain_path = paths.predictions(split, "brain")
    if not brain_path.is_file():
        found = sorted(p.name for p in paths.predictions_dir.glob("*.jsonl")) if paths.predictions_dir.is_dir() else []
        raise EvaluationError(f"{brain_path} not found (found {found or 'no predictions'}); generate the "
                              f"'{split}' predictions first.")
    rows = _read_rows(brain_path)
    if not rows:
        raise EvaluationError(f"{brain_path} has no rows.")
    ids = [str(r["id"]) for r in rows]
    if len(set(ids)) != len(ids):
        raise EvaluationError(f"{brain_path}: sample ids repeat; the brain condition has one row per sample.")
    references = {str(r["id"]): clean(r["reference"]) for r in rows}
    split_info = read_json(paths.split) if paths.split.is_file() else None
    if split_info is not None:
        leaked = sorted(set(ids) & set(map(str, split_info.get("train", []))))
        if leaked:
            raise EvaluationError(f"{len(leaked)} evaluated id(s) are training ids in split.json (e.g. "
                                  f"{leaked[:3]}); scores on training samples are not an evaluation.")
    conditions = {name: _condition(run, split, name, ids, references) for name in available_conditions(run, split)}
    crossloss = None
    cl_path = paths.crossloss(split)
    if cl_path.is_file():
        with np.load(cl_path, allow_pickle=False) as npz:
            cl_ids = [str(x) for x in npz["ids"]]
            matrix = np.asarray(npz["loss"], dtype=np.float64)
        if matrix.shape != (len(cl_ids), len(cl_ids)):
            raise EvaluationError(f"{cl_path}: loss has shape {matrix.shape}, expected ({len(cl_ids)}, "
                                  f"{len(cl_ids)}) to match ids.")
        crossloss = (cl_ids, matrix)
    decoder_scores = _decoder_scores(paths.decoderscore(split), set(ids))
    log_path = paths.metrics
    training_log = read_jsonl(log_path) if log_path.is_file() else []
    return RunData(run, split, config, ids, [str(r["stimulus"]) for r in rows], [str(r["prompt"]) for r in rows],
                   [str(r["reference"]) for r in rows], conditions, crossloss, training_log, split_info,
                   decoder_scores)


def _decoder_scores(path: Path, evaluated: set[str]) -> Optional[dict[str, np.ndarray]]:
    """The decoderscore file's arrays, checked: square matrices over its ids, every id an evaluated sample."""
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    n = len(arrays.get("ids", []))
    for name in ("encoding", "nuisance"):
        if name not in arrays or arrays[name].shape != (n, n):
            raise EvaluationError(f"{path}: {name} must be an ({n}, {n}) matrix matching ids.")
    unknown = sorted(set(map(str, arrays["ids"])) - evaluated)
    if unknown:
        raise EvaluationError(f"{path}: ids {unknown[:3]} are not among the evaluated samples.")
    return arrays


def decoding_summary(run: RunData) -> dict[str, Any]:
    """Decoding settings per condition from the predictions headers."""
    return {name: cond.header.get("decoding", {}) for name, cond in run.conditions.items()}
