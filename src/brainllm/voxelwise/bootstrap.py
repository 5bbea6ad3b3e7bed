"""Bootstrapped ridge regression with one penalty per target (Tang et al. 2023; Huth-lab `bootstrap_ridge`).

**Penalty units.** Tang's ridge is `W = V·diag(s / (s² + α²))·Uᵀ·Y` for `X = U·diag(s)·Vᵀ`, i.e. it minimises
`‖XW − Y‖² + α²‖W‖²`: Tang's `alpha` is the square root of the usual penalty λ. Every `alphas` argument here is in
Tang's units (default `logspace(1, 3, 10)` = 10 … 1000) and is squared internally (λ = α² = 100 … 10⁶), which is
also the `alpha` that himalaya and scikit-learn multiply `‖w‖²` by.

**Solver.** Per bootstrap the training rows are centred and the smaller Gram matrix (`XXᵀ` when n ≤ p, `XᵀX`
otherwise) is eigendecomposed once (`numpy.linalg.eigh`); the held-out predictions for all penalties and all
targets follow from matrix products. This is the SVD ridge of Tang et al. written through the Gram matrix: it
equals it up to rounding. On an (n=2000, p=3072, v=2000) problem with 10 bootstraps on a busy 2-core host it took
24 s, against 267 s for himalaya 0.4.11's `solve_ridge_cv_svd` (LAPACK `gesdd` SVD per split) and 168 s for its
`solve_kernel_ridge_cv_eigenvalues` (scipy's `evr` eigh); the tests check the result against himalaya and against
`np.linalg.solve`.
Eigen-directions with eigenvalue below 1e-10 of the largest are dropped (Tang drops singular values < 1e-10).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError
from threadpoolctl import threadpool_limits

from ..errors import ConfigError, DatasetError
from ..progress import progress
from ..ridge import _EIG_RTOL, _check_matrix, _check_penalties, _Decomposition, _target_batches, fit_ridge_fixed
from .delays import check_runs

log = logging.getLogger(__name__)

__all__ = [
    "TANG_ALPHAS",
    "BootstrapRidge",
    "chunk_bootstrap_splits",
    "fit_ridge_fixed",
    "variance_explained",
]

#: Tang et al.'s penalty grid, `np.logspace(1, 3, 10)`, in Tang's units (λ = α²).
TANG_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(1, 3, 10))

# ----------------------------------------------------------------------------------------------------- splits


def bootstrap_ridge_from(config, **extra) -> "BootstrapRidge":
    """A BootstrapRidge with the penalty grid and bootstrap settings of an encoding or word-rate config."""
    return BootstrapRidge(alphas=config.alphas, n_boots=config.n_boots, chunk_len=config.chunk_len,
                          held_out_fraction=config.held_out_fraction, seed=config.seed, **extra)


def checked_delays_alphas(delays: Sequence[int], alphas: Sequence[float], example: str
                          ) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Delays and penalties of an encoding/word-rate config as tuples; ConfigError if empty, repeated or <= 0."""
    delays = tuple(int(d) for d in delays)
    alphas = tuple(float(a) for a in alphas)
    if not delays or len(set(delays)) != len(delays):
        raise ConfigError(f"delays must be distinct TR offsets, e.g. {example}; got {delays}.")
    if not alphas or min(alphas) <= 0:
        raise ConfigError(f"alphas must be positive penalties (Tang's units); got {alphas}.")
    return delays, alphas


def chunk_bootstrap_splits(
    runs: Sequence[Sequence[int]] | int,
    chunk_len: int = 40,
    n_boots: int = 50,
    held_out_fraction: float = 0.2,
    seed: int = 0,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Tang's bootstrap: hold out a random ~20 % of consecutive `chunk_len`-TR chunks, `n_boots` times.

    Each run is cut into consecutive chunks of `chunk_len` rows from its start; a chunk never spans two runs and
    a run's remainder (< chunk_len rows) is never held out (it always trains, as in Tang's code). Each bootstrap
    holds out `ceil(held_out_fraction · n_rows / chunk_len)` chunks (Tang: `ceil(T/5/40)`), at most all but one.

    Args:
        runs: `[start, stop)` row ranges tiling the rows (one per story), or the number of rows (one run).
        chunk_len: chunk length in TRs (Tang: 40).
        n_boots: number of bootstraps (Tang: 50).
        held_out_fraction: target fraction of rows held out (Tang: 1/5).
        seed: seed of `numpy.random.default_rng`; the same seed gives the same splits.
    Returns:
        `n_boots` pairs `(train_idx, test_idx)` of sorted int64 row indices, disjoint and together covering every
        row; a list of such pairs is a valid scikit-learn `cv`.
    """
    if isinstance(runs, (int, np.integer)):
        n_rows = int(runs)
        runs_list = check_runs(None, n_rows)
    else:
        runs = [tuple(r) for r in runs]
        n_rows = int(runs[-1][1]) if runs else 0
        runs_list = check_runs(runs, n_rows)
    if chunk_len < 1 or n_boots < 1:
        raise ConfigError(f"chunk_len and n_boots must be >= 1, got chunk_len={chunk_len}, n_boots={n_boots}.")
    if not 0 < held_out_fraction < 1:
        raise ConfigError(f"held_out_fraction must lie in (0, 1), got {held_out_fraction}; Tang et al. use 0.2.")
    chunks = [
        np.arange(start + k * chunk_len, start + (k + 1) * chunk_len)
        for start, stop in runs_list
        for k in range((stop - start) // chunk_len)
    ]
    if len(chunks) < 2:
        raise DatasetError(
            f"chunk_bootstrap_splits: the runs hold {len(chunks)} full chunk(s) of {chunk_len} rows "
            f"({n_rows} rows in {len(runs_list)} run(s)); at least 2 are needed to hold one out. "
            "Use a smaller chunk_len or more data."
        )
    n_held = min(max(1, math.ceil(held_out_fraction * n_rows / chunk_len)), len(chunks) - 1)
    rng = np.random.default_rng(seed)
    everything = np.arange(n_rows)
    splits = []
    for _ in range(n_boots):
        held = rng.permutation(len(chunks))[:n_held]
        test = np.sort(np.concatenate([chunks[i] for i in held])).astype(np.int64)
        mask = np.ones(n_rows, dtype=bool)
        mask[test] = False
        splits.append((everything[mask].astype(np.int64), test))
    return splits


# ----------------------------------------------------------------------------------------------------- scoring


def variance_explained(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Tang's held-out score: `clip(1 − var(y − ŷ) / var(y), 0, 1)` per column (variances over rows).

    Args:
        y_true, y_pred: (n, v). A column with var(y) = 0 scores 0.
    Returns:
        (v,) in [0, 1], dtype of the inputs.
    """
    var_y = y_true.var(axis=0)
    var_res = (y_true - y_pred).var(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        score = 1.0 - var_res / var_y
    score[~(var_y > 0)] = 0.0
    return np.clip(score, 0.0, 1.0)


def _r2(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    ss_tot = ((y_true - y_true.mean(axis=0)) ** 2).sum(axis=0)
    ss_res = ((y_true - y_pred) ** 2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = 1.0 - ss_res / ss_tot
    r2[~(ss_tot > 0)] = 0.0
    return r2


# ----------------------------------------------------------------------------------------------------- solver
# (the fixed-penalty solver is `brainllm.ridge`, shared with the adapter initialisation and the ceiling)


def _fit_ridge_from_moments(
    n: int,
    sum_x: np.ndarray,
    sum_y: np.ndarray,
    xtx: np.ndarray,
    xty: np.ndarray,
    penalties: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Ridge with intercept from the raw moments of n rows (`Σx` (p,), `Σy` (v,), `XᵀX` (p, p), `XᵀY` (p, v)).

    `penalties` (v,) are λ (already squared). Used by the leave-one-run-out noise model, where the moments of all
    runs minus those of the held-out run give the training moments without recomputing `XᵀX` from the rows.
    Only for z-scored (roughly zero-mean) X: centring by subtraction loses precision on large means.
    """
    mean_x, mean_y = sum_x / n, sum_y / n
    gram = xtx - n * np.outer(mean_x, mean_x)
    cross = xty - n * np.outer(mean_x, mean_y)
    with threadpool_limits(1, user_api="blas"):
        ev, vecs = np.linalg.eigh((gram + gram.T) / 2)
    keep = ev > (ev[-1] * _EIG_RTOL if ev.size and ev[-1] > 0 else np.inf)
    ev, vecs = ev[keep], vecs[:, keep]
    coef = vecs @ ((vecs.T @ cross) / (ev[:, None] + penalties[None, :]))
    return coef, mean_y - mean_x @ coef


# ----------------------------------------------------------------------------------------------------- estimator


class BootstrapRidge(BaseEstimator):
    """Ridge regression with one penalty per target chosen by Tang et al.'s chunked bootstrap.

    For each of `n_boots` bootstraps (`chunk_bootstrap_splits`), ridge is fitted on the training rows for every
    penalty and scored on the held-out chunks with Tang's variance explained,
    `clip(1 − var(y − ŷ) / var(y), 0, 1)` (`use_corr=False` in Tang's `train_EM`). Each target gets the penalty
    with the best score averaged over bootstraps (ties go to the **largest** penalty, so pure-noise targets whose
    scores are all clipped to 0 get the strongest shrinkage; Tang's `argmax` would pick the smallest). The model
    is then refitted on all rows with those penalties. X and Y are centred (an intercept is fitted), so they need
    not be z-scored.

    Parameters:
        alphas: penalty grid in Tang's units (λ = α²); default Tang's `logspace(1, 3, 10)`.
        n_boots: bootstraps (Tang: 50).
        chunk_len: held-out chunk length in TRs (Tang: 40).
        held_out_fraction: fraction of rows held out per bootstrap (Tang: 0.2).
        seed: seed of the bootstrap splits.
        n_targets_batch: targets processed at once (memory only: each batch holds an (n_train, batch) copy of Y;
            None = all).
        cv_dtype: dtype of the bootstrap Gram matrices, predictions and scores ("float32" halves their cost;
            the eigendecompositions and the final refit are always float64).
        refit: refit on all rows after choosing the penalties (sets `coef_`, `intercept_`).

    Attributes (after `fit`):
        alpha_grid_: (n_alphas,) the grid, sorted ascending (Tang's units).
        cv_scores_: (n_alphas, v) held-out variance explained, mean over bootstraps; rows follow `alpha_grid_`.
        alphas_: (v,) chosen penalty per target, Tang's units. `penalties_` = alphas_² (himalaya/sklearn λ).
        best_scores_: (v,) `cv_scores_` at the chosen penalty (= max over the grid).
        coef_: (p, v) and intercept_: (v,): predictions are `X @ coef_ + intercept_`.
        n_features_in_, n_targets_: p and v.
    """

    def __init__(
        self,
        alphas: Sequence[float] = TANG_ALPHAS,
        n_boots: int = 50,
        chunk_len: int = 40,
        held_out_fraction: float = 0.2,
        seed: int = 0,
        n_targets_batch: int | None = 8192,
        cv_dtype: str = "float32",
        refit: bool = True,
    ) -> None:
        self.alphas = alphas
        self.n_boots = n_boots
        self.chunk_len = chunk_len
        self.held_out_fraction = held_out_fraction
        self.seed = seed
        self.n_targets_batch = n_targets_batch
        self.cv_dtype = cv_dtype
        self.refit = refit

    def fit(self, X: np.ndarray, Y: np.ndarray, runs: Sequence[Sequence[int]] | None = None) -> BootstrapRidge:
        """Choose a penalty per target by bootstrap, then refit on all rows.

        Args:
            X: (n, p) design (e.g. delayed stimulus features), any float dtype.
            Y: (n, v) targets (e.g. voxel responses), or (n,) for one target; float32 is not copied whole.
            runs: `[start, stop)` row ranges of the runs (stories) so no held-out chunk spans two runs; None = one.
        Returns:
            self.
        """
        X = _check_matrix(X, "X")
        y_arr = np.asarray(Y)
        self._ravel = y_arr.ndim == 1
        Y = _check_matrix(y_arr[:, None] if self._ravel else y_arr, "Y")
        if X.shape[0] != Y.shape[0]:
            raise DatasetError(f"X has {X.shape[0]} rows but Y has {Y.shape[0]}; they must be the same TRs.")
        grid = np.sort(_check_penalties(self.alphas))
        if np.unique(grid).size != grid.size:
            raise ConfigError(f"alphas contains duplicates: {grid}.")
        cv_dtype = np.dtype(self.cv_dtype)
        n, p = X.shape
        v = Y.shape[1]
        splits = chunk_bootstrap_splits(
            check_runs(runs, n), self.chunk_len, self.n_boots, self.held_out_fraction, self.seed
        )
        penalties = grid**2
        scores = np.zeros((grid.size, v), dtype=np.float64)
        batches = _target_batches(v, self.n_targets_batch)
        log.info("BootstrapRidge: %d bootstraps, n=%d, p=%d, v=%d, %d penalties", len(splits), n, p, v, grid.size)
        for train, test in progress(splits, "bootstrap ridge", "boot"):
            dec = _Decomposition(X[train], cv_dtype)
            test_map = dec.test_map(X[test])
            left = dec.left()
            shrink = (1.0 / (dec.ev[None, :] + penalties[:, None])).astype(cv_dtype)  # (n_alphas, k)
            for sl in batches:
                y_block = Y[:, sl]
                y_train = np.asarray(y_block[train], dtype=cv_dtype)
                y_mean = y_train.mean(axis=0)
                proj = left.T @ (y_train - y_mean)  # (k, vb)
                y_test = np.asarray(y_block[test], dtype=cv_dtype) - y_mean
                for j in range(grid.size):
                    scores[j, sl] += variance_explained(y_test, (test_map * shrink[j]) @ proj)
        scores /= len(splits)
        # argmax with ties resolved towards the largest penalty
        best = grid.size - 1 - np.argmax(scores[::-1], axis=0)
        self.alpha_grid_ = grid
        self.cv_scores_ = scores
        self.alphas_ = grid[best]
        self.penalties_ = self.alphas_**2
        self.best_scores_ = scores[best, np.arange(v)]
        self.n_features_in_ = p
        self.n_targets_ = v
        if self.refit:
            self.coef_, self.intercept_ = fit_ridge_fixed(X, Y, self.alphas_, self.n_targets_batch)
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise NotFittedError(
                "This BootstrapRidge has no coefficients: call fit(X, Y) first (with refit=True)."
            )

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predictions `X @ coef_ + intercept_`: (n, p) → (n, v) float64 ((n,) if fitted on a 1-D Y)."""
        self._check_fitted()
        X = _check_matrix(X, "X")
        if X.shape[1] != self.n_features_in_:
            raise DatasetError(f"X has {X.shape[1]} columns but the model was fitted on {self.n_features_in_}.")
        pred = np.asarray(X, dtype=np.float64) @ self.coef_ + self.intercept_
        return pred[:, 0] if getattr(self, "_ravel", False) else pred

    def score(self, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
        """Per-target coefficient of determination `1 − Σ(y − ŷ)² / Σ(y − ȳ)²` (not clipped; 0 if y is constant).

        Note this is the usual R², not Tang's clipped variance explained used in `cv_scores_`.
        Returns (v,) float64 (a float if fitted on a 1-D Y).
        """
        pred = self.predict(X)
        y = np.asarray(Y, dtype=np.float64)
        if y.shape != pred.shape:
            raise DatasetError(f"Y has shape {y.shape} but the predictions have shape {pred.shape}.")
        if pred.ndim == 1:
            return float(_r2(y[:, None], pred[:, None])[0])
        return _r2(y, pred)
