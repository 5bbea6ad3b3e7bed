"""The auxiliary losses of the `brain` recipe (`model.aux_loss`) and the adapter options they rely on."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from brainllm import backbones
from brainllm.errors import ConfigError
from brainllm.model import BrainLLM, Collator, TextEncoder, build_adapter
from brainllm.model.aux_loss import AuxLoss, info_nce, margin_loss, partners
from brainllm.model.collate import BRAIN


@pytest.fixture
def setup(tiny_llama_path, small_sentence_sim):
    torch.manual_seed(0)
    backbone, tok = backbones.load(str(tiny_llama_path))
    ds = small_sentence_sim.dataset
    model = BrainLLM(backbone, build_adapter({"name": "linear", "init_std": 0.5}, ds.feature_dim, 64)).eval()
    enc = TextEncoder(tok)
    by_stimulus: dict[str, list[str]] = {}
    for s in ds:
        by_stimulus.setdefault(s.stimulus, []).append(s.id)
    ids = [i for group in list(by_stimulus.values())[:4] for i in group[:2]]  # two samples of each of 4 stimuli
    return model, enc, ds, enc.encode_all(ds, ids)


def test_partners_are_the_next_sample_of_another_stimulus(setup):
    model, enc, ds, samples = setup
    batch = Collator(ds.frames, enc)(samples[:5])
    batch.group = torch.tensor([0, 0, 1, 1, 2])
    assert partners(batch).tolist() == [2, 2, 4, 4, 0]
    batch.group = torch.zeros(5, dtype=torch.long)
    assert partners(batch).tolist() == [-1] * 5  # one stimulus: nothing to contrast with


def test_select_keeps_each_samples_targets(setup):
    model, enc, ds, samples = setup
    batch = Collator(ds.frames, enc)(samples)
    rows = torch.tensor([5, 1, 2])
    with torch.no_grad():
        full = model(batch)["sample_loss"]
        part = model(batch.select(rows))["sample_loss"]
    torch.testing.assert_close(part, full[rows], rtol=1e-5, atol=1e-5)


def test_margin_is_own_loss_against_the_partners_frames(setup):
    model, enc, ds, samples = setup
    collate = Collator(ds.frames, enc)
    batch = collate(samples)
    with torch.no_grad():
        out = model(batch, aux=AuxLoss("margin", margin=0.5))
        partner = partners(batch)
        rows = [i for i in range(len(samples)) if partner[i] >= 0]
        swapped = [replace(samples[i], frame_rows=samples[int(partner[i])].frame_rows) for i in rows]
        shuffled = model(collate(swapped))["sample_loss"]
    expected = torch.relu(0.5 + out["sample_loss"][rows] - shuffled).mean()
    assert rows and float(out["aux"]) == pytest.approx(float(expected), rel=1e-5)


def test_margin_by_hand():
    assert float(margin_loss(torch.tensor([1.0, 2.0]), torch.tensor([1.5, 1.0]), 0.1)) == pytest.approx((0 + 1.1) / 2)


def test_info_nce_by_hand_and_it_prefers_matched_pairs():
    brain = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    target = torch.tensor([[2.0, 1.0], [-2.0, 1.0]])
    group = torch.tensor([0, 1])
    # centred: brain rows (1,0), (-1,0); targets (2,0), (-2,0): cosines +1 on the diagonal, -1 off it
    expected = -math.log(math.exp(1 / 0.5) / (math.exp(1 / 0.5) + math.exp(-1 / 0.5)))
    assert float(info_nce(brain, target, group, 0.5)) == pytest.approx(expected, rel=1e-5)  # float32
    assert float(info_nce(brain, target.flip(0), group, 0.5)) > float(info_nce(brain, target, group, 0.5))
    assert float(info_nce(brain, target, torch.tensor([0, 0]), 0.5)) == 0.0  # one stimulus: no negatives


def test_unknown_aux_loss_is_refused():
    with pytest.raises(ConfigError, match="margin"):
        AuxLoss("triplet")


def test_no_aux_key_without_an_aux_loss(setup):
    model, enc, ds, samples = setup
    assert "aux" not in model(Collator(ds.frames, enc)(samples))


def test_centred_brain_part_has_zero_batch_mean_and_evaluation_uses_the_running_mean(small_sentence_sim):
    ds = small_sentence_sim.dataset
    adapter = build_adapter({"name": "linear", "centre": True, "init_std": 0.3, "centre_momentum": 1.0},
                            ds.feature_dim, 8)
    frames = torch.as_tensor(np.asarray(ds.frames[:6]), dtype=torch.float32).reshape(3, 2, -1)
    mask = torch.tensor([[True, True], [True, False], [True, True]])
    with torch.no_grad():
        adapter.shared.fill_(2.0)
        out = adapter.train()(frames, mask)
        brain = (out - adapter.shared) * mask.unsqueeze(-1)
        assert torch.allclose(brain.sum((0, 1)) / mask.sum(), torch.zeros(8), atol=1e-5)
        assert (out[1, 1] == 0).all()  # padding stays zero
        # momentum 1: the running mean is this batch's, so evaluation gives the same outputs
        torch.testing.assert_close(adapter.eval()(frames, mask), out)


def test_k_tokens_per_frame_give_k_brain_slots_per_frame(setup):
    model, enc, ds, samples = setup
    k2 = BrainLLM(model.backbone, build_adapter({"name": "linear", "tokens_per_frame": 3}, ds.feature_dim, 64))
    batch = Collator(ds.frames, enc, tokens_per_frame=3)(samples[:2])
    n_frames = [len(s.frame_rows) for s in samples[:2]]
    assert (batch.kind == BRAIN).sum(1).tolist() == [3 * t for t in n_frames]
    out = k2.adapter(batch.frames, batch.frame_mask)
    assert out.shape == (2, 3 * batch.frame_mask.shape[1], 64)
    # frame t's j-th token is output t * 3 + j: each slot reads its own part of the projection
    x = (batch.frames[0, 0] - k2.adapter.input_mean) / k2.adapter.input_std
    expected = k2.adapter.proj(x).view(3, 64)
    torch.testing.assert_close(out[0, :3], expected)
    assert torch.isfinite(k2(batch)["loss"])
