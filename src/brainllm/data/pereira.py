"""Reader for Pereira et al. 2018 sentence experiments (`data_384sentences.mat`, `data_243sentences.mat`).

One row of the brain-data matrix is the β-map of one sentence (no time axis). Files (MATLAB v5, read with
`scipy.io.loadmat`):

* brain data: `examples_passagesentences` `(N, V)` float64 (or `examples` in the `examples_*sentences.mat`
  variant);
* `keySentences` `(N, 1)` cell of sentence strings; `labelsPassageForEachSentence` `(N, 1)` 1-based passage index;
* `keyPassages` `(P, 1)` passage names; `labelsPassageCategory` `(P, 1)` 1-based topic index;
  `keyPassageCategory` `(1, n_topics)` topic names;
* `meta` (1x1 struct): `atlases` (atlas names), `rois{a}` (ROI names of atlas a), `roiColumns{a}{r}` (1-based
  columns of ROI r), `colToCoord` `(V, 3)` voxel coordinates.

Samples follow the paper: each sentence is cut into 3 chunks (`chunk_words`); sample k (k = 1, 2) has
prompt = chunks before k and continuation = chunk k; both samples share the sentence's frame (`task=sentence`:
one sample per sentence, no prompt; see `tasks`). Stimulus = passage
(`exp2_p001`...), so a split keeps a passage's sentences together. Experiment 1 (180 concepts) is not read.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import DatasetError
from .dataset import Sample
from .preprocess import Recording
from .tasks import check_task, chunk_words, task_texts

log = logging.getLogger(__name__)

BRAIN_KEYS = ("examples_passagesentences", "examples")
FILE_PATTERN = re.compile(r"^(data|examples)_(384|243)sentences\.mat$")
EXPERIMENT = {"384": "exp2", "243": "exp3"}


def find_files(src: Path, experiments: Sequence[str] | None = None) -> list[Path]:
    """The sentence-experiment files in `src` (a file or a folder); `data_*` is preferred over `examples_*`."""
    if src.is_file():
        return [src]
    if not src.is_dir():
        raise DatasetError(f"{src} does not exist; pass a Pereira .mat file or the folder of one participant.")
    found: dict[str, Path] = {}
    for path in sorted(src.iterdir()):
        m = FILE_PATTERN.match(path.name)
        if not m:
            continue
        exp = EXPERIMENT[m.group(2)]
        if exp in found and found[exp].name.startswith("data_"):
            log.info("Both %s and %s exist; using %s.", found[exp].name, path.name, found[exp].name)
            continue
        found[exp] = path
    wanted = [_experiment_name(e) for e in experiments] if experiments else sorted(found)
    missing = [e for e in wanted if e not in found]
    if missing or not found:
        raise DatasetError(f"{src}: no sentence-experiment file for {missing or ['exp2', 'exp3']}; expected "
                           "data_384sentences.mat (exp2) and/or data_243sentences.mat (exp3) (or the examples_* "
                           "variants). Found: " + str(sorted(p.name for p in src.iterdir())))
    return [found[e] for e in wanted]


def _experiment_name(value: Any) -> str:
    text = str(value).lower()
    for size, exp in EXPERIMENT.items():
        if text in (exp, size, exp[-1], f"{size}sentences"):
            return exp
    raise DatasetError(f"Unknown Pereira experiment {value!r}; use 2 (384 sentences) or 3 (243 sentences).")


# ------------------------------------------------------------------------------------- MATLAB value helpers
def _cells(x: Any) -> list:
    """A MATLAB cell array (object ndarray of any orientation) as a flat list."""
    if isinstance(x, np.ndarray) and x.dtype == object:
        return list(x.ravel(order="F"))
    return [x]


def _string(x: Any) -> str:
    if isinstance(x, str):
        return x
    arr = np.asarray(x)
    if arr.dtype == object:
        items = arr.ravel()
        return _string(items[0]) if items.size else ""
    if arr.dtype.kind in "US":
        return "".join(str(v) for v in arr.ravel())
    raise DatasetError(f"expected a string, found an array of {arr.dtype}")


def _strings(x: Any) -> list[str]:
    return [_string(v) for v in _cells(x)]


def _ints(x: Any, what: str, path: Path) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64).ravel()
    if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
        raise DatasetError(f"{path}: {what} must hold whole numbers, found {arr[:5]}...")
    return arr.astype(np.int64)


def _field(meta: np.ndarray, name: str, path: Path) -> Any:
    names = meta.dtype.names or ()
    if name not in names:
        raise DatasetError(f"{path}: meta has no field '{name}'; its fields are {list(names)}. The ROI selection "
                           "needs meta.atlases, meta.rois and meta.roiColumns.")
    return meta[name].ravel()[0]


# ------------------------------------------------------------------------------------- one file
def load_mat(path: Path) -> dict:
    """`scipy.io.loadmat` with clear errors (v7.3/HDF5 files and unreadable files)."""
    from scipy.io import loadmat

    try:
        return loadmat(path)
    except NotImplementedError as err:  # scipy refuses v7.3 (HDF5) files this way
        raise DatasetError(f"{path} is a MATLAB v7.3 (HDF5) file; the published Pereira files are v5. Re-save it in "
                           "MATLAB with save(..., '-v7') and convert again.") from err
    except (ValueError, OSError, TypeError) as err:
        raise DatasetError(f"{path} cannot be read as a MATLAB file ({err}).") from err


def roi_columns(meta: np.ndarray, atlas: str, rois: Sequence[str] | None, n_voxels: int, path: Path) -> np.ndarray:
    """0-based columns of the named ROIs (all ROIs of the atlas if `rois` is None), sorted, `(n,)` int64."""
    atlases = _strings(_field(meta, "atlases", path))
    if atlas not in atlases:
        raise DatasetError(f"{path}: atlas '{atlas}' not in meta.atlases {atlases}.")
    a = atlases.index(atlas)
    roi_names = _strings(_cells(_field(meta, "rois", path))[a])
    columns = _cells(_cells(_field(meta, "roiColumns", path))[a])
    if len(columns) != len(roi_names):
        raise DatasetError(f"{path}: atlas '{atlas}' has {len(roi_names)} ROI names but {len(columns)} roiColumns.")
    wanted = roi_names if rois is None else list(rois)
    unknown = [r for r in wanted if r not in roi_names]
    if unknown:
        raise DatasetError(f"{path}: ROIs {unknown} are not in atlas '{atlas}'; it has {roi_names}.")
    cols = np.concatenate([_ints(columns[roi_names.index(r)], f"roiColumns of {r}", path) for r in wanted]
                          or [np.zeros(0, np.int64)])
    if len(cols) and (cols.min() < 1 or cols.max() > n_voxels):
        raise DatasetError(f"{path}: roiColumns of '{atlas}' range {cols.min()}..{cols.max()}, outside the 1-based "
                           f"columns 1..{n_voxels} of the brain data.")
    cols = np.unique(cols - 1)
    if not len(cols):
        raise DatasetError(f"{path}: the ROIs {wanted} of atlas '{atlas}' select no voxel.")
    return cols


def read_file(path: Path, atlas: str | None = None, rois: Sequence[str] | None = None) -> dict:
    """Read one sentence-experiment file: brain rows, sentences, passage and topic per sentence, columns used.

    Returns a dict with `data` `(N, V_sel)` float32, `columns` `(V_sel,)`, `coords` `(V_sel, 3)` or None,
    `sentences`, `passage` (0-based), `passage_names`, `topics` (per sentence or None), `experiment`.
    """
    mat = load_mat(path)
    keys = sorted(k for k in mat if not k.startswith("__"))
    brain_key = next((k for k in BRAIN_KEYS if k in mat), None)
    if brain_key is None:
        raise DatasetError(f"{path}: no brain-data key; expected one of {list(BRAIN_KEYS)}, found {keys}. "
                           "Is this Experiment 1 (data_180concepts_*), which brainllm does not read?")
    for key in ("keySentences", "labelsPassageForEachSentence"):
        if key not in mat:
            raise DatasetError(f"{path}: missing '{key}' (found {keys}); it is needed to align sentences to rows.")
    data = np.asarray(mat[brain_key])
    if data.ndim != 2 or data.dtype.kind not in "fiu":
        raise DatasetError(f"{path}: '{brain_key}' should be a 2-D numeric (sentences x voxels) array, found "
                           f"{data.dtype} {data.shape}.")
    sentences = _strings(mat["keySentences"])
    passage = _ints(mat["labelsPassageForEachSentence"], "labelsPassageForEachSentence", path)
    n = data.shape[0]
    if len(sentences) != n or len(passage) != n:
        raise DatasetError(f"{path}: '{brain_key}' has {n} rows but keySentences has {len(sentences)} and "
                           f"labelsPassageForEachSentence {len(passage)}; they must agree (one row per sentence).")
    if passage.min() < 1:
        raise DatasetError(f"{path}: labelsPassageForEachSentence has value {passage.min()}; labels are 1-based.")
    passage_names = _strings(mat["keyPassages"]) if "keyPassages" in mat else []
    n_passages = max(len(passage_names), int(passage.max()))
    if passage_names and passage.max() > len(passage_names):
        raise DatasetError(f"{path}: passage label {passage.max()} exceeds the {len(passage_names)} keyPassages.")
    topics = None
    if "labelsPassageCategory" in mat and "keyPassageCategory" in mat:
        cat = _ints(mat["labelsPassageCategory"], "labelsPassageCategory", path)
        names = _strings(mat["keyPassageCategory"])
        if len(cat) != n_passages or cat.min() < 1 or cat.max() > len(names):
            raise DatasetError(f"{path}: labelsPassageCategory has {len(cat)} values in {cat.min()}..{cat.max()}; "
                               f"expected {n_passages} 1-based indices into the {len(names)} keyPassageCategory.")
        topics = [names[cat[p - 1] - 1] for p in passage]
    columns = np.arange(data.shape[1])
    if atlas is not None:
        if "meta" not in mat:
            raise DatasetError(f"{path}: ROI selection needs the 'meta' struct, which this file lacks (found {keys}).")
        columns = roi_columns(mat["meta"], atlas, rois, data.shape[1], path)
    coords = None
    if "meta" in mat and "colToCoord" in (mat["meta"].dtype.names or ()):
        c = np.asarray(_field(mat["meta"], "colToCoord", path))
        if c.shape == (data.shape[1], 3):
            coords = c[columns].astype(np.int64)
    m = FILE_PATTERN.match(path.name)
    experiment = EXPERIMENT[m.group(2)] if m else f"exp{'2' if n == 384 else '3' if n == 243 else ''}"
    log.info("%s: %d sentences, %d passages, %d of %d voxels (key '%s').", path.name, n, n_passages,
             len(columns), data.shape[1], brain_key)
    return {"data": np.asarray(data[:, columns], dtype=np.float32), "columns": columns, "coords": coords,
            "sentences": sentences, "passage": passage - 1, "passage_names": passage_names, "topics": topics,
            "experiment": experiment or "exp", "brain_key": brain_key, "n_voxels": data.shape[1]}


def _align(files: list[dict]) -> list[dict]:
    """Bring several files to common voxel columns (by coordinates when their voxel sets differ)."""
    if len(files) == 1:
        return files
    same = all(len(f["columns"]) == len(files[0]["columns"]) and np.array_equal(f["columns"], files[0]["columns"])
               and f["n_voxels"] == files[0]["n_voxels"] for f in files)
    coords_same = all(f["coords"] is None for f in files) or (
        all(f["coords"] is not None for f in files) and all(np.array_equal(f["coords"], files[0]["coords"]) for f in files))
    if same and coords_same:
        return files
    if any(f["coords"] is None for f in files):
        raise DatasetError("The experiment files have different voxel columns and no meta.colToCoord to match them; "
                           "convert one experiment at a time (experiments=2 or experiments=3).")
    keys = [{tuple(c): i for i, c in enumerate(f["coords"])} for f in files]
    common = sorted(set.intersection(*(set(k) for k in keys)))
    if not common:
        raise DatasetError("The experiment files share no voxel coordinate; they are not from the same participant.")
    for f, k in zip(files, keys):
        idx = np.array([k[c] for c in common])
        log.info("%s: keeping %d of %d voxels shared by all experiment files.", f["experiment"], len(idx),
                 f["data"].shape[1])
        f["dropped_voxels"] = int(f["data"].shape[1] - len(idx))
        f["data"], f["columns"], f["coords"] = f["data"][:, idx], f["columns"][idx], f["coords"][idx]
    return files


def read_pereira(src: str | os.PathLike, subject: str | None = None, experiments: Sequence[str] | str | None = None,
                 atlas: str | None = None, rois: Sequence[str] | str | None = None, task: str = "continuation"
                 ) -> Recording:
    """Read one participant's sentence experiments into a `Recording` (one frame per sentence).

    Args:
        src: a `data_384sentences.mat` / `data_243sentences.mat` (or `examples_*`) file, or the participant's folder
            holding them (both experiments are then read, as in the paper's 627-sentence set).
        subject: participant label; default the folder name (e.g. `P01`).
        experiments: which experiments to read from a folder (`2`, `3`; default all found).
        atlas, rois: restrict voxels to these ROIs of this `meta.atlases` atlas (rois None = the whole atlas).
        task: `continuation` (the paper's samples) or `sentence` (one per sentence, no prompt); see `tasks`.
    """
    check_task(task)
    src = Path(src)
    if isinstance(experiments, (str, int)):
        experiments = [str(experiments)]
    if isinstance(rois, str):
        rois = [rois]
    if rois is not None and atlas is None:
        raise DatasetError("rois were given without an atlas; pass atlas=<name in meta.atlases> too "
                           "(CLI: -o atlas=NAME).")
    paths = find_files(src, experiments)
    subject = subject or (src.name if src.is_dir() else src.parent.name)
    files = _align([read_file(p, atlas, rois) for p in paths])
    samples: list[Sample] = []
    rows, dropped_short = [], []
    offset = 0
    for f in files:
        per_passage: dict[int, int] = {}
        for row, (sentence, p) in enumerate(zip(f["sentences"], f["passage"])):
            j = per_passage.get(int(p), 0)
            per_passage[int(p)] = j + 1
            stimulus = f"{f['experiment']}_p{int(p) + 1:03d}"
            words = sentence.split()
            if len(words) < 3:
                dropped_short.append(sentence)
                log.info("Dropping sentence %r (%s): fewer than 3 words cannot make 3 chunks.", sentence, stimulus)
                continue
            chunks = chunk_words(words)
            extra = {"experiment": f["experiment"], "sentence": j, "row_in_file": row}
            if f["topics"] is not None:
                extra["topic"] = f["topics"][row]
            if f["passage_names"]:
                extra["passage"] = f["passage_names"][int(p)]
            for k, prompt, continuation in task_texts([" ".join(c) for c in chunks], task):
                samples.append(Sample(id=f"{stimulus}_s{j}_k{k}", stimulus=stimulus, subject=subject, prompt=prompt,
                                      continuation=continuation, frames=[offset + row], extra={**extra, "k": k}))
        rows.append(f["data"])
        offset += len(f["data"])
    raw = np.concatenate(rows)
    steps: list[dict] = [{"step": "read", "files": [p.name for p in paths],
                          "brain_key": sorted({f["brain_key"] for f in files}),
                          "sentences": int(raw.shape[0]), "voxels": int(raw.shape[1])}]
    if atlas is not None:
        steps.append({"step": "roi", "atlas": atlas, "rois": list(rois) if rois else "all", "voxels": int(raw.shape[1]),
                      "fitted_on": "nothing (anatomical/functional atlas shipped with the data)"})
    dropped: dict[str, Any] = {}
    if dropped_short:
        dropped["sentences_under_3_words"] = len(dropped_short)
    shared = sum(f.get("dropped_voxels", 0) for f in files)
    if shared:
        dropped["voxels_not_shared_by_all_files"] = shared
    meta = {"subject": subject, "source": "pereira2018", "simulated": False, "design": "sentence", "tr": None,
            "task": task, "experiments": [f["experiment"] for f in files]}
    return Recording(raw, samples, meta, runs=[], columns=files[0]["columns"], preprocessing=steps, dropped=dropped)
