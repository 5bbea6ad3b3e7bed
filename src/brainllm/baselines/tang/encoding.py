"""Tang et al. 2023 encoding model: stimulus features → voxel responses, with a Gaussian noise model.

`EncodingModel.fit` follows `train_EM.py` of the semantic-decoding code, with story-aware FIR delays:
1. z-score every feature with the training mean and std (`tr_stats`; a std of 0 becomes 1);
2. delay the features by `delays` TRs **within each run** (Tang delays the concatenated stories, which leaks
   the end of one story into the start of the next);
3. `BootstrapRidge`: one penalty per voxel, Tang's chunked bootstrap and held-out variance explained;
4. keep the `n_voxels` voxels with the best bootstrap score (`voxels_`, sorted) and refit their weights;
5. noise model: leave-one-run-out residuals with the fixed per-voxel penalties,
   `Σ = mean_runs(RᵀR / mean(diag(RᵀR)))`, and precision `P = inv((1 − s)Σ + s·I)` with s = `noise_shrinkage`.

The decoder scores a candidate stimulus S by `log P(R | S) = −½ Σ_{t∈trs} (x_t(S)W + b − r_t)ᵀ P (x_t(S)W + b − r_t)`
(`log_likelihood`), where r_t are the responses of the **selected** voxels (`select`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.linalg
import torch
from sklearn.exceptions import NotFittedError

from ...errors import ConfigError, DatasetError
from ...voxelwise.bootstrap import (TANG_ALPHAS, _check_matrix, _fit_ridge_from_moments, bootstrap_ridge_from,
                                    checked_delays_alphas, fit_ridge_fixed)
from ...voxelwise.delays import make_delayed, runs_from_lengths
from ...voxelwise.modelfile import _check_run_lists, _config_with, _load_model, _save_model

log = logging.getLogger(__name__)

__all__ = ["EncodingConfig", "EncodingModel"]


# ----------------------------------------------------------------------------------------------------- config


@dataclass
class EncodingConfig:
    """Hyper-parameters of the encoding model; defaults are Tang et al.'s (`decoding/config.py`)."""

    delays: tuple[int, ...] = (1, 2, 3, 4)
    """FIR delays in TRs (`STIM_DELAYS`): row t sees the features of TRs t−1 … t−4 (2–8 s earlier at TR = 2 s)."""
    alphas: tuple[float, ...] = TANG_ALPHAS
    """Ridge penalty grid in Tang's units (λ = α²): `ALPHAS = logspace(1, 3, 10)`."""
    n_boots: int = 50
    """Bootstraps for choosing each voxel's penalty (`NBOOTS`)."""
    chunk_len: int = 40
    """Held-out chunk length in TRs (`CHUNKLEN`)."""
    held_out_fraction: float = 0.2
    """Fraction of TRs held out per bootstrap (Tang: `nchunks = ceil(T/5/CHUNKLEN)`)."""
    n_voxels: int = 10000
    """Voxels kept by bootstrap score (`VOXELS`); capped at the number available."""
    noise_shrinkage: float = 2 / 3
    """Shrinkage of the residual covariance towards the identity (`NM_ALPHA`)."""
    seed: int = 0
    """Seed of the bootstrap splits (Tang used Python's unseeded `random`)."""
    n_targets_batch: int | None = 8192
    """Voxels processed at once in the ridge (memory only; None = all). Not a Tang parameter."""

    def __post_init__(self) -> None:
        self.delays, self.alphas = checked_delays_alphas(self.delays, self.alphas, "(1, 2, 3, 4)")
        if self.n_voxels < 1:
            raise ConfigError(f"n_voxels must be >= 1, got {self.n_voxels}; Tang et al. keep 10000.")
        if not 0.0 <= self.noise_shrinkage <= 1.0:
            raise ConfigError(f"noise_shrinkage must lie in [0, 1], got {self.noise_shrinkage}; Tang uses 2/3.")


# ----------------------------------------------------------------------------------------------------- helpers


def _pearson(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Pearson correlation per column over rows, (n, v) → (v,); 0 where either column is constant."""
    yt = y_true - y_true.mean(axis=0)
    yp = y_pred - y_pred.mean(axis=0)
    denom = np.sqrt((yt**2).sum(axis=0) * (yp**2).sum(axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (yt * yp).sum(axis=0) / denom
    r[~(denom > 0)] = 0.0
    return r


# ----------------------------------------------------------------------------------------------------- model


class EncodingModel:
    """Tang et al.'s encoding model (ridge from delayed LM features to voxels) plus its Gaussian noise model.

    Attributes (after `fit`):
        feature_mean_, feature_std_: (F,) training feature statistics (Tang's `tr_stats`); std 0 → 1.
        alphas_: (V,) penalty chosen per voxel (Tang's units, λ = α²); voxel_scores_: (V,) bootstrap score
            (held-out variance explained, Tang's `use_corr=False`) at that penalty.
        voxels_: (V_sel,) sorted indices of the selected voxels (top `n_voxels` by `voxel_scores_`).
        weights_: (F·n_delays, V_sel) and intercept_: (V_sel,): predictions `delayed(x) @ weights_ + intercept_`.
        noise_cov_: (V_sel, V_sel) residual covariance, mean diagonal 1; precision_: its shrunk inverse.
        blank_word_: (F,) mean training word vector (Tang's `word_stats[0]`), or None if not given to `fit`.
        n_features_in_ (F), n_voxels_in_ (V), n_runs_.
    """

    FORMAT = "brainllm.tang.encoding_model"
    VERSION = 1
    FILE_STEM = "encoding_model"

    def __init__(self, config: EncodingConfig | None = None, **overrides: Any) -> None:
        self.config: EncodingConfig = _config_with(EncodingConfig, config, overrides)
        self.blank_word_: np.ndarray | None = None
        self._torch_cache: dict[tuple[Any, ...], dict[str, torch.Tensor]] = {}

    # ------------------------------------------------------------------ fit

    def fit(
        self,
        features: Sequence[np.ndarray],
        responses: Sequence[np.ndarray],
        word_features: np.ndarray | None = None,
    ) -> EncodingModel:
        """Fit on training runs (stories).

        Args:
            features: one (T_r, F) array per run, stimulus features already at TR rate (Lanczos-downsampled and
                trimmed to the response TRs by the caller).
            responses: one (T_r, V) array per run, the voxel responses (Tang uses them as stored: z-scored per run).
            word_features: optional (n_words, F) word-level features of the training stories; their mean is kept
                as `blank_word_`, the vector Tang uses for words not yet decoded.
        Returns:
            self.
        """
        cfg = self.config
        feats, resps = _check_run_lists(features, responses, "features", "responses", out_ndim=2)
        if len(feats) < 2:
            raise DatasetError(
                f"EncodingModel.fit needs at least 2 runs (stories) for the leave-one-run-out noise model, got "
                f"{len(feats)}. Split a long recording into runs or add stories."
            )
        lengths = [f.shape[0] for f in feats]
        runs = runs_from_lengths(lengths)
        stacked = np.concatenate([np.asarray(f, dtype=np.float64) for f in feats])
        self.feature_mean_ = stacked.mean(axis=0)
        std = stacked.std(axis=0)
        std[std == 0] = 1.0
        self.feature_std_ = std
        self.n_features_in_ = stacked.shape[1]
        self.n_runs_ = len(feats)
        del stacked
        x = self.delayed(np.concatenate(feats), runs=runs)
        y = np.concatenate(resps)
        self.n_voxels_in_ = y.shape[1]

        log.info("EncodingModel: %d runs, %d TRs, %d delayed features, %d voxels", len(runs), *x.shape, y.shape[1])
        ridge = bootstrap_ridge_from(cfg, n_targets_batch=cfg.n_targets_batch, refit=False).fit(x, y, runs=runs)
        self.alphas_ = ridge.alphas_
        self.voxel_scores_ = ridge.best_scores_
        n_sel = min(cfg.n_voxels, y.shape[1])
        order = np.argsort(-self.voxel_scores_, kind="stable")[:n_sel]
        self.voxels_ = np.sort(order).astype(np.int64)

        y_sel = np.asarray(y[:, self.voxels_], dtype=np.float64)
        del y
        alphas_sel = self.alphas_[self.voxels_]
        self.weights_, self.intercept_ = fit_ridge_fixed(x, y_sel, alphas_sel, cfg.n_targets_batch)
        self.noise_cov_ = self._residual_covariance(x, y_sel, runs, alphas_sel)
        s = cfg.noise_shrinkage
        shrunk = (1.0 - s) * self.noise_cov_ + s * np.eye(n_sel)
        try:
            chol = scipy.linalg.cho_factor(shrunk, lower=True)
        except np.linalg.LinAlgError as err:
            raise DatasetError(
                "the shrunk noise covariance is not positive definite; with noise_shrinkage = 0 this happens when "
                "there are more selected voxels than residual TRs. Use noise_shrinkage > 0 (Tang: 2/3)."
            ) from err
        precision = scipy.linalg.cho_solve(chol, np.eye(n_sel))
        self.precision_ = (precision + precision.T) / 2
        if word_features is not None:
            words = _check_matrix(word_features, "word_features")
            if words.shape[1] != self.n_features_in_:
                raise DatasetError(
                    f"word_features has {words.shape[1]} columns but features have {self.n_features_in_}; pass the "
                    "word-level vectors of the same feature space."
                )
            self.blank_word_ = np.asarray(words, dtype=np.float64).mean(axis=0)
        else:
            self.blank_word_ = None
        self._torch_cache = {}
        return self

    def _residual_covariance(
        self, x: np.ndarray, y: np.ndarray, runs: list[tuple[int, int]], alphas: np.ndarray
    ) -> np.ndarray:
        """Leave-one-run-out residual scatter, each normalised to mean diagonal 1, averaged over runs."""
        n, p = x.shape
        penalties = alphas**2
        use_moments = n - max(b - a for a, b in runs) > p  # primal form for every fold: reuse XᵀX, XᵀY
        if use_moments:
            xtx, xty = x.T @ x, x.T @ y
            sum_x, sum_y = x.sum(axis=0), y.sum(axis=0)
        cov = np.zeros((y.shape[1], y.shape[1]))
        for start, stop in runs:
            xh, yh = x[start:stop], y[start:stop]
            if use_moments:
                coef, icpt = _fit_ridge_from_moments(
                    n - (stop - start), sum_x - xh.sum(axis=0), sum_y - yh.sum(axis=0),
                    xtx - xh.T @ xh, xty - xh.T @ yh, penalties,
                )
            else:
                rest = np.r_[0:start, stop:n]
                coef, icpt = fit_ridge_fixed(x[rest], y[rest], alphas, self.config.n_targets_batch)
            resid = yh - (xh @ coef + icpt)
            scatter = resid.T @ resid
            scale = float(np.mean(np.diag(scatter)))
            if not scale > 0:
                raise DatasetError(
                    f"the held-out residuals of run ({start}, {stop}) are all zero, so the noise covariance cannot "
                    "be normalised; the responses are an exact function of the features (check the data)."
                )
            cov += scatter / scale / len(runs)
        return cov

    # ------------------------------------------------------------------ transforms

    def _check_fitted(self) -> None:
        if not hasattr(self, "weights_"):
            raise NotFittedError("This EncodingModel is not fitted: call fit(features, responses) or load(folder).")

    def _check_features(self, features: np.ndarray, name: str = "features") -> np.ndarray:
        features = _check_matrix(features, name)
        if features.shape[1] != self.n_features_in_:
            raise DatasetError(
                f"{name} has {features.shape[1]} columns but the model was fitted on {self.n_features_in_} features."
            )
        return features

    def delayed(self, features: np.ndarray, runs: Sequence[tuple[int, int]] | None = None) -> np.ndarray:
        """Normalise with the training statistics, then delay: (T, F) → (T, F·n_delays) float64.

        `runs` (`[start, stop)` row ranges) keeps delays inside each run; None = one run.
        """
        if not hasattr(self, "feature_mean_"):
            raise NotFittedError("This EncodingModel is not fitted: call fit(features, responses) or load(folder).")
        features = self._check_features(features)
        z = (np.asarray(features, dtype=np.float64) - self.feature_mean_) / self.feature_std_
        return make_delayed(z, self.config.delays, runs)

    def predict(self, features: np.ndarray, runs: Sequence[tuple[int, int]] | None = None) -> np.ndarray:
        """Predicted responses of the selected voxels: (T, F) → (T, V_sel) float64."""
        self._check_fitted()
        return self.delayed(features, runs) @ self.weights_ + self.intercept_

    def select(self, responses: np.ndarray) -> np.ndarray:
        """The selected voxels' columns: (T, V) → (T, V_sel), as `log_likelihood` expects."""
        self._check_fitted()
        if responses.ndim != 2 or responses.shape[1] != self.n_voxels_in_:
            raise DatasetError(
                f"responses must be (T, {self.n_voxels_in_}) (all voxels of the training data), got "
                f"{tuple(responses.shape)}."
            )
        return responses[:, self.voxels_]

    def score(self, features: np.ndarray, responses: np.ndarray) -> np.ndarray:
        """Pearson correlation over TRs between predicted and observed response, per selected voxel.

        Args:
            features: (T, F) one run.
            responses: (T, V) all voxels or (T, V_sel) already selected.
        Returns:
            (V_sel,) correlations (unclipped; 0 for a constant voxel).
        """
        self._check_fitted()
        responses = _check_matrix(responses, "responses")
        if responses.shape[1] == self.n_voxels_in_:
            responses = self.select(responses)
        elif responses.shape[1] != self.voxels_.size:
            raise DatasetError(
                f"responses have {responses.shape[1]} columns; expected {self.n_voxels_in_} (all voxels) or "
                f"{self.voxels_.size} (selected voxels)."
            )
        pred = self.predict(features)
        if pred.shape[0] != responses.shape[0]:
            raise DatasetError(f"features have {pred.shape[0]} TRs but responses have {responses.shape[0]}.")
        return _pearson(np.asarray(responses, dtype=np.float64), pred)

    # ------------------------------------------------------------------ likelihood

    def _torch_params(self, dtype: torch.dtype, device: torch.device) -> dict[str, torch.Tensor]:
        key = (dtype, str(device))
        if key not in self._torch_cache:
            wp = self.weights_ @ self.precision_  # (P, V_sel)
            wpw = wp @ self.weights_.T  # (P, P), symmetric up to rounding
            params = {
                "weights": self.weights_,
                "intercept": self.intercept_,
                "precision": self.precision_,
                "wp": wp,
                "wpw": (wpw + wpw.T) / 2,
                "mean": self.feature_mean_,
                "std": self.feature_std_,
            }
            self._torch_cache[key] = {k: torch.as_tensor(v, dtype=dtype, device=device) for k, v in params.items()}
        return self._torch_cache[key]

    def log_likelihood(
        self,
        features: torch.Tensor | np.ndarray,
        responses: torch.Tensor | np.ndarray,
        trs: Sequence[int] | np.ndarray | torch.Tensor,
        dtype: torch.dtype = torch.float32,
        batch_size: int | None = None,
    ) -> torch.Tensor:
        """Gaussian log-likelihood of observed responses under each candidate stimulus, up to a constant.

        `ll[n] = −½ Σ_{t∈trs} (x_t W + b − r_t)ᵀ P (x_t W + b − r_t)`, x_t the normalised, delayed feature row of
        candidate n at TR t (delays look back within the candidate's T rows, zeros before row 0).

        Args:
            features: (N, T, F) candidate stimuli at TR rate (raw, e.g. Lanczos-downsampled LM features; the
                training normalisation is applied here). A torch tensor's device is used.
            responses: (T, V_sel) observed responses of the **selected** voxels (see `select`).
            trs: TR indices (rows of T) to score.
            dtype: torch dtype of the computation (float32 is fine; float64 for checks).
            batch_size: candidates per batch (memory); None = all.
        Returns:
            (N,) tensor of log-likelihoods, on the features' device.
        """
        self._check_fitted()
        device = features.device if isinstance(features, torch.Tensor) else torch.device("cpu")
        feats = torch.as_tensor(features, dtype=dtype, device=device)
        if feats.ndim != 3 or feats.shape[2] != self.n_features_in_:
            raise DatasetError(
                f"features must be (N, T, {self.n_features_in_}) candidate stimuli, got {tuple(feats.shape)}."
            )
        if not torch.isfinite(feats).all():
            raise DatasetError("features contain NaN or Inf; check the candidate stimuli.")
        n_trs = feats.shape[1]
        trs_t = torch.as_tensor(np.asarray(trs, dtype=np.int64), device=device).reshape(-1)
        if trs_t.numel() == 0 or int(trs_t.min()) < 0 or int(trs_t.max()) >= n_trs:
            raise DatasetError(f"trs must be non-empty TR indices in [0, {n_trs}), got {trs_t.tolist()}.")
        resp = torch.as_tensor(responses, dtype=dtype, device=device)
        if resp.ndim != 2 or resp.shape[0] != n_trs:
            raise DatasetError(
                f"responses must be (T={n_trs}, V_sel={self.voxels_.size}) (use select()), got {tuple(resp.shape)}."
            )
        params = self._torch_params(dtype, device)
        z = (feats - params["mean"]) / params["std"]
        blocks = []
        for d in self.config.delays:
            src = trs_t - d
            valid = ((src >= 0) & (src < n_trs)).to(dtype)
            blocks.append(z[:, src.clamp(0, n_trs - 1), :] * valid[None, :, None])
        rows = torch.cat(blocks, dim=-1)  # (N, |trs|, F·n_delays)
        return self.log_likelihood_delayed(rows, resp[trs_t], dtype=dtype, batch_size=batch_size)

    def log_likelihood_delayed(
        self,
        delayed_rows: torch.Tensor | np.ndarray,
        responses_rows: torch.Tensor | np.ndarray,
        dtype: torch.dtype | None = None,
        batch_size: int | None = None,
        method: str = "auto",
    ) -> torch.Tensor:
        """`log_likelihood` for callers that already built the normalised, delayed rows.

        Args:
            delayed_rows: (N, R, F·n_delays) rows x_t for the R scored TRs (as `delayed` makes them).
            responses_rows: (R, V_sel) observed responses of the selected voxels at those TRs.
            dtype: computation dtype; default that of `delayed_rows` if floating, else float32.
            batch_size: candidates per batch; None = all.
            method: "residual" forms the (N, R, V_sel) residuals; "expanded" uses
                `xWPWᵀxᵀ − 2xWP(r − b) + (r − b)ᵀP(r − b)` with the cached (P', P') matrix WPWᵀ, cheaper when
                F·n_delays < V_sel (Tang: 3072 < 10000); "auto" picks the cheaper.
        Returns:
            (N,) log-likelihoods (only the per-TR diagonal terms are computed; no R × R matrix).
        """
        self._check_fitted()
        device = delayed_rows.device if isinstance(delayed_rows, torch.Tensor) else torch.device("cpu")
        if dtype is None:
            is_float = isinstance(delayed_rows, torch.Tensor) and delayed_rows.is_floating_point()
            dtype = delayed_rows.dtype if is_float else torch.float32
        rows = torch.as_tensor(delayed_rows, dtype=dtype, device=device)
        resp = torch.as_tensor(responses_rows, dtype=dtype, device=device)
        n_cols, n_vox = self.weights_.shape
        if rows.ndim != 3 or rows.shape[2] != n_cols:
            raise DatasetError(f"delayed_rows must be (N, R, {n_cols}), got {tuple(rows.shape)}.")
        if resp.shape != (rows.shape[1], n_vox):
            raise DatasetError(
                f"responses_rows must be (R={rows.shape[1]}, V_sel={n_vox}) (the selected voxels at the scored "
                f"TRs), got {tuple(resp.shape)}."
            )
        if method == "auto":
            method = "expanded" if n_cols < n_vox else "residual"
        if method not in ("expanded", "residual"):
            raise ConfigError(f"method must be 'auto', 'expanded' or 'residual', got {method!r}.")
        params = self._torch_params(dtype, device)
        target = resp - params["intercept"]  # (R, V)
        step = rows.shape[0] if not batch_size else int(batch_size)
        out = []
        if method == "expanded":
            lin = target @ params["wp"].T  # (R, P') = W P (r − b) per TR
            const = ((target @ params["precision"]) * target).sum()
            for s in range(0, rows.shape[0], max(1, step)):
                x = rows[s : s + step]
                quad = ((x @ params["wpw"]) * x).sum(dim=(1, 2)) - 2 * (x * lin).sum(dim=(1, 2))
                out.append(-0.5 * (quad + const))
        else:
            for s in range(0, rows.shape[0], max(1, step)):
                diff = rows[s : s + step] @ params["weights"] - target  # (Nb, R, V)
                out.append(-0.5 * ((diff @ params["precision"]) * diff).sum(dim=(1, 2)))
        return torch.cat(out) if out else torch.zeros(0, dtype=dtype, device=device)

    # ------------------------------------------------------------------ persistence

    _ARRAY_NAMES = (
        "feature_mean", "feature_std", "alphas", "voxel_scores", "voxels",
        "weights", "intercept", "noise_cov", "precision",
    )

    def save(self, folder: str | Path) -> Path:
        """Write `encoding_model.json` (config, shapes, format version, checksum) and `encoding_model.npz`."""
        self._check_fitted()
        arrays = {name: np.asarray(getattr(self, f"{name}_")) for name in self._ARRAY_NAMES}
        if self.blank_word_ is not None:
            arrays["blank_word"] = np.asarray(self.blank_word_)
        meta = {
            "format": self.FORMAT,
            "version": self.VERSION,
            "config": dataclasses.asdict(self.config),
            "n_features_in": int(self.n_features_in_),
            "n_voxels_in": int(self.n_voxels_in_),
            "n_runs": int(self.n_runs_),
        }
        return _save_model(folder, self.FILE_STEM, meta, arrays)

    @classmethod
    def load(cls, folder: str | Path) -> EncodingModel:
        """Load what `save` wrote; a missing, truncated or inconsistent file raises `DatasetError`."""
        meta, arrays = _load_model(folder, cls.FILE_STEM, cls.FORMAT, cls.VERSION)
        try:
            model = cls(EncodingConfig(**meta["config"]))
            for name in cls._ARRAY_NAMES:
                setattr(model, f"{name}_", arrays[name])
            model.blank_word_ = arrays.get("blank_word")
            model.n_features_in_ = int(meta["n_features_in"])
            model.n_voxels_in_ = int(meta["n_voxels_in"])
            model.n_runs_ = int(meta["n_runs"])
        except (KeyError, TypeError, ConfigError) as err:
            raise DatasetError(f"{folder}: the saved encoding model is incomplete ({err!r}); refit it.") from err
        p = model.n_features_in_ * len(model.config.delays)
        n_sel = model.voxels_.size
        expected = {
            "feature_mean": (model.n_features_in_,), "feature_std": (model.n_features_in_,),
            "alphas": (model.n_voxels_in_,), "voxel_scores": (model.n_voxels_in_,), "weights": (p, n_sel),
            "intercept": (n_sel,), "noise_cov": (n_sel, n_sel), "precision": (n_sel, n_sel),
        }
        for name, shape in expected.items():
            if arrays[name].shape != shape:
                raise DatasetError(
                    f"{folder}: array {name!r} has shape {arrays[name].shape}, expected {shape} from the saved "
                    "config; the model files are inconsistent. Refit it."
                )
        return model

