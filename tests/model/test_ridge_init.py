"""The closed-form start of the adapter (`model.ridge_init`): a direct ridge solve, written so the adapter's first
forward is the prediction."""

import numpy as np
import pytest
import torch

from brainllm import backbones
from brainllm.data.dataset import BrainTextDataset, Sample
from brainllm.errors import ConfigError
from brainllm.model import BrainLLM, Collator, TextEncoder, build_adapter
from brainllm.model.ridge_init import ridge_initialise


def planted(tiny_llama_path, adapter: dict, noise: float = 0.1, n: int = 60, dim: int = 12, seed: int = 0):
    """A model and a dataset whose frames are a noisy linear image of each sample's warm-up target (the mean
    input embedding of its text): one frame per sample, three samples per stimulus."""
    torch.manual_seed(seed)
    backbone, tok = backbones.load(str(tiny_llama_path))
    model = BrainLLM(backbone, build_adapter(adapter, dim, 64)).eval()
    words = "the cat dog sat ran on a mat red blue big small tree house river sun".split()
    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(words, 6)) for _ in range(n)]
    samples = [Sample(f"s{i}", f"stim{i // 3}", "subj", t.split(" ", 2)[0] + " " + t.split(" ", 2)[1],
                      t.split(" ", 2)[2], [i]) for i, t in enumerate(texts)]
    dataset = BrainTextDataset(np.zeros((n, dim), np.float32), samples, {"subject": "subj", "source": "test"})
    enc = TextEncoder(tok)
    encoded = enc.encode_all(dataset, [s.id for s in samples])
    collate = Collator(dataset.frames, enc, warmup_target="text")
    with torch.no_grad():
        targets = model.warmup_targets(collate(encoded)).numpy()
    mixing = rng.standard_normal((64, dim))
    frames = targets @ mixing + noise * rng.standard_normal((n, dim)) * (targets @ mixing).std()
    dataset = BrainTextDataset(frames.astype(np.float32), samples, {"subject": "subj", "source": "test"})
    collate = Collator(dataset.frames, enc, warmup_target="text")
    model.adapter.fit_input_scaler(dataset.frames)
    return model, collate, encoded, targets


def adapter_outputs(model, collate, samples) -> np.ndarray:
    batch = collate(samples)
    with torch.no_grad():
        return model.adapter.eval()(batch.frames, batch.frame_mask)[:, 0].numpy()


def test_ridge_init_equals_a_direct_solve_and_a_linear_adapter_starts_from_it(tiny_llama_path):
    model, collate, samples, targets = planted(tiny_llama_path, {"name": "linear"})
    fitted = ridge_initialise(model, collate, samples)
    x = (np.asarray(collate.frames, np.float64) - model.adapter.input_mean.double().numpy()) \
        / model.adapter.input_std.double().numpy()
    # the normal equations, by hand (Tang's units: lambda = alpha^2)
    xc, yc = x - x.mean(0), targets - targets.mean(0)
    coef = np.linalg.solve(xc.T @ xc + fitted.alpha ** 2 * np.eye(x.shape[1]), xc.T @ yc)
    expected = x.mean(0) @ (-coef) + targets.mean(0) + x @ coef
    np.testing.assert_allclose(adapter_outputs(model, collate, samples), expected, rtol=1e-4, atol=1e-5)
    assert fitted.cv_correlation > 0.5  # the planted map (a 12-d image of 64-d targets) is found on held-out stimuli


def test_an_mlp_with_skip_and_centre_starts_from_the_same_prediction(tiny_llama_path):
    spec = {"name": "mlp", "hidden": 16, "skip": True, "centre": True, "tokens_per_frame": 2}
    model, collate, samples, targets = planted(tiny_llama_path, spec)
    fitted = ridge_initialise(model, collate, samples)
    linear, *_ = planted(tiny_llama_path, {"name": "linear"})
    ridge_initialise(linear, collate, samples)
    batch = collate(samples)
    with torch.no_grad():
        out = model.adapter.eval()(batch.frames, batch.frame_mask)  # (B, 2, H): both slots
        ref = linear.adapter.eval()(batch.frames, batch.frame_mask)[:, 0]
    torch.testing.assert_close(out[:, 0], ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out[:, 1], ref, rtol=1e-4, atol=1e-5)
    assert fitted.alpha > 0


def test_spread_scaling_gives_the_brain_part_the_targets_spread(tiny_llama_path):
    model, collate, samples, targets = planted(tiny_llama_path, {"name": "linear"}, noise=3.0)
    fitted = ridge_initialise(model, collate, samples, scale="spread")
    out = adapter_outputs(model, collate, samples)
    spread = np.linalg.norm(out - out.mean(0), axis=1).mean()
    assert fitted.scale > 1  # noisy frames: ridge shrank the predictions
    assert spread == pytest.approx(np.linalg.norm(targets - targets.mean(0), axis=1).mean(), rel=1e-3)


def test_pure_noise_frames_give_no_decodable_map(tiny_llama_path):
    model, collate, samples, _ = planted(tiny_llama_path, {"name": "linear"}, noise=1e6)
    assert ridge_initialise(model, collate, samples).cv_correlation < 0.3


def test_an_adapter_without_a_linear_path_is_refused_with_the_fix(tiny_llama_path):
    model, collate, samples, _ = planted(tiny_llama_path, {"name": "mlp", "hidden": 16})
    with pytest.raises(ConfigError, match="skip: true"):
        ridge_initialise(model, collate, samples)

