"""Text features: batched mean states equal one text at a time (padding and BOS excluded); the nuisance features
count words and place frames in their stimulus."""

import numpy as np
import pytest
import torch

from brainllm import backbones
from brainllm.model import TextEncoder
from brainllm.model.text_features import mean_states, nuisance_features, stimulus_positions

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
