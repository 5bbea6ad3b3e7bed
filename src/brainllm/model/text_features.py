"""Features of a sample's text that encoding models and identification tests use.

* `mean_states`: the backbone's own mean hidden state of a text after chosen layers (the bare, frozen LM), the
  feature space in which real Pereira frames identify their sentence best (DESIGN.md, "What real data looks like");
* `nuisance_features`: the number of words of the text and the position of the sample's frames in its stimulus.
  BOLD amplitude grows with the number of words, and position in a passage is known to the experimenter, so
  sentence length + position alone identify Pereira sentences 2-way at ~0.76 (Feghhi et al. 2024): every content
  claim is measured against them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np
import torch

from ..data.dataset import BrainTextDataset, Sample
from .collate import TextEncoder

NUISANCE_NAMES = ("n_words", "position")


def word_count(text: str) -> int:
    """Whitespace-separated words of `text`."""
    return len(text.split())


def stimulus_positions(dataset: BrainTextDataset, samples: Sequence[Sample]) -> np.ndarray:
    """`(n,)` int: the rank of each sample's first frame row among the frame rows of its stimulus (Pereira: the
    sentence's place in its passage; story designs: the chunk's place in its story)."""
    rows: dict[str, set[int]] = {}
    for s in dataset:
        rows.setdefault(s.stimulus, set()).update(s.frames)
    order = {stim: {row: i for i, row in enumerate(sorted(r))} for stim, r in rows.items()}
    return np.array([order[s.stimulus][min(s.frames)] for s in samples], dtype=np.int64)


def passage_contexts(dataset: BrainTextDataset, samples: Sequence[Sample], n_sentences: int) -> list[str]:
    """For each sample, the text of the (at most) `n_sentences` frame units before its own in its stimulus, in
    order, joined by spaces ("" for the first): in Pereira, the passage's previous sentences, which the participant
    had read. A unit's text is the longest perceived text (`full_text`) among the samples of its frames: the whole
    sentence."""
    if n_sentences < 0:
        raise ValueError(f"n_sentences must be >= 0, got {n_sentences}.")
    units: dict[str, dict[int, str]] = {}  # stimulus -> first frame row of a unit -> its text
    for s in dataset:
        text = full_text(s.prompt, s.continuation)
        if len(text) > len(units.setdefault(s.stimulus, {}).get(min(s.frames), "")):
            units[s.stimulus][min(s.frames)] = text
    rows = {stim: sorted(u) for stim, u in units.items()}  # sorted once per stimulus, not once per sample
    out = []
    for s in samples:
        before = rows[s.stimulus][:rows[s.stimulus].index(min(s.frames))]
        out.append(" ".join(units[s.stimulus][r] for r in before[max(0, len(before) - n_sentences):]))
    return out


def nuisance_features(texts: Sequence[str], positions: Sequence[int]) -> np.ndarray:
    """`(n, 2)` float64: words in each text (prompt + continuation) and the position of its frames
    (`stimulus_positions`), in `NUISANCE_NAMES` order."""
    if len(texts) != len(positions):
        raise ValueError(f"{len(texts)} texts but {len(positions)} positions.")
    return np.column_stack([[word_count(t) for t in texts], np.asarray(positions, dtype=np.float64)]
                           ).astype(np.float64)


def full_text(prompt: str, continuation: str) -> str:
    """The perceived text of a sample: prompt and continuation joined by one space."""
    return f"{prompt.strip()} {continuation.strip()}".strip()


@torch.inference_mode()
def mean_states(backbone: torch.nn.Module, encoder: TextEncoder, texts: Sequence[str], layers: Sequence[int],
                batch_size: int = 64, bare: contextlib.AbstractContextManager | None = None,
                contexts: Sequence[str] | None = None) -> dict[int, np.ndarray]:
    """The LM's hidden state after each of `layers` (0 = input embeddings), averaged over the tokens of each text
    read as `[BOS] text` (BOS, where the tokenizer adds one, is not averaged): `{layer: (n, H) float32}`.

    With `contexts` (one string per text, "" for none), text i is read after its context, `[BOS] context text`
    (a space between them), and only the text's own tokens are averaged: the states of a sentence as the reader
    met it in its passage (`passage_contexts`). `bare` is the context in which `backbone` is the pretrained LM
    alone (`BrainLLM.bare_backbone()` for a LoRA run); texts are batched longest first to pad little."""
    if not layers:
        raise ValueError("mean_states needs at least one layer.")
    n_layers = getattr(backbone.config, "num_hidden_layers", None)
    bad = [layer for layer in layers if layer < 0 or (n_layers is not None and layer > n_layers)]
    if bad:
        raise ValueError(f"layers {bad} are outside 0..{n_layers} (the backbone has {n_layers} blocks).")
    device = next(backbone.parameters()).device
    if contexts is not None and len(contexts) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(contexts)} contexts.")
    bos = [encoder.bos_id] if encoder.bos_id is not None else []

    def tokenize(text: str) -> list[int]:
        return encoder.tokenizer(text, add_special_tokens=False).input_ids

    # the tokens before each text's own, which are not averaged: BOS, then its context (after which the text
    # starts with a space, as it would in running text)
    lead, ids = [], []
    for i, text in enumerate(texts):
        context = contexts[i].strip() if contexts is not None else ""
        lead.append(bos + (tokenize(context) if context else []))
        ids.append(lead[-1] + tokenize(f" {text}" if context else text))
    out = {layer: np.zeros((len(texts), backbone.config.hidden_size), dtype=np.float32) for layer in layers}
    order = np.argsort([-len(i) for i in ids], kind="stable")
    with bare or contextlib.nullcontext():
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            width = max(len(ids[i]) for i in rows)
            tokens = torch.full((len(rows), width), encoder.pad_id, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for j, i in enumerate(rows):
                tokens[j, :len(ids[i])] = torch.tensor(ids[i])
                mask[j, :len(ids[i])] = 1
            hidden = backbone(input_ids=tokens.to(device), attention_mask=mask.to(device),
                              output_hidden_states=True).hidden_states
            keep = mask.clone()
            for j, i in enumerate(rows):
                keep[j, :len(lead[i])] = 0
            keep = keep.unsqueeze(-1).float().to(device)
            for layer in layers:
                pooled = (hidden[layer].float() * keep).sum(1) / keep.sum(1).clamp(min=1)
                out[layer][rows] = pooled.cpu().numpy()
    return out
