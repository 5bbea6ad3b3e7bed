"""Shared plumbing of the voxelwise models (the Tang encoding model and the word-rate model): config overrides,
checks of per-run input lists, and model files (`<stem>.npz` arrays, no pickles, + `<stem>.json` metadata with the
arrays' shapes and sha256, each written atomically and validated on load).
"""

from __future__ import annotations

import dataclasses
import hashlib
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DatasetError
from ..io import atomic_path, read_json, write_json
from ..ridge import _check_matrix


def _config_with(cls: type, config: Any, overrides: dict[str, Any]) -> Any:
    config = config if config is not None else cls()
    if not isinstance(config, cls):
        raise ConfigError(f"config must be a {cls.__name__}, got {type(config).__name__}.")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} field(s) {unknown}; valid fields: {sorted(names)}.")
    return dataclasses.replace(config, **overrides) if overrides else config


# ----------------------------------------------------------------------------------------------------- storage

_ARRAYS_SUFFIX = ".npz"
_META_SUFFIX = ".json"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _save_model(folder: str | Path, stem: str, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Path:
    """Write `<stem>.npz` (no pickles) then `<stem>.json` (meta + shapes + the npz's sha256), each atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    npz_path = folder / f"{stem}{_ARRAYS_SUFFIX}"
    with atomic_path(npz_path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        checksum = _sha256(tmp)
    meta = dict(meta)
    meta["arrays"] = {name: {"shape": list(a.shape), "dtype": str(a.dtype)} for name, a in arrays.items()}
    meta["arrays_file"] = npz_path.name
    meta["arrays_sha256"] = checksum
    write_json(folder / f"{stem}{_META_SUFFIX}", meta)
    return folder


def _load_model(folder: str | Path, stem: str, fmt: str, version: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read and validate what `_save_model` wrote; every problem is a `DatasetError` naming the file."""
    folder = Path(folder)
    meta_path, npz_path = folder / f"{stem}{_META_SUFFIX}", folder / f"{stem}{_ARRAYS_SUFFIX}"
    for path in (meta_path, npz_path):
        if not path.is_file():
            raise DatasetError(
                f"{path} is missing: a saved {fmt} needs both {meta_path.name} and {npz_path.name}. "
                "Pass the folder given to save(), or refit the model."
            )
    try:
        meta = read_json(meta_path)
    except Exception as err:
        raise DatasetError(f"{meta_path} cannot be read ({err}); the file is damaged: refit and save again.") from err
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise DatasetError(f"{meta_path} is not a {fmt} file (its format is {found!r}); pass the right folder.")
    if meta.get("version") != version:
        raise DatasetError(
            f"{meta_path} has format version {meta.get('version')}, this brainllm reads version {version}; "
            "refit the model with this version."
        )
    if _sha256(npz_path) != meta.get("arrays_sha256"):
        raise DatasetError(
            f"{npz_path} does not match the checksum recorded in {meta_path.name}: it is truncated or was replaced "
            "after saving. Copy the folder again or refit the model."
        )
    expected = meta.get("arrays", {})
    try:
        with np.load(npz_path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as err:
        raise DatasetError(f"{npz_path} cannot be read ({err}); the file is damaged: refit and save again.") from err
    for name, spec in expected.items():
        if name not in arrays:
            raise DatasetError(f"{npz_path} lacks the array {name!r} listed in {meta_path.name}; refit the model.")
        if list(arrays[name].shape) != list(spec["shape"]):
            raise DatasetError(
                f"{npz_path}: array {name!r} has shape {arrays[name].shape}, {meta_path.name} says {spec['shape']}; "
                "the files come from different saves. Refit and save again."
            )
    return meta, arrays


# ----------------------------------------------------------------------------------------------------- helpers


def _check_run_lists(
    inputs: Sequence[np.ndarray], outputs: Sequence[np.ndarray], in_name: str, out_name: str, out_ndim: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    if isinstance(inputs, np.ndarray) or isinstance(outputs, np.ndarray):
        raise DatasetError(
            f"{in_name} and {out_name} must be lists with one array per run (story), not single arrays; "
            "wrap a single run in a list."
        )
    inputs, outputs = list(inputs), list(outputs)
    if len(inputs) != len(outputs) or not inputs:
        raise DatasetError(
            f"{in_name} has {len(inputs)} runs and {out_name} has {len(outputs)}; give the same number (>= 1)."
        )
    ins, outs = [], []
    for k, (a, b) in enumerate(zip(inputs, outputs, strict=True)):
        a = _check_matrix(a, f"{in_name}[{k}]")
        b = _check_matrix(b, f"{out_name}[{k}]", ndim=out_ndim)
        if a.shape[0] != b.shape[0]:
            raise DatasetError(
                f"run {k}: {in_name} has {a.shape[0]} TRs but {out_name} has {b.shape[0]}; align them to the same "
                "TRs (Tang trims features [10:-5] to match the responses)."
            )
        if k and a.shape[1] != ins[0].shape[1]:
            raise DatasetError(f"{in_name}[{k}] has {a.shape[1]} columns, {in_name}[0] has {ins[0].shape[1]}.")
        if k and out_ndim == 2 and b.shape[1] != outs[0].shape[1]:
            raise DatasetError(f"{out_name}[{k}] has {b.shape[1]} columns, {out_name}[0] has {outs[0].shape[1]}.")
        ins.append(a)
        outs.append(b)
    return ins, outs
