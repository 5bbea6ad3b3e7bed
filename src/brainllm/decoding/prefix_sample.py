"""Nucleus sampling of many continuations of one prefix from the prefix's KV cache, each continuation's
log-probability under the LM accumulated while it is drawn.

The Bayesian decoder needs, per sample, n draws from BrainLLM and log p_LM of each. HF `generate(
num_return_sequences=n)` expands the inputs to n rows first (every row runs the whole brain + prompt prefix), keeps
every row to the batch's longest, and returns tokens only, so their log-probabilities cost a second, teacher-forced
pass. Here:

* the prefix runs once per sample and its cache is copied into the sample's n rows;
* a row leaves the batch at its EOS;
* each row's summed log p(token) is read from the *unwarped* log-softmax at the step that drew the token (no
  temperature, nucleus or EOS ban: the LM's own distribution, what a teacher-forced loss measures), plus
  log p(EOS) after the last token for a row that stopped at `max_new_tokens` without one, so the total is
  log p_LM(draw + EOS | prefix), the quantity `sentences.teacher_forced_losses` gives per token;
* the randomness is a table of uniforms drawn per sample from a generator seeded by the sample's key
  (`draw_uniforms`), one per (step, draw), used by inverse-CDF sampling over the nucleus: a sample's draws do not
  depend on the batch it is decoded in, or on the other samples' lengths.

The nucleus is HF's (`TopPLogitsWarper`): after temperature, the smallest set of most probable tokens whose mass
reaches `top_p`; EOS is banned before `min_new_tokens` (HF's `MinNewTokensLengthLogitsProcessor`).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ContextManager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .prefix_beam import CachedLM


@dataclass(frozen=True)
class SampleSettings:
    """What the sampler needs: `n` draws per prefix of `min_new_tokens`..`max_new_tokens` new tokens (EOS ends a
    draw and is banned before `min_new_tokens`), from the nucleus `top_p` after `temperature`."""

    n: int
    max_new_tokens: int
    min_new_tokens: int
    eos_id: int
    top_p: float = 1.0
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if self.n < 1 or self.max_new_tokens < 1:
            raise ValueError(f"n and max_new_tokens must be >= 1, got {self.n}, {self.max_new_tokens}.")
        if not 0.0 < self.top_p <= 1.0 or self.temperature <= 0:
            raise ValueError(f"top_p must lie in (0, 1] and temperature be > 0, got {self.top_p}, {self.temperature}.")


@dataclass
class Draws:
    """One prefix's draws: `ids[k]` the new tokens of draw k (EOS not included), `log_probs` `(n,)` float64 the
    summed log p_LM(ids[k] + EOS | prefix) in nats; `forced_ids` and `forced_log_prob` the same of the prefix's
    extra row (`sample_from_prefix`'s `forced` sequence, or its greedy one), None without one."""

    ids: list[list[int]]
    log_probs: np.ndarray
    forced_log_prob: float | None = None
    forced_ids: list[int] | None = None


def draw_uniforms(seed: int, key: str, settings: SampleSettings) -> np.ndarray:
    """`(max_new_tokens, n)` uniforms in [0, 1) of the prefix named `key` (e.g. a sample id): the same for the same
    seed and key, whatever else is decoded with it."""
    rng = np.random.default_rng([seed, zlib.crc32(key.encode("utf-8"))])
    return rng.random((settings.max_new_tokens, settings.n))


#: how many of the most probable tokens `nucleus_pick` looks at, in turn, before it sorts a row whole: on a trained
#: SmolLM2-135M (top_p 0.9) the nucleus lies within 256 tokens in ~70 % of steps and within 4096 in nearly all,
#: and `topk(4096)` costs a sixth of a full sort of its 49152 tokens
NUCLEUS_TOP_K = (256, 4096)


def nucleus_pick(logits: torch.Tensor, uniforms: torch.Tensor, top_p: float, temperature: float,
                 top_k: Sequence[int] = NUCLEUS_TOP_K, log_norm: torch.Tensor | None = None) -> torch.Tensor:
    """Inverse-CDF draw from each row's nucleus: `logits` `(R, V)` float32 (banned tokens at -inf), `uniforms`
    `(R,)` in [0, 1); `log_norm` `(R,)` the logsumexp of `logits / temperature` when the caller has it. Returns the
    token of each row `(R,)` long.

    Sorting the whole vocabulary of every row each step cost half the sampler's time. The most probable `top_k[0]`
    tokens of every row are found first (`topk` of the logits, whose order is the probabilities'), their
    probabilities from one log-normaliser per row; a row whose tokens so far hold less than `top_p` of the mass
    looks at the next size in `top_k`, and only then is sorted whole: the same nucleus either way."""
    scaled = logits if temperature == 1.0 else logits / temperature
    log_norm = (torch.logsumexp(scaled, dim=-1) if log_norm is None else log_norm)[:, None]
    vocab = scaled.shape[-1]
    out = torch.empty(len(scaled), dtype=torch.long, device=scaled.device)
    rows = torch.arange(len(scaled), device=scaled.device)  # the rows whose nucleus is not found yet
    for k in [*top_k, vocab]:
        k = min(k, vocab)
        left = scaled if len(rows) == len(scaled) else scaled[rows]
        top_logits, top_index = left.topk(k, dim=-1)  # descending; k = V sorts the rows whole
        top_probs = (top_logits - log_norm[rows]).exp()
        found = (top_probs.sum(-1) >= top_p) | (k == vocab)
        if bool(found.any()):
            out[rows[found]] = _pick_sorted(top_probs[found], top_index[found], uniforms[found], top_p)
        rows, uniforms = rows[~found], uniforms[~found]
        if not len(rows):
            break
    return out


def _pick_sorted(sorted_probs: torch.Tensor, order: torch.Tensor, uniforms: torch.Tensor, top_p: float
                 ) -> torch.Tensor:
    """The draw of `nucleus_pick` from each row's most probable tokens `sorted_probs` `(R, k)` (descending, token
    ids `order`), the nucleus lying within them."""
    cumulative = sorted_probs.cumsum(dim=-1)
    # keep a token while the mass before it is below top_p: the smallest set that reaches it (at least one token)
    kept = torch.where(cumulative - sorted_probs < top_p, sorted_probs, torch.zeros_like(sorted_probs))
    kept_cumulative = kept.cumsum(dim=-1)
    target = uniforms.to(kept.dtype)[:, None] * kept_cumulative[:, -1:]
    index = torch.searchsorted(kept_cumulative, target, right=True)
    index = torch.minimum(index, (kept > 0).sum(-1, keepdim=True) - 1)  # float rounding at the top end
    return order.gather(1, index).squeeze(1)


@torch.inference_mode()
def sample_from_prefix(lm: nn.Module, embeds: torch.Tensor, mask: torch.Tensor, settings: SampleSettings,
                       uniforms: Sequence[np.ndarray], context: ContextManager | None = None,
                       forced: Sequence[Sequence[int]] | None = None, greedy: bool = False) -> list[Draws]:
    """`settings.n` nucleus draws from each of the left-padded prefixes `embeds` `(B, P, H)` (mask `(B, P)`),
    the prefix run once; `uniforms` holds one `(max_new_tokens, n)` table per prefix (`draw_uniforms`); `context`
    wraps the prefix's forward (e.g. a layer-L injection). `forced`, one token sequence per prefix (at most
    `max_new_tokens`, EOS not included: e.g. the search's result), rides along as one more row that takes its
    given tokens instead of drawing, so its log p_LM costs no pass of its own. With `greedy` (and no `forced`) that
    row takes each step's most probable token instead (EOS banned before `min_new_tokens`): the greedy search of
    the same prefix, run in the same pass. Returns each prefix's `Draws`."""
    n, steps, eos = settings.n, settings.max_new_tokens, settings.eos_id
    batch, device = len(embeds), embeds.device
    if len(uniforms) != batch or any(u.shape != (steps, n) for u in uniforms):
        raise ValueError(f"need one ({steps}, {n}) uniform table per prefix, got {[u.shape for u in uniforms]}.")
    if forced is not None and (len(forced) != batch or any(len(f) > steps for f in forced)):
        raise ValueError(f"need one sequence of at most {steps} tokens per prefix to force, got "
                         f"{[len(f) for f in forced]}.")
    if forced is not None and greedy:
        raise ValueError("a prefix's extra row is either forced or greedy, not both.")
    m = n + (forced is not None or greedy)  # rows per prefix: the forced or greedy one first
    table = torch.zeros(batch, steps, m, dtype=torch.float64, device=device)
    table[:, :, m - n:] = torch.as_tensor(np.stack(uniforms), dtype=torch.float64, device=device)
    given = torch.full((batch, steps), -1, dtype=torch.long, device=device)  # the forced tokens, then EOS
    for b, seq in enumerate(forced or []):
        given[b, :len(seq)] = torch.as_tensor(list(seq), dtype=torch.long)
        given[b, len(seq):] = eos
    logits, rows = CachedLM.prefill(lm, embeds, mask, context)
    live = torch.arange(batch * m, device=device)  # the row of each one still running: prefix * m + k
    logits = logits.repeat_interleave(m, 0)
    rows.select(live // m)
    tokens = torch.full((batch * m, steps), eos, dtype=torch.long, device=device)
    lengths = torch.full((batch * m,), steps, dtype=torch.long)
    log_probs = torch.zeros(batch * m, dtype=torch.float64, device=device)
    for t in range(steps):
        if t > 0:
            logits = rows.step(tokens[live, t - 1])
        # the LM's own log-normaliser, before any ban: what the draw's log-probability sums
        own_norm = torch.logsumexp(logits, dim=-1)
        eos_logit = logits[:, eos].clone()
        banned = t < settings.min_new_tokens
        if banned:
            logits[:, eos] = -math.inf
        nxt = nucleus_pick(logits, table[live // m, t, live % m], settings.top_p, settings.temperature,
                           log_norm=own_norm if settings.temperature == 1.0 and not banned else None)
        if forced is not None:
            nxt = torch.where(live % m == 0, given[live // m, t], nxt)
        elif greedy:  # `logits` has EOS banned where the draws have it
            nxt = torch.where(live % m == 0, logits.argmax(-1), nxt)
        tokens[live, t] = nxt
        chosen = torch.where(nxt == eos, eos_logit, logits.gather(1, nxt[:, None]).squeeze(1))
        log_probs[live] += (chosen - own_norm).double()
        ended = nxt == eos
        lengths[live[ended].cpu()] = t
        if bool(ended.all()):
            break
        if bool(ended.any()):
            keep = torch.nonzero(~ended).squeeze(1)
            rows.select(keep)
            live = live[keep]
        if t + 1 == steps:  # stopped by the length limit: the draw's total also counts EOS after its last token
            final = F.log_softmax(rows.step(tokens[live, t]), dim=-1)[:, eos]
            log_probs[live] += final.double()
    ids, totals = tokens.tolist(), log_probs.cpu().numpy()
    extra = m > n
    return [Draws([ids[b * m + k][: int(lengths[b * m + k])] for k in range(m - n, m)],
                  totals[b * m + m - n:(b + 1) * m], float(totals[b * m]) if extra else None,
                  ids[b * m][: int(lengths[b * m])] if extra else None)
            for b in range(batch)]
