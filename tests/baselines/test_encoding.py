"""Tang et al. 2023 encoding model on a planted linear problem: voxel selection, noise model, likelihood, files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from brainllm.baselines.tang import EncodingConfig, EncodingModel
from brainllm.errors import ConfigError, DatasetError
from brainllm.ridge import fit_ridge_fixed
from brainllm.voxelwise.delays import make_delayed, runs_from_lengths

F, V, RESPONSIVE = 6, 60, np.arange(0, 60, 4)  # 15 responsive voxels among 60
DELAYS = (1, 2, 3, 4)


class Planted:
    """Responses = delayed z-scored features @ W_true (responsive voxels only) + correlated noise."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.scale = self.rng.uniform(0.5, 2.0, F)
        self.offset = self.rng.normal(0, 3, F)
        self.w = np.zeros((F * len(DELAYS), V))
        self.w[:, RESPONSIVE] = self.rng.standard_normal((F * len(DELAYS), RESPONSIVE.size)) * 0.4
        mix = self.rng.standard_normal((V, V)) * 0.3
        self.noise_mix = np.eye(V) + mix @ mix.T / V  # correlated noise across voxels

    def stimulus(self, n_trs: int) -> np.ndarray:
        smooth = np.cumsum(self.rng.standard_normal((n_trs + 3, F)), axis=0)
        x = smooth[3:] - smooth[:-3]  # moving sums: autocorrelated like LM features at TR rate
        return x * self.scale + self.offset

    def respond(self, stim: np.ndarray) -> np.ndarray:
        z = (stim - self.offset) / (self.scale * np.sqrt(3))
        noise = self.rng.standard_normal((stim.shape[0], V)) @ self.noise_mix
        return (make_delayed(z, DELAYS) @ self.w + noise).astype(np.float32)


@pytest.fixture(scope="module")
def planted() -> Planted:
    return Planted(0)


@pytest.fixture(scope="module")
def fitted(planted: Planted) -> tuple[EncodingModel, list[np.ndarray], list[np.ndarray]]:
    feats = [planted.stimulus(n) for n in (160, 200, 180)]
    resps = [planted.respond(f) for f in feats]
    words = planted.rng.standard_normal((500, F)) + 1.5
    model = EncodingModel(n_boots=8, chunk_len=20, n_voxels=15).fit(feats, resps, word_features=words)
    return model, feats, resps


def test_selects_the_responsive_voxels(fitted) -> None:
    model, _, _ = fitted
    np.testing.assert_array_equal(model.voxels_, RESPONSIVE)
    assert model.weights_.shape == (F * 4, 15) and model.intercept_.shape == (15,)
    assert model.alphas_.shape == (V,) and model.voxel_scores_.shape == (V,)
    silent = np.setdiff1d(np.arange(V), RESPONSIVE)
    assert model.voxel_scores_[RESPONSIVE].min() > model.voxel_scores_[silent].max()
    assert model.blank_word_ is not None and np.allclose(model.blank_word_, 1.5, atol=0.2)


def test_noise_model(fitted) -> None:
    model, feats, resps = fitted
    assert abs(np.mean(np.diag(model.noise_cov_)) - 1.0) < 1e-12
    np.testing.assert_allclose(model.noise_cov_, model.noise_cov_.T)
    s = 2 / 3
    np.testing.assert_allclose(model.precision_ @ ((1 - s) * model.noise_cov_ + s * np.eye(15)), np.eye(15),
                               atol=1e-10)
    # the leave-one-run-out moments shortcut equals refitting on the other runs' rows
    runs = runs_from_lengths([f.shape[0] for f in feats])
    x = model.delayed(np.concatenate(feats), runs)
    y = np.concatenate(resps)[:, model.voxels_].astype(float)
    expected = np.zeros((15, 15))
    for a, b in runs:
        rest = np.r_[0:a, b:len(x)]
        coef, icpt = fit_ridge_fixed(x[rest], y[rest], model.alphas_[model.voxels_])
        r = y[a:b] - x[a:b] @ coef - icpt
        expected += r.T @ r / np.mean(np.diag(r.T @ r)) / len(runs)
    np.testing.assert_allclose(model.noise_cov_, expected, rtol=1e-7, atol=1e-9)


def test_kernel_path_for_wide_designs(planted: Planted) -> None:
    # p = 4 * 30 = 120 delayed columns > 100 rows in the other two runs: the direct (kernel-form) refit is used
    rng = np.random.default_rng(5)
    feats = [rng.standard_normal((50, 30)) for _ in range(3)]
    resps = [rng.standard_normal((50, 8)) for _ in range(3)]
    model = EncodingModel(n_boots=2, chunk_len=10, n_voxels=8).fit(feats, resps)
    assert abs(np.mean(np.diag(model.noise_cov_)) - 1.0) < 1e-12
    assert np.all(np.isfinite(model.precision_))


def test_predict_and_score_on_a_new_run(fitted, planted: Planted) -> None:
    model, _, _ = fitted
    stim = planted.stimulus(150)
    resp = planted.respond(stim)
    r = model.score(stim, resp)
    assert r.shape == (15,) and r.mean() > 0.6
    np.testing.assert_allclose(model.score(stim, model.select(resp)), r)
    assert model.predict(stim).shape == (150, 15)


def test_log_likelihood_ranks_the_true_stimulus_first(fitted, planted: Planted) -> None:
    model, _, _ = fitted
    rng = np.random.default_rng(1)
    stim = planted.stimulus(60)
    observed = model.select(planted.respond(stim))
    shuffled = [stim[rng.permutation(60)] for _ in range(10)]
    others = [planted.stimulus(60) for _ in range(10)]
    candidates = np.stack([stim, *shuffled, *others])  # (21, 60, F), the truth first
    trs = np.arange(10, 50)
    ll = model.log_likelihood(candidates, observed, trs)
    assert isinstance(ll, torch.Tensor) and ll.shape == (21,)
    assert int(torch.argmax(ll)) == 0
    # float64 equals the formula computed directly in numpy
    ll64 = model.log_likelihood(torch.from_numpy(candidates), observed, trs, dtype=torch.float64)
    for n in (0, 3, 15):
        diff = model.predict(candidates[n])[trs] - observed[trs]
        direct = -0.5 * np.einsum("tv,vw,tw->", diff, model.precision_, diff)
        np.testing.assert_allclose(float(ll64[n]), direct, rtol=1e-9)
    np.testing.assert_allclose(ll.numpy(), ll64.numpy(), rtol=1e-3)
    # the two algebraic forms and batching agree
    rows = torch.from_numpy(np.stack([model.delayed(c)[trs] for c in candidates]))
    resid = model.log_likelihood_delayed(rows, observed[trs], method="residual")
    expanded = model.log_likelihood_delayed(rows, observed[trs], method="expanded", batch_size=4)
    np.testing.assert_allclose(resid.numpy(), ll64.numpy(), rtol=1e-9)
    np.testing.assert_allclose(expanded.numpy(), ll64.numpy(), rtol=1e-9)


def test_save_load_roundtrip(fitted, planted: Planted, tmp_path) -> None:
    model, _, _ = fitted
    model.save(tmp_path / "em")
    assert sorted(p.name for p in (tmp_path / "em").iterdir()) == ["encoding_model.json", "encoding_model.npz"]
    loaded = EncodingModel.load(tmp_path / "em")
    assert loaded.config == model.config
    stim = planted.stimulus(40)
    np.testing.assert_array_equal(loaded.predict(stim), model.predict(stim))
    np.testing.assert_array_equal(loaded.voxels_, model.voxels_)
    np.testing.assert_array_equal(loaded.blank_word_, model.blank_word_)
    observed = loaded.select(planted.respond(stim))
    np.testing.assert_array_equal(
        loaded.log_likelihood(stim[None], observed, [5, 6]).numpy(),
        model.log_likelihood(stim[None], observed, [5, 6]).numpy(),
    )


def test_damaged_files_give_clear_errors(fitted, tmp_path) -> None:
    model, _, _ = fitted
    folder = model.save(tmp_path / "em")
    npz = folder / "encoding_model.npz"
    data = npz.read_bytes()
    npz.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="truncated"):
        EncodingModel.load(folder)
    npz.unlink()
    with pytest.raises(DatasetError, match="missing"):
        EncodingModel.load(folder)


def test_bad_inputs(planted: Planted, fitted) -> None:
    feats = [planted.stimulus(100) for _ in range(2)]
    resps = [planted.respond(f) for f in feats]
    bad = feats[1].copy()
    bad[7, 2] = np.nan
    with pytest.raises(DatasetError, match="NaN"):
        EncodingModel(n_boots=2, chunk_len=20).fit([feats[0], bad], resps)
    with pytest.raises(DatasetError, match="TRs"):
        EncodingModel(n_boots=2, chunk_len=20).fit(feats, [resps[0], resps[1][:-1]])
    with pytest.raises(DatasetError, match="at least 2 runs"):
        EncodingModel(n_boots=2, chunk_len=20).fit(feats[:1], resps[:1])
    with pytest.raises(DatasetError, match="one array per run"):
        EncodingModel().fit(feats[0], resps[0])
    with pytest.raises(ConfigError, match="unknown"):
        EncodingModel(n_voxel=3)
    model, _, _ = fitted
    with pytest.raises(DatasetError, match="NaN"):
        model.log_likelihood(np.full((2, 10, F), np.nan), np.zeros((10, 15)), [3])
    with pytest.raises(DatasetError, match="select"):
        model.log_likelihood(np.zeros((2, 10, F)), np.zeros((10, V)), [3])
    assert EncodingConfig().alphas[0] == pytest.approx(10.0) and EncodingConfig().n_voxels == 10000
