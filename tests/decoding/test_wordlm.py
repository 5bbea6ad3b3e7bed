"""The word-level LM of the full-story decoders: vocabulary, cached beam states, proposals, story features."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from brainllm import backbones
from brainllm.errors import BrainLLMError
from brainllm.decoding.wordlm import ContextFilter, ProposalConfig, WordLM


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def lm(request, tiny_llama_path, tiny_gpt2_path) -> WordLM:
    path = tiny_llama_path if request.param == "llama" else tiny_gpt2_path
    model, tokenizer = backbones.load(str(path))
    return WordLM(model, tokenizer, feature_layer=1, context_words=3, max_context_words=6)


def _story(lm: WordLM, n: int) -> list[int]:
    rng = np.random.default_rng(0)
    return [int(i) for i in rng.integers(0, len(lm.vocab), n)]


def test_vocabulary_holds_single_token_words(lm):
    vocab = lm.vocab
    assert len(vocab) > 20
    for k in range(0, len(vocab), max(1, len(vocab) // 20)):
        word = vocab.words[k]
        assert lm.tokenizer(" " + word, add_special_tokens=False).input_ids == [int(vocab.token_ids[k])]
        assert vocab.index(word) == k
    with pytest.raises(BrainLLMError):
        vocab.index("Not A Word")


def test_cached_extension_matches_a_fresh_forward(lm):
    """A row grown word by word through the cache has the log-probs of one forward over the same words."""
    words = _story(lm, 5)
    state = lm.start([[]])
    for w in words:
        state = lm.extend(state, [0], [w])
    fresh = lm.start([words])  # rebuild: the last context_words words only
    kept = words[-lm.context_words:]
    ids = ([lm.bos_id] if lm.bos_id is not None else []) + [int(lm.vocab.token_ids[w]) for w in words]
    with torch.inference_mode():
        logits = lm.model(input_ids=torch.tensor([ids])).logits[0, -1].float()
    expected = torch.log_softmax(logits[lm.vocab.token_ids], -1)
    # 5 words < max_context_words: the cached row saw all 5 words, exactly like the full forward
    assert torch.allclose(state.logprobs[0], expected, atol=1e-4)
    assert fresh.cached_words == len(kept)


def test_beam_rows_follow_their_parents(lm):
    a, b = _story(lm, 2)
    state = lm.start([[]])
    state = lm.extend(state, [0, 0], [a, b])          # two rows: [a], [b]
    grown = lm.extend(state, [1, 0, 1], [a, b, b])    # [b a], [a b], [b b]
    assert grown.contexts == [[b, a], [a, b], [b, b]]
    alone = lm.extend(lm.extend(lm.start([[]]), [0], [a]), [0], [b])
    assert torch.allclose(grown.logprobs[1], alone.logprobs[0], atol=1e-5)
    assert torch.allclose(grown.features[1], alone.features[0], atol=1e-5)
    kept = lm.select(grown, [2, 1])
    assert kept.contexts == [[b, b], [a, b]]
    assert torch.allclose(kept.logprobs[1], alone.logprobs[0], atol=1e-5)


def test_story_features_equal_decoding_features(lm):
    """Training features (`word_features`) and features met while decoding follow the same context rule."""
    words = _story(lm, 17)  # crosses several cache rebuilds (max_context_words 6)
    state = lm.start([[]])
    decoded = []
    for w in words:
        state = lm.extend(state, [0], [w])
        decoded.append(state.features[0].numpy().copy())
    story = lm.word_features([lm.vocab.words[w] for w in words], batch_size=2)
    np.testing.assert_allclose(story, np.stack(decoded), atol=1e-4)


def test_proposals_respect_nucleus_floor_and_repeats(lm):
    state = lm.start([[]])
    words = _story(lm, 4)
    for w in words:
        state = lm.extend(state, [0], [w])
    cfg = ProposalConfig(nucleus_mass=0.9, relative_floor=0.1, filter_repeats=False)
    cands = lm.propose(state, cfg)[0]
    lp = state.logprobs[0]
    best = float(lp.max())
    assert cands[0][0] == int(lp.argmax())
    assert all(l >= best + np.log(0.1) - 1e-6 for _, l in cands)
    probs = np.exp([l for _, l in cands])
    assert probs[:-1].sum() < 0.9 + 1e-6  # stop once the mass is reached
    filt = ContextFilter()
    context = [lm.vocab.words[w] for w in state.contexts[0]]
    banned = filt.banned(context)
    filtered = lm.propose(state, ProposalConfig(relative_floor=0.0, nucleus_mass=1.0, max_candidates=10**6), filt)[0]
    for w, _ in filtered:
        assert filt.allowed(lm.vocab.words[w], banned)


def test_context_filter_rules():
    f = ContextFilter()
    banned = f.banned(["the", "dog", "ran", "to", "the"])
    assert not f.allowed("dog", banned)        # follows the last word ("the") earlier: repeated bigram
    assert not f.allowed("running", banned) or f.stem("running") != f.stem("ran")
    assert not f.allowed("ran", banned)         # content word already in the context
    assert f.allowed("to", banned) and f.allowed("cat", banned)  # stop words may recur; new words pass


def test_unequal_contexts_are_refused(lm):
    with pytest.raises(BrainLLMError, match="same number"):
        lm.start([[1], [1, 2]])
