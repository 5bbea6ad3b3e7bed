"""Tokenisation of samples and assembly of batches with dynamic padding.

A sequence is `[BOS if the tokenizer uses one] <brain> v_1 .. v_T </brain> prompt continuation EOS`. The collator
does not build embeddings (the model does); it builds index tensors saying what goes where, so the model can mix
token embeddings, adapter outputs and the two boundary vectors in one vectorised step.

Training and teacher-forced scoring pad on the right (positions 0..L-1 are then the real tokens' positions);
generation pads on the left so every sequence ends where decoding starts (HF derives position ids from the mask).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch

from ..config import PREDICTION_CONDITIONS as CONDITIONS, WARMUP_TARGETS
from ..data.dataset import BrainTextDataset, Sample
from ..errors import DatasetError, check_choice

log = logging.getLogger(__name__)

# values of Batch.kind
PAD, TOKEN, BRAIN, OPEN, CLOSE = 0, 1, 2, 3, 4


@dataclass(frozen=True)
class EncodedSample:
    """A sample with its text tokenised. `frame_rows` index the dataset's frame array (T rows)."""

    id: str
    stimulus: str
    prompt_ids: tuple[int, ...]
    continuation_ids: tuple[int, ...]
    frame_rows: tuple[int, ...]
    frames_from: str | None = None  # set when another sample's frames were swapped in (permuted control)


class TextEncoder:
    """Tokenise prompt and continuation so that the continuation's tokens are exactly those it has inside the
    full text `prompt + " " + continuation` (byte-level BPE tokenisers merge the leading space into the first
    word; tokenising the continuation alone without it gives different ids).

    Prompts longer than `max_prompt_tokens` keep their LAST tokens (the words nearest the continuation; the
    authors' code kept the first ones). Continuations are cut to `max_continuation_tokens`.
    """

    def __init__(self, tokenizer, max_prompt_tokens: int = 32, max_continuation_tokens: int = 32):
        self.tokenizer = tokenizer
        self.max_prompt_tokens = max_prompt_tokens
        self.max_continuation_tokens = max_continuation_tokens
        bos = tokenizer.bos_token_id
        probe = tokenizer("a", add_special_tokens=True).input_ids
        self.bos_id: int | None = bos if bos is not None and probe and probe[0] == bos else None
        self.eos_id: int = tokenizer.eos_token_id
        if self.eos_id is None:
            raise DatasetError("The tokenizer has no EOS token; BrainLLM needs one to end continuations.")
        self.pad_id: int = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id
        self.truncated = {"prompt": 0, "continuation": 0}

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def text_ids(self, text: str) -> list[int]:
        """Token ids of a text on its own (no BOS, no truncation), as `split_ids` tokenises a prompt."""
        return self._ids(text.strip())

    def split_ids(self, prompt: str, continuation: str) -> tuple[list[int], list[int]]:
        """Token ids of the prompt and of the continuation as it appears after the prompt."""
        prompt = prompt.strip()
        continuation = continuation.strip()
        if not continuation:
            raise DatasetError("Empty continuation: there is nothing to reconstruct.")
        if not prompt:
            return [], self._ids(continuation)
        prompt_ids = self._ids(prompt)
        full = self._ids(prompt + " " + continuation)
        if full[: len(prompt_ids)] == prompt_ids:
            return prompt_ids, full[len(prompt_ids):]
        # tokenisers whose tokens can straddle the boundary: split the full text by character offsets
        enc = self.tokenizer(prompt + " " + continuation, add_special_tokens=False, return_offsets_mapping=True)
        cut = next((i for i, (start, _) in enumerate(enc["offset_mapping"]) if start >= len(prompt)), len(full))
        return list(enc.input_ids[:cut]), list(enc.input_ids[cut:])

    def encode(self, sample: Sample, frame_rows: Sequence[int] | None = None) -> EncodedSample:
        prompt_ids, cont_ids = self.split_ids(sample.prompt, sample.continuation)
        if len(prompt_ids) > self.max_prompt_tokens:
            prompt_ids = prompt_ids[-self.max_prompt_tokens:]
            self.truncated["prompt"] += 1
        if len(cont_ids) > self.max_continuation_tokens:
            cont_ids = cont_ids[: self.max_continuation_tokens]
            self.truncated["continuation"] += 1
        rows = tuple(sample.frames if frame_rows is None else frame_rows)
        return EncodedSample(sample.id, sample.stimulus, tuple(prompt_ids), tuple(cont_ids), rows)

    def encode_all(self, dataset: BrainTextDataset, ids: Sequence[str]) -> list[EncodedSample]:
        out = [self.encode(dataset.by_id(i)) for i in ids]
        if any(self.truncated.values()):
            log.info("Truncated %d prompts (kept the last %d tokens) and %d continuations (kept %d tokens)",
                     self.truncated["prompt"], self.max_prompt_tokens, self.truncated["continuation"],
                     self.max_continuation_tokens)
        return out

    def decode(self, ids: Sequence[int]) -> str:
        """Text of generated ids, cut at the first EOS, special tokens (pad/eos strings) removed."""
        ids = list(ids)
        if self.eos_id in ids:
            ids = ids[: ids.index(self.eos_id)]
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()


def derangement(samples: Sequence[EncodedSample], seed: int) -> list[int]:
    """A permutation `perm` with, for every i, a different stimulus at perm[i] than at i (so never i itself).

    Samples of one stimulus share brain frames (the two samples of a Pereira sentence share its image), so
    permuting within a stimulus would hand a sample its own frames back. Requires >= 2 stimuli, and no stimulus
    holding more than half the samples.
    """
    n = len(samples)
    stim = np.array([s.stimulus for s in samples])
    counts = np.unique(stim, return_counts=True)[1]
    if n < 2 or counts.max() > n - counts.max():
        raise DatasetError("Cannot permute brain frames across stimuli: need >= 2 stimuli, none with over half the "
                           "samples.")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    for _ in range(100 * n):
        bad = np.flatnonzero(stim[perm] == stim)
        if len(bad) == 0:
            return perm.tolist()
        i = bad[0]
        j = int(rng.integers(n))
        if stim[perm[j]] != stim[i] and stim[perm[i]] != stim[j]:
            perm[i], perm[j] = perm[j], perm[i]
    raise DatasetError("Could not find a permutation of brain frames across stimuli.")  # pragma: no cover


def permute_frames(samples: Sequence[EncodedSample], seed: int) -> list[EncodedSample]:
    """The PerBrainLLM control: each sample gets the frames of a sample from another stimulus."""
    perm = derangement(samples, seed)
    return [replace(s, frame_rows=samples[j].frame_rows, frames_from=samples[j].id) for s, j in zip(samples, perm)]


@dataclass
class Batch:
    """Index tensors for one batch (B sequences of length L; T_max frames of D features).

    token_ids `(B, L)` long: token ids where kind == TOKEN (pad id elsewhere);
    kind `(B, L)` long: PAD / TOKEN / BRAIN / OPEN / CLOSE per position;
    brain_pos `(B, L)` long: which adapter output (frame t's j-th token: t * k + j) a BRAIN position takes (0
    elsewhere);
    attention_mask `(B, L)` long; frames `(B, T_max, D)` float32; frame_mask `(B, T_max)` bool;
    target_batch, target_pos, target_ids `(N,)` long: the logits at (target_batch, target_pos) must predict
    target_ids (continuation tokens and EOS), empty when the batch is for generation;
    warmup_ids `(B, P)` long and warmup_mask `(B, P)` bool: the text whose mean embedding the warm-up targets;
    group `(B,)` long: which stimulus each sample shows, numbered within the batch (the auxiliary losses contrast
    a sample only with samples of other stimuli).
    """

    ids: list[str]
    token_ids: torch.Tensor
    kind: torch.Tensor
    brain_pos: torch.Tensor
    attention_mask: torch.Tensor
    frames: torch.Tensor
    frame_mask: torch.Tensor
    target_batch: torch.Tensor
    target_pos: torch.Tensor
    target_ids: torch.Tensor
    warmup_ids: torch.Tensor
    warmup_mask: torch.Tensor
    group: torch.Tensor

    def to(self, device) -> "Batch":
        return Batch(self.ids, *(t.to(device) for t in (
            self.token_ids, self.kind, self.brain_pos, self.attention_mask, self.frames, self.frame_mask,
            self.target_batch, self.target_pos, self.target_ids, self.warmup_ids, self.warmup_mask, self.group)))

    def select(self, rows: torch.Tensor) -> "Batch":
        """The sub-batch of samples `rows` `(R,)` long, in that order (targets re-indexed)."""
        new_index = torch.full((len(self),), -1, dtype=torch.long, device=rows.device)
        new_index[rows] = torch.arange(len(rows), device=rows.device)
        keep = new_index[self.target_batch] >= 0
        order = torch.argsort(new_index[self.target_batch][keep], stable=True)
        pick = lambda t: t[keep][order]  # noqa: E731  targets grouped by their new sample, in their old order
        return Batch([self.ids[i] for i in rows.tolist()], self.token_ids[rows], self.kind[rows], self.brain_pos[rows],
                     self.attention_mask[rows], self.frames[rows], self.frame_mask[rows],
                     new_index[pick(self.target_batch)], pick(self.target_pos), pick(self.target_ids),
                     self.warmup_ids[rows], self.warmup_mask[rows], self.group[rows])

    def __len__(self) -> int:
        return len(self.ids)


class Collator:
    """Turn a list of EncodedSamples into a Batch.

    Args:
        frames: the dataset's `(n_frames, D)` frame array (memory-mapped is fine).
        encoder: the TextEncoder (for BOS/EOS/pad ids).
        condition: `brain`/`permuted` (frames + prompt), `no_brain` (prompt only), `no_text` (frames only).
        for_generation: stop after the prompt and pad on the left; otherwise append continuation + EOS as targets
            and pad on the right.
        warmup_target: the text the warm-up regresses onto: `prompt` (the paper), `text` (prompt + continuation,
            all the text perceived around the frames) or `continuation`. Without a prompt (`no_text`, or an empty
            prompt) every choice falls back to the continuation.
        tokens_per_frame: soft tokens per frame, the adapter's `tokens_per_frame` (k BRAIN positions per frame).
    """

    def __init__(self, frames: np.ndarray, encoder: TextEncoder, condition: str = "brain",
                 for_generation: bool = False, warmup_target: str = "prompt", tokens_per_frame: int = 1):
        check_choice("condition", condition, CONDITIONS)
        check_choice("training.warmup_target", warmup_target, WARMUP_TARGETS)
        self.frames, self.encoder, self.condition, self.for_generation = frames, encoder, condition, for_generation
        self.warmup_target = warmup_target
        self.tokens_per_frame = tokens_per_frame

    def warmup_text(self, s: EncodedSample) -> tuple[int, ...]:
        """The token ids of the text the warm-up (and the closed-form starts) target for sample `s`."""
        if not s.prompt_ids or self.condition == "no_text" or self.warmup_target == "continuation":
            return s.continuation_ids
        return s.prompt_ids + s.continuation_ids if self.warmup_target == "text" else s.prompt_ids

    def _layout(self, s: EncodedSample) -> tuple[list[int], list[int], list[int], int]:
        """(kinds, token ids, brain positions, index where the continuation starts) of one sequence."""
        kinds, toks, bpos = [], [], []

        def add(kind: int, tok: int = 0, t: int = 0) -> None:
            kinds.append(kind), toks.append(tok), bpos.append(t)

        if self.encoder.bos_id is not None:
            add(TOKEN, self.encoder.bos_id)
        if self.condition != "no_brain":
            add(OPEN)
            for t in range(len(s.frame_rows) * self.tokens_per_frame):  # t indexes the adapter's (T * k) outputs
                add(BRAIN, t=t)
            add(CLOSE)
        if self.condition != "no_text":
            for tok in s.prompt_ids:
                add(TOKEN, tok)
        if not kinds:  # bare LM, empty prompt, no BOS: give the first continuation token something to follow
            add(TOKEN, self.encoder.eos_id)
        start = len(kinds)
        if not self.for_generation:
            for tok in (*s.continuation_ids, self.encoder.eos_id):
                add(TOKEN, tok)
        return kinds, toks, bpos, start

    def length(self, sample: EncodedSample) -> int:
        """The number of positions `sample` takes in this collator's batches (before padding)."""
        return len(self._layout(sample)[0])

    def __call__(self, samples: Sequence[EncodedSample]) -> Batch:
        layouts = [self._layout(s) for s in samples]
        b, length = len(samples), max(len(k) for k, *_ in layouts)
        kind = torch.zeros(b, length, dtype=torch.long)
        token_ids = torch.full((b, length), self.encoder.pad_id, dtype=torch.long)
        brain_pos = torch.zeros(b, length, dtype=torch.long)
        tb, tp, ti = [], [], []
        for i, (kinds, toks, bpos, start) in enumerate(layouts):
            n = len(kinds)
            sl = slice(length - n, length) if self.for_generation else slice(0, n)
            kind[i, sl] = torch.tensor(kinds)
            token_ids[i, sl] = torch.tensor(toks)
            brain_pos[i, sl] = torch.tensor(bpos)
            if not self.for_generation:
                for pos in range(start, n):  # logits at pos-1 predict the token at pos
                    tb.append(i), tp.append(pos - 1), ti.append(toks[pos])
        t_max = max(len(s.frame_rows) for s in samples)
        dim = self.frames.shape[1]
        frames = torch.zeros(b, t_max, dim)
        frame_mask = torch.zeros(b, t_max, dtype=torch.bool)
        for i, s in enumerate(samples):
            frames[i, : len(s.frame_rows)] = torch.from_numpy(np.asarray(self.frames[list(s.frame_rows)], dtype=np.float32))
            frame_mask[i, : len(s.frame_rows)] = True
        warm = [self.warmup_text(s) for s in samples]
        p_max = max(len(w) for w in warm)
        warmup_ids = torch.full((b, p_max), self.encoder.pad_id, dtype=torch.long)
        warmup_mask = torch.zeros(b, p_max, dtype=torch.bool)
        for i, w in enumerate(warm):
            warmup_ids[i, : len(w)] = torch.tensor(w)
            warmup_mask[i, : len(w)] = True
        as_long = lambda x: torch.tensor(x, dtype=torch.long)  # noqa: E731
        stimuli = {st: j for j, st in enumerate(dict.fromkeys(s.stimulus for s in samples))}
        return Batch([s.id for s in samples], token_ids, kind, brain_pos, (kind != PAD).long(), frames, frame_mask,
                     as_long(tb), as_long(tp), as_long(ti), warmup_ids, warmup_mask,
                     as_long([stimuli[s.stimulus] for s in samples]))
