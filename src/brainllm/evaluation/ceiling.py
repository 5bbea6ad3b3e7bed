"""The information ceiling of a trained run: how much could the backbone gain if the adapter delivered perfect
knowledge of the continuation?

A null result (BrainLLM = PerBrainLLM) has two readings: the frames hold no usable information, or the frozen
backbone makes little use of what the adapter's slots could carry. A ridge decoder tells whether the frames hold
information; this diagnostic bounds the second. It adds an *oracle vector* to every adapter output of a sample:
the mean input embedding of the sample's true continuation tokens, centred on the training samples' mean (the space
the paper's warm-up regresses onto, the natural target of any adapter), rescaled so that its mean norm is `scale`
times the mean norm of the adapter's outputs (a trained adapter's soft prompt can be far larger than the centred
embeddings, so an absolute scale would mean different things for different runs). Text i is scored (teacher-forced
loss per continuation token, nats) with its own frames plus its own oracle vector, and with its own frames plus the
oracle vector of each other sample j, so only the vector differs. Then, exactly as for BrainLLM vs PerBrainLLM:

* `delta` = mean over i of loss(i, i) - mean_{j != i} loss(i, j) (negative = the information helps), with a
  two-sided sign-flip p over stimuli when the split has several (`stats.sign_flip_test`), else over samples;
* `identification` = mean two-way identification of the own vector among the others (chance 0.5).

If even perfect information lowers the loss by a few hundredths of a nat, no adapter trained to emit such vectors
can show a large brain effect with this backbone and prompt layout. The default split is `valid`: a diagnostic
informs design choices, so it must not touch test data.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..errors import BrainLLMError
from ..generation import input_layout, pick_samples, teacher_forced_losses
from ..io import write_json
from ..model import EncodedSample
from ..runs import LoadedRun
from . import stats as S
from .tables import render_text

log = logging.getLogger(__name__)

DEFAULT_SCALES = (0.1, 0.3, 1.0)  # oracle norm / adapter output norm
ORACLE = "mean input embedding of the true continuation tokens, centred on the training samples' mean"


@dataclass
class CeilingRow:
    """The oracle at one scale. Losses in nats per continuation token (+ EOS)."""

    scale: float               # mean |oracle vector| / mean |adapter output|
    own_loss: float            # text i with its own oracle vector
    other_loss: float          # text i with the other samples' vectors (mean over j != i)
    delta: float               # own - other (negative: the information helps)
    delta_se: float            # standard error over samples
    p: float                   # two-sided sign-flip p of delta (clusters: stimuli if several, else samples)
    identification: float      # two-way identification of the own vector (chance 0.5)


@dataclass
class CeilingReport:
    run: str
    split: str
    n_samples: int
    n_stimuli: int
    baseline_loss: float       # the trained run with no oracle (its own frames)
    adapter_norm: float        # mean L2 norm of one adapter output (one slot) on these samples
    rows: list[CeilingRow]
    oracle: str = ORACLE
    p_clusters: str = "stimuli"

    def table(self) -> str:
        header = ["|oracle|/|adapter|", "own loss", "others' loss", "delta (se)", "p", "identification"]
        rows = [[f"{r.scale:g}", f"{r.own_loss:.4f}", f"{r.other_loss:.4f}", f"{r.delta:+.4f} ({r.delta_se:.4f})",
                 f"{r.p:.3g}", f"{r.identification:.3f}"] for r in self.rows]
        return (f"Information ceiling of {self.run} on {self.split} ({self.n_samples} samples, {self.n_stimuli} "
                f"stimuli; oracle: {self.oracle}; p: sign-flip over {self.p_clusters})\n"
                f"loss without oracle: {self.baseline_loss:.4f}; mean adapter output norm {self.adapter_norm:.3g}\n"
                + render_text(header, rows, right_align=True))


def oracle_vectors(run: LoadedRun, samples: Sequence[EncodedSample], centre: np.ndarray | None = None) -> np.ndarray:
    """`(n, H)` mean input embedding of each sample's continuation tokens, minus `centre` `(H,)` if given."""
    weight = run.model.backbone.get_input_embeddings().weight
    with torch.no_grad():
        out = torch.stack([weight[list(s.continuation_ids)].float().mean(0) for s in samples]).cpu().numpy()
    return out - centre if centre is not None else out


def _adapter_norm(run: LoadedRun, samples: Sequence[EncodedSample]) -> float:
    """Mean L2 norm of the adapter's outputs `(T, H)` rows over the samples' frames."""
    device = run.model.boundary.device
    norms = []
    with torch.no_grad():
        for s in samples:
            frames = torch.as_tensor(np.asarray(run.dataset.frames[list(s.frame_rows)], dtype=np.float32))[None]
            out = run.model.adapter(frames.to(device), torch.ones(frames.shape[:2], dtype=torch.bool, device=device))
            norms.append(float(out.norm(dim=-1).mean()))
    return float(np.mean(norms))


def scaled_oracle(run: LoadedRun, samples: Sequence[EncodedSample]) -> tuple[np.ndarray, float]:
    """(`(n, H)` oracle vectors centred on the training samples' mean and rescaled to a mean norm equal to the
    adapter's mean output norm, that norm)."""
    centre = oracle_vectors(run, run.encoder.encode_all(run.dataset, run.split.train)).mean(0)
    vectors = oracle_vectors(run, samples, centre)
    adapter_norm = _adapter_norm(run, samples)
    return vectors * (adapter_norm / max(float(np.linalg.norm(vectors, axis=1).mean()), 1e-12)), adapter_norm


def ceiling(run: LoadedRun, split: str = "valid", scales: Sequence[float] = DEFAULT_SCALES,
            max_samples: int = 48, seed: int = 0, batch_size: int = 16) -> CeilingReport:
    """The oracle cross-loss for each scale on up to `max_samples` samples of `split` (one per stimulus first)."""
    ids = pick_samples(run, split, max_samples, seed)
    if len(ids) < 2:
        raise BrainLLMError(f"The ceiling compares each sample with the others: split '{split}' has {len(ids)} "
                            f"sample(s); probe a split with at least 2.")
    samples = run.encoder.encode_all(run.dataset, ids)
    vectors, adapter_norm = scaled_oracle(run, samples)  # (n, H)
    layout = input_layout(run, "brain")
    n = len(samples)
    stimuli = [s.stimulus for s in samples]
    clusters = stimuli if len(set(stimuli)) > 1 else [s.id for s in samples]
    pairs = [s for s in samples for _ in range(n)]  # row i: text i (and its frames) n times
    baseline = float(teacher_forced_losses(run, samples, layout, batch_size).mean())
    rows = []
    for scale in scales:
        offsets = scale * np.tile(vectors, (n, 1))  # pair (i, j) gets vector j
        matrix = teacher_forced_losses(run, pairs, layout, batch_size, offsets).reshape(n, n)
        own = np.diag(matrix)
        others = (matrix.sum(1) - own) / (n - 1)
        diff = own - others
        ident = S.identification(matrix)["frames_given_text"]["two_way"]
        rows.append(CeilingRow(float(scale), float(own.mean()), float(others.mean()), float(diff.mean()),
                               float(diff.std(ddof=1) / np.sqrt(n)), S.sign_flip_test(diff, clusters, seed=seed),
                               float(ident.mean())))
        log.info("oracle x%g: delta %+.4f, identification %.3f", scale, rows[-1].delta, rows[-1].identification)
    return CeilingReport(str(run.path), split, n, len(set(stimuli)), baseline, adapter_norm, rows,
                         p_clusters="stimuli" if clusters is stimuli else "samples (one stimulus)")


def write_ceiling(report: CeilingReport, path: str | Path) -> None:
    """`report` as JSON (atomic)."""
    write_json(Path(path), asdict(report))
