"""Fit, save and load the Tang et al. (2023) decoder for one subject: LM word features -> encoding model, and the
word-rate model, trained on a prepared story dataset's runs with the held-out stories left out.

Folder layout (`brainllm tang fit ... --out MODEL`): `tang.json` (settings, dataset, training and held-out stories),
`encoding/` (EncodingModel.save), `wordrate/` (WordRateModel.save).
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ... import backbones
from ...data.dataset import BrainTextDataset, Run
from ...decoding.wordlm import WordLM
from ...decoding.wordrate import WordRateConfig, WordRateModel, lanczos_word_counts
from ...errors import BrainLLMError, DatasetError
from ...io import read_json, replace_dir, staging_dir, write_json
from ...voxelwise.lanczos import lanczos_downsample
from .encoding import EncodingConfig, EncodingModel

log = logging.getLogger(__name__)

MODEL_FILE = "tang.json"
SPACES = ("auto", "raw", "frames")


@dataclass
class TangFitConfig:
    """What the Tang decoder is fitted with. Tang et al.: GPT (12 layers) layer 9, 5 context words, 10,000 voxels."""

    backbone: str = backbones.DEFAULT_BACKBONE
    feature_layer: int | None = None     # hidden-state index of word features (None: 3/4 of the depth)
    context_words: int = 10              # fewest preceding words the LM sees (see brainllm.decoding.wordlm)
    space: str = "auto"                  # "raw": voxels (raw/frames.npy); "frames": the prepared features
    encoding: EncodingConfig = field(default_factory=EncodingConfig)
    wordrate: WordRateConfig = field(default_factory=WordRateConfig)

    def __post_init__(self) -> None:
        if self.space not in SPACES:
            raise BrainLLMError(f"space must be one of {SPACES}, got '{self.space}'.")


def resolve_space(dataset: BrainTextDataset, space: str) -> str:
    """"raw" or "frames": the response space `space` names ("auto": raw voxels when the dataset has them)."""
    resolved = "raw" if space == "raw" or (space == "auto" and dataset.raw is not None) else "frames"
    if resolved == "raw" and dataset.raw is None:
        raise DatasetError("This dataset has no raw/frames.npy (voxel space); use space='frames' or convert the "
                           "source again with keep_raw.")
    return resolved


def responses_of(dataset: BrainTextDataset, run: Run, space: str) -> np.ndarray:
    """`(T, V)` float32 responses of a run in the chosen space ("auto": raw voxels when the dataset has them)."""
    source = dataset.raw if resolve_space(dataset, space) == "raw" else dataset.frames
    return np.asarray(source[run.rows[0]:run.rows[1]], dtype=np.float32)


def story_runs(dataset: BrainTextDataset, stories: Sequence[str] | None = None) -> list[Run]:
    """The runs of the given stories (None: all; all repeats), in dataset order; a clear error for unknown
    stories or a dataset without runs."""
    if not dataset.runs:
        raise DatasetError("The dataset records no runs (runs.jsonl): full-story decoding needs a story design "
                           "(`brainllm simulate --design story` or a converted Huth/Narratives dataset).")
    if stories is None:
        return list(dataset.runs)
    known = {r.stimulus for r in dataset.runs}
    unknown = [s for s in stories if s not in known]
    if unknown:
        raise DatasetError(f"Unknown stories {unknown}; the dataset has {sorted(known)}.")
    return [r for r in dataset.runs if r.stimulus in set(stories)]


def load_word_lm(backbone: str, feature_layer: int | None, context_words: int, device: str = "cpu") -> WordLM:
    model, tokenizer = backbones.load(backbone, device=device)
    return WordLM(model, tokenizer, feature_layer=feature_layer, context_words=context_words, device=device)


def tr_features(lm: WordLM, run: Run) -> tuple[np.ndarray, np.ndarray]:
    """(word features `(W, H)`, their Lanczos sums at the run's TRs `(T, H)`)."""
    words = lm.word_features(run.words)
    return words, lanczos_downsample(words, np.asarray(run.word_times), np.asarray(run.tr_times))


@dataclass
class TangModel:
    """A fitted Tang decoder: word LM, encoding model, word-rate model, and what they were fitted on."""

    lm: WordLM
    encoding: EncodingModel
    wordrate: WordRateModel
    info: dict
    folder: Path | None = None      # where the model was written or loaded from

    @property
    def config(self) -> TangFitConfig:
        info = dict(self.info["config"])
        return TangFitConfig(**{**info, "encoding": EncodingConfig(**info["encoding"]),
                                "wordrate": WordRateConfig(**info["wordrate"])})


def fit_tang(dataset_path: str | os.PathLike, heldout: Sequence[str], out: str | os.PathLike,
             config: TangFitConfig = TangFitConfig(), overwrite: bool = False) -> TangModel:
    """Fit on every run whose story is not held out; write the model folder atomically."""
    dataset = BrainTextDataset.load(dataset_path)
    runs = story_runs(dataset)
    train = [r for r in runs if r.stimulus not in set(heldout)]
    if len({r.stimulus for r in train}) < 2:
        raise DatasetError(f"Need at least 2 training stories (held out {list(heldout)} of "
                           f"{sorted({r.stimulus for r in runs})}).")
    if not heldout:
        log.warning("No held-out story: every story trains the encoding model; decode only stories it never saw.")
    lm = load_word_lm(config.backbone, config.feature_layer, config.context_words)
    features, responses, counts, word_feats = [], [], [], []
    for run in train:
        w, x = tr_features(lm, run)
        word_feats.append(w)
        features.append(x)
        responses.append(responses_of(dataset, run, config.space))
        counts.append(lanczos_word_counts(np.asarray(run.word_times), np.asarray(run.tr_times)))
        log.info("features of %s: %d words, %d TRs", run.name, len(run.words), run.n_trs)
    encoding = EncodingModel(config.encoding).fit(features, responses, word_features=np.concatenate(word_feats))
    wordrate = WordRateModel(config.wordrate).fit(responses, counts)
    info = {"format": "brainllm-tang", "version": 1, "dataset": str(Path(dataset_path).resolve()),
            "train_stories": sorted({r.stimulus for r in train}), "heldout_stories": sorted(heldout),
            "space": resolve_space(dataset, config.space),
            "config": {**asdict(config), "feature_layer": lm.feature_layer}, "simulated": dataset.simulated}
    out = Path(out)
    tmp = staging_dir(out)
    encoding.save(tmp / "encoding")
    wordrate.save(tmp / "wordrate")
    write_json(tmp / MODEL_FILE, info)
    replace_dir(tmp, out, overwrite=overwrite)
    log.info("Tang model written to %s (%d training stories, %d voxels kept)", out, len(info["train_stories"]),
             len(encoding.voxels_))
    return TangModel(lm, encoding, wordrate, info, out)


def load_tang(folder: str | os.PathLike, lm: WordLM | None = None) -> TangModel:
    """Open a model folder written by `fit_tang` (the backbone is loaded offline unless `lm` is given)."""
    folder = Path(folder)
    if not (folder / MODEL_FILE).exists():
        raise BrainLLMError(f"{folder} has no {MODEL_FILE}; is it a `brainllm tang fit` output folder?")
    info = read_json(folder / MODEL_FILE)
    cfg = info["config"]
    lm = lm or load_word_lm(cfg["backbone"], cfg["feature_layer"], cfg["context_words"])
    return TangModel(lm, EncodingModel.load(folder / "encoding"), WordRateModel.load(folder / "wordrate"), info,
                     folder)
