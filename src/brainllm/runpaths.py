"""Where everything of a run folder lives: the one place that knows its file names (paths only, no I/O).

```
RUN/
  brainllm.json        backbone, adapter config, feature_dim, dataset, full experiment config, package version
  split.json           sample ids per split (decided before anything is fitted)
  adapter.safetensors  the selected checkpoint (best validation loss): adapter + boundary vectors (+ LoRA) only
  backbone.safetensors the backbone's weights, for `model.finetune: full` only
  metrics.jsonl        one line per epoch
  checkpoint/          the last epoch's state for --resume: trainable.safetensors, optimizer.pt, trainer_state.json
  predictions/         <split>_<condition>.jsonl + <split>_<condition>.json headers, <split>_crossloss.npz
  evaluation/          scores.json, table.md, ceiling_<split>.json, analyses/
  report/              the HTML report of `brainllm report` when no --out is given
  decoder.json         (optional) the Bayesian decoder chosen by `brainllm tune-decoder`: its generation settings
                       are the run's defaults; decoder/ holds its encoding models and cv_cells.json, the
                       cross-validation cells a killed tuning resumes from
```

It sits in the base layer so that training, generation, evaluation (which reads run files but never loads a run),
the report and the command line all ask it; `brainllm.runs` re-exports it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def _file(name: str, doc: str, base: str = "root") -> property:
    """A read-only property: the path `name` inside the folder held in attribute `base`."""
    return property(lambda self: getattr(self, base) / name, doc=f"`{name}`: {doc}")


@dataclass(frozen=True)
class CheckpointPaths:
    """The files of a training checkpoint folder (`RUN/checkpoint/`, or the staging folder it is written in)."""

    folder: Path

    trainable = _file("trainable.safetensors", "the trainable weights.", "folder")
    optimizer = _file("optimizer.pt", "the optimizer state (read with `weights_only=True`).", "folder")
    trainer_state = _file("trainer_state.json", "the trainer's stage, epoch, best validation loss, ...", "folder")


@dataclass(frozen=True)
class RunPaths:
    """The paths of a run folder `root` (see the module docstring)."""

    root: Path

    def __init__(self, root: str | os.PathLike) -> None:
        object.__setattr__(self, "root", Path(root))

    run_file = _file("brainllm.json", "what the run is (backbone, adapter, config, version).")
    split = _file("split.json", "sample ids per split.")
    adapter = _file("adapter.safetensors", "the selected trainable weights.")
    backbone = _file("backbone.safetensors", "the fine-tuned backbone (`finetune: full` only).")
    metrics = _file("metrics.jsonl", "one line per epoch.")
    predictions_dir = _file("predictions", "what generation writes.")
    evaluation_dir = _file("evaluation", "what `brainllm evaluate` (and the diagnostics) write.")
    report_dir = _file("report", "the default output folder of `brainllm report`.")
    decoder_file = _file("decoder.json", "the tuned Bayesian decoder's settings (`brainllm tune-decoder`).")
    decoder_dir = _file("decoder", "the tuned Bayesian decoder's encoding models.")
    decoder_cv_cells = _file("decoder/cv_cells.json", "the encoding models' finished cross-validation cells "
                                                     "(`brainllm tune-decoder` resumes from them).")

    @property
    def checkpoint(self) -> CheckpointPaths:
        """`checkpoint/`: the last epoch's state, for --resume."""
        return CheckpointPaths(self.root / "checkpoint")

    def predictions(self, split: str, condition: str) -> Path:
        """`predictions/<split>_<condition>.jsonl`: one row per sample (per sample and permutation)."""
        return self.predictions_dir / f"{split}_{condition}.jsonl"

    def predictions_header(self, split: str, condition: str) -> Path:
        """`predictions/<split>_<condition>.json`: the decoding settings of that predictions file."""
        return self.predictions_dir / f"{split}_{condition}.json"

    def candidates(self, split: str) -> Path:
        """`predictions/<split>_candidates.json`: the Bayesian decoder's candidates of every sample and frames
        decoded on the split, with the settings they were proposed under (reused by later conditions and reruns)."""
        return self.predictions_dir / f"{split}_candidates.json"

    def decoderscore(self, split: str) -> Path:
        """`predictions/<split>_decoderscore.npz`: the Bayesian decoder's identification matrices."""
        return self.predictions_dir / f"{split}_decoderscore.npz"

    def crossloss(self, split: str) -> Path:
        """`predictions/<split>_crossloss.npz`: `ids (N,)`, `loss (N, N)` for identification accuracy."""
        return self.predictions_dir / f"{split}_crossloss.npz"

    def ceiling(self, split: str) -> Path:
        """`evaluation/ceiling_<split>.json`: the information ceiling of `brainllm ceiling`."""
        return self.evaluation_dir / f"ceiling_{split}.json"

    @property
    def analyses_dir(self) -> Path:
        """`evaluation/analyses/`: the default output folder of `brainllm analyze`."""
        return self.evaluation_dir / "analyses"
