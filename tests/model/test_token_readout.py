"""Token readout slots (`model.token_readout`, fitted by `model.ridge_init.fit_token_readout`): a closed-form
decoder from the frames to the tokens of the text, whose top tokens' input embeddings fill extra slots."""

import numpy as np
import pytest
import torch

from brainllm.errors import ConfigError
from brainllm.model import Collator, build_adapter
from brainllm.model.ridge_init import fit_token_readout, text_bags
from tests.model.test_ridge_init import planted

SPEC = {"name": "mlp", "hidden": 16, "readout_tokens": 2, "readout_vocab": 64}


def bag_planted(tiny_llama_path, noise: float = 0.05, spec: dict = SPEC):
    """`planted`'s model and texts, with frames a noisy linear image of each sample's bag of tokens."""
    model, collate, samples, _ = planted(tiny_llama_path, spec, dim=48)  # D above the 43 candidate tokens
    _, bags = text_bags(collate, samples, 64)
    rng = np.random.default_rng(1)
    image = bags @ rng.standard_normal((bags.shape[1], 48))
    frames = (image + noise * image.std() * rng.standard_normal(image.shape)).astype(np.float32)
    collate = Collator(frames, collate.encoder, warmup_target="text",
                       tokens_per_frame=model.adapter.tokens_per_frame)
    model.adapter.fit_input_scaler(frames)
    return model, collate, samples


def test_text_bags_hold_idf_weights_of_the_most_frequent_tokens(tiny_llama_path):
    _, collate, samples = bag_planted(tiny_llama_path)
    candidates, bags = text_bags(collate, samples, 5)
    texts = [set(collate.warmup_text(s)) for s in samples]
    df = {t: sum(t in x for x in texts) for x in texts for t in x}
    assert [df[int(t)] for t in candidates] == sorted(df.values(), reverse=True)[:5]
    i, j = 3, 0
    expected = np.log((1 + len(samples)) / (1 + df[int(candidates[j])])) if candidates[j] in texts[i] else 0.0
    assert bags[i, j] == pytest.approx(expected)


def test_the_readout_reads_the_planted_tokens_and_fills_its_slots_with_their_embeddings(tiny_llama_path):
    model, collate, samples = bag_planted(tiny_llama_path)
    fitted = fit_token_readout(model, collate, samples)
    assert fitted.cv_correlation > 0.5  # held-out stimuli: the planted map is found
    batch = collate(samples)
    adapter = model.adapter.eval()
    x = (batch.frames - adapter.input_mean) / adapter.input_std
    top = adapter.readout.top_tokens(x)[:, 0]  # (B, R) token ids
    precision = np.mean([[int(t) in set(collate.warmup_text(s)) for t in row] for s, row in zip(samples, top)])
    assert precision > 0.9
    with torch.no_grad():
        out = adapter(batch.frames, batch.frame_mask)  # (B, 1 + R, H): the learnt slot, then the readout slots
        emb = model.backbone.get_input_embeddings().weight[top]
    assert out.shape[1] == 3
    torch.testing.assert_close(out[:, 1:], emb.float())


def test_readout_noise_frames_find_nothing(tiny_llama_path):
    model, collate, samples = bag_planted(tiny_llama_path)
    rng = np.random.default_rng(2)
    noise = rng.standard_normal(np.asarray(collate.frames).shape).astype(np.float32)
    collate = Collator(noise, collate.encoder, warmup_target="text", tokens_per_frame=collate.tokens_per_frame)
    model.adapter.fit_input_scaler(noise)
    assert fit_token_readout(model, collate, samples).cv_correlation < 0.2


def test_the_readout_survives_a_checkpoint_and_stays_out_of_the_warmup(tiny_llama_path):
    model, collate, samples = bag_planted(tiny_llama_path)
    fit_token_readout(model, collate, samples)
    batch = collate(samples)
    other, _, _ = bag_planted(tiny_llama_path)  # a fresh, unfitted model
    other.load_trainable_state_dict(model.trainable_state_dict())
    with torch.no_grad():
        torch.testing.assert_close(other.adapter.eval()(batch.frames, batch.frame_mask),
                                   model.adapter.eval()(batch.frames, batch.frame_mask))
        before = model.warmup_loss(batch)["loss"]
        model.adapter.readout.scale.fill_(7.0)
        assert model.warmup_loss(batch)["loss"] == before  # the MSE regresses only the learnt slots


def test_readout_errors_say_what_to_set(tiny_llama_path):
    model, collate, samples, _ = planted(tiny_llama_path, {"name": "mlp", "hidden": 16})
    with pytest.raises(ConfigError, match="readout_tokens"):
        fit_token_readout(model, collate, samples)
    for bad in ({"readout_tokens": -1}, {"readout_tokens": 8, "readout_vocab": 4}):
        with pytest.raises(ConfigError, match="readout_tokens <= readout_vocab"):
            build_adapter({"name": "mlp", "hidden": 16, **bad}, 12, 64)
