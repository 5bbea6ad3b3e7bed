"""Cross-validated ridge: one decomposition per fold for every penalty gives the same choice, weights and
out-of-fold predictions as a fit per penalty and fold."""

import numpy as np
import pytest

from brainllm.ridge import CV_ALPHAS, cv_ridge, cv_ridge_out_of_fold, fit_ridge_fixed, stimulus_folds


def column_r(pred, truth, _held):
    p, t = pred - pred.mean(0), truth - truth.mean(0)
    return float(np.mean((p * t).sum(0) / (np.linalg.norm(p, axis=0) * np.linalg.norm(t, axis=0))))


@pytest.mark.parametrize("n, p", [(60, 20), (40, 90)])  # the primal and the kernel form
def test_one_decomposition_per_fold_equals_a_fit_per_penalty(n, p):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, p))
    y = x[:, :5] @ rng.standard_normal((5, 7)) + 3.0 * rng.standard_normal((n, 7))
    groups = [f"s{i // 4}" for i in range(n)]
    folds = stimulus_folds(groups, 5, 0)
    by_hand = []
    for alpha in CV_ALPHAS:
        pred = np.empty_like(y)
        for held in folds:
            coef, icpt = fit_ridge_fixed(x[~held], y[~held], alpha)
            pred[held] = x[held] @ coef + icpt
        by_hand.append((np.mean([column_r(pred[h], y[h], h) for h in folds]), alpha, pred))
    score, alpha, pred = max(by_hand, key=lambda t: t[0])
    coef, icpt, got_alpha, got_score, got_pred = cv_ridge_out_of_fold(x, y, groups, column_r)
    assert got_alpha == alpha and got_score == pytest.approx(score, rel=1e-9)
    np.testing.assert_allclose(got_pred, pred, rtol=1e-8, atol=1e-10)
    want_coef, want_icpt = fit_ridge_fixed(x, y, alpha)
    np.testing.assert_allclose(coef, want_coef, rtol=1e-10)
    assert cv_ridge(x, y, groups, column_r)[2] == alpha


def test_shared_decompositions_decompose_a_design_once_and_keep_their_bound(monkeypatch):
    import brainllm.ridge as ridge

    rng = np.random.default_rng(1)
    x, other = rng.standard_normal((30, 8)), rng.standard_normal((30, 8))
    y = rng.standard_normal((30, 3))
    want = fit_ridge_fixed(x, y, 10.0)
    made, real = [], ridge._Decomposition
    monkeypatch.setattr(ridge, "_Decomposition", lambda design: made.append(1) or real(design))
    with ridge.shared_decompositions(max_entries=1):
        first = fit_ridge_fixed(x, y, 10.0)
        again = fit_ridge_fixed(x.copy(), y * 2, 1.0)  # the same design, other targets and penalty
        assert len(made) == 1
        fit_ridge_fixed(other, y, 10.0)  # a second design pushes the first out (one kept)
        fit_ridge_fixed(x, y, 10.0)
        assert len(made) == 3
    fit_ridge_fixed(x, y, 10.0)  # outside, nothing is kept
    assert len(made) == 4
    for got, ref in zip(first, want):
        np.testing.assert_array_equal(got, ref)
    np.testing.assert_allclose(again[0], fit_ridge_fixed(x, y * 2, 1.0)[0], rtol=1e-12)
