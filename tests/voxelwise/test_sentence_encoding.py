"""The sentence encoding model: its score is a Gaussian log-likelihood, it finds a planted text->frames map, and
noise frames identify nothing."""

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from brainllm.errors import ConfigError, DatasetError
from brainllm.identification import two_way
from brainllm.voxelwise.sentence_encoding import (SentenceEncodingConfig, SentenceEncodingModel,
                                                  column_correlation, shrunk_precision)


def planted(n=240, f=6, d=20, noise=0.5, seed=0, signal=True):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, f))
    w = rng.standard_normal((f, d))
    y = (x @ w if signal else 0) + noise * rng.standard_normal((n, d)) * (1 if signal else 3)
    groups = [f"g{i // 4}" for i in range(n)]  # 4 samples per stimulus
    return x, y, groups


def test_log_likelihood_is_the_gaussian_density_up_to_a_constant():
    x, y, groups = planted()
    model = SentenceEncodingModel(SentenceEncodingConfig(noise_shrinkage=0.3)).fit(x[:200], y[:200], groups[:200])
    cov = np.linalg.inv(model.precision_)
    f = model.standardise(y[200:201])[0]
    mus = model.predict(x[200:210])
    hand = np.array([multivariate_normal(mu, cov).logpdf(f) for mu in mus])
    ours = model.log_likelihood(x[200:210], np.repeat(y[200:201], 10, axis=0))
    # same constant for every candidate of one frame: the differences are exact
    np.testing.assert_allclose(ours - ours[0], hand - hand[0], rtol=1e-8, atol=1e-8)
    # and the constant is the Gaussian normaliser
    const = -0.5 * (len(f) * np.log(2 * np.pi) + np.linalg.slogdet(cov)[1])
    np.testing.assert_allclose(ours + const, hand, rtol=1e-8)


def test_matrix_agrees_with_rowwise_scores():
    x, y, groups = planted()
    model = SentenceEncodingModel().fit(x[:200], y[:200], groups[:200])
    m = model.log_likelihood_matrix(x[200:], y[200:])
    for j in range(0, 40, 7):
        np.testing.assert_allclose(m[:, j], model.log_likelihood(x[200:], np.repeat(y[200 + j:201 + j], 40, 0)))


def test_planted_map_is_identified_and_noise_is_not():
    x, y, groups = planted()
    model = SentenceEncodingModel().fit(x[:200], y[:200], groups[:200])
    assert model.cv_score_ > 0.5
    ident = two_way(model.log_likelihood_matrix(x[200:], y[200:]), groups[200:], range(40))
    assert ident["across"] > 0.95 and ident["within"] > 0.9
    # an unrelated feature space: chance
    other = np.random.default_rng(5).standard_normal(x.shape)
    model = SentenceEncodingModel().fit(other[:200], y[:200], groups[:200])
    ident = two_way(model.log_likelihood_matrix(other[200:], y[200:]), groups[200:], range(40))
    assert abs(ident["across"] - 0.5) < 0.1


def test_two_way_hand_computed():
    m = np.array([[3.0, 0.0, 1.0],
                  [1.0, 2.0, 5.0],
                  [2.0, 1.0, 4.0]])
    # frames 0: text 0 (3) beats 1 (1) and 2 (2); frames 1: text 1 (2) beats 0 (0), beats 2 (1);
    # frames 2: text 2 (4) loses to 1 (5), beats 0 (1)
    res = two_way(m, ["a", "a", "b"], [0, 1, 2])
    # within a: (i=1, j=0) win, (i=0, j=1) win -> 1.0; across: (1? no) pairs with b: (2,0) win, (2,1) win,
    # (0,2) win, (1,2) loss -> 0.75
    assert res == {"across": 0.75, "within": 1.0}
    # pairs that share frames are skipped
    assert np.isnan(two_way(m, ["a", "a", "b"], [0, 0, 2])["within"])


def test_column_correlation_and_precision():
    a = np.array([[1.0, 2.0], [2.0, 4.0], [3.0, 7.0]])
    assert column_correlation(a, a) == pytest.approx(1.0)
    assert column_correlation(a, -a) == pytest.approx(-1.0)
    r = np.random.default_rng(0).standard_normal((50, 3))
    s = r.T @ r / 50
    np.testing.assert_allclose(np.linalg.inv(shrunk_precision(r, 1.0)), np.eye(3) * np.diag(s).mean())
    np.testing.assert_allclose(np.linalg.inv(shrunk_precision(r, 0.0)), s)


def test_nuisance_band_weight_is_the_fit_with_copies_of_those_columns():
    # ridge on w² copies of a column is ridge on that column scaled by w: the second band's penalty is α / w²
    x, y, groups = planted()
    weighted = SentenceEncodingModel(SentenceEncodingConfig(nuisance_columns=2, nuisance_weight=2.0)).fit(
        x[:200], y[:200], groups[:200])
    copies = np.hstack([x[:, :4]] + [x[:, 4:]] * 4)
    copied = SentenceEncodingModel().fit(copies[:200], y[:200], groups[:200])
    assert weighted.alpha_ == copied.alpha_
    np.testing.assert_allclose(weighted.log_likelihood_matrix(x[200:], y[200:]),
                               copied.log_likelihood_matrix(copies[200:], y[200:]), rtol=1e-6, atol=1e-8)
    # and it is a different model from the one-band fit (the weight changes what is shrunk)
    plain = SentenceEncodingModel().fit(x[:200], y[:200], groups[:200])
    assert not np.allclose(plain.predict(x[200:]), weighted.predict(x[200:]))


def test_save_load_round_trip_and_damage(tmp_path):
    x, y, groups = planted()
    model = SentenceEncodingModel(SentenceEncodingConfig(nuisance_columns=2, nuisance_weight=3.0)).fit(
        x[:200], y[:200], groups[:200])
    model.save(tmp_path)
    back = SentenceEncodingModel.load(tmp_path)
    assert back.config == model.config
    np.testing.assert_allclose(back.log_likelihood(x[200:], y[200:]), model.log_likelihood(x[200:], y[200:]))
    (tmp_path / "encoding.npz").write_bytes((tmp_path / "encoding.npz").read_bytes()[:100])
    with pytest.raises(DatasetError, match="truncated"):
        SentenceEncodingModel.load(tmp_path)


def test_bad_input_is_a_clear_error():
    x, y, groups = planted()
    with pytest.raises(DatasetError, match="NaN"):
        SentenceEncodingModel().fit(np.where(x > 2, np.nan, x), y, groups)
    with pytest.raises(DatasetError, match="same samples"):
        SentenceEncodingModel().fit(x[:10], y[:9], groups[:10])
    with pytest.raises(ConfigError, match="not fitted"):
        SentenceEncodingModel().predict(x)
    with pytest.raises(ConfigError, match="noise_shrinkage"):
        SentenceEncodingConfig(noise_shrinkage=1.5)
    with pytest.raises(ConfigError, match="nuisance_weight"):
        SentenceEncodingConfig(nuisance_columns=2, nuisance_weight=0.0)
    with pytest.raises(DatasetError, match="7 nuisance columns"):
        SentenceEncodingModel(SentenceEncodingConfig(nuisance_columns=7)).fit(x, y, groups)
    model = SentenceEncodingModel().fit(x, y, groups)
    with pytest.raises(DatasetError, match=r"shape \(m, 6\)"):
        model.predict(x[:, :3])
