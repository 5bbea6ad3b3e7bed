"""A sentence-level encoding model: text features -> one frame per sample, with a Gaussian noise model.

The likelihood half of the Bayesian decoder (`decoding.bayes`): Tang et al. 2023 score candidate words by how well
an encoding model predicts the recorded responses; here a candidate *sentence continuation* is scored the same way
against the sample's frames (Pereira: one image per sentence). Per sample, the target is the mean of its frames
`(D,)`; the features are those of the candidate's full text (`model.text_features`).

Fit (training samples only):
1. standardise features and frames with training statistics; the last `nuisance_columns` features (the design's
   length and position) are then multiplied by `nuisance_weight`, a second ridge band whose penalty is the first's
   divided by `nuisance_weight²` (one penalty for 576 state columns and 2 nuisance ones shrinks the nuisance as hard
   as the state: on the real development data a weight of 3-6 raised CV identification across passages from 0.805
   to 0.82, within from 0.645 to 0.68);
2. ridge from features to frames, one penalty for all dimensions chosen by cross-validation over whole stimuli
   (`brainllm.ridge.cv_ridge`, score: mean held-out Pearson r over frame dimensions);
3. noise model from the out-of-fold residuals R `(n, D)` of that penalty: `S = RᵀR / n`, shrunk towards its mean
   variance, `Σ = (1 − s)·S + s·mean(diag S)·I`, precision `P = Σ⁻¹` (Tang's shrinkage, but towards the mean
   variance so the scale of the log-likelihood stays in units of the data).

`log_likelihood(features, frames) = −½ (f − μ(x))ᵀ P (f − μ(x))` per row: the Gaussian log density up to a
constant that is the same for every candidate of the same frames (so differences between candidates are exact).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DatasetError
from ..ridge import CV_ALPHAS, _check_matrix, cv_ridge_out_of_fold
from .modelfile import _load_model, _save_model

FORMAT = "brainllm-sentence-encoding"
VERSION = 1


@dataclass(frozen=True)
class SentenceEncodingConfig:
    """Hyper-parameters (chosen on training data only).

    Attributes:
        alphas: ridge penalty grid, Tang's units (λ = α²).
        n_folds: folds over whole stimuli for the penalty and the out-of-fold residuals.
        noise_shrinkage: s in `Σ = (1 − s)·S + s·mean(diag S)·I`; 1 is an isotropic (diagonal) noise model.
        seed: fold assignment.
        nuisance_columns: how many of the last feature columns form the second band (0: one band).
        nuisance_weight: scale of those columns after standardisation (> 0; the same fit as `nuisance_weight²`
            copies of each of them).
    """

    alphas: tuple[float, ...] = CV_ALPHAS
    n_folds: int = 5
    noise_shrinkage: float = 0.5
    seed: int = 0
    nuisance_columns: int = 0
    nuisance_weight: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.noise_shrinkage <= 1.0:
            raise ConfigError(f"noise_shrinkage must lie in [0, 1], got {self.noise_shrinkage}.")
        if self.nuisance_columns < 0 or not self.nuisance_weight > 0:
            raise ConfigError(f"nuisance_columns must be >= 0 and nuisance_weight > 0, got {self.nuisance_columns} "
                              f"and {self.nuisance_weight}.")
        if self.n_folds < 2:
            raise ConfigError(f"n_folds must be >= 2, got {self.n_folds}.")


def column_correlation(pred: np.ndarray, truth: np.ndarray, _held: np.ndarray | None = None) -> float:
    """Mean over columns of the Pearson r between `pred` and `truth` `(n, D)` (a column with no spread counts 0)."""
    p, t = pred - pred.mean(0), truth - truth.mean(0)
    denom = np.linalg.norm(p, axis=0) * np.linalg.norm(t, axis=0)
    return float(np.mean((p * t).sum(0) / np.where(denom > 0, denom, np.inf)))


class SentenceEncodingModel:
    """Ridge encoding model with a shrunk Gaussian noise model (see the module docstring).

    After `fit`: `alpha_`, `cv_score_` (mean held-out r), `coef_` `(F, D)`, `intercept_` `(D,)`, `precision_` `(D, D)`,
    and the standardisation `x_mean_`, `x_std_` `(F,)`, `y_mean_`, `y_std_` `(D,)`.
    """

    def __init__(self, config: SentenceEncodingConfig | None = None) -> None:
        self.config = config or SentenceEncodingConfig()
        self.coef_: np.ndarray | None = None

    # ---------------------------------------------------------------------------------------------- fitting
    def fit(self, features: np.ndarray, frames: np.ndarray, groups: Sequence[str]) -> "SentenceEncodingModel":
        """Fit on training samples: `features` `(n, F)`, `frames` `(n, D)` (one row per sample), `groups` `(n,)`
        the stimulus of each row (folds keep stimuli whole)."""
        x = _check_matrix(features, "features").astype(np.float64)
        y = _check_matrix(frames, "frames").astype(np.float64)
        if len(x) != len(y) or len(x) != len(groups):
            raise DatasetError(f"features ({len(x)} rows), frames ({len(y)}) and groups ({len(groups)}) must be the "
                               "same samples.")
        if self.config.nuisance_columns > x.shape[1]:
            raise DatasetError(f"{self.config.nuisance_columns} nuisance columns, but the features have only "
                               f"{x.shape[1]}.")
        self.x_mean_, self.x_std_ = x.mean(0), _safe_std(x)
        self.y_mean_, self.y_std_ = y.mean(0), _safe_std(y)
        xs, ys = self._x(x), (y - self.y_mean_) / self.y_std_
        cfg = self.config
        self.coef_, self.intercept_, self.alpha_, self.cv_score_, held_out = cv_ridge_out_of_fold(
            xs, ys, list(groups), column_correlation, seed=cfg.seed, alphas=cfg.alphas, n_folds=cfg.n_folds)
        residuals = ys - held_out  # the same folds as the penalty's
        self.precision_ = shrunk_precision(residuals, cfg.noise_shrinkage)
        return self

    def _x(self, features: np.ndarray) -> np.ndarray:
        """Standardised features `(m, F)`, the nuisance band scaled by its weight."""
        x = (np.asarray(features, dtype=np.float64) - self.x_mean_) / self.x_std_
        k = self.config.nuisance_columns
        if k and self.config.nuisance_weight != 1.0:
            x[:, x.shape[1] - k:] *= self.config.nuisance_weight
        return x

    def _check_fitted(self) -> None:
        if self.coef_ is None:
            raise ConfigError("SentenceEncodingModel is not fitted; call fit() or load() first.")

    # ---------------------------------------------------------------------------------------------- scoring
    def predict(self, features: np.ndarray) -> np.ndarray:
        """Predicted standardised frames `(m, D)` of texts with features `(m, F)`."""
        self._check_fitted()
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.coef_.shape[0]:
            raise DatasetError(f"features must have shape (m, {self.coef_.shape[0]}), got {x.shape}.")
        return self._x(x) @ self.coef_ + self.intercept_

    def standardise(self, frames: np.ndarray) -> np.ndarray:
        """Frames `(n, D)` in the model's standardised units."""
        self._check_fitted()
        f = np.asarray(frames, dtype=np.float64)
        if f.ndim != 2 or f.shape[1] != len(self.y_mean_):
            raise DatasetError(f"frames must have shape (n, {len(self.y_mean_)}), got {f.shape}.")
        return (f - self.y_mean_) / self.y_std_

    def log_likelihood(self, features: np.ndarray, frames: np.ndarray) -> np.ndarray:
        """`(m,)` log p(frames_i | text_i) up to a constant: row i of `features` `(m, F)` against row i of `frames`
        `(m, D)`."""
        r = self.standardise(frames) - self.predict(features)
        return -0.5 * np.einsum("nd,de,ne->n", r, self.precision_, r)

    def log_likelihood_matrix(self, features: np.ndarray, frames: np.ndarray) -> np.ndarray:
        """`(m, n)`: entry [i, j] = log p(frames_j | text_i) up to a constant per frames j."""
        mu, f = self.predict(features), self.standardise(frames)
        pm, pf = mu @ self.precision_, f @ self.precision_
        return -0.5 * ((pm * mu).sum(1)[:, None] - 2 * mu @ pf.T + (pf * f).sum(1)[None, :])

    # ---------------------------------------------------------------------------------------------- files
    def save(self, folder: str | Path, stem: str = "encoding") -> Path:
        """`<stem>.npz` + `<stem>.json` in `folder` (no pickles)."""
        self._check_fitted()
        meta = {"format": FORMAT, "version": VERSION, "config": asdict(self.config), "alpha": self.alpha_,
                "cv_score": self.cv_score_}
        arrays = {name: getattr(self, name + "_") for name in
                  ("coef", "intercept", "precision", "x_mean", "x_std", "y_mean", "y_std")}
        return _save_model(folder, stem, meta, arrays)

    @classmethod
    def load(cls, folder: str | Path, stem: str = "encoding") -> "SentenceEncodingModel":
        meta, arrays = _load_model(folder, stem, FORMAT, VERSION)
        config = dict(meta["config"])
        config["alphas"] = tuple(config["alphas"])
        model = cls(SentenceEncodingConfig(**config))
        for name, value in arrays.items():
            setattr(model, name + "_", value)
        model.alpha_, model.cv_score_ = float(meta["alpha"]), float(meta["cv_score"])
        return model


def _safe_std(a: np.ndarray) -> np.ndarray:
    std = a.std(0)
    return np.where(std > 0, std, 1.0)


def shrunk_precision(residuals: np.ndarray, shrinkage: float) -> np.ndarray:
    """`inv((1 − s)·S + s·mean(diag S)·I)` `(D, D)` of residuals `(n, D)` (S = RᵀR / n)."""
    s_cov = residuals.T @ residuals / len(residuals)
    scale = float(np.mean(np.diag(s_cov)))
    if scale <= 0:
        raise DatasetError("The encoding model's residuals have no variance: are the frames constant?")
    cov = (1 - shrinkage) * s_cov + shrinkage * scale * np.eye(len(s_cov))
    return np.linalg.inv(cov)
