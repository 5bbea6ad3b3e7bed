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

from ...errors import ConfigError, DatasetError
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

_EIG_RTOL = 1e-10


def _progress(items, desc: str):
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="boot", disable=None, leave=False, dynamic_ncols=True)


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


class _Decomposition:
    """Eigendecomposition of the centred training rows' Gram matrix, in the smaller of its two forms.

    With `Xc = X − mean`, the ridge weights for penalty λ are `W(λ) = Q·diag(1/(ev + λ))·Lᵀ·Yc`, where
    kernel form (n ≤ p): `XcXcᵀ = U·diag(ev)·Uᵀ`, L = U, Q = Xcᵀ·U;
    primal form (n > p): `XcᵀXc = V·diag(ev)·Vᵀ`, L = Xc·V, Q = V.
    """

    def __init__(self, x: np.ndarray, dtype: np.dtype | str = np.float64) -> None:
        x = np.asarray(x)
        self.mean = x.mean(axis=0, dtype=np.float64)
        self.dtype = np.dtype(dtype)
        self.xc = (x - self.mean).astype(self.dtype, copy=False)
        n, p = self.xc.shape
        self.kernel = n <= p
        gram = self.xc @ self.xc.T if self.kernel else self.xc.T @ self.xc
        # One BLAS thread: OpenBLAS's threaded tridiagonalisation is erratic on a busy 2-core host (measured
        # 0.8 s single-threaded vs 2-19 s with 2 threads for a 1600 x 1600 Gram matrix).
        with threadpool_limits(1, user_api="blas"):
            ev, vecs = np.linalg.eigh(gram.astype(np.float64, copy=False))
        rtol = max(_EIG_RTOL, 10 * float(np.finfo(self.dtype).eps))  # a float32 Gram is only that accurate
        keep = ev > (ev[-1] * rtol if ev.size and ev[-1] > 0 else np.inf)
        self.ev = ev[keep]
        self.vecs = vecs[:, keep].astype(self.dtype, copy=False)

    def left(self) -> np.ndarray:
        """L, (n_train, k)."""
        return self.vecs if self.kernel else self.xc @ self.vecs

    def basis(self) -> np.ndarray:
        """Q, (p, k)."""
        return self.xc.T @ self.vecs if self.kernel else self.vecs

    def test_map(self, x_test: np.ndarray) -> np.ndarray:
        """`(x_test − mean)·Q`, (n_test, k), computed without forming Q in kernel form."""
        xt = (np.asarray(x_test) - self.mean).astype(self.dtype, copy=False)
        return (xt @ self.xc.T) @ self.vecs if self.kernel else xt @ self.vecs


def _target_batches(n_targets: int, batch: int | None) -> list[slice]:
    step = n_targets if not batch else max(1, int(batch))
    return [slice(s, min(s + step, n_targets)) for s in range(0, n_targets, step)]


def _check_matrix(a: np.ndarray, name: str, ndim: int = 2) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != ndim:
        raise DatasetError(f"{name} must be a {ndim}-D array, got shape {a.shape}.")
    if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
        raise DatasetError(f"{name} must hold real numbers, got dtype {a.dtype}.")
    if a.size == 0:
        raise DatasetError(f"{name} is empty (shape {a.shape}); pass at least one row and one column.")
    # check finiteness in column blocks so a large float32 response matrix is not copied whole
    cols = a.shape[1] if a.ndim == 2 else 1
    step = max(1, 2**24 // max(1, a.shape[0]))
    for s in range(0, cols, step):
        block = a[:, s : s + step] if a.ndim == 2 else a
        if not np.all(np.isfinite(block)):
            where = [int(i) for i in np.argwhere(~np.isfinite(block))[0]]
            if a.ndim == 2:
                where[1] += s
            raise DatasetError(
                f"{name} contains NaN or Inf (first at index {tuple(where)}); "
                "replace missing values (e.g. np.nan_to_num, as Tang et al. do for responses) before fitting."
            )
        if a.ndim != 2:
            break
    return a


def _check_penalties(alphas: Sequence[float] | np.ndarray, n_targets: int | None = None) -> np.ndarray:
    arr = np.asarray(alphas, dtype=np.float64)
    if n_targets is None:
        if arr.ndim != 1 or arr.size == 0:
            raise ConfigError(f"alphas must be a non-empty 1-D grid, got shape {arr.shape}.")
    elif arr.shape not in ((n_targets,), ()):
        raise ConfigError(f"alphas must be a scalar or have shape ({n_targets},), got {arr.shape}.")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ConfigError(f"alphas must be positive and finite (Tang's units, λ = α²), got {arr}.")
    return arr


def fit_ridge_fixed(
    x: np.ndarray,
    y: np.ndarray,
    alphas: float | np.ndarray,
    n_targets_batch: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Ridge with an intercept and a fixed penalty per target, in float64.

    Minimises `‖(X − x̄)W − (Y − ȳ)‖² + α_v²‖w_v‖²` per target v (Tang's units: λ = α²).

    Args:
        x: (n, p) design.
        y: (n, v) targets.
        alphas: scalar or (v,), Tang's units.
        n_targets_batch: targets per batch (memory); None = all at once.
    Returns:
        coef (p, v) and intercept (v,) such that predictions are `x @ coef + intercept`.
    """
    x = _check_matrix(x, "X")
    y = _check_matrix(y, "Y")
    if x.shape[0] != y.shape[0]:
        raise DatasetError(f"X has {x.shape[0]} rows but Y has {y.shape[0]}; they must be the same TRs.")
    penalties = np.broadcast_to(_check_penalties(alphas, y.shape[1]) ** 2, (y.shape[1],))
    dec = _Decomposition(x)
    basis, left = dec.basis(), dec.left()
    coef = np.empty((x.shape[1], y.shape[1]))
    intercept = np.empty(y.shape[1])
    for sl in _target_batches(y.shape[1], n_targets_batch):
        yb = np.asarray(y[:, sl], dtype=np.float64)
        y_mean = yb.mean(axis=0)
        proj = left.T @ (yb - y_mean)
        coef[:, sl] = basis @ (proj / (dec.ev[:, None] + penalties[None, sl]))
        intercept[sl] = y_mean - dec.mean @ coef[:, sl]
    return coef, intercept


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
        for train, test in _progress(splits, "bootstrap ridge"):
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
