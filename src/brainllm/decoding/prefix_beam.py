"""Beam search and greedy decoding of a causal LM from a shared prefix's KV cache.

The same search as Hugging Face `generate` (transformers 5.x, `GenerationMixin._beam_search` and `_sample` with
`do_sample=False`) on left-padded `inputs_embeds`, with the settings brainllm decodes with (`SearchSettings`:
num_beams, repetition penalty, min/max new tokens, EOS, length penalty, `early_stopping=False`), so the output token
ids are HF's. What differs is the work:

* the prefix (brain tokens + prompt) runs through the LM ONCE per sample, and its cache is then copied into the
  sample's beams (HF expands the inputs into `num_beams` rows first and runs the prefix for every beam);
* a sample leaves the batch (its cache rows are dropped) as soon as its search is over: for beam search when no
  running beam can beat its finished ones any more (HF's early-stop heuristic), for greedy at its EOS (HF keeps
  every row to the end of the batch's longest sample);
* the per-step bookkeeping is a few tensor operations, without HF's per-call configuration work.

The repetition penalty covers every generated token. (HF's built-in `repetition_penalty` with left-padded
`inputs_embeds` exempts a sample's first k generated tokens, k = its number of left-pad positions, since it takes
the pad count of the prompt's mask as a prompt length in the generated ids; that makes a sample's output depend on
the batch it is in. `hf_generate_kwargs` gives HF the same processor without that offset, which is the reference
the tests compare with.)
"""

from __future__ import annotations

import contextlib
import inspect
import math
from dataclasses import dataclass
from typing import ContextManager

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LogitsProcessorList, RepetitionPenaltyLogitsProcessor

NEG = -1.0e9  # HF's score of an impossible beam


@dataclass(frozen=True)
class SearchSettings:
    """What a deterministic search needs (the HF `generate` arguments of the same names).

    max_new_tokens / min_new_tokens: bounds on the generated length (EOS is banned before min_new_tokens);
    eos_id: the token that ends a sequence; pad_id: filler HF writes after it;
    num_beams: 1 = greedy; repetition_penalty: HF's (1.0 = none), over the generated tokens;
    length_penalty: finished beam scores are divided by length ** length_penalty (HF's default 1.0).
    """

    max_new_tokens: int
    min_new_tokens: int
    eos_id: int
    pad_id: int
    num_beams: int = 1
    repetition_penalty: float = 1.0
    length_penalty: float = 1.0

    def process(self, scores: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
        """HF's logits processors for these settings, in HF's order and with its arithmetic, in place on `scores`
        `(R, V)` float32 (HF copies the whole tensor in each): the repetition penalty over the tokens `generated`
        so far `(R, t)`, then the EOS ban while t < min_new_tokens. Returns `scores`."""
        if self.repetition_penalty != 1.0 and generated.shape[1]:
            seen = scores.gather(1, generated)  # a token seen twice gets the same value twice
            scores.scatter_(1, generated, torch.where(seen < 0, seen * self.repetition_penalty,
                                                      seen / self.repetition_penalty))
        if generated.shape[1] < self.min_new_tokens:
            scores[:, self.eos_id] = -math.inf
        return scores

    def hf_generate_kwargs(self) -> dict:
        """Arguments for HF `generate(inputs_embeds=...)` that run the same search (the reference implementation)."""
        kwargs = {"max_new_tokens": self.max_new_tokens, "min_new_tokens": self.min_new_tokens,
                  "eos_token_id": self.eos_id, "pad_token_id": self.pad_id, "num_beams": self.num_beams,
                  "do_sample": False, "use_cache": True, "repetition_penalty": self.repetition_penalty}
        if self.num_beams > 1:
            kwargs.update(early_stopping=False, length_penalty=self.length_penalty)
        if self.repetition_penalty != 1.0:
            # takes the place of the processor HF would build, which exempts the first left-pad-count tokens
            kwargs["logits_processor"] = LogitsProcessorList([RepetitionPenaltyLogitsProcessor(
                float(self.repetition_penalty))])
        return kwargs


class CachedLM:
    """R rows of a causal LM continuing from a KV cache, one token per step.

    Holds the cache, the 2-D attention mask `(R, P + t)` (None when the prefix had no padding, as HF drops an
    all-ones mask) and the position id of each row's last token `(R,)`.
    """

    def __init__(self, lm: nn.Module, cache, mask: torch.Tensor | None, last_position: torch.Tensor):
        self.lm, self.cache, self.mask, self.last_position = lm, cache, mask, last_position
        self.extra = {"logits_to_keep": 1} if _supports_logits_to_keep(lm) else {}

    @classmethod
    def prefill(cls, lm: nn.Module, embeds: torch.Tensor, mask: torch.Tensor,
                context: ContextManager | None = None) -> tuple[torch.Tensor, "CachedLM"]:
        """Run left-padded prefixes `embeds` `(B, P, H)` with `mask` `(B, P)` once, as HF's prefill does (position
        ids = cumulative mask - 1, 0 on padding); `context` wraps that forward (e.g. a layer-L injection). Returns
        the next-token logits `(B, V)` float32 and the cached LM."""
        position_ids = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
        attention = None if bool(mask.all()) else mask
        with context or contextlib.nullcontext(), _contiguous_head_input(lm):
            out = lm(inputs_embeds=embeds, attention_mask=attention, position_ids=position_ids, use_cache=True,
                     **({"logits_to_keep": 1} if _supports_logits_to_keep(lm) else {}))
        return out.logits[:, -1].float(), cls(lm, out.cache, attention, position_ids[:, -1])

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per row `(R,)`; returns the next-token logits `(R, V)` float32."""
        self.last_position = self.last_position + 1
        if self.mask is not None:
            self.mask = torch.cat([self.mask, self.mask.new_ones(len(self.mask), 1)], dim=1)
        out = self.lm(input_ids=tokens[:, None], attention_mask=self.mask, position_ids=self.last_position[:, None],
                      cache=self.cache, use_cache=True, **self.extra)
        return out.logits[:, -1].float()

    def select(self, rows: torch.Tensor) -> None:
        """Keep rows `rows` `(R',)` long, in that order (a row may repeat: beams copying one another)."""
        self.cache.reorder_cache(rows)
        self.last_position = self.last_position[rows]
        if self.mask is not None:
            self.mask = self.mask[rows]


@contextlib.contextmanager
def _contiguous_head_input(lm: nn.Module):
    """A context in which the LM head is given a contiguous copy of its input. HF hands it the last position's
    slice `hidden[:, -1:, :]` of the prefix's states, a strided view; on a CPU in bfloat16 `linear` then expands
    the head's weight per row into a batched matmul (a `(B, H, V)` copy: 2 of the sampler's 9 s on SmolLM2-135M)
    instead of one matmul."""
    head = lm.get_output_embeddings() if hasattr(lm, "get_output_embeddings") else None
    handle = None if head is None else head.register_forward_pre_hook(
        lambda _module, args: (args[0].contiguous(), *args[1:]))
    try:
        yield
    finally:
        if handle is not None:
            handle.remove()


def _supports_logits_to_keep(lm: nn.Module) -> bool:
    target = lm.get_base_model() if hasattr(lm, "get_base_model") else lm  # a peft (LoRA) wrapper forwards it
    return "logits_to_keep" in inspect.signature(target.forward).parameters


@torch.inference_mode()
def greedy_search(lm: nn.Module, embeds: torch.Tensor, mask: torch.Tensor, settings: SearchSettings,
                  context: ContextManager | None = None) -> list[list[int]]:
    """Greedy decoding of left-padded prefixes `embeds` `(B, P, H)` (mask `(B, P)`): the new token ids of each
    sample, its EOS included when it produced one (HF's output up to there). A sample leaves the batch at EOS."""
    logits, lm_rows = CachedLM.prefill(lm, embeds, mask, context)
    tokens = torch.full((len(embeds), settings.max_new_tokens), settings.pad_id, dtype=torch.long,
                        device=embeds.device)
    live = torch.arange(len(embeds), device=embeds.device)  # original index of each row still decoding
    lengths = [settings.max_new_tokens] * len(embeds)
    for t in range(settings.max_new_tokens):
        if t > 0:
            logits = lm_rows.step(tokens[live, t - 1])
        nxt = settings.process(logits, tokens[live, :t]).argmax(-1)
        tokens[live, t] = nxt
        ended = nxt == settings.eos_id
        for i in live[ended].tolist():
            lengths[i] = t + 1
        if t + 1 == settings.max_new_tokens or bool(ended.all()):
            break
        if bool(ended.any()):
            keep = torch.nonzero(~ended).squeeze(1)
            lm_rows.select(keep)
            live = live[keep]
    return [row[:n] for row, n in zip(tokens.tolist(), lengths)]


@dataclass
class _Beams:
    """The beam-search state of A live samples with K beams each (HF's tensors of the same names).

    running `(A, K, N)` long: the running beams' tokens (N = max_new_tokens); running_scores `(A, K)`: their summed
    log-probabilities; finished `(A, K, N)` long, finished_scores `(A, K)` (length-penalised), finished_length
    `(A, K)` long and is_finished `(A, K)` bool: the best finished hypotheses so far; improvable `(A,)` bool:
    whether a running beam may still beat them (HF's `is_early_stop_heuristic_unsatisfied`); sample `(A,)` long:
    the index of each live sample in the batch.
    """

    running: torch.Tensor
    running_scores: torch.Tensor
    finished: torch.Tensor
    finished_scores: torch.Tensor
    finished_length: torch.Tensor
    is_finished: torch.Tensor
    improvable: torch.Tensor
    sample: torch.Tensor

    @classmethod
    def start(cls, batch: int, beams: int, settings: SearchSettings, device: torch.device) -> "_Beams":
        running = torch.full((batch, beams, settings.max_new_tokens), settings.pad_id, dtype=torch.long,
                             device=device)
        scores = torch.zeros(batch, beams, device=device)
        scores[:, 1:] = NEG  # only the first beam's tokens are candidates at step 0 (all beams are the same)
        return cls(running, scores, running.clone(), torch.full((batch, beams), NEG, device=device),
                   torch.zeros(batch, beams, dtype=torch.long, device=device),
                   torch.zeros(batch, beams, dtype=torch.bool, device=device),
                   torch.ones(batch, dtype=torch.bool, device=device), torch.arange(batch, device=device))

    def keep(self, rows: torch.Tensor) -> "_Beams":
        """The state of the live samples `rows` `(A',)` only."""
        return _Beams(*(getattr(self, f)[rows] for f in self.__dataclass_fields__))


def _gather(tensor: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """`tensor` `(A, K, ...)` at beams `index` `(A, K')` -> `(A, K', ...)` (HF's `_gather_beams`)."""
    while index.dim() < tensor.dim():
        index = index.unsqueeze(-1)
    return torch.take_along_dim(tensor, index, dim=1)


def _beam_step(state: _Beams, log_probs: torch.Tensor, t: int, settings: SearchSettings) -> torch.Tensor:
    """One step of HF's beam search on `state` (updated in place) from the processed log-probabilities
    `(A * K, V)` of step `t` (0-based). Returns the beam each new running beam continues `(A, K)` long."""
    a, k = state.running_scores.shape
    vocab = log_probs.shape[-1]
    n = settings.max_new_tokens
    scores = (log_probs.view(a, k, vocab) + state.running_scores[:, :, None]).view(a, k * vocab)
    # HF keeps 2K candidates (K per EOS token + K), so K of them survive even when K end here
    top_scores, top_index = torch.topk(scores, k=2 * k)
    source = top_index // vocab
    candidates = _gather(state.running, source)
    candidates[:, :, t] = top_index % vocab
    ends = (candidates[:, :, t] == settings.eos_id) | (t + 1 >= n)
    # the next running beams: the best K candidates that did not end
    alive_scores = top_scores + ends.float() * NEG
    nxt = torch.topk(alive_scores, k=k)[1]
    state.running = _gather(candidates, nxt)
    state.running_scores = _gather(alive_scores, nxt)
    # the finished hypotheses: the best K of the old ones and of the top-K candidates that just ended
    just_ended = ends.clone()
    just_ended[:, k:] = False
    penalised = top_scores / ((t + 1) ** settings.length_penalty)
    penalised = penalised + (~state.improvable[:, None]).float() * NEG
    penalised = penalised + (~just_ended) * NEG
    merged_scores = torch.cat([state.finished_scores, penalised], dim=1)
    best = torch.topk(merged_scores, k=k)[1]
    state.finished = _gather(torch.cat([state.finished, candidates], dim=1), best)
    state.finished_scores = _gather(merged_scores, best)
    state.finished_length = _gather(torch.cat([state.finished_length, torch.full_like(ends, t + 1, dtype=torch.long)],
                                              dim=1), best)
    state.is_finished = _gather(torch.cat([state.is_finished, just_ended], dim=1), best)
    # HF's early-stop heuristic (early_stopping=False): can the best running beam, at its current length, still
    # beat the worst finished hypothesis?
    best_running = state.running_scores[:, :1] / ((t + 1) ** settings.length_penalty)
    worst_finished = torch.where(state.is_finished, state.finished_scores.min(dim=1, keepdim=True)[0], NEG)
    state.improvable = state.improvable & (best_running > worst_finished).any(dim=1)
    return _gather(source, nxt)


@torch.inference_mode()
def beam_search(lm: nn.Module, embeds: torch.Tensor, mask: torch.Tensor, settings: SearchSettings,
                context: ContextManager | None = None) -> list[list[int]]:
    """HF's beam search (`early_stopping=False`) of left-padded prefixes `embeds` `(B, P, H)` (mask `(B, P)`), the
    prefix run once per sample: the best hypothesis's new token ids per sample, its EOS included when it has one
    (HF's output up to there). `context` wraps the prefix's forward. A sample leaves the batch when its search is
    over."""
    k = settings.num_beams
    logits, lm_rows = CachedLM.prefill(lm, embeds, mask, context)
    logits = logits.repeat_interleave(k, 0)  # every beam of a sample starts from the same prefix
    lm_rows.select(torch.arange(len(embeds), device=embeds.device).repeat_interleave(k))
    state = _Beams.start(len(embeds), k, settings, embeds.device)
    out: list[list[int]] = [[] for _ in range(len(embeds))]
    for t in range(settings.max_new_tokens):
        if t > 0:
            logits = lm_rows.step(state.running[:, :, t - 1].reshape(-1))
        a = len(state.sample)
        log_probs = settings.process(F.log_softmax(logits, dim=-1), state.running[:, :, :t].reshape(a * k, t))
        source = _beam_step(state, log_probs, t, settings)
        done = ~state.improvable if t + 1 < settings.max_new_tokens else torch.ones_like(state.improvable)
        for i in torch.nonzero(done).squeeze(1).tolist():
            out[int(state.sample[i])] = state.finished[i, 0, : int(state.finished_length[i, 0])].tolist()
        if bool(done.all()):
            break
        keep = torch.nonzero(~done).squeeze(1)
        # reorder each kept sample's cache rows to its new beams' origins, and drop the finished samples' rows
        lm_rows.select((keep[:, None] * k + source[keep]).reshape(-1))
        state = state.keep(keep)
    return out
