"""Chunked bootstrap splits and the per-target bootstrapped ridge (Tang et al. 2023 `bootstrap_ridge`)."""

from __future__ import annotations

import numpy as np
import pytest

from brainllm.errors import DatasetError
from brainllm.ridge import fit_ridge_fixed
from brainllm.voxelwise.bootstrap import BootstrapRidge, chunk_bootstrap_splits, variance_explained
from brainllm.voxelwise.delays import runs_from_lengths

RUNS = runs_from_lengths([130, 95, 200])  # full 20-TR chunks: 6 + 4 + 10 = 20; remainders 10, 15, 0


def _blocks(idx: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs of consecutive indices as [start, stop)."""
    breaks = np.flatnonzero(np.diff(idx) != 1) + 1
    return [(int(b[0]), int(b[-1]) + 1) for b in np.split(idx, breaks)]


def test_splits_hold_out_whole_chunks_inside_runs() -> None:
    splits = chunk_bootstrap_splits(RUNS, chunk_len=20, n_boots=30, held_out_fraction=0.2, seed=3)
    assert len(splits) == 30
    for train, test in splits:
        assert np.intersect1d(train, test).size == 0
        np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(425))
        assert test.size == 5 * 20  # ceil(0.2 * 425 / 20) = 5 chunks, ~23.5 %
        for lo, hi in _blocks(test):
            run = next(r for r in RUNS if r[0] <= lo < r[1])
            assert hi <= run[1], "a held-out block spans two runs"
            assert (lo - run[0]) % 20 == 0 and (hi - lo) % 20 == 0, "held-out rows are not whole chunks"
        # remainders (rows 120-129 of run 0, 215-224 of run 1) always train
        assert not np.isin(np.r_[120:130, 215:225], test).any()
    # different bootstraps hold out different chunks
    assert len({tuple(t) for _, t in splits}) > 20


def test_splits_deterministic_per_seed_and_usable_as_cv() -> None:
    a = chunk_bootstrap_splits(RUNS, chunk_len=20, n_boots=5, seed=7)
    b = chunk_bootstrap_splits(RUNS, chunk_len=20, n_boots=5, seed=7)
    c = chunk_bootstrap_splits(RUNS, chunk_len=20, n_boots=5, seed=8)
    assert all(np.array_equal(x[1], y[1]) and np.array_equal(x[0], y[0]) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x[1], y[1]) for x, y in zip(a, c, strict=True))
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import cross_val_score

    rng = np.random.default_rng(0)
    X = rng.standard_normal((425, 3))
    scores = cross_val_score(Ridge(), X, X @ [1.0, 2.0, 3.0], cv=a)
    assert scores.shape == (5,) and np.all(scores > 0.99)
    # an int means one run; its fraction is ~20 %
    (train, test), = chunk_bootstrap_splits(1000, chunk_len=40, n_boots=1)
    assert test.size == 200 and train.size == 800


def test_splits_need_two_chunks() -> None:
    with pytest.raises(DatasetError, match="smaller chunk_len"):
        chunk_bootstrap_splits([(0, 30), (30, 50)], chunk_len=40)


def _planted(seed: int = 0):
    """20 strong targets (signal sd ~5, noise 0.5) and 20 noisy ones (weak signal sd ~0.2, noise 1)."""
    rng = np.random.default_rng(seed)
    n, p = 600, 25
    X = rng.standard_normal((n, p)) + 0.3
    w_strong = rng.standard_normal((p, 20))
    w_weak = 0.04 * rng.standard_normal((p, 20))
    Y = np.concatenate(
        [X @ w_strong + 0.5 * rng.standard_normal((n, 20)) + 2.0, X @ w_weak + rng.standard_normal((n, 20))],
        axis=1,
    )
    return X, Y, w_strong


ALPHAS = tuple(np.logspace(0, 3, 10))  # lambda = 1 ... 1e6


def test_strong_targets_get_smaller_penalties() -> None:
    X, Y, w_strong = _planted()
    model = BootstrapRidge(alphas=ALPHAS, n_boots=10, chunk_len=20, cv_dtype="float64").fit(
        X, Y, runs=runs_from_lengths([300, 300])
    )
    assert model.cv_scores_.shape == (10, 40)
    np.testing.assert_array_equal(model.best_scores_, model.cv_scores_.max(axis=0))
    strong, noisy = model.alphas_[:20], model.alphas_[20:]
    assert strong.max() < noisy.min(), (strong, noisy)
    assert np.all(model.best_scores_[:20] > 0.9) and np.all(model.best_scores_[20:] < 0.2)
    np.testing.assert_allclose(model.penalties_, model.alphas_**2)
    # coefficients of the strong targets are close to the truth; the intercept absorbs the offsets
    assert np.abs(model.coef_[:, :20] - w_strong).max() < 0.1
    assert np.all(model.score(X, Y)[:20] > 0.95)


def test_refit_matches_closed_form_at_the_chosen_penalty() -> None:
    X, Y, _ = _planted(1)
    model = BootstrapRidge(alphas=ALPHAS, n_boots=4, chunk_len=20).fit(X, Y)
    xm, ym = X.mean(0), Y.mean(0)
    xc, yc = X - xm, Y - ym
    for v in range(Y.shape[1]):
        lam = model.alphas_[v] ** 2  # Tang's alpha is the square root of the penalty
        w = np.linalg.solve(xc.T @ xc + lam * np.eye(X.shape[1]), xc.T @ yc[:, v])
        np.testing.assert_allclose(model.coef_[:, v], w, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(model.intercept_[v], ym[v] - xm @ w, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(model.predict(X), X @ model.coef_ + model.intercept_)


def test_kernel_form_when_fewer_rows_than_features() -> None:
    rng = np.random.default_rng(2)
    X, Y = rng.standard_normal((50, 80)), rng.standard_normal((50, 3))
    alphas = np.array([0.5, 3.0, 30.0])
    coef, icpt = fit_ridge_fixed(X, Y, alphas)
    xc, yc = X - X.mean(0), Y - Y.mean(0)
    for v in range(3):
        w = np.linalg.solve(xc.T @ xc + alphas[v] ** 2 * np.eye(80), xc.T @ yc[:, v])
        np.testing.assert_allclose(coef[:, v], w, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(icpt, Y.mean(0) - X.mean(0) @ coef)


def test_matches_himalaya() -> None:
    from himalaya.backend import set_backend
    from himalaya.ridge import solve_ridge_cv_svd

    set_backend("numpy")
    X, Y, _ = _planted(4)
    runs = runs_from_lengths([300, 300])
    splits = chunk_bootstrap_splits(runs, chunk_len=20, n_boots=3, seed=0)
    ours = BootstrapRidge(alphas=ALPHAS, n_boots=3, chunk_len=20, seed=0, cv_dtype="float64").fit(X, Y, runs)

    def tang_score(y_true, y_pred):  # himalaya passes (n_alphas, n_test, v) predictions
        return np.stack([variance_explained(y_true, p) for p in y_pred])

    best, coef, cv, icpt = solve_ridge_cv_svd(
        X, Y, alphas=np.asarray(ALPHAS) ** 2, cv=splits, fit_intercept=True, score_func=tang_score,
        local_alpha=True, warn=False,
    )
    np.testing.assert_allclose(np.sqrt(best), ours.alphas_, rtol=1e-6)
    np.testing.assert_allclose(coef, ours.coef_, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(icpt, ours.intercept_, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(np.ravel(cv), ours.best_scores_, atol=1e-8)


def test_variance_explained_is_clipped() -> None:
    y = np.array([[1.0, 1.0, 0.0], [2.0, 1.0, 1.0], [3.0, 1.0, 2.0]])
    pred = np.array([[1.0, 0.0, 9.0], [2.0, 0.0, -9.0], [3.0, 0.0, 9.0]])
    np.testing.assert_allclose(variance_explained(y, pred), [1.0, 0.0, 0.0])
    # an offset does not count (variances, not squared errors)
    np.testing.assert_allclose(variance_explained(y[:, :1], y[:, :1] + 5), [1.0])


def test_input_errors() -> None:
    X, Y, _ = _planted()
    bad = X.copy()
    bad[3, 2] = np.nan
    with pytest.raises(DatasetError, match=r"NaN or Inf \(first at index \(3, 2\)\)"):
        BootstrapRidge(n_boots=2, chunk_len=20).fit(bad, Y)
    with pytest.raises(DatasetError, match="rows"):
        BootstrapRidge(n_boots=2, chunk_len=20).fit(X[:-1], Y)
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        BootstrapRidge().predict(X)
