"""Preprocessing of real fMRI before it becomes a prepared dataset, with every fitted step fitted on training data.

Two kinds of step:

* **Per-run steps** (time series only): detrending and z-scoring of each run (story) with that run's own
  statistics. They use no labels and no other run, so they are applied before the split.
* **Fitted steps**: voxel selection by cross-validated encoding performance, voxelwise standardisation and PCA.
  `fit_transform` fits them on the frames of *training* samples only (the split is decided first, see
  `brainllm.data.convert`), and the resulting `Transform` is then applied to every frame (train, validation, test).
  A `Transform` is saved as `.npy` arrays plus a JSON header (never pickle), so it can be inspected and re-applied.

Also here: `tr_chunk_samples`, the TR chunking shared by the simulated story design and the Huth/Narratives
readers (prompt = preceding words, continuation = the words heard in one TR, frames = the TRs after it shifted by a
haemodynamic delay), and `Recording`, what a reader hands to the conversion pipeline.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import DatasetError
from ..io import read_json, write_json
from .dataset import Run, Sample

log = logging.getLogger(__name__)

TRANSFORM_FORMAT = "brainllm-transform"


# ---------------------------------------------------------------------------------------------- configuration
@dataclass
class PreprocessConfig:
    """What `brainllm convert` does to the raw frames; the defaults follow the paper where it says.

    Per-run steps (time series only): `detrend` (polynomial order removed per run; None = off) and `zscore_runs`.
    Fitted steps (on training samples' frames only): `voxel_selection` ("none" or "encoding": keep the
    `n_voxels` voxels best predicted by a ridge model of text features, cross-validated across training
    stimuli), `standardize` (voxelwise z-score with training mean/std), `pca_components` (None = no PCA; the paper
    used 1000; clipped, with a logged message, to what the training frames support). `keep_raw` keeps the
    raw-space frames in the output folder so another split can be refitted without the source files.
    """

    detrend: int | None = 1
    zscore_runs: bool = True
    voxel_selection: str = "none"
    n_voxels: int = 10000
    encoding_features: str = "minilm"
    encoding_alphas: tuple[float, ...] = (1.0, 10.0, 100.0, 1000.0, 10000.0)
    encoding_folds: int = 5
    standardize: bool = True
    pca_components: int | None = 1000
    keep_raw: bool = True

    def __post_init__(self) -> None:
        if self.voxel_selection not in ("none", "encoding"):
            raise DatasetError(f"voxel_selection must be 'none' or 'encoding', got {self.voxel_selection!r}.")
        if self.encoding_features not in ("minilm", "hashed"):
            raise DatasetError(f"encoding_features must be 'minilm' or 'hashed', got {self.encoding_features!r}.")
        if self.detrend is not None and self.detrend < 0:
            raise DatasetError(f"detrend is a polynomial order >= 0 (or None), got {self.detrend}.")
        if self.pca_components is not None and self.pca_components < 1:
            raise DatasetError(f"pca_components must be >= 1 or None, got {self.pca_components}.")
        if self.n_voxels < 1 or self.encoding_folds < 2:
            raise DatasetError("n_voxels must be >= 1 and encoding_folds >= 2.")
        self.encoding_alphas = tuple(float(a) for a in self.encoding_alphas)


@dataclass
class Recording:
    """What a reader delivers: raw frames, the samples that index them, and what was read and dropped.

    `raw`: `(n_frames, V)` float32 in the source's units (may contain NaN columns, which the pipeline drops).
    `runs`: `[start, stop)` row ranges of the time-series runs (empty for event designs such as Pereira).
    `columns`: `(V,)` index of each raw column in the source's voxel/vertex space (for the record).
    `preprocessing`: steps already applied by the reader (ROI masks, cropping, averaging of repeats).
    `dropped`: counts (or lists) of what the reader dropped, by reason.
    `timeline`: the runs with their timed transcripts (story designs), carried into the dataset's runs.jsonl.
    """

    raw: np.ndarray
    samples: list[Sample]
    meta: dict[str, Any]
    runs: list[tuple[int, int]] = field(default_factory=list)
    columns: np.ndarray | None = None
    preprocessing: list[dict] = field(default_factory=list)
    dropped: dict[str, Any] = field(default_factory=dict)
    timeline: list[Run] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- TR chunking
def tr_chunk_samples(words: Sequence[str], word_trs: Sequence[int] | np.ndarray, n_trs: int, *, name: str,
                     stimulus: str, subject: str, frame_offset: int = 0, hrf_delay: int = 1,
                     frames_per_sample: int = 4, prompt_words: int = 20, record_span: bool = False,
                     extra: dict | None = None) -> tuple[list[Sample], Counter]:
    """One sample per TR in which words were heard.

    Args:
        words: the run's words in temporal order, `(n_words,)`.
        word_trs: `(n_words,)` int, the row of the run's response array each word falls in (non-decreasing;
            may be negative or >= n_trs for words heard before the first / after the last kept row).
        n_trs: rows of the run's response array.
        name: prefix of the sample ids (`{name}_tr{i:04d}`).
        frame_offset: row of this run's first TR in the dataset's frame array.
        hrf_delay: the first frame of the chunk in TR i is TR i + hrf_delay.
        frames_per_sample: T, consecutive TRs per sample.
        prompt_words: words of preceding context in the prompt.
        record_span: add `span_trs = [TR of the first prompt word, last frame TR]` (run-local), which the
            within-story split uses to keep a gap between train and test.
        extra: fields added to every sample.

    Returns the samples and the counts of chunks skipped, by reason (`no_preceding_words`,
    `frames_outside_run`). A chunk is skipped when it has no preceding words or its frames leave the run.
    """
    trs = np.asarray(word_trs, dtype=np.int64)
    if len(trs) != len(words):
        raise DatasetError(f"{name}: {len(words)} words but {len(trs)} word TRs.")
    if len(trs) and np.any(np.diff(trs) < 0):
        raise DatasetError(f"{name}: word times are not in temporal order; sort the transcript by time first.")
    samples: list[Sample] = []
    skipped: Counter = Counter()
    for i in np.unique(trs):
        lo, hi = np.searchsorted(trs, i, "left"), np.searchsorted(trs, i, "right")
        first = int(i) + hrf_delay
        if lo == 0:
            skipped["no_preceding_words"] += 1
            continue
        if first < 0 or first + frames_per_sample > n_trs:
            skipped["frames_outside_run"] += 1
            continue
        start = max(0, lo - prompt_words)
        fields = {"tr_index": int(i), "word_index": int(lo)}
        if record_span:
            fields["span_trs"] = [int(trs[start]), first + frames_per_sample - 1]
        fields.update(extra or {})
        samples.append(Sample(
            id=f"{name}_tr{int(i):04d}", stimulus=stimulus, subject=subject, prompt=" ".join(words[start:lo]),
            continuation=" ".join(words[lo:hi]),
            frames=[frame_offset + first + j for j in range(frames_per_sample)], extra=fields))
    return samples, skipped


# ---------------------------------------------------------------------------------------------- per-run steps
def clean_runs(raw: np.ndarray, runs: Sequence[tuple[int, int]], detrend: int | None,
               zscore: bool, inplace: bool = False) -> tuple[np.ndarray, np.ndarray, list[dict], dict]:
    """Drop non-finite columns, then detrend and z-score each run with its own statistics.

    Args:
        raw: `(n_frames, V)` array; not modified unless `inplace` (which saves a copy of whole-brain data when
            `raw` is a writeable float32 array without NaN columns).
        runs: `[start, stop)` row ranges; empty for event designs (then only the non-finite check runs).

    Returns `(cleaned (n_frames, V') float32, kept (V,) bool, log steps, dropped counts)`. Columns that are
    constant within some run (no signal; they would become 0/0) are dropped too.
    """
    finite = np.ones(raw.shape[1], dtype=bool)
    for start in range(0, raw.shape[0], 4096):  # blockwise: a whole-brain boolean copy would be gigabytes
        finite &= np.isfinite(raw[start:start + 4096]).all(axis=0)
    dropped: dict[str, int] = {}
    steps: list[dict] = []
    if not finite.all():
        dropped["nonfinite_voxels"] = int((~finite).sum())
        log.info("Dropping %d of %d voxels with NaN/Inf values.", dropped["nonfinite_voxels"], raw.shape[1])
    if inplace and finite.all() and raw.dtype == np.float32 and raw.flags.writeable:
        data = raw
    else:
        data = np.array(raw[:, finite], dtype=np.float32)
    constant = np.zeros(data.shape[1], dtype=bool)
    for start, stop in runs:
        block = data[start:stop].astype(np.float64)
        if detrend is not None and stop - start > detrend + 1:
            t = np.linspace(-1.0, 1.0, stop - start)
            basis = np.vander(t, detrend + 1)
            coef, *_ = np.linalg.lstsq(basis, block, rcond=None)
            block -= basis @ coef
        sd = block.std(axis=0)
        constant |= sd < 1e-8 * max(1.0, float(np.abs(block).max(initial=0.0)))
        if zscore:
            block = (block - block.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
        data[start:stop] = block
    if runs:
        steps.append({"step": "per_run", "detrend_order": detrend, "zscore": zscore, "runs": len(runs),
                      "fitted_on": "each run's own frames (no labels, no other run)"})
    if constant.any():
        dropped["constant_voxels"] = int(constant.sum())
        log.info("Dropping %d voxels that are constant within a run.", int(constant.sum()))
        data = data[:, ~constant]
        kept_idx = np.flatnonzero(finite)
        finite = np.zeros_like(finite)
        finite[kept_idx[~constant]] = True
    if data.shape[1] == 0:
        raise DatasetError("No voxel is left after dropping NaN/constant columns; check the input files.")
    return data, finite, steps, dropped


# ---------------------------------------------------------------------------------------------- fitted transform
@dataclass
class Transform:
    """Voxel selection -> standardisation -> PCA, fitted on training frames; `apply` maps raw to features.

    Shapes: `voxels` `(V_sel,)` column indices into the raw frames (None = all `input_dim`); `mean`, `scale`,
    `pca_mean` `(V_sel,)`; `components` `(k, V_sel)`. Any of them may be None (step off).
    """

    input_dim: int
    voxels: np.ndarray | None = None
    mean: np.ndarray | None = None
    scale: np.ndarray | None = None
    pca_mean: np.ndarray | None = None
    components: np.ndarray | None = None
    info: dict = field(default_factory=dict)

    _ARRAYS = ("voxels", "mean", "scale", "pca_mean", "components")

    @property
    def output_dim(self) -> int:
        if self.components is not None:
            return int(self.components.shape[0])
        return int(len(self.voxels)) if self.voxels is not None else self.input_dim

    def apply(self, raw: np.ndarray, chunk: int = 4096) -> np.ndarray:
        """`(n, input_dim)` raw frames -> `(n, output_dim)` float32, a block of rows at a time."""
        if raw.ndim != 2 or raw.shape[1] != self.input_dim:
            raise DatasetError(f"The transform expects (n, {self.input_dim}) frames, got {raw.shape}.")
        out = np.empty((raw.shape[0], self.output_dim), dtype=np.float32)
        for start in range(0, raw.shape[0], chunk):
            x = np.asarray(raw[start:start + chunk], dtype=np.float32)
            if self.voxels is not None:
                x = x[:, self.voxels]
            if self.mean is not None:
                x = (x - self.mean) / self.scale
            if self.components is not None:
                x = (x - self.pca_mean) @ self.components.T
            out[start:start + len(x)] = x
        return out

    def save(self, folder: str | os.PathLike) -> None:
        """Write `transform.json` plus one `.npy` per array into `folder` (created if needed)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        present = {}
        for name in self._ARRAYS:
            arr = getattr(self, name)
            if arr is not None:
                np.save(folder / f"{name}.npy", arr)
                present[name] = list(arr.shape)
        write_json(folder / "transform.json", {"format": TRANSFORM_FORMAT, "input_dim": self.input_dim,
                                               "output_dim": self.output_dim, "arrays": present, "info": self.info})

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "Transform":
        folder = Path(folder)
        header = read_json(folder / "transform.json")
        if header.get("format") != TRANSFORM_FORMAT:
            raise DatasetError(f"{folder}/transform.json is not a brainllm transform (format {header.get('format')!r}).")
        arrays = {name: np.load(folder / f"{name}.npy", allow_pickle=False) for name in header["arrays"]}
        return cls(int(header["input_dim"]), info=header.get("info", {}), **arrays)


def fit_transform(raw: np.ndarray, fit_rows: np.ndarray, cfg: PreprocessConfig,
                  train_samples: Sequence[Sample] = ()) -> tuple[Transform, list[dict]]:
    """Fit voxel selection, standardisation and PCA on `raw[fit_rows]` only.

    Args:
        raw: `(n_frames, V)` float32 cleaned frames (all splits; only `fit_rows` are read for fitting).
        fit_rows: `(n_fit,)` rows of training frames.
        train_samples: the training samples (needed by encoding-based voxel selection: text -> mean frame).

    Returns the transform and its log steps (each says it was fitted on training frames).
    """
    fit_rows = np.unique(np.asarray(fit_rows, dtype=np.int64))
    if len(fit_rows) < 2:
        raise DatasetError(f"Only {len(fit_rows)} training frame(s); fitted preprocessing needs at least 2.")
    steps: list[dict] = []
    n_fit, n_vox = len(fit_rows), raw.shape[1]
    voxels = None
    if cfg.voxel_selection == "encoding":
        scores = encoding_scores(raw, list(train_samples), cfg)
        k = min(cfg.n_voxels, n_vox)
        if k < cfg.n_voxels:
            log.info("voxel selection: %d voxels requested, only %d available; keeping all.", cfg.n_voxels, n_vox)
        voxels = np.sort(np.argsort(-scores, kind="stable")[:k]).astype(np.int64)
        steps.append({"step": "voxel_selection", "method": "cross-validated ridge encoding (text -> frames)",
                      "features": cfg.encoding_features, "alphas": list(cfg.encoding_alphas),
                      "folds": cfg.encoding_folds, "kept": int(k), "of": int(n_vox),
                      "min_score_kept": round(float(scores[voxels].min()), 4),
                      "fitted_on": "training samples only"})
    x = np.asarray(raw[fit_rows], dtype=np.float32)
    if voxels is not None:
        x = x[:, voxels]
    mean = scale = None
    if cfg.standardize:
        mean = x.mean(axis=0, dtype=np.float64).astype(np.float32)
        sd = x.std(axis=0, dtype=np.float64)
        scale = np.where(sd > 0, sd, 1.0).astype(np.float32)
        x = (x - mean) / scale
        steps.append({"step": "standardize", "fitted_on": "training frames only", "frames": n_fit,
                      "zero_variance_voxels": int((sd == 0).sum())})
    pca_mean = components = None
    if cfg.pca_components is not None:
        k = min(cfg.pca_components, n_fit - 1, x.shape[1])
        if k < cfg.pca_components:
            log.info("PCA: %d components requested, but %d training frames x %d voxels support only %d; using %d.",
                     cfg.pca_components, n_fit, x.shape[1], k, k)
        from sklearn.decomposition import PCA

        pca = PCA(n_components=k, svd_solver="full" if min(x.shape) <= 2000 else "randomized", random_state=0)
        with _blas_for(x.size):
            pca.fit(x)
        pca_mean = pca.mean_.astype(np.float32)
        components = pca.components_.astype(np.float32)
        steps.append({"step": "pca", "components": int(k), "requested": cfg.pca_components,
                      "explained_variance": round(float(pca.explained_variance_ratio_.sum()), 4),
                      "fitted_on": "training frames only", "frames": n_fit})
    info = {"fit_rows": int(n_fit), "steps": [s["step"] for s in steps]}
    return Transform(n_vox, voxels, mean, scale, pca_mean, components, info), steps


def _blas_for(n_elements: int):
    """One BLAS thread for small matrices: multi-threaded OpenBLAS on a busy 2-core host made a 67 x 512 SVD take
    1.2 s instead of 8 ms (threads spinning for cores). Large problems keep all threads."""
    if n_elements >= 2_000_000:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, user_api="blas")


def rows_of(samples: Sequence[Sample]) -> np.ndarray:
    """Sorted unique frame rows used by the given samples, `(n,)` int64."""
    return np.unique(np.fromiter((f for s in samples for f in s.frames), dtype=np.int64))


# ---------------------------------------------------------------------------------------------- encoding scores
def text_features(texts: Sequence[str], kind: str = "minilm", dim: int = 512) -> np.ndarray:
    """Features of each text, `(len(texts), F)` float32: MiniLM embeddings (F = 384) or hashed bag of words."""
    if kind == "minilm":
        from .features import sentence_embeddings

        return sentence_embeddings(list(texts))
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for i, text in enumerate(texts):
        for word in re.findall(r"[a-z0-9']+", text.lower()):
            out[i, zlib.crc32(word.encode()) % dim] += 1.0
    norm = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(norm > 0, norm, 1.0)


def encoding_scores(raw: np.ndarray, samples: list[Sample], cfg: PreprocessConfig,
                    voxel_chunk: int = 8192) -> np.ndarray:
    """Cross-validated encoding performance of every voxel, `(V,)`: max over alphas of Pearson r.

    Each training sample gives one observation: features of its text (prompt + continuation) and the mean of its
    frames. Ridge models are fitted on some training stimuli and scored on the others (group k-fold over
    stimuli), so the score never uses validation or test data.
    """
    from scipy import sparse
    from sklearn.model_selection import GroupKFold

    if not samples:
        raise DatasetError("Encoding-based voxel selection needs the training samples.")
    groups = np.asarray([s.stimulus for s in samples])
    n_groups = len(set(groups))
    if n_groups < 2:
        raise DatasetError(f"Encoding-based voxel selection cross-validates across training stimuli, but only "
                           f"{n_groups} training stimulus is available; use voxel_selection=none or a split with "
                           "more training stimuli.")
    feats = text_features([f"{s.prompt} {s.continuation}".strip() for s in samples], cfg.encoding_features)
    n = len(samples)
    avg = sparse.lil_matrix((n, raw.shape[0]), dtype=np.float32)
    for i, s in enumerate(samples):
        for f in s.frames:
            avg[i, f] += 1.0 / len(s.frames)
    avg = avg.tocsr()
    folds = list(GroupKFold(n_splits=min(cfg.encoding_folds, n_groups)).split(feats, groups=groups))
    alphas = np.asarray(cfg.encoding_alphas)
    prepared = []
    with _blas_for(feats.size):
        for tr, te in folds:
            mu, sd = feats[tr].mean(0), feats[tr].std(0)
            sd = np.where(sd > 0, sd, 1.0)
            u, s, vt = np.linalg.svd((feats[tr] - mu) / sd, full_matrices=False)
            xte = ((feats[te] - mu) / sd) @ vt.T  # (n_te, r)
            shrink = s[None, :] / (s[None, :] ** 2 + alphas[:, None])  # (A, r)
            prepared.append((tr, te, u, xte, shrink))
    scores = np.full(raw.shape[1], -np.inf, dtype=np.float64)
    used = np.unique(avg.indices)
    for c0 in range(0, raw.shape[1], voxel_chunk):
        cols = slice(c0, min(c0 + voxel_chunk, raw.shape[1]))
        block = np.zeros((raw.shape[0], cols.stop - c0), dtype=np.float32)
        block[used] = np.asarray(raw[used, cols], dtype=np.float32)
        y = np.asarray(avg @ block, dtype=np.float64)  # (n, c)
        pred = np.zeros((len(alphas),) + y.shape)
        with _blas_for(pred.size):
            for tr, te, u, xte, shrink in prepared:
                ymean = y[tr].mean(0)
                uty = u.T @ (y[tr] - ymean)  # (r, c)
                for a in range(len(alphas)):
                    pred[a, te] = (xte * shrink[a]) @ uty + ymean
        yc = y - y.mean(0)
        for a in range(len(alphas)):
            pc = pred[a] - pred[a].mean(0)
            denom = np.sqrt((pc ** 2).sum(0) * (yc ** 2).sum(0))
            r = np.where(denom > 0, (pc * yc).sum(0) / np.where(denom > 0, denom, 1.0), 0.0)
            scores[cols] = np.maximum(scores[cols], r)
    return scores
