"""Text features: batched mean states equal one text at a time (padding and BOS excluded); the nuisance features
count words and place frames in their stimulus."""

import numpy as np
import pytest
import torch

from brainllm import backbones
from brainllm.model import TextEncoder
from brainllm.model.text_features import (full_text, mean_states, mean_states_after_prefix, nuisance_features,
                                         passage_contexts, stimulus_positions)

from ..conftest import make_dataset


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_batched_mean_states_match_one_text_at_a_time(arch, tiny_llama_path, tiny_gpt2_path):
    model, tok = backbones.load(str(tiny_llama_path if arch == "llama" else tiny_gpt2_path))
    enc = TextEncoder(tok)
    texts = ["the bees fly home", "a short one", "honey is made of nectar by many bees in the hive"]
    batched = mean_states(model, enc, texts, [0, 2], batch_size=2)
    for i, text in enumerate(texts):
        ids = tok(text, add_special_tokens=False).input_ids
        bos = [enc.bos_id] if enc.bos_id is not None else []
        with torch.no_grad():
            hidden = model(input_ids=torch.tensor([bos + ids]), output_hidden_states=True).hidden_states
        for layer in (0, 2):
            np.testing.assert_allclose(batched[layer][i], hidden[layer][0, len(bos):].mean(0).numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="outside"):
        mean_states(model, enc, texts, [3])


def test_nuisance_features_and_positions():
    ds = make_dataset(n_frames=6, n_stimuli=3)  # sample i has frame i % 6, stimulus i % 3
    samples = list(ds)
    pos = stimulus_positions(ds, samples)
    # stimulus 0 holds frames {0, 3}: sample 0 (frame 0) is first, sample 3 (frame 3) second
    assert pos.tolist() == [0, 0, 0, 1, 1, 1]
    feats = nuisance_features(["one two three", "a b"], [4, 0])
    np.testing.assert_array_equal(feats, [[3, 4], [2, 0]])


def test_mean_states_in_context_average_only_the_texts_own_tokens(tiny_llama_path):
    model, tok = backbones.load(str(tiny_llama_path))
    enc = TextEncoder(tok)
    texts, contexts = ["the bees fly home", "a short one", "honey is sweet"], ["bees live in hives.", "", "x"]
    got = mean_states(model, enc, texts, [1, 2], batch_size=2, contexts=contexts)
    alone = mean_states(model, enc, texts, [1, 2])
    bos = [enc.bos_id] if enc.bos_id is not None else []
    for i, (text, context) in enumerate(zip(texts, contexts)):
        lead = bos + (tok(context, add_special_tokens=False).input_ids if context else [])
        own = tok(f" {text}" if context else text, add_special_tokens=False).input_ids
        with torch.no_grad():
            hidden = model(input_ids=torch.tensor([lead + own]), output_hidden_states=True).hidden_states
        for layer in (1, 2):
            np.testing.assert_allclose(got[layer][i], hidden[layer][0, len(lead):].mean(0).numpy(), atol=1e-5)
    # no context: the plain states; a context changes a causal LM's states of the text after it
    np.testing.assert_allclose(got[2][1], alone[2][1], atol=1e-5)
    assert not np.allclose(got[2][0], alone[2][0], atol=1e-3)
    with pytest.raises(ValueError, match="contexts"):
        mean_states(model, enc, texts, [1], contexts=["one"])


def test_passage_contexts_are_the_previous_whole_sentences_in_order():
    from brainllm.data.dataset import BrainTextDataset, Sample

    # one passage of three sentences (frames 0, 1, 2), each cut twice like the released Pereira samples, listed out
    # of order; another passage of one sentence
    rows = [("a1", "p", "First", "sentence.", 0), ("b2", "p", "Second one", "is longer here.", 1),
            ("a2", "p", "First sentence", "was cut twice.", 0), ("b1", "p", "Second", "one", 1),
            ("c1", "p", "Third", "ends.", 2), ("z1", "q", "Other", "passage.", 3)]
    frames = np.zeros((4, 2), dtype=np.float32)
    ds = BrainTextDataset(frames, [Sample(i, st, "subj", pr, co, [f]) for i, st, pr, co, f in rows],
                          {"subject": "subj", "source": "test"})
    samples = list(ds)
    got = dict(zip([s.id for s in samples], passage_contexts(ds, samples, 2)))
    assert got["a1"] == got["a2"] == got["z1"] == ""
    assert got["b1"] == got["b2"] == "First sentence was cut twice."
    assert got["c1"] == "First sentence was cut twice. Second one is longer here."
    assert dict(zip([s.id for s in samples], passage_contexts(ds, samples, 1)))["c1"] == "Second one is longer here."
    assert passage_contexts(ds, samples, 5) == passage_contexts(ds, samples, 2)  # fewer before it than asked
    assert set(passage_contexts(ds, samples, 0)) == {""}
    with pytest.raises(ValueError, match="n_sentences"):
        passage_contexts(ds, samples, -1)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_states_after_a_shared_prefix_equal_mean_states(arch, tiny_llama_path, tiny_gpt2_path):
    model, tok = backbones.load(str(tiny_llama_path if arch == "llama" else tiny_gpt2_path))
    enc = TextEncoder(tok)
    heads = ["the bees", "honey is", "", "a"]
    tails = [["fly home", "sleep", "make honey in the hive all day"], ["sweet", "made of nectar"], ["alone"],
             ["short one", "b"]]
    contexts = ["bees live in hives.", "", "x", "the queen lays eggs."]
    for ctx in (None, contexts):
        got = mean_states_after_prefix(model, enc, heads, tails, 1, contexts=ctx, batch_size=3)
        for i, (head, group) in enumerate(zip(heads, tails)):
            texts = [full_text(head, t) for t in group]
            want = mean_states(model, enc, texts, [1], contexts=None if ctx is None else [ctx[i]] * len(texts))[1]
            np.testing.assert_allclose(got[i], want, atol=1e-5)
    # the early-stopping path (layer 1 of 2) equals HF's hidden_states[1]
    ids = tok("honey is sweet", add_special_tokens=False).input_ids
    bos = [enc.bos_id] if enc.bos_id is not None else []
    with torch.no_grad():
        hidden = model(input_ids=torch.tensor([bos + ids]), output_hidden_states=True).hidden_states
    np.testing.assert_allclose(mean_states(model, enc, ["honey is sweet"], [1])[1][0],
                               hidden[1][0, len(bos):].mean(0).numpy(), atol=1e-5)
