"""`brainllm convert`: read a real dataset, split it, fit preprocessing on training data only, write it.

Pipeline (the order is what makes it leak-free):

1. a reader (`pereira`, `huth`, `narratives`, `released`) returns a `Recording`: raw frames + samples;
2. per-run cleaning (drop NaN/constant voxels; detrend and z-score each run with its own statistics);
3. the split is decided (`brainllm.data.splits`), on the samples alone, and checked for leaks;
4. voxel selection / standardisation / PCA are fitted on the frames of training samples only
   (`preprocess.fit_transform`) and applied to all frames;
5. the output folder gets the prepared dataset (dataset.json with the preprocessing log, the dropped summary and the
   split with its sample ids; frames.npy; samples.jsonl), the fitted transform (`transform/*.npy` + JSON) and, unless
   `keep_raw=false`, the cleaned raw-space frames (`raw/frames.npy`, `raw/columns.npy`), so `refit` can redo step 3-4
   for another split. Everything is written to a staging folder and renamed into place at the end.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import shutil
import warnings
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import DatasetError
from ..io import replace_dir, staging_dir
from .dataset import BrainTextDataset, Run, Sample
from .preprocess import PreprocessConfig, Recording, Transform, clean_runs, fit_transform, rows_of
from .splits import SPLITTERS, check_no_leak, kfold_by_stimulus, make_split

log = logging.getLogger(__name__)

FORMATS = ("pereira", "huth", "narratives", "released")
DEFAULT_SPLIT = {"pereira": "by_stimulus", "huth": "by_story", "narratives": "by_story", "released": "by_stimulus"}
FITTED_STEPS = ("voxel_selection", "standardize", "pca")
# Released frames are already PCA-reduced by the authors: no further fitted steps unless asked for.
RELEASED_DEFAULTS = {"detrend": None, "zscore_runs": False, "standardize": False, "pca_components": None}


def _reader(fmt: str) -> Callable[..., Recording]:
    if fmt == "pereira":
        from .pereira import read_pereira as reader
    elif fmt == "huth":
        from .huth import read_huth as reader
    elif fmt == "narratives":
        from .narratives import read_narratives as reader
    elif fmt == "released":
        from .released import read_released as reader
    else:
        raise DatasetError(f"Unknown format '{fmt}'; choose from {list(FORMATS)}.")
    return reader


def _split_function(method: str) -> Callable:
    if method == "kfold_by_stimulus":
        return kfold_by_stimulus
    if method not in SPLITTERS:
        raise DatasetError(f"Unknown split method '{method}'; choose from {[*SPLITTERS, 'kfold_by_stimulus']}.")
    return SPLITTERS[method]


def _params(fn: Callable, skip: int) -> list[str]:
    return list(inspect.signature(fn).parameters)[skip:]


def parse_options(pairs: Sequence[str]) -> dict[str, Any]:
    """`["key=value", ...]` -> dict. Values: JSON (numbers, true/false, null, lists), else comma lists, else text."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise DatasetError(f"Option {pair!r} is not key=value.")
        key, value = pair.split("=", 1)
        key = key.strip().replace("-", "_")
        try:
            parsed: Any = json.loads(value)
        except json.JSONDecodeError:
            lowered = value.strip().lower()
            if lowered in ("none", "null"):
                parsed = None
            elif lowered in ("true", "false"):
                parsed = lowered == "true"
            elif "," in value:
                parsed = [v.strip() for v in value.split(",") if v.strip()]
            else:
                parsed = value
        out[key] = parsed
    return out


def convert(fmt: str, src: str | os.PathLike, out: str | os.PathLike, *, overwrite: bool = False,
            split: str | None = None, **options: Any) -> BrainTextDataset:
    """Convert `src` (format `fmt`) into a prepared dataset folder `out`; returns the dataset.

    `options` mixes reader options (see each `read_*` function), preprocessing options (`PreprocessConfig`
    fields) and split options (the parameters of the split method, e.g. seed, test_fraction, gap_trs,
    test_stories). Unknown options are an error that lists the accepted ones.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise DatasetError(f"{out} already exists; pass overwrite=True (CLI: --overwrite) to replace it.")
    reader = _reader(fmt)
    method = split or DEFAULT_SPLIT[fmt]
    split_fn = _split_function(method)
    pre_keys = {f.name for f in fields(PreprocessConfig)}
    split_keys = set(_params(split_fn, 1))
    reader_keys = set(_params(reader, 1))
    unknown = sorted(set(options) - pre_keys - split_keys - reader_keys)
    if unknown:
        raise DatasetError(f"Unknown option(s) {unknown} for `convert {fmt}` with split {method}. Reader options: "
                           f"{sorted(reader_keys)}; preprocessing: {sorted(pre_keys)}; split: {sorted(split_keys)}.")
    required = [name for name, par in list(inspect.signature(reader).parameters.items())[1:]
                if par.default is inspect.Parameter.empty and name not in options]
    if required:
        flags = " ".join(f"-o {name}=..." for name in required)
        raise DatasetError(f"`convert {fmt}` needs the option(s) {required}; on the command line: {flags}.")
    pre = dict(RELEASED_DEFAULTS) if fmt == "released" else {}
    pre.update({k: v for k, v in options.items() if k in pre_keys})
    cfg = PreprocessConfig(**pre)
    split_options = {k: v for k, v in options.items() if k in split_keys}
    reader_options = {k: v for k, v in options.items() if k in reader_keys}
    log.info("Reading %s from %s", fmt, src)
    rec = reader(src, **reader_options)
    conversion = {"format": fmt, "src": str(src), "reader_options": _jsonable(reader_options)}
    return prepare(rec, out, cfg, method, split_options, overwrite=overwrite, conversion=conversion,
                   refittable=fmt != "released")


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def prepare(rec: Recording, out: str | os.PathLike, cfg: PreprocessConfig, method: str,
            split_options: dict | None = None, *, overwrite: bool = False, conversion: dict | None = None,
            refittable: bool = True) -> BrainTextDataset:
    """Steps 2-5 of the pipeline for a reader's `Recording` (see the module docstring)."""
    raw, kept, clean_steps, clean_dropped = clean_runs(rec.raw, rec.runs, cfg.detrend, cfg.zscore_runs, inplace=True)
    columns = (rec.columns if rec.columns is not None else np.arange(rec.raw.shape[1]))[kept]
    dropped = {**rec.dropped, **clean_dropped}
    meta = {**rec.meta, "conversion": conversion or {}}
    unfitted = rec.preprocessing + clean_steps
    return fit_and_save(raw, rec.samples, meta, unfitted, dropped, columns, cfg, method, split_options or {}, out,
                        overwrite, keep_raw=cfg.keep_raw and refittable, timeline=rec.timeline)


def fit_and_save(raw: np.ndarray, samples: list[Sample], meta: dict, unfitted: list[dict], dropped: dict,
                 columns: np.ndarray, cfg: PreprocessConfig, method: str, split_options: dict,
                 out: str | os.PathLike, overwrite: bool, keep_raw: bool, timeline: Sequence[Run] = ()
                 ) -> BrainTextDataset:
    """Split (before any fitting), fit the transform on training frames, apply it, and write the folder.

    `raw`: `(n_frames, V)` float32 cleaned raw-space frames that `samples` index; `timeline`: the story runs.
    """
    raw_ds = BrainTextDataset(raw, samples, {})
    try:
        split = make_split(raw_ds, method, **split_options)
    except DatasetError as err:
        hint = (" For subjects with fewer than 3 stories use split=within_story (with gap_trs)."
                if meta.get("design") == "story" and method != "within_story" else "")
        raise DatasetError(f"Cannot make a '{method}' split: {err}{hint}") from err
    check_no_leak(raw_ds, split)
    train = [raw_ds.by_id(i) for i in split.train]
    fit_rows = rows_of(train)
    if split.method == "by_sample":
        msg = ("by_sample split: the fitted preprocessing (PCA/scaler) is fitted on training samples' frames, which "
               "test samples share. Results will be inflated; use it only to reproduce the authors.")
        warnings.warn(msg, stacklevel=2)
        log.warning(msg)
    transform, fit_steps = fit_transform(raw, fit_rows, cfg, train)
    frames = transform.apply(raw)
    dropped = {k: v for k, v in dropped.items() if v}
    for reason, value in dropped.items():
        log.info("dropped %s: %s", reason, value)
    meta = {**meta, "preprocessing": unfitted + fit_steps, "dropped": dropped, "preprocess_config": asdict(cfg),
            "split": split.to_json(), "transform": "transform/ (.npy + transform.json)",
            "raw_space": ({"frames": "raw/frames.npy", "columns": "raw/columns.npy", "shape": list(raw.shape)}
                          if keep_raw else None)}
    ds = BrainTextDataset(frames, samples, meta, runs=timeline)
    _write(ds, Path(out), overwrite, transform, raw if keep_raw else None, columns)
    log.info("Wrote %s: %d samples, %d frames x %d features (split %s: %d/%d/%d).", out, len(ds), len(frames),
             ds.feature_dim, split.method, len(split.train), len(split.valid), len(split.test))
    return ds


def _write(ds: BrainTextDataset, out: Path, overwrite: bool, transform: Transform, raw: np.ndarray | None,
           columns: np.ndarray) -> None:
    tmp = staging_dir(out)
    tmp.rmdir()  # BrainTextDataset.save wants to create the folder itself
    try:
        ds.save(tmp)
        transform.save(tmp / "transform")
        if raw is not None:
            (tmp / "raw").mkdir()
            np.save(tmp / "raw" / "frames.npy", np.ascontiguousarray(raw, dtype=np.float32))
            np.save(tmp / "raw" / "columns.npy", np.asarray(columns, dtype=np.int64))
        replace_dir(tmp, out, overwrite=overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def refit(src: str | os.PathLike, out: str | os.PathLike, split: str = "by_stimulus", *, overwrite: bool = False,
          **split_options: Any) -> BrainTextDataset:
    """Re-do the split and the fitted preprocessing of a converted dataset for another split.

    Needs the raw-space frames that `convert` keeps (`raw/frames.npy`); the per-run cleaning is not redone.
    """
    src, out = Path(src), Path(out)
    if out.exists() and not overwrite:
        raise DatasetError(f"{out} already exists; pass overwrite=True to replace it.")
    ds = BrainTextDataset.load(src)
    raw_path = src / "raw" / "frames.npy"
    if not raw_path.exists():
        raise DatasetError(f"{src} has no raw/frames.npy (converted with keep_raw=false, or released data); convert "
                           "the source files again with the new split instead.")
    raw = np.load(raw_path, mmap_mode="r", allow_pickle=False)
    columns = np.load(src / "raw" / "columns.npy", allow_pickle=False)
    try:
        cfg = PreprocessConfig(**ds.meta["preprocess_config"])
    except (KeyError, TypeError) as err:
        raise DatasetError(f"{src}/dataset.json has no usable preprocess_config ({err}).") from err
    meta = {k: v for k, v in ds.meta.items()
            if k not in ("preprocessing", "dropped", "preprocess_config", "split", "transform", "raw_space")}
    unfitted = [s for s in ds.meta.get("preprocessing", []) if s.get("step") not in FITTED_STEPS]
    meta["refitted_from"] = str(src)
    return fit_and_save(raw, list(ds.samples), meta, unfitted, dict(ds.meta.get("dropped", {})), columns, cfg, split,
                        split_options, out, overwrite, keep_raw=cfg.keep_raw, timeline=ds.runs)

