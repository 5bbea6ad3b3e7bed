"""The simulated participant: a voxelwise encoding model of a mixture of text feature spaces, plus realistic noise.

SIMULATED DATA. This is the embedded default that lets anyone run brainllm end to end without real fMRI. It is
built the way neuroscience methods papers build ground-truth simulations, and calibrated so that its realism
profile (`brainllm inspect DIR --profile`, docs/realism.md) matches the real Pereira development data row by row.

1. Stimuli: the passages shipped in `brainllm/data/corpus` (written for this project).
2. Drivers of the voxels (each row a sentence, or the words heard in a TR in the story design), with their share
   of the signal variance (`SimulationConfig`): the *content mixture*: all-MiniLM-L6-v2 embeddings and the
   backbone's mean input embedding and mean states after layers 6, 10, 16 (`layers`, `layer_weights`,
   `minilm_weight`; a `spaces` provider computes them above the data layer, e.g.
   `model.text_spaces.backbone_spaces`; without one, MiniLM alone); the *passage context* (the content spaces
   averaged over the passage); a *topic* pattern per corpus topic; the *number of words* through a positive
   amplitude map (BOLD grows with words); the sentence's *position* in its passage. No single space is a
   decoder's exact target: the largest single space, the layer-10 state, drives about a quarter of the signal
   directly (and its part of the passage context).
3. Encoding model: voxels lie on a 2-D cortical sheet; a fraction of them respond; every driver (standardised)
   reaches them through its own smooth random map `(F, V)`, each driver's part scaled to its share. Story design:
   the drivers are convolved with the SPM canonical haemodynamic response (double gamma) at the 2 s TR.
4. Noise: spatially smooth (Gaussian on the sheet) plus a few global fluctuation components shared by all
   voxels, AR(1) in time (in the sentence design restarted at each passage: passages are separate blocks).
   Signal and noise are each scaled to unit variance per voxel, and `frame = sqrt(snr) * signal + noise` in
   responsive voxels (so `--snr` is the per-voxel signal-to-noise variance ratio; `--snr 0` gives pure noise, the
   same frames whatever the feature provider: stimuli, maps and noise draw from separate random streams).
5. Preprocessing as for real data: z-score per run, then PCA to `components` dimensions. Here PCA and z-scoring
   are fitted on all frames, test included: acceptable only because the data are simulated and the transform is
   unsupervised; the real-data pipeline fits them on training stimuli only.

Designs: `sentence` (Pereira-like: one frame per sentence, each sentence cut into 3 chunks, samples k = 1, 2 share
the sentence's frame, stimulus = passage) and `story` (Huth-like: passages concatenated into stories with word
onset times, 2 s TRs, one sample per TR chunk, frames = the TRs after the chunk shifted by a haemodynamic delay,
stimulus = story; the same drivers but position).
The generating model is written to dataset.json (`generating_model`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.signal import lfilter
from scipy.stats import gamma

from ..errors import DatasetError
from .corpus import Passage, load_corpus
from .dataset import BrainTextDataset, Run, Sample
from .features import sentence_embeddings
from .preprocess import tr_chunk_samples
from .tasks import check_task, chunk_words, task_texts

log = logging.getLogger(__name__)

DESIGNS = ("sentence", "story")
SIMULATED_LABEL = "SIMULATED participant (brainllm.data.simulate), not real fMRI"
MINILM = "minilm"

#: Feature spaces of texts: texts -> {space name: (n, F) float array}. `model.text_spaces.backbone_spaces` gives
#: MiniLM and the backbone's mean states (named "layer L"); without one, MiniLM alone (`minilm_spaces`).
SpaceProvider = Callable[[Sequence[str]], dict[str, np.ndarray]]


def minilm_spaces(texts: Sequence[str]) -> dict[str, np.ndarray]:
    """The fallback provider: `{"minilm": (n, 384)}` (no backbone; used by tests and `--backbone none`)."""
    return {MINILM: sentence_embeddings(list(texts))}


@dataclass
class SimulationConfig:
    """Parameters of the simulated participant. Defaults are calibrated so that the sentence design's realism
    profile matches the real Pereira development data (docs/realism.md)."""

    design: str = "sentence"          # "sentence" (Pereira-like) or "story" (Huth-like)
    task: str = "continuation"        # sentence design: the paper's samples or one per sentence (`tasks`)
    snr: float = 0.115                # per-voxel signal variance / noise variance in responsive voxels; 0 = no signal
    voxels: int = 2000                # voxels on the simulated cortical sheet (rounded down to a square grid)
    responsive_fraction: float = 0.5  # fraction of voxels that respond to the text
    components: int = 200             # PCA dimensions kept (the paper used 1000 on real data)
    seed: int = 0
    passages: int | None = None       # use only the first N passages of the shuffled corpus (None: all)
    weight_smoothness: float = 1.0    # Gaussian sigma (voxels) of tuning maps on the sheet
    noise_smoothness: float = 1.5     # Gaussian sigma (voxels) of spatially correlated noise
    global_noise_factors: int = 5     # shared fluctuation components (physiological noise)
    global_noise_weight: float = 0.3  # their share of the noise variance
    ar1: float | None = None          # temporal AR(1) coefficient of noise; None: 0.3 sentence, 0.5 story
    # the generating model (both designs; see the module docstring): shares of the signal variance
    backbone: str | None = "smollm2-135m"  # LM whose mean states drive the voxels (computed above the data layer
    #                                        and passed in as `spaces`); None: MiniLM alone
    layers: tuple[int, ...] = (0, 6, 10, 16)  # the backbone's layers in the content mixture (0: input embedding)
    layer_weights: tuple[float, ...] | None = (0.4, 0.3, 3.0, 0.5)  # their relative weights (None: equal)
    minilm_weight: float = 0.2        # MiniLM's part of the content mixture (the layers share the rest)
    length_share: float = 0.03        # words in the sentence / TR: a positive amplitude map
    position_share: float = 0.015     # position of the sentence in its passage (sentence design only)
    topic_share: float = 0.15         # a pattern per corpus topic (the passages' subject)
    passage_share: float = 0.36       # the content mixture's spaces averaged over the passage (its context)
    # story design only
    tr: float = 2.0                   # seconds per TR
    words_per_second: float = 2.5     # mean speech rate (Huth stories: about 2.5-3 words/s)
    stories: int = 12                 # passages are dealt into this many stories (runs)
    hrf_delay: int = 1                # first frame of a sample = TR of its chunk + this many TRs
    frames_per_sample: int = 4        # T, frames per sample
    prompt_words: int = 20            # words of preceding context in a story sample's prompt
    lead_in: float = 10.0             # seconds of silence before and after each story

    def __post_init__(self) -> None:
        if self.design not in DESIGNS:
            raise DatasetError(f"design must be one of {DESIGNS}, got '{self.design}'.")
        if self.snr < 0:
            raise DatasetError(f"snr must be >= 0, got {self.snr}.")
        if self.voxels < 16:
            raise DatasetError(f"voxels must be at least 16, got {self.voxels}.")
        self.layers = tuple(int(layer) for layer in self.layers)
        if self.layer_weights is not None:
            self.layer_weights = tuple(float(w) for w in self.layer_weights)
            if len(self.layer_weights) != len(self.layers) or min(self.layer_weights, default=0) < 0 \
                    or sum(self.layer_weights) <= 0:
                raise DatasetError(f"layer_weights must be {len(self.layers)} non-negative numbers (one per layer "
                                   f"of {self.layers}) with a positive sum, got {self.layer_weights}.")
        shares = {"length_share": self.length_share, "position_share": self.position_share,
                  "topic_share": self.topic_share, "passage_share": self.passage_share,
                  "minilm_weight": self.minilm_weight}
        bad = {k: v for k, v in shares.items() if not 0 <= v <= 1}
        if bad or self.content_share < 0:
            raise DatasetError(f"shares must lie in [0, 1] and length + position + topic + passage shares sum to at "
                               f"most 1 (the rest is content); got {shares}.")

    @property
    def content_share(self) -> float:
        """The signal variance left to the content mixture (MiniLM + the backbone's layers)."""
        return 1.0 - self.length_share - self.position_share - self.topic_share - self.passage_share


@dataclass
class Simulation:
    """A simulated dataset plus its ground truth (kept in memory only; not part of the prepared format).

    `features`: `(n_frames, F)` semantic features that generated each frame (before the HRF, story design).
    """

    dataset: BrainTextDataset
    features: np.ndarray
    config: SimulationConfig
    info: dict = field(default_factory=dict)


def canonical_hrf(tr: float, duration: float = 32.0) -> np.ndarray:
    """SPM canonical double-gamma HRF sampled every `tr` seconds, `(ceil(duration/tr),)`, peak-normalised."""
    t = np.arange(0, duration, tr)
    h = gamma.pdf(t, 6) - gamma.pdf(t, 16) / 6.0
    return h / h.max()


@dataclass
class _Driver:
    """One input of the encoding model: `values` `(n, F)` per frame, its share of the signal variance, and whether
    its voxel map is positive (an amplitude: more words, more BOLD) rather than signed tuning."""

    name: str
    values: np.ndarray
    share: float
    positive: bool = False


class _Cortex:
    """Voxels on a square sheet with smooth maps (one per driver, made on first use), and a generator of
    correlated noise."""

    def __init__(self, cfg: SimulationConfig):
        self.cfg = cfg
        self.side = int(np.sqrt(cfg.voxels))
        self.n_voxels = self.side ** 2
        # separate streams (the stimuli have the seed's own), so that the timing of the stimuli, the maps and the
        # noise do not depend on which feature spaces drive the voxels: SNR 0 gives the same frames with any
        rng = np.random.default_rng([cfg.seed, 1])
        self.map_rng, self.rng = np.random.default_rng([cfg.seed, 2]), rng
        responsive = gaussian_filter(rng.standard_normal((self.side, self.side)), sigma=3.0).ravel()
        self.responsive = responsive >= np.quantile(responsive, 1 - cfg.responsive_fraction)  # contiguous patches
        self.global_maps = rng.standard_normal((cfg.global_noise_factors, self.n_voxels))
        self.maps: dict[str, np.ndarray] = {}

    def _map(self, driver: _Driver) -> np.ndarray:
        """`(F, V)` smooth weights of a driver on the sheet (positive ones: 1 + 0.5 x unit-variance smooth noise)."""
        if driver.name not in self.maps:
            w = self.map_rng.standard_normal((driver.values.shape[1], self.side, self.side))
            sm = self.cfg.weight_smoothness
            w = gaussian_filter(w, sigma=(0, sm, sm)).reshape(driver.values.shape[1], self.n_voxels)
            if driver.positive:
                w = 1.0 + 0.5 * w / w.std()
            self.maps[driver.name] = w
        return self.maps[driver.name]

    def signal(self, drivers: Sequence[_Driver]) -> np.ndarray:
        """`(n, V)` signal: each driver's standardised values through its map, scaled to unit variance per voxel and
        weighted by the square root of its share; the sum at unit variance in responsive voxels, zero elsewhere."""
        total = np.zeros((len(drivers[0].values), self.n_voxels))
        for d in drivers:
            if d.share > 0:
                total += np.sqrt(d.share) * _unit_variance(_unit_variance(d.values) @ self._map(d))
        s = _unit_variance(total)
        s[:, ~self.responsive] = 0.0
        return s

    def noise(self, n: int, ar1: float, blocks: Sequence[int] = ()) -> np.ndarray:
        """`(n, V)` noise: smooth on the sheet, partly global, AR(1) in time (restarted at each row in `blocks`:
        the first rows of separately presented blocks), unit variance per voxel."""
        local = gaussian_filter(self.rng.standard_normal((n, self.side, self.side)),
                                sigma=(0, self.cfg.noise_smoothness, self.cfg.noise_smoothness)).reshape(n, -1)
        shared = self.rng.standard_normal((n, self.global_maps.shape[0])) @ self.global_maps
        g = self.cfg.global_noise_weight
        e = np.sqrt(1 - g) * _unit_variance(local) + np.sqrt(g) * _unit_variance(shared)
        out = np.empty_like(e)
        out[0] = e[0]
        restart = set(blocks)
        for t in range(1, n):  # AR(1) with stationary unit variance
            out[t] = e[t] if t in restart else ar1 * out[t - 1] + np.sqrt(1 - ar1 ** 2) * e[t]
        return _unit_variance(out)

    def record(self, drivers: Sequence[_Driver], ar1: float, blocks: Sequence[int] = ()) -> np.ndarray:
        """One run of BOLD-like data `(n, V)` for drivers with `n` rows each (`blocks`: see `noise`)."""
        return np.sqrt(self.cfg.snr) * self.signal(drivers) + self.noise(len(drivers[0].values), ar1, blocks)


def space_name(layer: int) -> str:
    """The name of the backbone's mean state after `layer` in a space provider's output (0: input embedding)."""
    return "input embedding" if layer == 0 else f"layer {layer}"


def content_drivers(spaces: dict[str, np.ndarray], cfg: SimulationConfig) -> list[_Driver]:
    """The content mixture: MiniLM (`minilm_weight`) and each of `cfg.layers` the provider gave (the rest, split by
    `layer_weights`), together `cfg.content_share` of the signal; MiniLM alone when no layer is there."""
    weights = cfg.layer_weights or (1.0,) * len(cfg.layers)
    layers = [(space_name(layer), w) for layer, w in zip(cfg.layers, weights) if space_name(layer) in spaces]
    if not layers:
        return [_Driver(MINILM, spaces[MINILM], cfg.content_share)]
    total = sum(w for _, w in layers)
    parts = [(MINILM, cfg.minilm_weight)] + [(name, (1 - cfg.minilm_weight) * w / total) for name, w in layers]
    return [_Driver(name, spaces[name], cfg.content_share * w) for name, w in parts]


def passage_driver(content: Sequence[_Driver], passage_of_row: Sequence[str], share: float) -> _Driver:
    """The content spaces, each standardised and averaged over the rows of the same passage (rows with no
    passage, e.g. silence, stay zero): the context a sentence is read in."""
    values = np.concatenate([_unit_variance(d.values) for d in content], axis=1)
    labels = np.asarray(passage_of_row)
    out = np.zeros_like(values)
    for name in set(labels.tolist()) - {""}:
        rows = labels == name
        out[rows] = values[rows].mean(0)
    return _Driver("passage", out, share)


def _one_hot(labels: Sequence[str], names: Sequence[str]) -> np.ndarray:
    """`(n, len(names))` indicator of each label (all zero for a label not in `names`, e.g. silence)."""
    index = {n: i for i, n in enumerate(names)}
    out = np.zeros((len(labels), len(names)))
    for row, label in enumerate(labels):
        if label in index:
            out[row, index[label]] = 1.0
    return out


def generating_model(cfg: SimulationConfig, spaces: dict[str, np.ndarray]) -> dict:
    """The generating model as recorded in dataset.json."""
    content = {d.name: round(d.share, 4) for d in content_drivers(spaces, cfg)}
    backbone = cfg.backbone if any(name != MINILM for name in content) else None
    return {"signal_shares": {**content, "passage context (content spaces averaged over the passage)":
                              cfg.passage_share, "n_words (positive amplitude map)": cfg.length_share,
                              **({"position in passage": cfg.position_share} if cfg.design == "sentence" else {}),
                              "topic": cfg.topic_share},
            "backbone": backbone, "content": "mean states of the text (MiniLM: sentence embedding)",
            "note": "a mixture of spaces, none of them alone; see brainllm.data.simulate"}


def _unit_variance(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(0)
    sd = x.std(0)
    return x / np.where(sd > 0, sd, 1.0)


def _zscore_runs(runs: list[np.ndarray]) -> np.ndarray:
    """Each run z-scored per voxel, stacked: `(sum T_r, V)`."""
    return np.concatenate([_unit_variance(r) for r in runs])


def _pca(data: np.ndarray, components: int) -> tuple[np.ndarray, dict]:
    """PCA of z-scored frames `(n, V)` to `components` dims (fitted on all frames: simulated data only)."""
    k = min(components, data.shape[0] - 1, data.shape[1])
    u, s, _ = np.linalg.svd(data - data.mean(0), full_matrices=False)
    scores = (u[:, :k] * s[:k]).astype(np.float32)
    explained = float((s[:k] ** 2).sum() / (s ** 2).sum())
    return scores, {"step": "zscore_per_run+pca", "components": k, "explained_variance": round(explained, 4),
                    "fitted_on": "all frames (acceptable only for simulated data)"}


def _shuffled_passages(cfg: SimulationConfig, rng: np.random.Generator) -> list[Passage]:
    passages = load_corpus()
    order = rng.permutation(len(passages))
    chosen = [passages[i] for i in order]
    return chosen[:cfg.passages] if cfg.passages else chosen


def _meta(cfg: SimulationConfig, preprocessing: list[dict], tr: float | None, generating: dict) -> dict:
    return {"subject": f"sim{cfg.seed:02d}", "source": "simulated", "simulated": True,
            "description": SIMULATED_LABEL, "design": cfg.design, "task": cfg.task, "tr": tr, "generating_model": generating,
            "simulation": asdict(cfg), "preprocessing": preprocessing}


def _simulate_sentence(cfg: SimulationConfig, rng: np.random.Generator, spaces: SpaceProvider) -> Simulation:
    passages = _shuffled_passages(cfg, rng)
    sentences = [(p, j, s) for p in passages for j, s in enumerate(p.sentences)]
    texts = [" ".join(s.split()) for _, _, s in sentences]
    got = spaces(texts)
    topics = sorted({p.topic for p in passages})
    content = content_drivers(got, cfg)
    drivers = content + [
        passage_driver(content, [p.id for p, _, _ in sentences], cfg.passage_share),
        _Driver("n_words", np.array([[len(t.split())] for t in texts], dtype=float), cfg.length_share, True),
        _Driver("position", np.array([[j] for _, j, _ in sentences], dtype=float), cfg.position_share),
        _Driver("topic", _one_hot([p.topic for p, _, _ in sentences], topics), cfg.topic_share)]
    cortex = _Cortex(cfg)
    # passages are separate blocks (Pereira: passages in random order, each image averaged over repetitions),
    # so noise is autocorrelated within a passage only; across passage boundaries it would tie the last
    # sentence of one passage to the first of the next and make position anti-decodable at SNR 0
    starts = [row for row, (_, j, _) in enumerate(sentences) if j == 0]
    bold = cortex.record(drivers, 0.3 if cfg.ar1 is None else cfg.ar1, starts)
    frames, pca_log = _pca(_zscore_runs([bold]), cfg.components)
    samples = []
    for row, (passage, j, sentence) in enumerate(sentences):
        chunks = [" ".join(c) for c in chunk_words(sentence.split())]
        for k, prompt, continuation in task_texts(chunks, cfg.task):
            samples.append(Sample(id=f"{passage.id}_s{j}_k{k}", stimulus=passage.id, subject=f"sim{cfg.seed:02d}",
                                  prompt=prompt, continuation=continuation, frames=[row],
                                  extra={"topic": passage.topic, "sentence": j, "k": k}))
    log_ = [{"step": "simulate", "design": "sentence", "snr": cfg.snr, "voxels": cortex.n_voxels,
             "generating_model": generating_model(cfg, got)}, pca_log]
    ds = BrainTextDataset(frames, samples, _meta(cfg, log_, None, log_[0]["generating_model"]))
    return Simulation(ds, got[MINILM], cfg, {"responsive_voxels": int(cortex.responsive.sum())})


def _normalise_words(sentence: str) -> list[str]:
    """Transcript style of the Huth data: lower case, no punctuation."""
    return [w for w in re.sub(r"[^a-z' -]", "", sentence.lower().replace("-", " ")).split() if w]


def _word_onsets(n_words_per_sentence: list[int], cfg: SimulationConfig, rng: np.random.Generator) -> np.ndarray:
    """Onset time (s) of every word: gamma-distributed gaps around the mean rate, pauses at sentence ends."""
    onsets, t = [], cfg.lead_in
    mean_gap = 1.0 / cfg.words_per_second
    for n in n_words_per_sentence:
        for _ in range(n):
            onsets.append(t)
            t += rng.gamma(shape=8.0, scale=mean_gap / 8.0)
        t += rng.uniform(0.2, 0.8)  # sentence-final pause
    return np.asarray(onsets)


def _story_drivers(chunk_text: list[str], passage_of_tr: list[str], topic_of_tr: list[str], spaces: SpaceProvider,
                   topics: list[str], cfg: SimulationConfig) -> tuple[list[_Driver], dict[str, np.ndarray]]:
    """The drivers of one story, `(n_trs, F)` each before the HRF: the content spaces of each TR's words (centred
    over TRs with words, zero in silence), their passage means, its word count, its passage's topic; and the
    spaces themselves."""
    heard = [i for i, t in enumerate(chunk_text) if t]
    got = spaces([chunk_text[i] for i in heard])
    full = {}
    for name, values in got.items():
        full[name] = np.zeros((len(chunk_text), values.shape[1]))
        full[name][heard] = values - values.mean(0)
    content = content_drivers(full, cfg)
    drivers = content + [
        passage_driver(content, passage_of_tr, cfg.passage_share),
        _Driver("n_words", np.array([[len(t.split())] for t in chunk_text], dtype=float), cfg.length_share, True),
        _Driver("topic", _one_hot(topic_of_tr, topics), cfg.topic_share)]
    return drivers, full


def _simulate_story(cfg: SimulationConfig, rng: np.random.Generator, spaces: SpaceProvider) -> Simulation:
    passages = _shuffled_passages(cfg, rng)
    n_stories = min(cfg.stories, len(passages))
    if n_stories < 3:
        raise DatasetError(f"The story design needs at least 3 stories (found {n_stories}) so a split is possible.")
    stories = [passages[i::n_stories] for i in range(n_stories)]
    topics = sorted({p.topic for p in passages})
    hrf = canonical_hrf(cfg.tr)
    ar1 = 0.5 if cfg.ar1 is None else cfg.ar1
    runs, run_features, story_info = [], [], []
    cortex = _Cortex(cfg)
    for s_idx, story in enumerate(stories):
        sentences = [(p, _normalise_words(s)) for p in story for s in p.sentences]
        words = [w for _, s in sentences for w in s]
        passage_of_word = [p for p, s in sentences for _ in s]
        onsets = _word_onsets([len(s) for _, s in sentences], cfg, rng)
        n_trs = int(np.ceil((onsets[-1] + cfg.lead_in) / cfg.tr))
        tr_of_word = (onsets // cfg.tr).astype(int)
        chunk_text = [" ".join(w for w, t in zip(words, tr_of_word) if t == i) for i in range(n_trs)]
        passage_of_tr, topic_of_tr = [""] * n_trs, [""] * n_trs  # silence: none
        for passage, t in zip(reversed(passage_of_word), reversed(tr_of_word)):
            passage_of_tr[t], topic_of_tr[t] = passage.id, passage.topic  # those of the TR's first word
        drivers, full = _story_drivers(chunk_text, passage_of_tr, topic_of_tr, spaces, topics, cfg)
        for d in drivers:  # the haemodynamic response: causal convolution, cut to the run
            d.values = lfilter(hrf, [1.0], d.values, axis=0)
        runs.append(cortex.record(drivers, ar1))
        run_features.append(full[MINILM])
        story_info.append((f"story{s_idx:02d}", words, tr_of_word, n_trs, [p.id for p in story], onsets))
    generating = generating_model(cfg, full)
    zscored = _zscore_runs(runs)
    frames, pca_log = _pca(zscored, cfg.components)
    samples, timeline, offset = [], [], 0
    for name, words, tr_of_word, n_trs, passage_ids, onsets in story_info:
        # TR i acquires [i*tr, (i+1)*tr); its centre is the TR time; word times are onsets
        timeline.append(Run(name, name, (offset, offset + n_trs), [cfg.tr * (i + 0.5) for i in range(n_trs)],
                            words, onsets.tolist()))
        # one sample per TR with words (and preceding context), frames = the TRs after it (shared with real readers)
        made, _ = tr_chunk_samples(words, tr_of_word, n_trs, name=name, stimulus=name, subject=f"sim{cfg.seed:02d}",
                                   frame_offset=offset, hrf_delay=cfg.hrf_delay,
                                   frames_per_sample=cfg.frames_per_sample, prompt_words=cfg.prompt_words)
        samples += made
        offset += n_trs
    log_ = [{"step": "simulate", "design": "story", "snr": cfg.snr, "voxels": cortex.n_voxels, "tr": cfg.tr,
             "hrf": "SPM canonical double gamma", "hrf_delay_trs": cfg.hrf_delay,
             "frames_per_sample": cfg.frames_per_sample, "generating_model": generating,
             "stories": {n: p for n, _, _, _, p, _ in story_info}}, pca_log,
            {"step": "raw", "frames": "raw/frames.npy: the simulated voxels, z-scored per run (before PCA)"}]
    raw = zscored.astype(np.float32)
    ds = BrainTextDataset(frames, samples, _meta(cfg, log_, cfg.tr, generating), runs=timeline, raw=raw)
    return Simulation(ds, np.concatenate(run_features), cfg, {"responsive_voxels": int(cortex.responsive.sum())})


def simulate(config: SimulationConfig | None = None, spaces: SpaceProvider | None = None, **overrides) -> Simulation:
    """Simulate a participant; deterministic for a given config, seed and feature provider.

    `spaces` gives the content feature spaces of texts: MiniLM (`"minilm"`) and the backbone's mean states
    (`space_name(layer)` for `config.layers`), e.g. `model.text_spaces.backbone_spaces(config.backbone,
    config.layers)` (what `brainllm simulate` passes); without it, MiniLM alone drives the content
    (`minilm_spaces`: no backbone, used by tests), and dataset.json says so.
    Returns a `Simulation` whose `.dataset` is a prepared dataset labelled as simulated.
    """
    cfg = config or SimulationConfig(**overrides)
    if check_task(cfg.task) != "continuation" and cfg.design != "sentence":
        raise DatasetError(f"task={cfg.task!r} needs the sentence design; the story design's samples are TR chunks.")
    if spaces is None:
        log.info("no backbone feature provider given: MiniLM alone drives the simulated content")
    spaces = spaces or minilm_spaces
    rng = np.random.default_rng(cfg.seed)
    sim = _simulate_sentence(cfg, rng, spaces) if cfg.design == "sentence" else _simulate_story(cfg, rng, spaces)
    log.info("Simulated %d samples, %d frames (%s design, snr %.3g) -- %s", len(sim.dataset),
             sim.dataset.frames.shape[0], cfg.design, cfg.snr, SIMULATED_LABEL)
    return sim
