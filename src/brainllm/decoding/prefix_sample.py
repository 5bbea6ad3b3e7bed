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
    summed log p_LM(ids[k] + EOS | prefix) in nats."""

    ids: list[list[int]]
    log_probs: np.ndarray


def draw_uniforms(seed: int, key: str, settings: SampleSettings) -> np.ndarray:
    """`(max_new_tokens, n)` uniforms in [0, 1) of the prefix named `key` (e.g. a sample id): the same for the same
    seed and key, whatever else is decoded with it."""
    rng = np.random.default_rng([seed, zlib.crc32(key.encode("utf-8"))])
    return rng.random((settings.max_new_tokens, settings.n))


#: the most probable tokens `nucleus_pick` looks at first; a row whose nucleus is wider is sorted whole
NUCLEUS_TOP_K = 256


def nucleus_pick(logits: torch.Tensor, uniforms: torch.Tensor, top_p: float, temperature: float,
                 top_k: int = NUCLEUS_TOP_K) -> torch.Tensor:
    """Inverse-CDF draw from each row's nucleus: `logits` `(R, V)` float32 (banned tokens at -inf), `uniforms`
    `(R,)` in [0, 1). Returns the token of each row `(R,)` long.

    Sorting the whole vocabulary of every row each step cost half the sampler's time; the nucleus of a trained LM
    is nearly always within its `top_k` most probable tokens, so those are found first (`topk`), and only a row
    whose `top_k` tokens hold less than `top_p` of the mass is sorted whole: the same nucleus either way."""
    probs = torch.softmax(logits / temperature, dim=-1)
    k = min(top_k, probs.shape[-1])
    top_probs, top_index = probs.topk(k, dim=-1)  # descending
    wide = torch.nonzero(top_probs.sum(-1) < top_p).squeeze(1)
    out = _pick_sorted(top_probs, top_index, uniforms, top_p)
    if len(wide):
        sorted_probs, order = probs[wide].sort(dim=-1, descending=True)
        out[wide] = _pick_sorted(sorted_probs, order, uniforms[wide], top_p)
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
                       uniforms: Sequence[np.ndarray], context: ContextManager | None = None) -> list[Draws]:
    """`settings.n` nucleus draws from each of the left-padded prefixes `embeds` `(B, P, H)` (mask `(B, P)`),
    the prefix run once; `uniforms` holds one `(max_new_tokens, n)` table per prefix (`draw_uniforms`); `context`
    wraps the prefix's forward (e.g. a layer-L injection). Returns each prefix's `Draws`."""
    n, steps, eos = settings.n, settings.max_new_tokens, settings.eos_id
    batch, device = len(embeds), embeds.device
    if len(uniforms) != batch or any(u.shape != (steps, n) for u in uniforms):
        raise ValueError(f"need one ({steps}, {n}) uniform table per prefix, got {[u.shape for u in uniforms]}.")
    table = torch.as_tensor(np.stack(uniforms), dtype=torch.float64, device=device)  # (B, steps, n)
    logits, rows = CachedLM.prefill(lm, embeds, mask, context)
    live = torch.arange(batch * n, device=device)  # the draw of each row still running: prefix * n + k
    logits = logits.repeat_interleave(n, 0)
    rows.select(live // n)
    tokens = torch.full((batch * n, steps), eos, dtype=torch.long, device=device)
    lengths = torch.full((batch * n,), steps, dtype=torch.long)
    log_probs = torch.zeros(batch * n, dtype=torch.float64, device=device)
    for t in range(steps):
        if t > 0:
            logits = rows.step(tokens[live, t - 1])
        own = F.log_softmax(logits, dim=-1)  # the LM's distribution: what the draw's log-probability sums
        if t < settings.min_new_tokens:
            logits[:, eos] = -math.inf
        nxt = nucleus_pick(logits, table[live // n, t, live % n], settings.top_p, settings.temperature)
        tokens[live, t] = nxt
        log_probs[live] += own.gather(1, nxt[:, None]).squeeze(1).double()
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
    return [Draws([ids[b * n + k][: int(lengths[b * n + k])] for k in range(n)], totals[b * n:(b + 1) * n])
            for b in range(batch)]
