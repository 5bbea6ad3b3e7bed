"""Token readout slots (beyond the paper; `model.adapter.readout_tokens: R`).

A frozen LM reads its own vocabulary without any training: R input-embedding slots holding the tokens of the
perceived text lower its loss far more than a learnt soft token (docs/calibration.md: the copy ceiling). This
module gives each frame R extra slots holding the input embeddings of the R candidate tokens that a closed-form
decoder ranks highest for that frame, times a learnt scale.

The decoder is a linear map from the standardised frame to a score per candidate token, fitted by ridge on the
training samples only (`model.ridge_init.fit_token_readout`: targets = the idf-weighted bag of each sample's
warm-up text, penalty by cross-validation over training stimuli); a score is the predicted deviation from the
training samples' mean bag, so the tokens every text has rank nowhere. Its weights and the candidates' embeddings
are buffers: saved with the adapter, never moved by the optimiser. The candidates are the `vocab` most frequent
tokens of the training texts (fewer are padded with candidates that can never be picked).
"""

from __future__ import annotations

import torch
from torch import nn

#: the bias of an unused candidate slot: far below any fitted score, so `topk` never picks it
UNUSED = -1.0e4


class TokenReadout(nn.Module):
    """Standardised frames `(B, T, D)` -> `(B, T, R, H)`: the embeddings of each frame's R top-scoring tokens."""

    def __init__(self, feature_dim: int, hidden_size: int, tokens: int, vocab: int):
        super().__init__()
        if tokens < 1 or vocab < tokens:
            raise ValueError(f"readout needs 1 <= readout_tokens <= readout_vocab, got {tokens} and {vocab}")
        self.tokens = tokens
        self.register_buffer("weight", torch.zeros(feature_dim, vocab))    # (D, C) frame -> candidate score
        self.register_buffer("bias", torch.full((vocab,), UNUSED))         # (C,)
        self.register_buffer("token_ids", torch.full((vocab,), -1, dtype=torch.long))  # (C,) ids, -1 unused
        self.register_buffer("embeddings", torch.zeros(vocab, hidden_size))      # (C, H) their input embeddings
        self.scale = nn.Parameter(torch.ones(()))  # learnt: how loudly the slots speak

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """`(B, T, D)` standardised frames -> `(B, T, C)` candidate scores."""
        return x @ self.weight + self.bias

    def top_candidates(self, x: torch.Tensor) -> torch.Tensor:
        """`(B, T, R)` the candidate indices of each frame's R top scores."""
        return self.scores(x).topk(self.tokens, dim=-1).indices

    def top_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """`(B, T, R)` the backbone token ids of each frame's R top candidates (-1 where unfitted)."""
        return self.token_ids[self.top_candidates(x)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.embeddings[self.top_candidates(x)]  # (B, T, R, H)

    @torch.no_grad()
    def set(self, weight: torch.Tensor, bias: torch.Tensor, token_ids: torch.Tensor, embeddings: torch.Tensor
            ) -> None:
        """Install a fitted decoder for the first `len(token_ids)` candidates; the rest stay unusable."""
        n = len(token_ids)
        if n > self.weight.shape[1]:
            raise ValueError(f"{n} candidates exceed readout_vocab {self.weight.shape[1]}")
        self.weight.zero_()
        self.bias.fill_(UNUSED)
        self.token_ids.fill_(-1)
        self.embeddings.zero_()
        self.weight[:, :n] = weight
        self.bias[:n] = bias
        self.token_ids[:n] = token_ids
        self.embeddings[:n] = embeddings
