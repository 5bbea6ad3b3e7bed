"""The simulated participant: a voxelwise encoding model of semantic features, plus realistic noise.

SIMULATED DATA. This is the embedded default that lets anyone run brainllm end to end without real fMRI. It is
built the way neuroscience methods papers build ground-truth simulations:

1. Stimuli: the passages shipped in `brainllm/data/corpus` (written for this project).
2. Semantic features: all-MiniLM-L6-v2 embeddings (384-d) of the perceived text: of each sentence (sentence
   design) or of the words heard in each TR (story design), centred; in the story design also the number of
   words in each TR (an auditory-like response, `rate_share` of the semantic variance), so speech rate is
   decodable as in real data.
3. Encoding model: voxels lie on a 2-D cortical sheet; a fraction of them respond, each with tuning weights
   `W (384, V)` that vary smoothly across the sheet. Story design: the feature time series is convolved with the
   SPM canonical haemodynamic response (double gamma) at the 2 s TR.
4. Noise: spatially smooth (Gaussian on the sheet) plus a few global fluctuation components shared by all
   voxels, AR(1) in time. Signal and noise are each scaled to unit variance per voxel, and
   `frame = sqrt(snr) * signal + noise` in responsive voxels (so `--snr` is the per-voxel signal-to-noise variance
   ratio; `--snr 0` gives pure noise).
5. Preprocessing as for real data: z-score per run, then PCA to `components` dimensions. Here PCA and z-scoring
   are fitted on all frames, test included: acceptable only because the data are simulated and the transform is
   unsupervised; the real-data pipeline fits them on training stimuli only.

Designs: `sentence` (Pereira-like: one frame per sentence, each sentence cut into 3 chunks, samples k = 1, 2 share
the sentence's frame, stimulus = passage) and `story` (Huth-like: passages concatenated into stories with word
onset times, 2 s TRs, one sample per TR chunk, frames = the TRs after the chunk shifted by a haemodynamic delay,
stimulus = story).
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.stats import gamma

from ..errors import DatasetError
from .corpus import Passage, load_corpus
from .dataset import BrainTextDataset, Run, Sample
from .features import sentence_embeddings
from .preprocess import tr_chunk_samples

log = logging.getLogger(__name__)

DESIGNS = ("sentence", "story")
SIMULATED_LABEL = "SIMULATED participant (brainllm.data.simulate), not real fMRI"


@dataclass
class SimulationConfig:
    """Parameters of the simulated participant. Defaults give a hard but learnable decoding problem."""

    design: str = "sentence"          # "sentence" (Pereira-like) or "story" (Huth-like)
    snr: float = 0.1                  # per-voxel signal variance / noise variance in responsive voxels; 0 = no signal
    voxels: int = 2000                # voxels on the simulated cortical sheet (rounded down to a square grid)
    responsive_fraction: float = 0.5  # fraction of voxels tuned to semantic features
    components: int = 200             # PCA dimensions kept (the paper used 1000 on real data)
    seed: int = 0
    passages: int | None = None       # use only the first N passages of the shuffled corpus (None: all)
    weight_smoothness: float = 2.0    # Gaussian sigma (voxels) of tuning maps on the sheet
    noise_smoothness: float = 1.5     # Gaussian sigma (voxels) of spatially correlated noise
    global_noise_factors: int = 5     # shared fluctuation components (physiological noise)
    global_noise_weight: float = 0.3  # their share of the noise variance
    ar1: float | None = None          # temporal AR(1) coefficient of noise; None: 0.3 sentence, 0.5 story
    # story design only
    tr: float = 2.0                   # seconds per TR
    words_per_second: float = 2.5     # mean speech rate (Huth stories: about 2.5-3 words/s)
    stories: int = 12                 # passages are dealt into this many stories (runs)
    hrf_delay: int = 1                # first frame of a sample = TR of its chunk + this many TRs
    frames_per_sample: int = 4        # T, frames per sample
    prompt_words: int = 20            # words of preceding context in a story sample's prompt
    lead_in: float = 10.0             # seconds of silence before and after each story
    rate_share: float = 0.2           # word-rate (auditory-like) signal variance / semantic signal variance

    def __post_init__(self) -> None:
        if self.design not in DESIGNS:
            raise DatasetError(f"design must be one of {DESIGNS}, got '{self.design}'.")
        if self.rate_share < 0:
            raise DatasetError(f"rate_share must be >= 0, got {self.rate_share}.")
        if self.snr < 0:
            raise DatasetError(f"snr must be >= 0, got {self.snr}.")
        if self.voxels < 16:
            raise DatasetError(f"voxels must be at least 16, got {self.voxels}.")


@dataclass
class Simulation:
    """A simulated dataset plus its ground truth (kept in memory only; not part of the prepared format).

    `features`: `(n_frames, F)` semantic features that generated each frame (before the HRF, story design).
    """

    dataset: BrainTextDataset
    features: np.ndarray
    config: SimulationConfig
    info: dict = field(default_factory=dict)


def chunk_words(words: list[str], n_chunks: int = 3) -> list[list[str]]:
    """Cut a sentence into `n_chunks` chunks of floor(n/3) words, the remainder going to the last chunks.

    As in the authors' Pereira pickles: 7 words -> 2/2/3, 8 -> 2/3/3, 13 -> 4/4/5.
    """
    if len(words) < n_chunks:
        raise DatasetError(f"A sentence needs at least {n_chunks} words to be chunked, got {words!r}.")
    base, extra = divmod(len(words), n_chunks)
    sizes = [base + (1 if i >= n_chunks - extra else 0) for i in range(n_chunks)]
    chunks, start = [], 0
    for size in sizes:
        chunks.append(words[start:start + size])
        start += size
    return chunks


def canonical_hrf(tr: float, duration: float = 32.0) -> np.ndarray:
    """SPM canonical double-gamma HRF sampled every `tr` seconds, `(ceil(duration/tr),)`, peak-normalised."""
    t = np.arange(0, duration, tr)
    h = gamma.pdf(t, 6) - gamma.pdf(t, 16) / 6.0
    return h / h.max()


class _Cortex:
    """Voxels on a square sheet with smooth tuning maps, and a generator of correlated noise."""

    def __init__(self, cfg: SimulationConfig, n_features: int, rng: np.random.Generator):
        self.cfg = cfg
        self.side = int(np.sqrt(cfg.voxels))
        self.n_voxels = self.side ** 2
        self.rng = rng
        w = rng.standard_normal((n_features, self.side, self.side))
        w = gaussian_filter(w, sigma=(0, cfg.weight_smoothness, cfg.weight_smoothness))
        self.weights = w.reshape(n_features, self.n_voxels)  # (F, V)
        responsive = gaussian_filter(rng.standard_normal((self.side, self.side)), sigma=3.0).ravel()
        self.responsive = responsive >= np.quantile(responsive, 1 - cfg.responsive_fraction)  # contiguous patches
        self.global_maps = rng.standard_normal((cfg.global_noise_factors, self.n_voxels))

    def signal(self, features: np.ndarray) -> np.ndarray:
        """`(n, F)` features -> `(n, V)` signal, unit variance in responsive voxels, zero elsewhere."""
        s = (features - features.mean(0)) @ self.weights
        s = _unit_variance(s)
        s[:, ~self.responsive] = 0.0
        return s

    def noise(self, n: int, ar1: float) -> np.ndarray:
        """`(n, V)` noise: smooth on the sheet, partly global, AR(1) in time, unit variance per voxel."""
        local = gaussian_filter(self.rng.standard_normal((n, self.side, self.side)),
                                sigma=(0, self.cfg.noise_smoothness, self.cfg.noise_smoothness)).reshape(n, -1)
        shared = self.rng.standard_normal((n, self.global_maps.shape[0])) @ self.global_maps
        g = self.cfg.global_noise_weight
        e = np.sqrt(1 - g) * _unit_variance(local) + np.sqrt(g) * _unit_variance(shared)
        out = np.empty_like(e)
        out[0] = e[0]
        for t in range(1, n):  # AR(1) with stationary unit variance
            out[t] = ar1 * out[t - 1] + np.sqrt(1 - ar1 ** 2) * e[t]
        return _unit_variance(out)

    def record(self, features: np.ndarray, ar1: float) -> np.ndarray:
        """One run of BOLD-like data `(n, V)` for a feature time series `(n, F)`."""
        return np.sqrt(self.cfg.snr) * self.signal(features) + self.noise(len(features), ar1)


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


def _meta(cfg: SimulationConfig, preprocessing: list[dict], tr: float | None) -> dict:
    return {"subject": f"sim{cfg.seed:02d}", "source": "simulated", "simulated": True,
            "description": SIMULATED_LABEL, "design": cfg.design, "tr": tr,
            "simulation": asdict(cfg), "preprocessing": preprocessing}


def _simulate_sentence(cfg: SimulationConfig, rng: np.random.Generator) -> Simulation:
    passages = _shuffled_passages(cfg, rng)
    sentences = [(p, j, s) for p in passages for j, s in enumerate(p.sentences)]
    features = sentence_embeddings([s for _, _, s in sentences])
    cortex = _Cortex(cfg, features.shape[1], rng)
    bold = cortex.record(features, 0.3 if cfg.ar1 is None else cfg.ar1)
    frames, pca_log = _pca(_zscore_runs([bold]), cfg.components)
    samples = []
    for row, (passage, j, sentence) in enumerate(sentences):
        chunks = chunk_words(sentence.split())
        for k in (1, 2):
            samples.append(Sample(
                id=f"{passage.id}_s{j}_k{k}", stimulus=passage.id, subject=f"sim{cfg.seed:02d}",
                prompt=" ".join(w for c in chunks[:k] for w in c), continuation=" ".join(chunks[k]),
                frames=[row], extra={"topic": passage.topic, "sentence": j, "k": k}))
    log_ = [{"step": "simulate", "design": "sentence", "snr": cfg.snr, "voxels": cortex.n_voxels,
             "features": "all-MiniLM-L6-v2 sentence embeddings"}, pca_log]
    ds = BrainTextDataset(frames, samples, _meta(cfg, log_, None))
    return Simulation(ds, features, cfg, {"responsive_voxels": int(cortex.responsive.sum())})


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


def _simulate_story(cfg: SimulationConfig, rng: np.random.Generator) -> Simulation:
    passages = _shuffled_passages(cfg, rng)
    n_stories = min(cfg.stories, len(passages))
    if n_stories < 3:
        raise DatasetError(f"The story design needs at least 3 stories (found {n_stories}) so a split is possible.")
    stories = [passages[i::n_stories] for i in range(n_stories)]
    hrf = canonical_hrf(cfg.tr)
    ar1 = 0.5 if cfg.ar1 is None else cfg.ar1
    runs, run_features, story_info = [], [], []
    cortex = None
    for s_idx, story in enumerate(stories):
        sentences = [_normalise_words(s) for p in story for s in p.sentences]
        words = [w for s in sentences for w in s]
        onsets = _word_onsets([len(s) for s in sentences], cfg, rng)
        n_trs = int(np.ceil((onsets[-1] + cfg.lead_in) / cfg.tr))
        tr_of_word = (onsets // cfg.tr).astype(int)
        chunk_text = [" ".join(w for w, t in zip(words, tr_of_word) if t == i) for i in range(n_trs)]
        feats = sentence_embeddings(chunk_text)  # (n_trs, 384), zeros in silent TRs
        centred = np.where(np.any(feats != 0, axis=1, keepdims=True), feats - feats[feats.any(1)].mean(0), 0.0)
        # an auditory-like response to how many words each TR holds, so that speech rate is decodable as in real
        # data (Tang et al.'s word-rate model); it carries `rate_share` of the semantic features' variance
        rate = np.bincount(tr_of_word, minlength=n_trs).astype(float)
        rate -= rate.mean()
        scale = np.sqrt(cfg.rate_share * centred.var(0).sum() / max(float(rate.var()), 1e-12))
        driving = np.concatenate([centred, scale * rate[:, None]], axis=1)  # (n_trs, 385)
        if cortex is None:
            cortex = _Cortex(cfg, driving.shape[1], rng)
        convolved = np.stack([np.convolve(driving[:, f], hrf)[:n_trs] for f in range(driving.shape[1])], axis=1)
        runs.append(cortex.record(convolved, ar1))
        run_features.append(feats)
        story_info.append((f"story{s_idx:02d}", words, tr_of_word, n_trs, [p.id for p in story], onsets))
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
             "frames_per_sample": cfg.frames_per_sample, "features": "all-MiniLM-L6-v2 embeddings of each TR's words + its word count",
             "rate_share": cfg.rate_share,
             "stories": {n: p for n, _, _, _, p, _ in story_info}}, pca_log,
            {"step": "raw", "frames": "raw/frames.npy: the simulated voxels, z-scored per run (before PCA)"}]
    raw = zscored.astype(np.float32)
    ds = BrainTextDataset(frames, samples, _meta(cfg, log_, cfg.tr), runs=timeline, raw=raw)
    return Simulation(ds, np.concatenate(run_features), cfg, {"responsive_voxels": int(cortex.responsive.sum())})


def simulate(config: SimulationConfig | None = None, **overrides) -> Simulation:
    """Simulate a participant; deterministic for a given config (seed included).

    Returns a `Simulation` whose `.dataset` is a prepared dataset labelled as simulated.
    """
    cfg = config or SimulationConfig(**overrides)
    rng = np.random.default_rng(cfg.seed)
    sim = _simulate_sentence(cfg, rng) if cfg.design == "sentence" else _simulate_story(cfg, rng)
    log.info("Simulated %d samples, %d frames (%s design, snr %.3g) -- %s", len(sim.dataset),
             sim.dataset.frames.shape[0], cfg.design, cfg.snr, SIMULATED_LABEL)
    return sim
