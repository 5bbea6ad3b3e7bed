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
from ..progress import progress
from .collate import TextEncoder
from .injection import decoder_blocks, hidden_of, on_output

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


def reading_ids(encoder: TextEncoder, head: str, context: str = "") -> tuple[list[int], list[int]]:
    """How `mean_states` reads a text that starts with `head`: the lead tokens that are not averaged (BOS where the
    tokenizer adds one, then `context`), and `head`'s own tokens (after a space when there is a context, as in
    running text; none for an empty head)."""
    def tokenize(text: str) -> list[int]:
        return encoder.tokenizer(text, add_special_tokens=False).input_ids

    context, head = context.strip(), head.strip()
    lead = ([encoder.bos_id] if encoder.bos_id is not None else []) + (tokenize(context) if context else [])
    return lead, (tokenize(f" {head}" if context else head) if head else [])


def left_padded(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id sequences left-padded to the longest: ids `(n, W)` long (`pad_id` before each sequence) and the
    attention mask `(n, W)` long (0 on padding); W = 0 when every sequence is empty."""
    width = max((len(s) for s in seqs), default=0)
    tokens = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            tokens[i, width - len(s):] = torch.tensor(list(s), dtype=torch.long)
            mask[i, width - len(s):] = 1
    return tokens, mask


class _Stop(Exception):
    """Raised by a block hook once the deepest state asked for is captured: the layers above it are not needed."""


def block_states(decoder: torch.nn.Module, blocks: Sequence[torch.nn.Module], layers: Sequence[int], **inputs
                  ) -> tuple[dict[int, torch.Tensor], object]:
    """Run `decoder(**inputs)` up to the deepest of `layers` (each in 1..len(blocks) - 1) and no further: the state
    after each layer `{layer: (B, L, H)}` (HF's `hidden_states[layer]`), and the cache passed in `inputs` (filled
    for the layers run)."""
    captured: dict[int, torch.Tensor] = {}
    deepest = max(layers)

    def keep(layer: int, output) -> None:
        captured[layer] = hidden_of(output)
        if layer == deepest:
            raise _Stop

    with contextlib.ExitStack() as hooks:
        for layer in layers:
            hooks.enter_context(on_output(blocks[layer - 1], lambda out, layer=layer: keep(layer, out)))
        try:
            decoder(**inputs)
        except _Stop:
            pass
    return captured, inputs.get("cache")


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
    # the tokens before each text's own, which are not averaged: BOS, then its context (`reading_ids`)
    lead, ids = [], []
    for i, text in enumerate(texts):
        before, own = reading_ids(encoder, text, contexts[i] if contexts is not None else "")
        lead.append(before)
        ids.append(before + own)
    out = {layer: np.zeros((len(texts), backbone.config.hidden_size), dtype=np.float32) for layer in layers}
    order = np.argsort([-len(i) for i in ids], kind="stable")
    decoder, blocks = decoder_blocks(backbone)
    # the blocks' own outputs are HF's hidden_states[1..n-1]: run no deeper than needed, and without the output
    # head (6x a block's work per token for SmolLM2's vocabulary); 0 (embeddings) and n (after the final norm) take
    # HF's hidden_states
    early = all(0 < layer < len(blocks) for layer in layers)
    with bare or contextlib.nullcontext():
        for start in progress(range(0, len(order), batch_size), "text states", unit="batch"):
            rows = order[start:start + batch_size]
            width = max(len(ids[i]) for i in rows)
            tokens = torch.full((len(rows), width), encoder.pad_id, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for j, i in enumerate(rows):
                tokens[j, :len(ids[i])] = torch.tensor(ids[i])
                mask[j, :len(ids[i])] = 1
            inputs = {"input_ids": tokens.to(device), "attention_mask": mask.to(device)}
            hidden = (block_states(decoder, blocks, layers, **inputs)[0] if early
                      else backbone(**inputs, output_hidden_states=True).hidden_states)
            keep = mask.clone()
            for j, i in enumerate(rows):
                keep[j, :len(lead[i])] = 0
            keep = keep.unsqueeze(-1).float().to(device)
            for layer in layers:
                pooled = (hidden[layer].float() * keep).sum(1) / keep.sum(1).clamp(min=1)
                out[layer][rows] = pooled.cpu().numpy()
    return out


@torch.inference_mode()
def mean_states_after_prefix(backbone: torch.nn.Module, encoder: TextEncoder, heads: Sequence[str],
                             tails: Sequence[Sequence[str]], layer: int, contexts: Sequence[str] | None = None,
                             bare: contextlib.AbstractContextManager | None = None, batch_size: int = 8
                             ) -> list[np.ndarray]:
    """Per group i, `(len(tails[i]), H)` float32: the mean state after `layer` of each text
    `full_text(heads[i], tail)` for `tail` in `tails[i]`, read after `contexts[i]` if given: `mean_states` of
    those texts, computed with `[BOS] context head` run once per group and each tail continuing from its KV cache
    (the Bayesian decoder's candidates share their sample's context and prompt). A text whose tokens do not start
    with its group's prefix tokens (a BPE merge across the boundary), a group with no prefix, and `layer` 0 or the
    last (HF's embeddings / final-norm states) go through `mean_states` whole; `batch_size` groups run at once."""
    from transformers import DynamicCache

    decoder, blocks = decoder_blocks(backbone)
    if contexts is not None and len(contexts) != len(heads):
        raise ValueError(f"{len(heads)} heads but {len(contexts)} contexts.")
    if len(tails) != len(heads):
        raise ValueError(f"{len(heads)} heads but {len(tails)} groups of tails.")
    out = [np.zeros((len(t), backbone.config.hidden_size), dtype=np.float32) for t in tails]
    whole: list[tuple[int, int]] = []  # (group, tail) computed by mean_states
    groups: list[tuple[int, list[int], int, list[tuple[int, list[int]]]]] = []  # group, prefix, own head tokens, tails
    for i, head in enumerate(heads):
        context = contexts[i].strip() if contexts is not None else ""
        lead, own_head = reading_ids(encoder, head, context)
        prefix = lead + own_head
        split = []
        for k, tail in enumerate(tails[i]):
            text = full_text(head, tail)
            ids = lead + reading_ids(encoder, text, context)[1]
            if own_head and 0 < layer < len(blocks) and ids[:len(prefix)] == prefix and len(ids) > len(prefix):
                split.append((k, ids[len(prefix):]))
            else:
                whole.append((i, k))
        if split:
            groups.append((i, prefix, len(own_head), split))
    device = next(backbone.parameters()).device
    with bare or contextlib.nullcontext():
        for start in progress(range(0, len(groups), batch_size), "candidate states", unit="batch"):
            chunk = groups[start:start + batch_size]
            # the prefixes, left-padded, once
            tokens, mask = left_padded([prefix for _, prefix, _, _ in chunk], encoder.pad_id)
            width = tokens.shape[1]
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            cache = DynamicCache(config=decoder.config)
            hidden, cache = block_states(decoder, blocks, [layer], input_ids=tokens.to(device),
                                          attention_mask=mask.to(device), position_ids=positions.to(device),
                                          cache=cache, use_cache=True)
            head_sums = torch.stack([hidden[layer][g, width - n_head:].float().sum(0)
                                     for g, (_, _, n_head, _) in enumerate(chunk)])
            # every tail continues its group's cache, right-padded
            rows = [(g, k, ids) for g, (_, _, _, split) in enumerate(chunk) for k, ids in split]
            length = max(len(ids) for _, _, ids in rows)
            index = torch.tensor([g for g, _, _ in rows])
            tail_tokens = torch.full((len(rows), length), encoder.pad_id, dtype=torch.long)
            tail_mask = torch.zeros((len(rows), length), dtype=torch.long)
            for r, (_, _, ids) in enumerate(rows):
                tail_tokens[r, :len(ids)] = torch.tensor(ids)
                tail_mask[r, :len(ids)] = 1
            cache.reorder_cache(index.to(device))
            tail_positions = mask.sum(-1)[index][:, None] + torch.arange(length)[None, :]
            states = block_states(decoder, blocks, [layer], input_ids=tail_tokens.to(device),
                                   attention_mask=torch.cat([mask[index], tail_mask], 1).to(device),
                                   position_ids=tail_positions.to(device), cache=cache, use_cache=True)[0][layer]
            sums = (states.float() * tail_mask[..., None].to(device)).sum(1) + head_sums[index.to(device)]
            counts = tail_mask.sum(1) + torch.tensor([chunk[g][2] for g, _, _ in rows])
            means = (sums / counts[:, None].to(device)).cpu().numpy()
            for r, (g, k, _) in enumerate(rows):
                out[chunk[g][0]][k] = means[r]
        if whole:  # inside the same `bare` context: a peft one cannot be entered twice
            states = mean_states(backbone, encoder, [full_text(heads[i], tails[i][k]) for i, k in whole], [layer],
                                 contexts=None if contexts is None else [contexts[i] for i, _ in whole])
            for (i, k), row in zip(whole, states[layer]):
                out[i][k] = row
    return out
