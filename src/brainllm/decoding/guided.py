"""Encoding-guided beam search (beyond the paper): BrainLLM proposes each next token, the encoding model of the
frames steers which partial texts survive.

Re-ranking finished samples (`bayes`) can only pick among what the LM happened to draw; in the sentence task the
draws rarely hold the topic the frames point to. Here, as Tang et al. 2023 and Antonello et al. 2024 decode, every
partial text is scored while it grows:

    score(c_1..t) = log p_LM(c_1..t | prompt, frames) + λ · log p(frames | prompt + c_1..t)

At each step every running beam tries the LM's `expansions` most probable next tokens (within the nucleus
`top_p`), and the `beams` best-scoring partial texts of each sample go on. A beam that draws EOS is finished with
its whole text's score. The encoding model reads the bare backbone's mean state after one layer of the text
(`encoding_model`): each beam carries that backbone's running sum of layer-L states, continued token by token from
its own KV cache, which runs the bare backbone's first L blocks only (`BareStates`), so a step costs the candidates'
L blocks rather than a pass over every candidate's whole text.

A sample's search stops when it holds `beams` finished texts and no running beam scores above the worst of them
(the log p_LM part only falls as a text grows, the encoding part need not: like HF's `early_stopping=False`, a
heuristic), or at `max_new_tokens` (the running beams then end with log p(EOS)). Its finished texts, best first,
join the Bayesian decoder's candidates (`candidates.Candidates.extended`), which are then scored whole as every
candidate is.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ContextManager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import GenerationConfig
from ..model import Collator, EncodedSample
from ..model.injection import decoder_blocks
from ..model.precision import cast_parameters
from ..model.text_features import block_states, full_text, left_padded, reading_ids
from ..progress import progress
from ..runs import LoadedRun
from .candidates import sampling_dtype
from .encoding_model import SentenceScorer, positions_of
from .prefix_beam import CachedLM
from .sentences import length_sorted_batches

#: scores partial texts: `(prefix index per row (R,), new token ids per row, mean layer-L state per row (R, H) or
#: None)` -> `(R,)` log p(frames of that prefix | its prompt + the text so far)
PartialScore = Callable[[np.ndarray, Sequence[Sequence[int]], "np.ndarray | None"], np.ndarray]


@dataclass(frozen=True)
class GuidedSettings:
    """`beams` partial texts kept per sample, each trying its `expansions` most probable next tokens within the
    nucleus `top_p`; `weight` λ on the encoding model's log-likelihood; `min_new_tokens`..`max_new_tokens` new
    tokens (EOS banned before the minimum)."""

    beams: int
    expansions: int
    weight: float
    max_new_tokens: int
    min_new_tokens: int
    eos_id: int
    top_p: float = 0.9

    def __post_init__(self) -> None:
        if self.beams < 1 or self.expansions < 1 or self.max_new_tokens < 1:
            raise ValueError(f"beams, expansions and max_new_tokens must be >= 1, got {self.beams}, "
                             f"{self.expansions}, {self.max_new_tokens}.")
        if not 0.0 < self.top_p <= 1.0 or self.weight < 0:
            raise ValueError(f"top_p must lie in (0, 1] and weight be >= 0, got {self.top_p}, {self.weight}.")


@dataclass
class Hypothesis:
    """A finished text of the search: its new token ids (EOS not included), summed log p_LM(ids + EOS | prefix)
    and its search score (that + λ · log p(frames | text))."""

    ids: list[int]
    lm: float
    score: float


class BareStates:
    """R rows of the bare backbone's first `layer` blocks continuing from a KV cache, each row's running sum of its
    layer-`layer` states over its own tokens (those after its lead: BOS and any context).

    `bare` gives the context in which the backbone is the pretrained LM alone (`BrainLLM.bare_backbone`), entered
    for each forward only, so the adapter-conditioned LM can run between two steps."""

    def __init__(self, backbone: nn.Module, layer: int, bare: Callable[[], ContextManager] | None = None):
        self.decoder, self.blocks = decoder_blocks(backbone)
        if not 0 < layer <= len(self.blocks):
            raise ValueError(f"the running states need a block's output: layer in 1..{len(self.blocks)}, got {layer}.")
        # HF's state after the last layer is the final norm's output (Llama `norm`, GPT-2 `ln_f`)
        self.norm = (getattr(self.decoder, "norm", None) or self.decoder.ln_f) if layer == len(self.blocks) else None
        self.layer, self.bare = layer, bare or contextlib.nullcontext
        self.device = next(backbone.parameters()).device
        self.cache = self.mask = self.last_position = self.sums = self.counts = None

    def _run(self, **inputs) -> torch.Tensor:
        with self.bare():
            states, self.cache = block_states(self.decoder, self.blocks, [self.layer], cache=self.cache,
                                              use_cache=True, **inputs)
            state = states[self.layer] if self.norm is None else self.norm(states[self.layer])
        return state.float()

    @torch.inference_mode()
    def prefill(self, prefixes: Sequence[Sequence[int]], own: Sequence[int], pad_id: int) -> None:
        """Run each prefix's token ids once, left-padded: the last `own[i]` tokens of prefix i are its own (the
        prompt's; the lead before them is not summed)."""
        from transformers import DynamicCache

        tokens, mask = left_padded(prefixes, pad_id)
        width = tokens.shape[1]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        self.cache = DynamicCache(config=self.decoder.config)
        self.last_position = (mask.sum(1) - 1).to(self.device)  # -1 for an empty prefix: its first token is at 0
        self.mask, self.sums = mask.to(self.device), torch.zeros(len(prefixes), self.decoder.config.hidden_size,
                                                                  device=self.device)
        self.counts = torch.zeros(len(prefixes), dtype=torch.long, device=self.device)
        if not width:  # no BOS, no context, no prompt (the sentence task with a tokenizer that adds no BOS)
            return
        states = self._run(input_ids=tokens.to(self.device), attention_mask=mask.to(self.device),
                           position_ids=positions.to(self.device))
        keep = torch.zeros_like(mask)
        for i, n in enumerate(own):
            if n:
                keep[i, width - n:] = 1
        self.sums = (states * keep[..., None].to(self.device)).sum(1)
        self.counts = keep.sum(1).to(self.device)

    @torch.inference_mode()
    def step(self, tokens: torch.Tensor) -> None:
        """Feed one token per row `(R,)` and add its layer-L state to the row's sum."""
        self.last_position = self.last_position + 1
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(self.mask), 1)], dim=1)
        states = self._run(input_ids=tokens[:, None].to(self.device), attention_mask=self.mask,
                           position_ids=self.last_position[:, None])
        self.sums = self.sums + states[:, -1]
        self.counts = self.counts + 1

    def select(self, rows: torch.Tensor) -> None:
        """Keep rows `rows` `(R',)` long, in that order (a row may repeat)."""
        self.cache.reorder_cache(rows)
        for name in ("mask", "last_position", "sums", "counts"):
            setattr(self, name, getattr(self, name)[rows])

    def means(self) -> np.ndarray:
        """`(R, H)` float32 the mean state of each row's own tokens (zeros for a row with none yet)."""
        return (self.sums / self.counts.clamp(min=1)[:, None]).cpu().numpy()


def _nucleus_top(log_probs: torch.Tensor, k: int, top_p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's `k` most probable tokens `(R, k)` and their log-probabilities, -inf where a token lies outside
    the row's nucleus (the smallest set of most probable tokens whose mass reaches `top_p`; the first always in)."""
    top, index = log_probs.topk(k, dim=-1)
    before = top.exp().cumsum(-1) - top.exp()
    return top.masked_fill(before >= top_p, -math.inf), index


@torch.inference_mode()
def guided_search(lm: nn.Module, embeds: torch.Tensor, mask: torch.Tensor, settings: GuidedSettings,
                  score: PartialScore, states: BareStates | None = None,
                  context: ContextManager | None = None) -> list[list[Hypothesis]]:
    """The encoding-guided beam search (module docstring) of the left-padded prefixes `embeds` `(B, P, H)` (mask
    `(B, P)`) of the adapter-conditioned `lm`; `context` wraps the prefix's forward (a layer-L injection). `states`,
    prefilled with the same B prefixes' bare text (`BareStates.prefill`), carries the running layer-L sums `score`
    reads; None when `score` reads no state (the length/position model). Returns each prefix's finished texts,
    best score first (at most `settings.beams`)."""
    n_prefix, k, width = len(embeds), settings.expansions, settings.beams
    logits, rows = CachedLM.prefill(lm, embeds, mask, context)
    owner = np.arange(n_prefix)              # the prefix of each running row
    ids: list[list[int]] = [[] for _ in range(n_prefix)]
    lm_sum = torch.zeros(n_prefix, dtype=torch.float64)
    finished: list[list[Hypothesis]] = [[] for _ in range(n_prefix)]
    for t in range(settings.max_new_tokens):
        if t > 0:
            logits = rows.step(torch.tensor([seq[-1] for seq in ids], device=logits.device))
        log_probs = F.log_softmax(logits, dim=-1)
        proposal = log_probs.clone()
        if t < settings.min_new_tokens:
            proposal[:, settings.eos_id] = -math.inf
        top_lp, top_tok = _nucleus_top(proposal, min(k, proposal.shape[-1]), settings.top_p)
        top_lp, top_tok = top_lp.double().cpu(), top_tok.cpu()
        # every (row, token) in its row's nucleus is a candidate; an EOS one finishes its row's text as it is
        parent, slot = torch.nonzero(torch.isfinite(top_lp), as_tuple=True)
        token = top_tok[parent, slot]
        cand_lm = lm_sum[parent] + top_lp[parent, slot]
        ends = token == settings.eos_id
        going = torch.nonzero(~ends).squeeze(1)
        going_parent = parent[going]
        # a finished text scores its own (unchanged) text: its row's state before this step
        ended_rows = parent[ends].numpy()
        before = None if states is None or not len(ended_rows) else states.means()[ended_rows]
        if states is not None and len(going):  # (none going: every candidate ended, the search stops below)
            states.select(going_parent.to(states.device))
            states.step(token[going])
        cand_ids = [ids[p] + [int(tok)] for p, tok in zip(going_parent.tolist(), token[going].tolist())]
        going_owner = owner[going_parent.numpy()]
        enc_going = (score(going_owner, cand_ids, None if states is None else states.means())
                     if len(going) else np.zeros(0))
        enc_ended = score(owner[ended_rows], [ids[p] for p in ended_rows], before) if len(ended_rows) else []
        for p, lp, enc in zip(ended_rows, cand_lm[ends].numpy(), enc_ended):
            finished[owner[p]].append(Hypothesis(list(ids[p]), float(lp), float(lp + settings.weight * enc)))
        going_score = cand_lm[going].numpy() + settings.weight * enc_going
        chosen = _kept(going_owner, going_score, finished, width)
        next_ids = [cand_ids[j] for j in chosen]
        next_lm = [float(cand_lm[going[j]]) for j in chosen]
        if not chosen or t + 1 == settings.max_new_tokens:
            last = chosen if t + 1 == settings.max_new_tokens else []
            if last:  # stopped by the length limit: the text's total also counts EOS after its last token
                rows.select(going_parent[last].to(logits.device))
                eos = F.log_softmax(rows.step(torch.tensor([seq[-1] for seq in next_ids], device=logits.device)),
                                    dim=-1)[:, settings.eos_id].double().cpu().numpy()
                for j, seq, lp, extra in zip(last, next_ids, next_lm, eos):
                    b = int(going_owner[j])
                    finished[b].append(Hypothesis(seq, lp + float(extra),
                                                  lp + float(extra) + settings.weight * float(enc_going[j])))
            break
        chosen_t = torch.tensor(chosen)
        rows.select(going_parent[chosen_t].to(logits.device))
        if states is not None:
            states.select(chosen_t.to(states.device))
        owner = going_owner[chosen]
        ids, lm_sum = next_ids, torch.tensor(next_lm, dtype=torch.float64)
    return [sorted(h, key=lambda x: -x.score)[:width] for h in finished]


def _kept(owners: np.ndarray, scores: np.ndarray, finished: list[list[Hypothesis]], width: int) -> list[int]:
    """Which of this step's going candidates (their prefixes `owners` `(C,)`, search `scores` `(C,)`) run on: the
    best `width` of each prefix, unless it holds `width` finished texts and none of its candidates beats the worst
    of those (its search is over)."""
    chosen: list[int] = []
    for b in np.unique(owners):
        mine = np.nonzero(owners == b)[0]
        best = mine[np.argsort(-scores[mine], kind="stable")[:width]]
        done = sorted((h.score for h in finished[b]), reverse=True)
        if len(done) < width or scores[best[0]] > done[width - 1]:
            chosen.extend(best.tolist())
    return chosen


def guided_proposals(run: LoadedRun, samples: Sequence[EncodedSample], layout: str, cfg: GenerationConfig,
                     scorer: SentenceScorer, desc: str = "guided") -> tuple[list[list[list[int]]], list[np.ndarray]]:
    """The encoding-guided search of each sample under the frames it is given (a control's permuted frames), by
    `scorer` (the length/position model for the nuisance control), with `cfg.guided_beams` beams each trying as
    many tokens, λ `cfg.encoding_weight` and nucleus `cfg.candidate_top_p`, in `candidates.sampling_dtype`.
    Returns per sample its finished texts' token ids (best first) and `(n,)` their summed log p_LM(ids + EOS)."""
    settings = GuidedSettings(beams=cfg.guided_beams, expansions=cfg.guided_beams, weight=cfg.encoding_weight,
                              max_new_tokens=cfg.max_new_tokens, min_new_tokens=cfg.min_new_tokens,
                              eos_id=run.encoder.eos_id, top_p=cfg.candidate_top_p)
    collate = Collator(run.dataset.frames, run.encoder, layout, for_generation=True,
                       tokens_per_frame=run.model.adapter.tokens_per_frame)
    prompts = [run.dataset.by_id(s.id).prompt for s in samples]
    positions, frames, contexts = positions_of(run, samples), scorer.frames(samples), scorer.contexts(samples)
    layer = scorer.choice.layer
    device = run.model.boundary.device
    ids: list[list[list[int]]] = [[] for _ in samples]
    lm: list[np.ndarray] = [np.zeros(0) for _ in samples]
    with cast_parameters(run.model.backbone, sampling_dtype(run, cfg)):
        batches = length_sorted_batches([collate.length(s) for s in samples], cfg.batch_size)
        for rows in progress(batches, f"{desc}/search", unit="batch"):
            batch = collate([samples[j] for j in rows]).to(device)
            embeds, context = run.model.generation_inputs(batch)
            states = None
            if layer is not None:
                states = BareStates(run.model.backbone, layer, run.model.bare_backbone)
                reading = [reading_ids(run.encoder, prompts[j], contexts[j] if contexts else "") for j in rows]
                states.prefill([lead + own for lead, own in reading], [len(own) for _, own in reading],
                               run.encoder.pad_id)

            def score(owner: np.ndarray, new_ids: Sequence[Sequence[int]], means: np.ndarray | None,
                      rows: list[int] = rows) -> np.ndarray:
                which = np.asarray(rows)[owner]
                texts = [full_text(prompts[j], run.encoder.decode(seq)) for j, seq in zip(which, new_ids)]
                return scorer.states_log_likelihood(means, texts, positions[which], frames[which])

            found = guided_search(run.model.backbone, embeds, batch.attention_mask, settings, score, states, context)
            for j, hyps in zip(rows, found):
                ids[j] = [h.ids for h in hyps]
                lm[j] = np.array([h.lm for h in hyps])
    return ids, lm
