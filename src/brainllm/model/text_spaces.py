"""Named feature spaces of texts: MiniLM and the backbone's mean states after chosen layers.

One place for the spaces that both the realism profile (`model.realism`) measures and the simulated participant
(`data.simulate`, which may not import the backbone) is generated from: `backbone_spaces` returns a callable the
simulator takes as its `spaces` argument.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from .. import backbones
from ..data.features import sentence_embeddings
from ..data.simulate import MINILM, SpaceProvider
from ..data.simulate import space_name as layer_name
from .collate import TextEncoder
from .text_features import mean_states

log = logging.getLogger(__name__)

__all__ = ["MINILM", "SpaceProvider", "backbone_spaces", "layer_name", "text_spaces"]


def text_spaces(texts: Sequence[str], backbone: torch.nn.Module | None, encoder: TextEncoder | None,
                layers: Sequence[int], minilm: bool = True) -> dict[str, np.ndarray]:
    """`{name: (n, F) float32}`: MiniLM sentence embeddings (`minilm`, 384-d) and the backbone's mean state of
    each text after each of `layers` (`layer_name`, H-d; needs `backbone` and `encoder`)."""
    out: dict[str, np.ndarray] = {}
    if minilm:
        out[MINILM] = sentence_embeddings(list(texts))
    if layers:
        if backbone is None or encoder is None:
            raise ValueError(f"layers {list(layers)} need a backbone and its TextEncoder.")
        for layer, states in mean_states(backbone, encoder, list(texts), list(layers)).items():
            out[layer_name(layer)] = states
    return out


def backbone_spaces(name: str, layers: Sequence[int], minilm: bool = True) -> SpaceProvider:
    """A provider of `text_spaces` for the backbone `name` (loaded once, on first use, offline)."""
    loaded: list = []

    def provide(texts: Sequence[str]) -> dict[str, np.ndarray]:
        if not loaded:
            model, tokenizer = backbones.load(name)
            loaded.extend([model, TextEncoder(tokenizer)])
            log.info("feature spaces from backbone %s, layers %s", name, list(layers))
        return text_spaces(texts, loaded[0], loaded[1], layers, minilm=minilm)

    return provide
