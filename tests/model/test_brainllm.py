import numpy as np
import pytest
import torch

from brainllm import backbones
from brainllm.model import BrainLLM, Collator, TextEncoder, build_adapter
from tests.conftest import tiny_brainllm


@pytest.fixture(params=["llama", "gpt2"])
def model_and_samples(request, tiny_llama_path, tiny_gpt2_path, small_sentence_sim):
    path = tiny_llama_path if request.param == "llama" else tiny_gpt2_path
    ds = small_sentence_sim.dataset
    model, enc = tiny_brainllm(path, ds)
    return model, enc, ds, enc.encode_all(ds, [s.id for s in ds][:6])


def test_targeted_logits_equal_full_logits_and_padding_does_not_matter(model_and_samples):
    model, enc, ds, samples = model_and_samples
    batch = Collator(ds.frames, enc)(samples)
    out = model(batch)
    with torch.no_grad():
        logits = model.backbone(inputs_embeds=model.embed(batch), attention_mask=batch.attention_mask).logits
    full = torch.nn.functional.cross_entropy(logits[batch.target_batch, batch.target_pos], batch.target_ids)
    torch.testing.assert_close(out["loss"], full, rtol=1e-5, atol=1e-5)
    alone = torch.stack([model(Collator(ds.frames, enc)([s]))["sample_loss"][0] for s in samples])
    torch.testing.assert_close(out["sample_loss"], alone, rtol=1e-4, atol=1e-4)


def test_only_adapter_and_boundary_train(model_and_samples):
    model, *_ = model_and_samples
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("adapter.", "boundary")) for n in trainable)
    assert all(k.startswith(("adapter.", "boundary")) for k in model.trainable_state_dict())


def test_no_brain_is_the_bare_backbone(model_and_samples):
    model, enc, ds, samples = model_and_samples
    batch = Collator(ds.frames, enc, "no_brain")(samples[:1])
    s = samples[0]
    ids = ([enc.bos_id] if enc.bos_id is not None else []) + [*s.prompt_ids, *s.continuation_ids, enc.eos_id]
    with torch.no_grad():
        logits = model.backbone(torch.tensor([ids])).logits[0]
    n = len(s.continuation_ids) + 1
    expected = torch.nn.functional.cross_entropy(logits[-n - 1:-1], torch.tensor(ids[-n:]))
    torch.testing.assert_close(model(batch)["loss"], expected, rtol=1e-5, atol=1e-5)


def test_batched_greedy_generation_equals_one_at_a_time(model_and_samples):
    model, enc, ds, samples = model_and_samples
    kwargs = dict(max_new_tokens=6, do_sample=False, num_beams=1, eos_token_id=enc.eos_id, pad_token_id=enc.pad_id)
    collate = Collator(ds.frames, enc, for_generation=True)
    batched = [enc.decode(x) for x in model.generate(collate(samples), **kwargs)]
    single = [enc.decode(model.generate(collate([s]), **kwargs)[0]) for s in samples]
    assert batched == single


def test_brain_input_changes_the_prediction(model_and_samples):
    model, enc, ds, samples = model_and_samples
    batch = Collator(ds.frames, enc)(samples)
    base = model(batch)["sample_loss"]
    batch.frames = batch.frames + 5 * torch.randn_like(batch.frames)
    assert not torch.allclose(model(batch)["sample_loss"], base)


def test_bfloat16_backbone_keeps_a_float32_adapter(tiny_llama_path, small_sentence_sim, monkeypatch):
    monkeypatch.setattr(backbones, "cpu_has_native_bf16", lambda: True)  # correctness only, not speed
    backbone, tok = backbones.load(str(tiny_llama_path), dtype="bfloat16")
    ds = small_sentence_sim.dataset
    model = BrainLLM(backbone, build_adapter("linear", ds.feature_dim, 64))
    enc = TextEncoder(tok)
    out = model(Collator(ds.frames, enc)(enc.encode_all(ds, [ds[0].id, ds[1].id])))
    out["loss"].backward()
    assert model.adapter.proj.weight.dtype == torch.float32 and model.adapter.proj.weight.grad is not None
    assert np.isfinite(float(out["loss"]))
