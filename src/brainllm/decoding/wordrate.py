"""Tang et al. 2023 word-rate model: how many words were heard in each TR, predicted from later brain responses.

Training target (`train_WR.py`): the Lanczos-summed word count per TR (`lanczos_word_counts`), centred by its mean.
Predictors: the responses of a region of interest (the caller selects the voxels, Tang: "speech" or "auditory"),
delayed by `(-4, -3, -2, -1)` TRs, i.e. the volumes 2–8 s **after** TR t predict the rate at t. Fitted with the same
`BootstrapRidge` as the encoding model (here delays never cross a run boundary).

At decode time `predict_counts` gives `n_t = round(max(0, ŷ_t))` words per TR and `word_times` spaces them evenly
inside the TR.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.exceptions import NotFittedError

from ..errors import DatasetError
from ..voxelwise.bootstrap import TANG_ALPHAS, _check_matrix, bootstrap_ridge_from, checked_delays_alphas
from ..voxelwise.delays import make_delayed, runs_from_lengths
from ..voxelwise.lanczos import lanczos_matrix
from ..voxelwise.modelfile import _check_run_lists, _config_with, _load_model, _save_model

log = logging.getLogger(__name__)

__all__ = ["WordRateConfig", "WordRateModel", "binned_word_counts", "lanczos_word_counts", "word_times"]


@dataclass
class WordRateConfig:
    """Hyper-parameters of the word-rate model; defaults are Tang et al.'s (`decoding/config.py`)."""

    delays: tuple[int, ...] = (-4, -3, -2, -1)
    """Response delays in TRs (`RESP_DELAYS`); negative = future volumes (r_{t+1} … r_{t+4} predict TR t)."""
    alphas: tuple[float, ...] = TANG_ALPHAS
    """Ridge penalty grid in Tang's units (λ = α²): `logspace(1, 3, 10)`."""
    n_boots: int = 50
    """Bootstraps for choosing the penalty (`NBOOTS`)."""
    chunk_len: int = 40
    """Held-out chunk length in TRs (`CHUNKLEN`)."""
    held_out_fraction: float = 0.2
    """Fraction of TRs held out per bootstrap (Tang: 1/5)."""
    seed: int = 0
    """Seed of the bootstrap splits."""

    def __post_init__(self) -> None:
        self.delays, self.alphas = checked_delays_alphas(self.delays, self.alphas, "(-4, -3, -2, -1)")


class WordRateModel:
    """Ridge from future ROI responses to the number of words per TR (Tang et al.'s word-rate model).

    Attributes (after `fit`):
        mean_rate_: mean training target (words per TR, Lanczos-summed), added back in `predict`.
        weights_: (V·n_delays,) and intercept_: float, on the delayed responses (targets centred by mean_rate_).
        alpha_: chosen penalty (Tang's units, λ = α²); cv_score_: its bootstrap held-out variance explained.
        n_voxels_in_: V.
    """

    FORMAT = "brainllm.tang.word_rate_model"
    VERSION = 1
    FILE_STEM = "word_rate_model"

    def __init__(self, config: WordRateConfig | None = None, **overrides: Any) -> None:
        self.config: WordRateConfig = _config_with(WordRateConfig, config, overrides)

    def fit(self, responses: Sequence[np.ndarray], counts: Sequence[np.ndarray]) -> WordRateModel:
        """Fit on training runs.

        Args:
            responses: one (T_r, V) array per run: the ROI voxels' responses.
            counts: one (T_r,) array per run: the word rate per TR (Tang: `lanczos_word_counts`, trimmed like
                the responses).
        Returns:
            self.
        """
        cfg = self.config
        resps, cnts = _check_run_lists(responses, counts, "responses", "counts", out_ndim=1)
        runs = runs_from_lengths([r.shape[0] for r in resps])
        y = np.concatenate([np.asarray(c, dtype=np.float64) for c in cnts])
        self.mean_rate_ = float(y.mean())
        x = make_delayed(np.concatenate([np.asarray(r, dtype=np.float64) for r in resps]), cfg.delays, runs)
        self.n_voxels_in_ = resps[0].shape[1]
        ridge = bootstrap_ridge_from(cfg).fit(x, y - self.mean_rate_, runs=runs)
        self.weights_ = ridge.coef_[:, 0]
        self.intercept_ = float(ridge.intercept_[0])
        self.alpha_ = float(ridge.alphas_[0])
        self.cv_score_ = float(ridge.best_scores_[0])
        log.info("WordRateModel: alpha %.3g, bootstrap variance explained %.3f", self.alpha_, self.cv_score_)
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "weights_"):
            raise NotFittedError("This WordRateModel is not fitted: call fit(responses, counts) or load(folder).")

    def predict(self, responses: np.ndarray, runs: Sequence[tuple[int, int]] | None = None) -> np.ndarray:
        """Predicted word rate per TR: (T, V) responses → (T,) float (words per TR; may be negative).

        The last TRs of a run lack their future volumes, which are taken as 0 (as in Tang's zero padding).
        """
        self._check_fitted()
        responses = _check_matrix(responses, "responses")
        if responses.shape[1] != self.n_voxels_in_:
            raise DatasetError(
                f"responses have {responses.shape[1]} columns but the model was fitted on {self.n_voxels_in_} voxels;"
                " pass the same ROI voxels."
            )
        x = make_delayed(np.asarray(responses, dtype=np.float64), self.config.delays, runs)
        return x @ self.weights_ + self.intercept_ + self.mean_rate_

    def predict_counts(self, responses: np.ndarray, runs: Sequence[tuple[int, int]] | None = None) -> np.ndarray:
        """Words per TR as Tang uses them: `round(max(0, ŷ))` (round half to even), (T,) int64."""
        return np.rint(np.maximum(0.0, self.predict(responses, runs))).astype(np.int64)

    def score(self, responses: np.ndarray, counts: np.ndarray) -> float:
        """Pearson correlation over TRs between the predicted rate (`predict`, unrounded) and `counts`."""
        pred = self.predict(responses)
        counts = np.asarray(counts, dtype=np.float64).reshape(-1)
        if counts.shape != pred.shape:
            raise DatasetError(f"counts has {counts.size} TRs but responses have {pred.size}.")
        pc, cc = pred - pred.mean(), counts - counts.mean()
        denom = float(np.sqrt((pc**2).sum() * (cc**2).sum()))
        return float((pc * cc).sum() / denom) if denom > 0 else 0.0

    def save(self, folder: str | Path) -> Path:
        """Write `word_rate_model.json` (config, scalars, format version, checksum) and `word_rate_model.npz`."""
        self._check_fitted()
        meta = {
            "format": self.FORMAT,
            "version": self.VERSION,
            "config": dataclasses.asdict(self.config),
            "n_voxels_in": int(self.n_voxels_in_),
            "mean_rate": self.mean_rate_,
            "intercept": self.intercept_,
            "alpha": self.alpha_,
            "cv_score": self.cv_score_,
        }
        return _save_model(folder, self.FILE_STEM, meta, {"weights": np.asarray(self.weights_)})

    @classmethod
    def load(cls, folder: str | Path) -> WordRateModel:
        """Load what `save` wrote; a missing, truncated or inconsistent file raises `DatasetError`."""
        meta, arrays = _load_model(folder, cls.FILE_STEM, cls.FORMAT, cls.VERSION)
        try:
            model = cls(WordRateConfig(**meta["config"]))
            model.n_voxels_in_ = int(meta["n_voxels_in"])
            model.mean_rate_ = float(meta["mean_rate"])
            model.intercept_ = float(meta["intercept"])
            model.alpha_ = float(meta["alpha"])
            model.cv_score_ = float(meta["cv_score"])
            model.weights_ = arrays["weights"]
        except (KeyError, TypeError, ValueError) as err:
            raise DatasetError(f"{folder}: the saved word-rate model is incomplete ({err!r}); refit it.") from err
        expected = (model.n_voxels_in_ * len(model.config.delays),)
        if model.weights_.shape != expected:
            raise DatasetError(f"{folder}: weights have shape {model.weights_.shape}, expected {expected}; refit it.")
        return model


# ----------------------------------------------------------------------------------------------------- timing


def word_times(counts: np.ndarray, tr_times: np.ndarray, tr: float) -> np.ndarray:
    """Evenly spaced word times inside each TR (Tang's `predict_word_times`).

    The n_t words of TR t (centre c_t) get times `c_t − tr/2 + (k + ½)·tr/n_t`, k = 0 … n_t − 1.

    Args:
        counts: (T,) non-negative integer words per TR.
        tr_times: (T,) TR centre times, seconds.
        tr: repetition time, seconds.
    Returns:
        (sum(counts),) float64 seconds, in TR order.
    """
    counts = np.asarray(counts)
    tr_times = np.asarray(tr_times, dtype=np.float64)
    if counts.ndim != 1 or counts.shape != tr_times.shape:
        raise DatasetError(
            f"counts and tr_times must both be (T,), got {counts.shape} and {tr_times.shape}."
        )
    if counts.size and (np.any(counts < 0) or np.any(counts != np.round(counts))):
        raise DatasetError("counts must be non-negative integers (words per TR); round them first (predict_counts).")
    if not tr > 0:
        raise DatasetError(f"tr must be a positive duration in seconds, got {tr}.")
    counts = counts.astype(np.int64)
    owner = np.repeat(np.arange(counts.size), counts)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    k = np.arange(owner.size) - first
    return tr_times[owner] - tr / 2 + (k + 0.5) * tr / counts[owner]


def lanczos_word_counts(word_times: np.ndarray, tr_times: np.ndarray, window: int = 3) -> np.ndarray:
    """Tang's word-rate target: the Lanczos-summed word count per TR, (W,) word times → (T,) float64.

    Each TR gets `Σ_words lanczos(f_c·(c_t − w_i))` with f_c = 1/mean(diff(tr_times)) (not normalised).
    """
    return lanczos_matrix(word_times, tr_times, window=window).sum(axis=1)


def binned_word_counts(word_times: np.ndarray, tr_times: np.ndarray, tr: float) -> np.ndarray:
    """Number of words whose time falls in `[c_t − tr/2, c_t + tr/2)` for each TR centre c_t: (T,) int64."""
    words = np.sort(np.asarray(word_times, dtype=np.float64).reshape(-1))
    centres = np.asarray(tr_times, dtype=np.float64).reshape(-1)
    if not tr > 0:
        raise DatasetError(f"tr must be a positive duration in seconds, got {tr}.")
    hi = np.searchsorted(words, centres + tr / 2, side="left")
    lo = np.searchsorted(words, centres - tr / 2, side="left")
    return (hi - lo).astype(np.int64)
