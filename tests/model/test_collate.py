import numpy as np
import pytest

from brainllm import backbones
from brainllm.data.dataset import Sample
from brainllm.errors import DatasetError
from brainllm.model.collate import BRAIN, CLOSE, OPEN, PAD, TOKEN, Collator, EncodedSample, TextEncoder, permute_frames


@pytest.fixture(scope="module")
def llama_tok(tiny_llama_path):
    return backbones.load(str(tiny_llama_path))[1]


@pytest.fixture(scope="module")
def gpt2_tok(tiny_gpt2_path):
    return backbones.load(str(tiny_gpt2_path))[1]


def test_continuation_tokens_match_the_full_text(llama_tok):
    enc = TextEncoder(llama_tok)
    prompt, cont = "The farmers gather", "their wheat before the storm"
    p, c = enc.split_ids(prompt, cont)
    full = llama_tok(prompt + " " + cont, add_special_tokens=False).input_ids
    assert p + c == full
    assert c != llama_tok(cont, add_special_tokens=False).input_ids  # the trap: no leading space, other ids
    assert llama_tok.decode(c).startswith(" their")


def test_long_prompts_keep_their_last_tokens(llama_tok):
    enc = TextEncoder(llama_tok, max_prompt_tokens=3, max_continuation_tokens=2)
    s = enc.encode(Sample("a", "x", "s", "one two three four five six seven", "eight nine ten eleven", [0]))
    full_prompt = llama_tok("one two three four five six seven", add_special_tokens=False).input_ids
    assert list(s.prompt_ids) == full_prompt[-3:] and len(s.continuation_ids) == 2
    with pytest.raises(DatasetError, match="Empty continuation"):
        enc.split_ids("prompt", "  ")


def _encoded(enc, n=4):
    samples = []
    for i in range(n):
        p, c = enc.split_ids(f"prompt number {i}" * (i % 2 + 1), f"the answer {i}")
        samples.append(EncodedSample(f"id{i}", f"stim{i}", tuple(p), tuple(c), tuple(range(i % 3 + 1))))
    return samples


def test_training_layout_bos_brain_prompt_targets(llama_tok, gpt2_tok):
    frames = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    for tok, has_bos in ((llama_tok, True), (gpt2_tok, False)):
        enc = TextEncoder(tok)
        assert (enc.bos_id is not None) == has_bos
        samples = _encoded(enc)
        batch = Collator(frames, enc)(samples)
        for i, s in enumerate(samples):
            kinds = batch.kind[i].tolist()
            n = len(kinds) - kinds.count(PAD)
            assert kinds[n:] == [PAD] * (len(kinds) - n)  # right padding
            head = [TOKEN] * has_bos + [OPEN] + [BRAIN] * len(s.frame_rows) + [CLOSE]
            assert kinds[: len(head)] == head
            assert batch.token_ids[i, : n].tolist()[len(head):] == [*s.prompt_ids, *s.continuation_ids, enc.eos_id]
            sel = batch.target_batch == i
            assert batch.target_ids[sel].tolist() == [*s.continuation_ids, enc.eos_id]
            assert batch.target_pos[sel].tolist() == list(range(n - len(s.continuation_ids) - 2, n - 1))
            np.testing.assert_array_equal(batch.frames[i, : len(s.frame_rows)].numpy(), frames[list(s.frame_rows)])
        assert batch.frame_mask.sum(1).tolist() == [len(s.frame_rows) for s in samples]


def test_generation_layout_is_left_padded_and_stops_at_the_prompt(llama_tok):
    enc = TextEncoder(llama_tok)
    samples = _encoded(enc)
    batch = Collator(np.zeros((5, 3), np.float32), enc, for_generation=True)(samples)
    assert len(batch.target_ids) == 0
    for i, s in enumerate(samples):
        assert batch.token_ids[i, -len(s.prompt_ids):].tolist() == list(s.prompt_ids)
        kinds = batch.kind[i].tolist()
        first = next(k for k, v in enumerate(kinds) if v != PAD)
        assert all(v != PAD for v in kinds[first:])


def test_conditions_change_the_layout(llama_tok):
    enc = TextEncoder(llama_tok)
    s = _encoded(enc, 1)
    no_brain = Collator(np.zeros((5, 3), np.float32), enc, "no_brain")(s)
    assert BRAIN not in no_brain.kind.tolist()[0] and OPEN not in no_brain.kind.tolist()[0]
    no_text = Collator(np.zeros((5, 3), np.float32), enc, "no_text")(s)
    assert no_text.token_ids[0].tolist()[: no_text.attention_mask.sum()][-len(s[0].continuation_ids) - 1:] == \
        [*s[0].continuation_ids, enc.eos_id]
    assert no_text.attention_mask.sum() == 1 + 1 + 1 + 1 + len(s[0].continuation_ids) + 1  # bos, open, T=1, close


def test_warmup_target_selects_the_text_whose_embedding_the_warmup_regresses_onto(llama_tok):
    enc = TextEncoder(llama_tok)
    samples = _encoded(enc, 3)
    frames = np.zeros((5, 3), np.float32)

    def targets(**kw):
        b = Collator(frames, enc, **kw)(samples)
        return [b.warmup_ids[i][b.warmup_mask[i]].tolist() for i in range(len(samples))]

    assert targets() == [list(s.prompt_ids) for s in samples]  # the paper's default
    assert targets(warmup_target="text") == [[*s.prompt_ids, *s.continuation_ids] for s in samples]
    assert targets(warmup_target="continuation") == [list(s.continuation_ids) for s in samples]
    assert targets(condition="no_text", warmup_target="text") == [list(s.continuation_ids) for s in samples]
    with pytest.raises(ValueError, match="warmup_target"):
        Collator(frames, enc, warmup_target="sentence")


def test_permutation_never_gives_a_sample_its_own_stimulus():
    samples = [EncodedSample(f"s{i}", f"stim{i // 2}", (1,), (2,), (i // 2,)) for i in range(20)]
    seen = set()
    for seed in range(5):
        permuted = permute_frames(samples, seed)
        for orig, new in zip(samples, permuted):
            donor = next(s for s in samples if s.id == new.frames_from)
            assert donor.stimulus != orig.stimulus and new.frame_rows != orig.frame_rows
        assert sorted(p.frames_from for p in permuted) == sorted(s.id for s in samples)  # a permutation
        seen.add(tuple(p.frames_from for p in permuted))
    assert len(seen) == 5
    with pytest.raises(DatasetError, match="permute"):
        permute_frames([EncodedSample("a", "x", (1,), (2,), (0,)), EncodedSample("b", "x", (1,), (2,), (0,))], 0)


def test_decode_cuts_at_eos_and_drops_special_strings(llama_tok):
    enc = TextEncoder(llama_tok)
    ids = llama_tok(" the farmers", add_special_tokens=False).input_ids
    assert enc.decode([*ids, enc.eos_id, *ids]) == "the farmers"
    assert "<eos>" not in enc.decode([enc.eos_id]) and enc.decode([enc.eos_id]) == ""
