"""The Bayesian decoder's encoding model (beyond the paper): what it reads of a text (the bare backbone's mean state
after one layer, read after the passage's previous sentences if chosen, beside the length/position features), the
frames it predicts, and its files in the run folder (`RUN/decoder/`). `encoding_choice` fits and chooses it;
`bayes` decodes with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import BrainLLMError
from ..io import read_json, write_json
from ..model import EncodedSample
from ..model.text_features import (NUISANCE_NAMES, full_text, mean_states, nuisance_features, passage_contexts,
                                   stimulus_positions)
from ..runs import LoadedRun, RunPaths
from ..voxelwise.sentence_encoding import SentenceEncodingConfig, SentenceEncodingModel


@dataclass
class EncodingChoice:
    """The encoding model's text features and frame space, chosen by CV over training stimuli."""

    layer: int | None          # backbone layer of the mean state; None = nuisance features only
    max_dims: int | None       # first frame dimensions used (PCA components in order); None = all
    noise_shrinkage: float
    cv_identification: float  # mean out-of-fold 2-way identification across stimuli (candidate texts for frames)
    nuisance_weight: float = 1.0  # the length/position band's scale (1 in decoder files written before it existed)
    context_sentences: int = 0    # previous sentences of the passage each text is read after (0: alone, as before)

    def model_config(self, seed: int = 0) -> SentenceEncodingConfig:
        """The encoding model's hyper-parameters for this choice (the design's last columns are the nuisance)."""
        return SentenceEncodingConfig(noise_shrinkage=self.noise_shrinkage, seed=seed,
                                      nuisance_columns=len(NUISANCE_NAMES) if self.layer is not None else 0,
                                      nuisance_weight=self.nuisance_weight)


@dataclass
class SentenceScorer:
    """Features of candidate texts and the encoding model's log-likelihood of a sample's frames."""

    run: LoadedRun
    model: SentenceEncodingModel
    choice: EncodingChoice

    def contexts(self, samples: Sequence[EncodedSample]) -> list[str] | None:
        """Per sample, the passage text its candidates are read after (`choice.context_sentences` previous
        sentences), or None when texts are read alone."""
        return choice_contexts(self.run, samples, self.choice)

    def features(self, texts: Sequence[str], positions: Sequence[int], contexts: Sequence[str] | None = None
                 ) -> np.ndarray:
        """`(n, F)`: mean state after `choice.layer` (if any; each text read after its context, if given) and the
        nuisance features of each text."""
        return text_design(self.run, texts, positions, self.choice.layer, contexts)

    def frames(self, samples: Sequence[EncodedSample]) -> np.ndarray:
        return sample_frames(self.run, samples, self.choice.max_dims)

    def log_likelihood(self, texts: Sequence[str], positions: Sequence[int], frames: np.ndarray,
                       contexts: Sequence[str] | None = None) -> np.ndarray:
        """`(n,)` log p(frames_i | text_i) (up to a constant per frames)."""
        return self.model.log_likelihood(self.features(texts, positions, contexts), frames)

    def states_log_likelihood(self, states: np.ndarray | None, texts: Sequence[str], positions: Sequence[int],
                              frames: np.ndarray) -> np.ndarray:
        """`log_likelihood` from each text's mean state after `choice.layer` `(n, H)` computed elsewhere (from a
        shared prefix's cache, a search's running sums; None for a model that reads no state)."""
        layer = self.choice.layer
        return self.model.log_likelihood(encoding_design({layer: states}, layer, nuisance_features(texts, positions)),
                                         frames)


def sample_frames(run: LoadedRun, samples: Sequence[EncodedSample], max_dims: int | None = None) -> np.ndarray:
    """`(n, D')` mean frame of each sample (the frames it is given: permuted ones for a control)."""
    frames = run.dataset.frames
    out = np.stack([np.asarray(frames[list(s.frame_rows)], dtype=np.float64).mean(0) for s in samples])
    return out if max_dims is None else out[:, :max_dims]


def text_design(run: LoadedRun, texts: Sequence[str], positions: Sequence[int], layer: int | None,
                contexts: Sequence[str] | None = None) -> np.ndarray:
    """`(n, H + 2)` or `(n, 2)`: the bare backbone's mean state after `layer` (each text read after its context, if
    given), then the nuisance features."""
    states = {} if layer is None else bare_states(run, texts, [layer], contexts)
    return encoding_design(states, layer, nuisance_features(texts, positions))


def choice_contexts(run: LoadedRun, samples: Sequence[EncodedSample], choice: EncodingChoice) -> list[str] | None:
    """Per sample, the passage text an encoding model of `choice` reads its texts after, or None (texts alone)."""
    if not choice.context_sentences or choice.layer is None:
        return None
    return sample_contexts(run, samples, choice.context_sentences)


def sample_contexts(run: LoadedRun, samples: Sequence[EncodedSample], n_sentences: int) -> list[str]:
    """The `n_sentences` sentences before each sample's own in its passage (`passage_contexts`): what the reader
    had read, whichever frames a control is given."""
    return passage_contexts(run.dataset, [run.dataset.by_id(s.id) for s in samples], n_sentences)


def bare_states(run: LoadedRun, texts: Sequence[str], layers: Sequence[int], contexts: Sequence[str] | None = None
                ) -> dict[int, np.ndarray]:
    """`{layer: (n, H)}` the pretrained LM's mean state of each text after each layer (`{}` for no layer), each
    text read after its context if `contexts` are given (`mean_states`)."""
    if not layers:
        return {}
    return mean_states(run.model.backbone, run.encoder, texts, layers, bare=run.model.bare_backbone(),
                       contexts=contexts)


def encoding_design(states: dict[int, np.ndarray], layer: int | None, nuisance: np.ndarray) -> np.ndarray:
    """The encoding model's design: the state after `layer` (none for `None`) beside the nuisance features."""
    return nuisance if layer is None else np.hstack([states[layer].astype(np.float64), nuisance])


def reference_texts(run: LoadedRun, samples: Sequence[EncodedSample]) -> list[str]:
    return [full_text(run.dataset.by_id(s.id).prompt, run.dataset.by_id(s.id).continuation) for s in samples]


def positions_of(run: LoadedRun, samples: Sequence[EncodedSample]) -> np.ndarray:
    """Position of each sample's *own* frames in its stimulus (for a control too: the nuisance a reader knows)."""
    return stimulus_positions(run.dataset, [run.dataset.by_id(s.id) for s in samples])


def save_scorer(run: LoadedRun, scorer: SentenceScorer, name: str = "encoding") -> Path:
    folder = RunPaths(run.path).decoder_dir
    scorer.model.save(folder, name)
    write_json(folder / f"{name}_choice.json", asdict(scorer.choice))
    return folder


def has_scorer(run: LoadedRun, name: str = "encoding") -> bool:
    """Whether `tune-decoder` has fitted the encoding model `name` in the run folder."""
    return (RunPaths(run.path).decoder_dir / f"{name}_choice.json").exists()


def scorer_splits(run: LoadedRun) -> tuple[str, ...]:
    """The splits whose samples the run's encoding models were fitted on: training, and validation too when
    `tune-decoder` refitted them (`decoder.json`'s `refit_with_valid`; files written before it: training only)."""
    path = RunPaths(run.path).decoder_file
    return ("train", "valid") if path.exists() and read_json(path).get("refit_with_valid", False) else ("train",)


def load_scorer(run: LoadedRun, name: str = "encoding") -> SentenceScorer:
    folder = RunPaths(run.path).decoder_dir
    if not has_scorer(run, name):
        raise BrainLLMError(f"{run.path} has no fitted encoding model ({folder}/{name}.*): run `brainllm "
                            f"tune-decoder {run.path}` first, or decode with --set rerank=none.")
    choice = EncodingChoice(**read_json(folder / f"{name}_choice.json"))
    return SentenceScorer(run, SentenceEncodingModel.load(folder, name), choice)
