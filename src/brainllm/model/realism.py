"""The realism profile of a prepared dataset: how well fixed text feature spaces and the frames identify each other.

Used to hold the simulated participant against real fMRI (docs/realism.md): both get the same profile, row by row.

**Unit**: one row per distinct set of frames (Pereira / the sentence design: one sentence image; its samples k = 1
and k = 2 share it), its text the longest perceived text (prompt + continuation) among the samples of those
frames (the whole sentence), its frames their mean. Story designs: one row per sample.

**Features** (fixed): MiniLM sentence embeddings; the backbone's mean input embedding (layer 0) and its mean
states after layers 2, 6, 10, 15, 20 (`PROFILE_LAYERS`, clipped to the backbone's depth); sentence length (words)
+ position of the frames in their stimulus (the nuisance every content claim must beat).

**Method**, per feature and direction (frames -> feature, feature -> frames): columns of both sides z-scored over
all units (an unsupervised scaling); ridge with one penalty chosen by 5-fold cross-validation over whole stimuli
(`ridge.cv_ridge`, held-out mean squared error), then out-of-fold predictions for every unit with the same folds
(the penalty is the only thing chosen on all units). Pairs are formed within each held-out fold (one model
predicted both; pairs across folds would compare the folds' intercepts), and the folds' fractions averaged. Score of text i for frames j: minus the squared Euclidean
distance between the prediction and the truth (frames -> feature: predicted feature of frames j vs feature of
text i; feature -> frames: predicted frames of text i vs frames j); then the symmetric 2-way (2-vs-2) test
(`identification.two_way(symmetric=True)`: the right pairing of two units must be closer than the swapped one,
which cancels each vector's own norm) across stimuli and within one stimulus. Chance 0.5.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .. import backbones
from ..data.dataset import BrainTextDataset, Sample
from ..errors import DatasetError
from ..identification import two_way
from ..ridge import cv_ridge_out_of_fold, stimulus_folds
from .text_features import full_text, nuisance_features, stimulus_positions
from .collate import TextEncoder
from .text_spaces import MINILM, SpaceProvider, layer_name, text_spaces

log = logging.getLogger(__name__)

PROFILE_LAYERS: tuple[int, ...] = (0, 2, 6, 10, 15, 20)
LENGTH_POSITION = "length + position"
DIRECTIONS = ("frames_to_feature", "feature_to_frames")
FORMAT = "brainllm-realism-profile"


@dataclass
class ProfileUnits:
    """The rows of a profile: `texts` `(n,)`, `frames` `(n, D)` float64, `stimuli` `(n,)`, `positions` `(n,)`
    (rank of the frames in their stimulus), `keys` `(n,)` (the frame rows, equal for units sharing frames)."""

    texts: list[str]
    frames: np.ndarray
    stimuli: list[str]
    positions: np.ndarray
    keys: list[tuple[int, ...]]


def profile_units(dataset: BrainTextDataset) -> ProfileUnits:
    """One unit per distinct frame set (see the module docstring), in order of first appearance."""
    chosen: dict[tuple[int, ...], Sample] = {}
    for s in dataset:
        key = tuple(s.frames)
        old = chosen.get(key)
        if old is None or len(full_text(s.prompt, s.continuation)) > len(full_text(old.prompt, old.continuation)):
            chosen[key] = s
    samples = list(chosen.values())
    frames = np.asarray(dataset.frames, dtype=np.float64)
    return ProfileUnits(texts=[full_text(s.prompt, s.continuation) for s in samples],
                        frames=np.stack([frames[list(s.frames)].mean(0) for s in samples]),
                        stimuli=[s.stimulus for s in samples],
                        positions=stimulus_positions(dataset, samples),
                        keys=list(chosen))


def _zscore(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    sd = a.std(0)
    return (a - a.mean(0)) / np.where(sd > 0, sd, 1.0)


def _neg_mse(pred: np.ndarray, truth: np.ndarray, _held: np.ndarray | None = None) -> float:
    return -float(np.mean((pred - truth) ** 2))


def _neg_sq_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`(n, m)`: −‖a_i − b_j‖²."""
    return -((a ** 2).sum(1)[:, None] - 2 * a @ b.T + (b ** 2).sum(1)[None, :])


def identify(feature: np.ndarray, frames: np.ndarray, stimuli: Sequence[str], keys: Sequence[object],
             n_folds: int = 5, seed: int = 0) -> dict[str, dict[str, float]]:
    """Both directions for one feature space `(n, F)` and frames `(n, D)` (module docstring):
    `{direction: {"across", "within", "alpha", "cv_mse"}}`."""
    x, y = _zscore(frames), _zscore(feature)
    stim, key = np.asarray(stimuli), np.asarray([str(k) for k in keys])
    out = {}
    for direction, (src, dst) in zip(DIRECTIONS, ((x, y), (y, x))):
        _, _, alpha, cv, pred = cv_ridge_out_of_fold(src, dst, list(stimuli), _neg_mse, seed=seed, n_folds=n_folds)
        scores = []
        for held in stimulus_folds(stimuli, n_folds, seed):  # the folds of the out-of-fold predictions
            p, t = pred[held], dst[held]
            # matrix[i, j]: score of text i for frames j
            matrix = _neg_sq_distances(t, p) if direction == "frames_to_feature" else _neg_sq_distances(p, t)
            scores.append(two_way(matrix, stim[held], key[held], symmetric=True))
        out[direction] = {k: float(np.nanmean([s[k] for s in scores])) for k in ("across", "within")}
        out[direction].update(alpha=alpha, cv_mse=-cv)
    return out


def profile_features(units: ProfileUnits, spaces: SpaceProvider | None, layers: Sequence[int]) -> dict[str, np.ndarray]:
    """The fixed feature list of the units, in table order: MiniLM, the backbone's states (from `spaces`, which
    must provide `minilm` and `layer_name(l)` for each of `layers`), length + position."""
    got = spaces(units.texts) if spaces is not None else {}
    names = [MINILM] + [layer_name(layer) for layer in layers]
    missing = [n for n in names if n not in got]
    if missing:
        raise ValueError(f"the feature provider gave {sorted(got)}, not {missing}.")
    feats = {n: got[n] for n in names}
    feats[LENGTH_POSITION] = nuisance_features(units.texts, units.positions)
    return feats


def realism_profile(dataset: BrainTextDataset, spaces: SpaceProvider | None = None, backbone: str = "smollm2-135m",
                    layers: Sequence[int] = PROFILE_LAYERS, n_folds: int = 5, seed: int = 0) -> dict:
    """The profile of `dataset` as a JSON-ready dict: `rows[feature][direction]` = `{across, within, alpha,
    cv_mse}`. `spaces` defaults to `text_spaces.text_spaces` of the backbone `backbone` (layers deeper than it
    are left out)."""
    units, given = profile_units(dataset), spaces
    if len(set(units.stimuli)) < n_folds:
        raise DatasetError(f"the profile needs at least {n_folds} stimuli for {n_folds}-fold CV, "
                           f"found {len(set(units.stimuli))}.")
    if spaces is None:
        model, tokenizer = backbones.load(backbone)
        depth = getattr(model.config, "num_hidden_layers", max(layers, default=0))
        layers = [layer for layer in layers if layer <= depth]
        encoder = TextEncoder(tokenizer)

        def spaces(texts: Sequence[str]) -> dict[str, np.ndarray]:
            return text_spaces(texts, model, encoder, layers)
    feats = profile_features(units, spaces, layers)
    rows = {}
    for name, feature in feats.items():
        rows[name] = identify(feature, units.frames, units.stimuli, units.keys, n_folds, seed)
        log.info("%s: %s", name, {d: round(rows[name][d]["across"], 3) for d in DIRECTIONS})
    return {"format": FORMAT, "version": 1, "subject": dataset.meta.get("subject"),
            "simulated": bool(dataset.meta.get("simulated")), "units": len(units.texts),
            "stimuli": len(set(units.stimuli)), "feature_dim": int(units.frames.shape[1]),
            "backbone": backbone if given is None else "given", "layers": list(layers), "n_folds": n_folds,
            "seed": seed, "rows": rows}


def _cells(row: dict) -> list[float]:
    return [row[d][k] for d in DIRECTIONS for k in ("across", "within")]


def profile_table(profiles: dict[str, dict]) -> str:
    """A Markdown table of one or more profiles side by side (columns per profile: frames -> feature across /
    within, feature -> frames across / within); with two profiles, also the largest absolute difference per row."""
    labels = list(profiles)
    head = "| feature | " + " | ".join(f"{lab}: {c}" for lab in labels for c in
                                        ("frames→feature across", "within", "feature→frames across", "within"))
    two = len(labels) == 2
    head += " | max abs diff |" if two else " |"
    lines = [head, "|" + "---|" * (1 + 4 * len(labels) + two)]
    for name in profiles[labels[0]]["rows"]:
        cells = [_cells(p["rows"][name]) if name in p["rows"] else [float("nan")] * 4 for p in profiles.values()]
        line = f"| {name} | " + " | ".join(f"{v:.3f}" for c in cells for v in c)
        if two:
            line += f" | {np.nanmax(np.abs(np.subtract(cells[0], cells[1]))):.3f}"
        lines.append(line + " |")
    return "\n".join(lines)
