"""Beam and greedy search over the shared prefix's KV cache give HF `generate`'s tokens, on the tiny Llama and GPT-2
backbones, for left-padded prompts of different lengths, with the paper's repetition penalty and min/max lengths,
and with EOS reached early (its logit biased up) so that samples leave the batch before the end."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from brainllm.decoding.prefix_beam import SearchSettings, beam_search, greedy_search
from brainllm.model import BrainLLM, Collator, TextEncoder
from tests.conftest import tiny_brainllm

PROMPT_LENGTHS = (0, 1, 3, 5, 7, 9, 2, 4)  # left padding differs from row to row
# EOS logit bias per backbone: large enough that some samples end early, small enough that others run to the end
EOS_BIAS = {"llama": 7.0, "gpt2": 8.0}


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def setup(request, tiny_llama_path, tiny_gpt2_path, small_sentence_sim):
    path = tiny_llama_path if request.param == "llama" else tiny_gpt2_path
    ds = small_sentence_sim.dataset
    model, enc = tiny_brainllm(path, ds)
    base = enc.encode_all(ds, [s.id for s in ds][: len(PROMPT_LENGTHS)])
    samples = [dataclasses.replace(s, prompt_ids=s.prompt_ids[len(s.prompt_ids) - n:] if n else ())
               for s, n in zip(base, PROMPT_LENGTHS)]
    assert sorted({len(s.prompt_ids) for s in samples}) == sorted(PROMPT_LENGTHS)
    collate = Collator(ds.frames, enc, for_generation=True)
    return model, enc, collate, samples, request.param


def settings(enc: TextEncoder, num_beams: int, penalty: float = 2.0) -> SearchSettings:
    return SearchSettings(max_new_tokens=12, min_new_tokens=4, eos_id=enc.eos_id, pad_id=enc.pad_id,
                          num_beams=num_beams, repetition_penalty=penalty)


def until_eos(ids: list[int], eos: int) -> list[int]:
    """HF's row up to its first EOS included (the rest is filler)."""
    return ids[: ids.index(eos) + 1] if eos in ids else ids


def hf_reference(model: BrainLLM, batch, s: SearchSettings) -> list[list[int]]:
    return [until_eos(r, s.eos_id) for r in model.generate(batch, **s.hf_generate_kwargs())]


def ours(model: BrainLLM, batch, s: SearchSettings, rows_seen: list[int] | None = None) -> list[list[int]]:
    embeds, context = model.generation_inputs(batch)
    search = beam_search if s.num_beams > 1 else greedy_search
    hook = model.backbone.register_forward_hook(
        lambda _m, args, kwargs, out: rows_seen.append(len(out.logits)) if rows_seen is not None else None,
        with_kwargs=True)
    try:
        return search(model.backbone, embeds, batch.attention_mask, s, context)
    finally:
        hook.remove()


def biased_eos(model: BrainLLM, eos: int, bias: float):
    """A hook adding `bias` to the EOS logit of every forward (a tiny random LM otherwise rarely ends)."""
    vec = torch.zeros(model.backbone.get_output_embeddings().weight.shape[0])
    vec[eos] = bias
    return model.backbone.get_output_embeddings().register_forward_hook(lambda _m, _i, out: out + vec)


@pytest.mark.parametrize("num_beams,penalty", [(5, 2.0), (3, 1.0), (1, 2.0), (1, 1.0)])
def test_search_equals_hf_generate(setup, num_beams, penalty):
    model, enc, collate, samples, _ = setup
    batch = collate(samples)
    s = settings(enc, num_beams, penalty)
    expected = hf_reference(model, batch, s)
    assert ours(model, batch, s) == expected
    assert all(len(r) == s.max_new_tokens for r in expected)  # no EOS without the bias


@pytest.mark.parametrize("num_beams", [5, 1])
def test_search_equals_hf_generate_when_eos_comes_early(setup, num_beams):
    model, enc, collate, samples, arch = setup
    batch = collate(samples)
    s = settings(enc, num_beams)
    hook = biased_eos(model, enc.eos_id, EOS_BIAS[arch])
    try:
        expected = hf_reference(model, batch, s)
        rows: list[int] = []
        got = ours(model, batch, s, rows)
    finally:
        hook.remove()
    assert got == expected
    lengths = [len(r) for r in expected]
    assert min(lengths) < s.max_new_tokens and min(lengths) >= s.min_new_tokens + 1  # EOS early, never before min
    assert any(r[-1] == enc.eos_id for r in expected)
    # the prefix ran once per sample, and finished samples left the batch (their rows were not carried on)
    assert rows[0] == len(PROMPT_LENGTHS)
    assert rows[-1] < len(PROMPT_LENGTHS) * num_beams


def test_without_padding_it_equals_hfs_own_repetition_penalty(setup):
    """Prompts of one length (no left padding): the same tokens as HF's built-in `repetition_penalty`, whose offset
    by the pad count (see `prefix_beam`) is then zero."""
    model, enc, collate, samples, _ = setup
    longest = max(samples, key=lambda x: len(x.prompt_ids))
    one_length = collate([dataclasses.replace(longest, frame_rows=x.frame_rows) for x in samples])  # other frames
    assert bool(one_length.attention_mask.all()) and len(one_length) > 1
    for num_beams in (5, 1):
        s = settings(enc, num_beams)
        kwargs = {k: v for k, v in s.hf_generate_kwargs().items() if k != "logits_processor"}
        expected = [until_eos(r, s.eos_id) for r in model.generate(one_length, **kwargs)]
        assert ours(model, one_length, s) == expected


def test_a_sample_gets_the_same_tokens_in_any_batch(setup):
    """Together (left-padded to the longest) or alone (no padding): the repetition penalty has no pad offset."""
    model, enc, collate, samples, _ = setup
    s = settings(enc, 5)
    assert ours(model, collate(samples), s) == [ours(model, collate([x]), s)[0] for x in samples]
