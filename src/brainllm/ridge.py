"""Closed-form ridge regression shared by the whole package: a fixed-penalty solver and its penalty chosen by
cross-validation over whole stimuli.

Used by the adapter's closed-form initialisation (`model.ridge_init`), the information ceiling
(`diagnostics.ceiling`) and the voxelwise models (the Tang encoding model, the word-rate model) through
`voxelwise.bootstrap`, which adds the bootstrap.

**Penalty units** (Tang et al.'s): `alpha` is the square root of the usual penalty λ; `fit_ridge_fixed` minimises
`‖(X − x̄)W − (Y − ȳ)‖² + α²‖W‖²`, so λ = α² is what himalaya and scikit-learn call `alpha`.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from threadpoolctl import threadpool_limits

from .errors import ConfigError, DatasetError

_EIG_RTOL = 1e-10

#: the penalty grid of `cv_ridge` (Tang's units), wide enough for weak-signal decoders (shrinkage 1e2 .. 1e8)
CV_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(1, 4, 7))


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


class _DecompositionCache:
    """Decompositions by their design's shape, dtype and bytes, the last `max_entries` used kept."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries, self.entries = max_entries, OrderedDict()

    def get(self, x: np.ndarray) -> _Decomposition:
        x = np.ascontiguousarray(x)
        key = (x.shape, x.dtype.str, hashlib.blake2b(x.view(np.uint8).reshape(-1), digest_size=16).hexdigest())
        if key not in self.entries:
            self.entries[key] = _Decomposition(x)
            while len(self.entries) > self.max_entries:
                self.entries.popitem(last=False)
        self.entries.move_to_end(key)
        return self.entries[key]


#: the cache of the outermost `shared_decompositions` running (None: outside, nothing is kept)
_SHARED: _DecompositionCache | None = None


@contextlib.contextmanager
def shared_decompositions(max_entries: int = 64) -> Iterator[None]:
    """Inside, a training design decomposed before (the same shape, dtype and bytes) reuses that decomposition, the
    last `max_entries` kept. A grid search whose cells share a design (the encoding model's frame dimensions and noise
    shrinkages change the targets and the noise model, not the ridge's rows) then decomposes it once."""
    global _SHARED
    outer = _SHARED
    if outer is None:
        _SHARED = _DecompositionCache(max_entries)
    try:
        yield
    finally:
        if outer is None:
            _SHARED = None


def _decompose(x: np.ndarray) -> _Decomposition:
    """`_Decomposition(x)`, or the one kept for the same design inside `shared_decompositions`."""
    return _Decomposition(x) if _SHARED is None else _SHARED.get(x)


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
    dec = _decompose(x)
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


def stimulus_folds(groups: Sequence[str], n_folds: int, seed: int) -> list[np.ndarray]:
    """Boolean held-out masks `(n,)` of up to `n_folds` folds that keep every group (stimulus) whole; with fewer
    than 2 groups each row is its own group."""
    groups = np.asarray(groups)
    if len(set(groups.tolist())) < 2:
        groups = np.arange(len(groups))
    names = np.random.default_rng(seed).permutation(sorted(set(groups.tolist())))
    return [np.isin(groups, names[f::n_folds]) for f in range(min(n_folds, len(names)))]


def cv_ridge(x: np.ndarray, y: np.ndarray, groups: Sequence[str],
             score: Callable[[np.ndarray, np.ndarray, np.ndarray], float], seed: int = 0,
             alphas: Sequence[float] = CV_ALPHAS, n_folds: int = 5) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Ridge from `x` `(n, F)` to `y` `(n, V)` with the penalty of `alphas` that maximises
    `score(prediction, truth, held-out mask)` averaged over folds of whole `groups` (stimuli; `stimulus_folds`),
    then refitted on all rows. Returns (coef `(F, V)`, intercept `(V,)`, alpha, its cross-validated score)."""
    return cv_ridge_out_of_fold(x, y, groups, score, seed, alphas, n_folds)[:4]


def cv_ridge_out_of_fold(x: np.ndarray, y: np.ndarray, groups: Sequence[str],
                         score: Callable[[np.ndarray, np.ndarray, np.ndarray], float], seed: int = 0,
                         alphas: Sequence[float] = CV_ALPHAS, n_folds: int = 5
                         ) -> tuple[np.ndarray, np.ndarray, float, float, np.ndarray]:
    """`cv_ridge`, and the out-of-fold predictions `(n, V)` at the chosen penalty (each row predicted by the fit
    on the folds that do not hold its group). Each fold's training rows are decomposed once and every penalty is
    solved from that decomposition (`fit_ridge_fixed` per penalty and fold would decompose len(alphas) times as
    often, for the same weights)."""
    folds = stimulus_folds(groups, n_folds, seed)
    grid = _check_penalties(alphas)
    predictions = np.empty((len(grid), *np.shape(y)))  # [k] out-of-fold predictions with penalty k
    scores = np.zeros((len(grid), len(folds)))
    for f, held in enumerate(folds):
        x_tr, y_tr = x[~held], np.asarray(y[~held], dtype=np.float64)
        dec = _decompose(x_tr)
        y_mean = y_tr.mean(axis=0)
        proj = dec.left().T @ (y_tr - y_mean)  # (k, V)
        test = dec.test_map(x[held])          # (n_held, k)
        for k, alpha in enumerate(grid):
            # test @ basis-coefficients: (x_held - mean) · Q · diag(1 / (ev + α²)) · Lᵀ · Yc, plus the mean
            predictions[k][held] = test @ (proj / (dec.ev[:, None] + alpha ** 2)) + y_mean
            scores[k, f] = score(predictions[k][held], y[held], held)
    best = int(np.argmax(scores.mean(1)))
    return (*fit_ridge_fixed(x, y, float(grid[best])), float(grid[best]), float(scores[best].mean()),
            predictions[best])


def centred_correlation(pred: np.ndarray, truth: np.ndarray, centre: np.ndarray) -> float:
    """Mean over rows of the correlation between `pred - centre` and `truth - centre` (rows `(n, H)`)."""
    a, b = pred - centre, truth - centre
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(np.mean((a * b).sum(1) / np.where(denom > 0, denom, 1.0)))
