"""A causal LM seen as a model of whole words, for the full-story decoders (Tang et al. 2023 and BrainLLM).

Both full-story decoders grow word sequences with known word times, so they need, for a beam of hypotheses that all
hold the same number of words: the next-word distribution, proposals filtered as Tang et al. did (nucleus mass with a
relative floor, no repeated bigrams, no repeated content words), and the LM feature of each candidate word.

Words are the tokenizer's whole-word tokens (`" word"` as one token: lower-case letters, optionally one
apostrophe), the byte-level-BPE counterpart of Tang's word vocabulary. Next-word probabilities are the LM's
probabilities renormalised over these tokens (the probability of a word given that a whole word comes next).

Cost: hypotheses share a length, so a batch is rectangular and a KV cache extends every row by one token per step.
The cache holds the words since its last rebuild; once it spans `max_context_words` words it is rebuilt from the
last `context_words`, so each word is predicted from between `context_words` and `max_context_words - 1`
preceding words (Tang recomputed exactly the last 8 s of words at every step, which costs a full forward pass per
word). `word_features` applies the same rule to a whole story, so training features and decoding features agree.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from transformers import DynamicCache

from ..errors import BrainLLMError
from ..model.injection import unwrap_peft
from ..model.injection import PrefixInjection

log = logging.getLogger(__name__)

INIT_WORDS = ("i", "we", "she", "he", "they", "it")  # Tang's first-word candidates
_WORD = re.compile(r"^[a-z]+(?:'[a-z]+)?$")

# English function words (written for this project): not banned when they recur in the context.
STOPWORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below between both but
by can could did do does doing down during each few for from further had has have having he her here hers herself
him himself his how i if in into is it its itself just me more most my myself no nor not now of off on once only or
other our ours ourselves out over own same she should so some such than that the their theirs them themselves then
there these they this those through to too under until up very was we were what when where which while who whom why
will with would you your yours yourself yourselves i'm it's don't didn't can't won't that's there's he's she's
they're we're you're i've we've they've i'd he'd she'd they'd we'd i'll we'll they'll you'll isn't wasn't weren't
aren't hasn't haven't hadn't doesn't couldn't wouldn't shouldn't let's oh um uh yeah like just well also back even
still again ever never much many
""".split())


class WordVocabulary:
    """The whole-word tokens of a tokenizer: id `(K,)` <-> word, for words written as `" word"` in one token."""

    def __init__(self, tokenizer, words: Sequence[str] | None = None):
        wanted = set(words) if words is not None else None
        ids, names = [], []
        for token_id in range(len(tokenizer)):
            text = tokenizer.decode([token_id])
            if len(text) < 2 or text[0] != " ":
                continue
            word = text[1:]
            if _WORD.match(word) and (wanted is None or word in wanted):
                ids.append(token_id)
                names.append(word)
        if not ids:
            raise BrainLLMError("The tokenizer has no whole-word tokens (' word' as one token); the word-level "
                                "decoders need a byte-level BPE or similar tokenizer.")
        first = {}
        for i, w in zip(ids, names):
            first.setdefault(w, i)
        self.words = list(first)
        self.token_ids = torch.tensor(list(first.values()), dtype=torch.long)  # (K,)
        self._index = {w: k for k, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self._index

    def index(self, word: str) -> int:
        """Position of `word` in the vocabulary (0..K-1)."""
        try:
            return self._index[word]
        except KeyError:
            raise BrainLLMError(f"'{word}' is not a whole-word token of this tokenizer.") from None


@dataclass
class ProposalConfig:
    """How candidate next words are proposed (Tang et al. 2023 defaults)."""

    nucleus_mass: float = 0.9        # keep the most probable words up to this cumulative probability
    relative_floor: float = 0.1      # ... and only words with p >= this x the best word's p
    max_candidates: int = 200        # hard cap per hypothesis (the BrainLLM authors' top-200)
    filter_repeats: bool = True      # no repeated bigram, no repeated content word (Tang's context filter)


def _stemmer():
    try:
        from nltk.stem.snowball import SnowballStemmer
    except ImportError as err:
        raise BrainLLMError("The repetition filter of the full-story decoders needs nltk's Snowball stemmer: "
                            "pip install 'brainllm[metrics]'.") from err

    return SnowballStemmer("english")


class ContextFilter:
    """Tang's repetition filter: ban the word that followed the last word earlier in the context (no repeated
    bigram), and content words whose word or Snowball stem is already in the context."""

    def __init__(self):
        self._stem = _stemmer().stem
        self._cache: dict[str, str] = {}

    def stem(self, word: str) -> str:
        if word not in self._cache:
            self._cache[word] = self._stem(word)
        return self._cache[word]

    def banned(self, context: Sequence[str]) -> tuple[set[str], set[str]]:
        """(banned words, banned stems) given the context words."""
        words: set[str] = set()
        if context:
            last = context[-1]
            words = {context[j + 1] for j in range(len(context) - 1) if context[j] == last}
        content = [w for w in context if w not in STOPWORDS]
        return words | set(content), {self.stem(w) for w in content}

    def allowed(self, word: str, banned: tuple[set[str], set[str]]) -> bool:
        if word in banned[0]:
            return False
        return word in STOPWORDS or self.stem(word) not in banned[1]


class BeamState:
    """B word contexts of equal length with their KV cache, next-word log-probabilities and last-word features.

    `logprobs`: `(B, K)` next-word log-probabilities over the vocabulary; `features`: `(B, H)` hidden state at the
    feature layer of each row's last word (zeros for an empty context); `contexts`: the word indices per row.
    """

    def __init__(self, lm: "WordLM", contexts: list[list[int]], prefix: torch.Tensor | None,
                 injection: PrefixInjection | None = None):
        self.lm = lm
        self.contexts = contexts
        self.prefix = prefix
        self.injection = injection
        self.cache: DynamicCache | None = None
        self.cached_words = 0
        self.logprobs = torch.empty(0)
        self.features = torch.empty(0)

    def __len__(self) -> int:
        return len(self.contexts)


class WordLM:
    """A causal LM over whole words with a beam-friendly KV cache.

    Args:
        model: a Hugging Face causal LM (eval mode; frozen).
        tokenizer: its tokenizer.
        feature_layer: hidden-state index for word features (0 = embeddings; default: 3/4 of the depth).
        context_words: N, the fewest preceding words the LM sees once a story is under way.
        max_context_words: the cache is rebuilt from the last N words when it spans this many (default 2N).
        vocabulary: the decoder's word vocabulary (default: every whole-word token).
    """

    def __init__(self, model, tokenizer, feature_layer: int | None = None, context_words: int = 10,
                 max_context_words: int | None = None, vocabulary: WordVocabulary | None = None,
                 device: str | torch.device = "cpu"):
        from ..model.collate import TextEncoder

        self.model = model.eval()
        self.tokenizer = tokenizer
        n_layers = model.config.num_hidden_layers
        self.feature_layer = round(0.75 * n_layers) if feature_layer is None else feature_layer
        if not 0 <= self.feature_layer <= n_layers:
            raise BrainLLMError(f"feature_layer must be in 0..{n_layers}, got {feature_layer}.")
        if context_words < 1:
            raise BrainLLMError(f"context_words must be >= 1, got {context_words}.")
        self.context_words = context_words
        self.max_context_words = max_context_words or 2 * context_words
        if self.max_context_words <= context_words:
            raise BrainLLMError("max_context_words must exceed context_words.")
        self.vocab = vocabulary or WordVocabulary(tokenizer)
        self.device = torch.device(device)
        self.bos_id = TextEncoder(tokenizer).bos_id
        self._vocab_ids = self.vocab.token_ids.to(self.device)
        self.hidden_size = model.get_input_embeddings().weight.shape[1]
        # transformers >= 5.x renames `past_key_values` to `cache` (the old name warns, then goes away)
        # (a peft model's own forward hides the signature of the LM it wraps)
        params = inspect.signature(unwrap_peft(model).forward).parameters
        self._cache_kwarg = "cache" if "cache" in params else "past_key_values"

    # ------------------------------------------------------------------ forward passes
    def _embed_ids(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(ids.to(self.device))

    def _run(self, embeds: torch.Tensor, cache: DynamicCache | None, attention_mask: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, DynamicCache]:
        """Forward `(B, L, H)` embeddings; returns (last-position log-probs over the vocabulary `(B, K)`,
        last-position features `(B, H)`, cache)."""
        kv = {self._cache_kwarg: cache if cache is not None else DynamicCache()}
        out = self.model(inputs_embeds=embeds, attention_mask=attention_mask, use_cache=True,
                         output_hidden_states=True, **kv)
        logits = out.logits[:, -1, :].float().index_select(1, self._vocab_ids)
        return (torch.log_softmax(logits, dim=-1), out.hidden_states[self.feature_layer][:, -1, :].float(),
                out.past_key_values)

    def _build(self, state: BeamState) -> None:
        """(Re)compute the cache of every row from its last `context_words` words (plus the prefix)."""
        keep = min(len(state.contexts[0]), self.context_words) if state.contexts else 0
        parts = []
        b = len(state)
        if self.bos_id is not None:
            parts.append(self._embed_ids(torch.full((b, 1), self.bos_id)))
        if state.prefix is not None:
            parts.append(state.prefix.to(self.device, self.model.dtype).unsqueeze(0).expand(b, -1, -1))
        if keep:
            ids = self.vocab.token_ids[torch.tensor([c[-keep:] for c in state.contexts])]  # (B, keep)
            parts.append(self._embed_ids(ids))
        if not parts:  # nothing to condition on yet (no BOS, no prefix, no word): a flat distribution
            state.cache, state.cached_words = None, 0
            state.logprobs = torch.full((b, len(self.vocab)), -float(np.log(len(self.vocab))), device=self.device)
            state.features = torch.zeros(b, self.hidden_size, device=self.device)
            return
        embeds = torch.cat(parts, dim=1)
        injected = (contextlib.nullcontext() if state.injection is None else
                    state.injection.around(b, int(self.bos_id is not None), embeds.shape[1]))
        with injected:
            state.logprobs, state.features, state.cache = self._run(embeds, None)
        if not keep:
            state.features = torch.zeros_like(state.features)
        state.cached_words = keep

    @torch.inference_mode()
    def start(self, contexts: list[list[int]], prefix: torch.Tensor | None = None,
              injection: PrefixInjection | None = None) -> BeamState:
        """A state for rows with the given contexts (word indices, all the same length; may be empty if the
        tokenizer adds a BOS token or a prefix is given). `prefix`: `(P, H)` embeddings placed before the words
        of every row (BrainLLM's `<brain> v_1..v_T </brain>`); `injection`: states written into the prefix
        positions after a block (a BrainLLM that injects deeper, `model.injection`)."""
        if len({len(c) for c in contexts}) > 1:
            raise BrainLLMError("All contexts of a beam must hold the same number of words.")
        if injection is not None and (prefix is None or injection.mask.shape[0] != prefix.shape[0]):
            raise BrainLLMError("An injection needs a prefix of the same length.")
        state = BeamState(self, [list(c) for c in contexts], prefix, injection)
        self._build(state)
        return state

    @torch.inference_mode()
    def extend(self, state: BeamState, parents: Sequence[int], words: Sequence[int]) -> BeamState:
        """A new state whose row r is row `parents[r]` of `state` followed by word `words[r]`.

        Returns the new rows' next-word log-probs and the features of `words` (one forward of one token per
        row with the cache, or a rebuild when the cache has grown to `max_context_words`).
        """
        parents_t = torch.as_tensor(list(parents), dtype=torch.long)
        contexts = [state.contexts[p] + [int(w)] for p, w in zip(parents, words)]
        new = BeamState(self, contexts, state.prefix, state.injection)
        if state.cache is None and (self.bos_id is not None or state.prefix is not None or state.cached_words):
            raise BrainLLMError("extend() needs a state from start().")
        if state.cache is None or state.cached_words + 1 >= self.max_context_words:
            self._build(new)
            # a rebuilt row's last word is `words[r]`; its feature now comes from the fresh context
            return new
        cache = _select_rows(state.cache, parents_t.to(self.device))
        ids = self.vocab.token_ids[torch.as_tensor(list(words), dtype=torch.long)].unsqueeze(1)  # (B', 1)
        new.logprobs, new.features, new.cache = self._run(self._embed_ids(ids), cache)
        new.cached_words = state.cached_words + 1
        return new

    def select(self, state: BeamState, rows: Sequence[int]) -> BeamState:
        """Keep only `rows` of `state` (in that order)."""
        idx = torch.as_tensor(list(rows), dtype=torch.long)
        new = BeamState(self, [state.contexts[r] for r in rows], state.prefix, state.injection)
        new.cache = _select_rows(state.cache, idx.to(self.device)) if state.cache is not None else None
        new.cached_words = state.cached_words
        new.logprobs = state.logprobs.index_select(0, idx.to(state.logprobs.device))
        new.features = state.features.index_select(0, idx.to(state.features.device))
        return new

    # ------------------------------------------------------------------ proposals
    def propose(self, state: BeamState, config: ProposalConfig = ProposalConfig(),
                context_filter: ContextFilter | None = None) -> list[list[tuple[int, float]]]:
        """Candidate next words per row: `[(word index, log p), ...]`, most probable first."""
        lp = state.logprobs
        k = min(lp.shape[1], max(config.max_candidates * 4, 50))
        top_lp, order = torch.topk(lp, k, dim=1)  # sorted, most probable first
        probs = top_lp.exp()
        out = []
        for r in range(len(state)):
            p = probs[r]
            keep = p >= config.relative_floor * p[0]
            cum = torch.cumsum(p, 0) - p  # mass before each word: keep while it is below the nucleus mass
            keep &= cum < config.nucleus_mass
            cand = [(int(order[r, j]), float(top_lp[r, j])) for j in torch.nonzero(keep).flatten().tolist()]
            if config.filter_repeats and context_filter is not None:
                ctx = [self.vocab.words[w] for w in state.contexts[r][-self.max_context_words:]]
                banned = context_filter.banned(ctx)
                cand = [c for c in cand if context_filter.allowed(self.vocab.words[c[0]], banned)]
            out.append(cand[: config.max_candidates])
        return out

    # ------------------------------------------------------------------ story features
    @torch.inference_mode()
    def word_features(self, words: Sequence[str], batch_size: int = 16) -> np.ndarray:
        """Feature-layer hidden state of each word of a story `(W, H)` float32, at the word's last token, with the
        context rule of decoding (between `context_words` and `max_context_words - 1` preceding words).

        Words outside the vocabulary are fine here (tokenised normally, possibly into several tokens).
        """
        if not words:
            return np.zeros((0, self.hidden_size), dtype=np.float32)
        token_lists = [self.tokenizer(" " + w, add_special_tokens=False).input_ids for w in words]
        # The rule of `extend`: words 0..m-2 are fed one by one after an empty start; word q = m-1 triggers a
        # rebuild from its last n words (q sees the n-1 before it), then m-n-1 words follow incrementally, and so on.
        n, m = self.context_words, self.max_context_words
        blocks = [(0, 0, min(len(words), m - 1))]  # (first context word, first featured word, end)
        q = m - 1
        while q < len(words):
            blocks.append((q - n + 1, q, min(len(words), q + m - n)))
            q += m - n
        feats = np.zeros((len(words), self.hidden_size), dtype=np.float32)
        for b0 in range(0, len(blocks), batch_size):
            chunk = blocks[b0:b0 + batch_size]
            seqs, ends = [], []
            for start, first, end in chunk:
                ids = [self.bos_id] if self.bos_id is not None else []
                word_end = []
                for k in range(start, end):
                    ids += token_lists[k]
                    word_end.append(len(ids) - 1)
                seqs.append(ids)
                ends.append(word_end)
            width = max(len(s) for s in seqs)
            pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
            ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs])
            mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
            hidden = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                output_hidden_states=True).hidden_states[self.feature_layer].float().cpu()
            for row, (start, first, end) in enumerate(chunk):
                for k in range(first, end):
                    feats[k] = hidden[row, ends[row][k - start]].numpy()
        return feats


def _select_rows(cache: DynamicCache, rows: torch.Tensor) -> DynamicCache:
    """A new cache holding `rows` of `cache` (rows may repeat): the beam's parents, in order."""
    new = DynamicCache()
    for layer_idx, layer in enumerate(cache.layers):
        new.update(layer.keys.index_select(0, rows), layer.values.index_select(0, rows), layer_idx)
    return new
