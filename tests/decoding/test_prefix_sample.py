"""The Bayesian decoder's sampler: draws from each prefix's KV cache carry their own log p_LM (the teacher-forced
loss of the same tokens), do not depend on the batch a sample is decoded in, and follow the nucleus
distribution."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from brainllm.decoding.candidates import propose
from brainllm.decoding.prefix_sample import SampleSettings, draw_uniforms, nucleus_pick
from brainllm.decoding.sentences import teacher_forced_losses
from tests.decoding.test_generation import trained_run  # noqa: F401  (the fixture: a tiny trained run)


def sampling_config(run, **extra):
    extra = {"precision": "float32"} | extra  # exact comparisons: float32, whatever `auto` takes on this host
    return replace(run.config.generation, rerank="encoding", n_candidates=6, candidate_top_p=0.95,
                   max_new_tokens=6, min_new_tokens=1, **extra)


def test_accumulated_log_probs_equal_teacher_forced_losses(trained_run):  # noqa: F811
    samples = trained_run.encoder.encode_all(trained_run.dataset, trained_run.split.valid[:10])
    cands = propose(trained_run, samples, "brain", sampling_config(trained_run))
    assert sum(len(ids) for ids in cands.ids) > 2 * len(samples)  # the draws differ
    flat = [(i, ids) for i, cand in enumerate(cands.ids) for ids in cand]
    pairs = [replace(samples[i], continuation_ids=tuple(ids)) for i, ids in flat]
    per_token = teacher_forced_losses(trained_run, pairs, "brain", 16)
    got = np.concatenate(cands.lm)
    n_tokens = np.array([len(ids) + 1 for _, ids in flat])  # + EOS, also for a draw cut at max_new_tokens
    np.testing.assert_allclose(-got / n_tokens, per_token, atol=1e-4)
    # the draws' counts: every draw is counted once (the search result only when a draw repeats it)
    assert all(d.sum() <= 5 and len(d) == len(ids) for d, ids in zip(cands.draws, cands.ids))


def test_a_samples_candidates_do_not_depend_on_its_batch(trained_run):  # noqa: F811
    samples = trained_run.encoder.encode_all(trained_run.dataset, trained_run.split.valid[:9])
    cfg = sampling_config(trained_run)
    together = propose(trained_run, samples, "brain", cfg)
    alone = propose(trained_run, samples[4:5], "brain", replace(cfg, batch_size=1))
    others = propose(trained_run, samples[::-1], "brain", replace(cfg, batch_size=3))
    assert alone.ids[0] == together.ids[4] and others.ids[-1 - 4] == together.ids[4]
    np.testing.assert_allclose(alone.lm[0], together.lm[4], atol=1e-4)
    np.testing.assert_array_equal(alone.draws[0], together.draws[4])
    # another seed draws otherwise
    reseeded = propose(trained_run, samples, "brain", replace(cfg, seed=cfg.seed + 1))
    assert reseeded.ids != together.ids


def test_the_reference_sampler_still_runs(trained_run):  # noqa: F811
    samples = trained_run.encoder.encode_all(trained_run.dataset, trained_run.split.valid[:4])
    cands = propose(trained_run, samples, "brain", sampling_config(trained_run, sampler="hf"))
    assert all(len(lm) == len(ids) for lm, ids in zip(cands.lm, cands.ids))
    assert all(np.all(np.isfinite(lm)) and np.all(lm < 0) for lm in cands.lm)


def test_nucleus_pick_follows_the_truncated_distribution():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    n = 20000
    u = torch.as_tensor(np.random.default_rng(0).random(n))
    picks = nucleus_pick(logits.repeat(n, 1), u, top_p=0.9, temperature=1.0)
    freq = np.bincount(picks.numpy(), minlength=4) / n
    # the nucleus {0.5, 0.3, 0.15} reaches 0.9; renormalised
    np.testing.assert_allclose(freq, [0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0.0], atol=0.01)
    # a tiny nucleus is the argmax; a banned token is never drawn
    assert set(nucleus_pick(logits.repeat(50, 1), u[:50], top_p=1e-6, temperature=1.0).tolist()) == {0}
    banned = logits.clone()
    banned[0, 0] = -float("inf")
    assert 0 not in nucleus_pick(banned.repeat(500, 1), u[:500], top_p=1.0, temperature=1.0).tolist()
    # temperature: a high one flattens the draws
    hot = np.bincount(nucleus_pick(logits.repeat(n, 1), u, 1.0, 5.0).numpy(), minlength=4) / n
    assert hot[3] > 0.15


def test_uniforms_are_seeded_by_sample_key():
    s = SampleSettings(n=3, max_new_tokens=4, min_new_tokens=0, eos_id=0)
    np.testing.assert_array_equal(draw_uniforms(0, "a", s), draw_uniforms(0, "a", s))
    assert not np.allclose(draw_uniforms(0, "a", s), draw_uniforms(0, "b", s))
    assert not np.allclose(draw_uniforms(0, "a", s), draw_uniforms(1, "a", s))
    with pytest.raises(ValueError):
        SampleSettings(n=0, max_new_tokens=4, min_new_tokens=0, eos_id=0)


def test_nucleus_pick_looks_beyond_its_top_k_when_the_nucleus_is_wider():
    rng = np.random.default_rng(1)
    logits = torch.as_tensor(rng.standard_normal((64, 500)), dtype=torch.float32)
    logits[:32] *= 8.0  # peaked rows: the nucleus within the top 16; flat rows: far wider
    u = torch.as_tensor(rng.random(64))
    whole = nucleus_pick(logits, u, 0.9, 1.0, top_k=[500])  # every row sorted whole
    np.testing.assert_array_equal(nucleus_pick(logits, u, 0.9, 1.0, top_k=[16]).numpy(), whole.numpy())
    np.testing.assert_array_equal(nucleus_pick(logits, u, 0.9, 1.0, top_k=[4, 64]).numpy(), whole.numpy())


def test_the_greedy_search_rides_in_the_samplers_pass(trained_run, monkeypatch):  # noqa: F811
    """A greedy search without repetition penalty is the sampler's extra row taking each step's argmax: the same
    candidates and log p_LM as searching first and forcing the result, without the search's own pass."""
    import brainllm.decoding.candidates as candidates
    from brainllm.decoding.candidates import greedy_in_sampler

    samples = trained_run.encoder.encode_all(trained_run.dataset, trained_run.split.valid[:8])
    cfg = sampling_config(trained_run, method="greedy", repetition_penalty=1.0)
    searches = []
    real_search = candidates.decode_ids
    monkeypatch.setattr(candidates, "decode_ids", lambda *a, **k: searches.append(1) or real_search(*a, **k))
    folded = propose(trained_run, samples, "brain", cfg)
    assert searches == []
    monkeypatch.setattr(candidates, "greedy_in_sampler", lambda cfg: False)
    searched = propose(trained_run, samples, "brain", cfg)
    assert searches == [1]
    assert folded.ids == searched.ids and all(np.array_equal(a, b) for a, b in zip(folded.draws, searched.draws))
    for a, b in zip(folded.lm, searched.lm):
        np.testing.assert_allclose(a, b, atol=1e-4)
    # a repetition penalty changes the search: it runs on its own again
    assert not greedy_in_sampler(replace(cfg, repetition_penalty=2.0))
    assert greedy_in_sampler(replace(cfg, method="beam", num_beams=1)) and not greedy_in_sampler(replace(cfg, method="beam"))
