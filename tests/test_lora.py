"""`model.finetune: lora`: LoRA weights train, are saved with the adapter and come back on load, and StdLLM (the
no_brain condition, the brain-free null) stays the pretrained backbone, not the fine-tuned one."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
from safetensors.torch import load_file

from brainllm import backbones, config, training
from brainllm.errors import BrainLLMError
from brainllm.decoding.generation import generate_predictions, teacher_forced_losses
from brainllm.io import read_jsonl
from brainllm.model import BrainLLM, build_adapter
from brainllm.runs import RunPaths, load_run


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_llama_path):
    from brainllm.data.simulate import simulate

    root = tmp_path_factory.mktemp("lora")
    simulate(design="sentence", passages=24, voxels=144, components=16, seed=1, snr=1.0).dataset.save(root / "data")
    cfg = config.from_dict({"data": {"path": str(root / "data")},
                            "model": {"backbone": str(tiny_llama_path), "adapter": {"name": "mlp", "hidden": 32},
                                      "finetune": "lora", "lora": {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0}},
                            "training": {"warmup_epochs": 1, "epochs": 2, "lr": 1e-2, "cpu": True},
                            "generation": {"method": "greedy", "max_new_tokens": 3, "min_new_tokens": 1,
                                           "batch_size": 8},
                            "output": str(root / "run")})
    training.train(cfg)
    return load_run(root / "run")


def test_lora_weights_are_trained_saved_and_loaded(lora_run):
    saved = load_file(str(RunPaths(lora_run.path).adapter))
    lora_b = [k for k in saved if "lora_B" in k]
    assert lora_b and any(float(saved[k].abs().max()) > 0 for k in lora_b)  # B starts at zero: it trained
    state = lora_run.model.backbone.state_dict()
    for key in lora_b:
        np.testing.assert_array_equal(state[key[len("backbone."):]].numpy(), saved[key].numpy())


def test_no_brain_is_the_pretrained_backbone_for_a_lora_run(lora_run, tiny_llama_path):
    samples = lora_run.encoder.encode_all(lora_run.dataset, lora_run.split.test)
    with lora_run.model.bare_backbone():
        bare = teacher_forced_losses(lora_run, samples, "no_brain", 8)
    tuned = teacher_forced_losses(lora_run, samples, "no_brain", 8)
    assert not np.allclose(bare, tuned, rtol=1e-3)  # LoRA changed the LM...
    pretrained, _ = backbones.load(str(tiny_llama_path))
    frozen = BrainLLM(pretrained, build_adapter({"name": "linear"}, lora_run.dataset.feature_dim, 64))
    expected = teacher_forced_losses(dataclasses.replace(lora_run, model=frozen), samples, "no_brain", 8)
    np.testing.assert_allclose(bare, expected, rtol=1e-5)  # ...and StdLLM is still the pretrained one
    rows = read_jsonl(generate_predictions(lora_run, "test", "no_brain"))
    np.testing.assert_allclose([r["loss"] for r in rows], bare, rtol=1e-5)
    with lora_run.model.bare_backbone():
        pass
    np.testing.assert_allclose(teacher_forced_losses(lora_run, samples, "no_brain", 8), tuned, rtol=1e-6)  # LoRA back on


def test_a_fully_fine_tuned_run_has_no_stdllm(tiny_llama_path):
    backbone, _ = backbones.load(str(tiny_llama_path))
    model = BrainLLM(backbone, build_adapter({"name": "linear"}, 4, 64), finetune="full")
    with pytest.raises(BrainLLMError, match="bare pretrained LM"):
        model.bare_backbone()


def test_the_word_lm_of_a_lora_run_uses_the_lora_weights_and_its_cache(lora_run, tiny_llama_path):
    from brainllm.decoding.fullstory import run_word_lm
    from brainllm.decoding.wordlm import WordLM

    lm = run_word_lm(lora_run, context_words=3)
    words = [0, 5, 9]  # any three whole-word tokens
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # the cache goes under the wrapped LM's current keyword
        tuned = lm.extend(lm.start([words[:2]]), [0], [words[2]]).logprobs  # cached step
    with lora_run.model.bare_backbone():
        bare = lm.start([words]).logprobs
    pretrained, tokenizer = backbones.load(str(tiny_llama_path))
    expected = WordLM(pretrained, tokenizer, context_words=3).start([words]).logprobs
    np.testing.assert_allclose(bare.numpy(), expected.numpy(), atol=1e-5)
    assert not np.allclose(tuned.numpy(), bare.numpy(), atol=1e-3)
    np.testing.assert_allclose(tuned.numpy(), lm.start([words]).logprobs.numpy(), atol=1e-4)  # cache == fresh
