"""Shared fixtures: tiny random backbones (2 layers, hidden 64) with a byte-level BPE tokenizer trained on the
package corpus, and small simulated datasets. Everything is offline and takes milliseconds to seconds."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _corpus_text() -> list[str]:
    from brainllm.data.corpus import load_corpus

    return [s for p in load_corpus() for s in p.sentences]


def build_tokenizer(bos: bool):
    """A byte-level BPE tokenizer (GPT-2/SmolLM2 style) trained on the corpus; `bos` makes it prepend BOS."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<eos>", "<bos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_corpus_text(), trainer)
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", bos_token="<bos>", pad_token="<eos>")
    return fast


def build_tiny_backbone(folder: Path, arch: str = "llama") -> Path:
    """Save a tiny randomly initialised causal LM + tokenizer to `folder` (loadable by `backbones.load`)."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tokenizer = build_tokenizer(bos=(arch == "llama"))
    vocab = len(tokenizer)
    if arch == "llama":
        cfg = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                          bos_token_id=1, eos_token_id=0, pad_token_id=0, tie_word_embeddings=True)
        model = LlamaForCausalLM(cfg)
    else:
        cfg = GPT2Config(vocab_size=vocab, n_embd=64, n_layer=2, n_head=4, n_positions=256,
                         bos_token_id=0, eos_token_id=0, pad_token_id=0)
        model = GPT2LMHeadModel(cfg)
    _pretrain(model, tokenizer)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _pretrain(model, tokenizer, steps: int = 150) -> None:
    """A few hundred milliseconds of language modelling on the corpus, so the tiny LM reacts to its input like a
    real one (a random LM ignores its context, and nothing could be learned through it)."""
    texts = _corpus_text()
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    labels = enc.input_ids.masked_fill(enc.attention_mask == 0, -100)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(texts), (32,), generator=gen)
        loss = model(input_ids=enc.input_ids[idx], attention_mask=enc.attention_mask[idx], labels=labels[idx]).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()


def tiny_brainllm(path: Path, dataset):
    """(BrainLLM with a small MLP adapter on the tiny backbone at `path`, in eval mode; its TextEncoder)."""
    from brainllm import backbones
    from brainllm.model import BrainLLM, TextEncoder, build_adapter

    torch.manual_seed(0)
    backbone, tok = backbones.load(str(path))
    model = BrainLLM(backbone, build_adapter({"name": "mlp", "hidden": 32}, dataset.feature_dim, 64)).eval()
    return model, TextEncoder(tok)


@pytest.fixture(scope="session")
def tiny_llama_path(tmp_path_factory) -> Path:
    return build_tiny_backbone(tmp_path_factory.mktemp("tiny_llama"), "llama")


@pytest.fixture(scope="session")
def tiny_gpt2_path(tmp_path_factory) -> Path:
    return build_tiny_backbone(tmp_path_factory.mktemp("tiny_gpt2"), "gpt2")


@pytest.fixture(scope="session")
def small_sentence_sim():
    """A small simulated sentence-design participant (40 passages), shared by tests that only read it."""
    from brainllm.data.simulate import simulate

    return simulate(design="sentence", passages=40, voxels=400, components=32, seed=3)


def make_dataset(n_frames: int = 6, dim: int = 4, n_stimuli: int = 3, seed: int = 0):
    """A hand-made valid dataset: two samples per stimulus, one frame each."""
    from brainllm.data.dataset import BrainTextDataset, Sample

    rng = np.random.default_rng(seed)
    frames = rng.standard_normal((n_frames, dim)).astype(np.float32)
    samples = [Sample(f"s{i}", f"stim{i % n_stimuli}", "subj", f"prompt {i}", f"continuation {i}", [i % n_frames])
               for i in range(2 * n_stimuli)]
    return BrainTextDataset(frames, samples, {"subject": "subj", "source": "test"})
