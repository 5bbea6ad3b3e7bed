"""Reader for the BrainLLM authors' released preprocessed files (pickles), with a restricted unpickler.

Layouts (see the authors' `language_generation/src/data.py`):

* Pereira, Huth: `<subj>.wq.pkl` = {passage or story: [item, ...]} and `<subj>.pca1000.wq.pkl.dic`
  (or `<subj>.wq.pkl.dic`) = {passage or story: {'fmri': float32 (n_frames, 1000), ...}};
* Narratives: per story `<story>.wq.pkl` = {'sub-XXX': [item, ...]} and `<story>.pca1000.wq.pkl.dic` =
  {'sub-XXX': {'fmri': (n_TR, 1000)}}.

The authors' published example (`example.wq.pkl` + `example.pca1000.wq.pkl.dic` in their `dataset/` folder, the
README quick start's `Pereira_example`) is the Pereira layout for one participant. Neither option is needed for it:
without `dataset`, the folder name (`.../Pereira/`) or else the file's layout says which dataset it is (passage-id
keys: Pereira; `sub-XXX` keys: Narratives; story names: Huth), and without `subject` a Pereira/Huth folder holding
one `<subj>.wq.pkl` is read as that subject (`example`).

An item is a dict whose `word` is a list of chunks `{'content': str, 'additional': row indices into 'fmri'}`.
Sample k (k = 1 .. len(word) - 1): prompt = chunks 0..k-1 joined, continuation = chunk k, frames = chunk k's
`additional` (offset to this key's rows); with `task=sentence` one sample per item (see `tasks`). Huth text is lower-cased; Huth/Narratives samples with a blank
continuation are skipped, as in the authors' code.

Pickle executes code while loading, so these files are read with `RestrictedUnpickler`, which resolves only the
few numpy names an array needs and refuses every other global with a `DatasetError`. The released frames are
already PCA-reduced by the authors (on frames we cannot identify, possibly including test data); brainllm cannot
refit that and says so in dataset.json.
"""

from __future__ import annotations

import importlib
import io
import logging
import os
import pickle
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import DatasetError
from ..io import read_input_bytes, read_json
from .dataset import Sample
from .preprocess import Recording
from .tasks import check_task, task_texts

log = logging.getLogger(__name__)

DATASETS = ("pereira", "huth", "narratives")


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """`_codecs.encode` as protocol-2 pickles use it for bytes; only the Latin-1 codec is allowed."""
    if encoding.lower().replace("-", "") != "latin1" or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with codec {encoding!r} is not allowed")
    return text.encode("latin1")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    core = importlib.import_module("numpy._core" if hasattr(np, "_core") else "numpy.core")
    multiarray = importlib.import_module(core.__name__ + ".multiarray")
    numeric = importlib.import_module(core.__name__ + ".numeric")
    table: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                                         ("_codecs", "encode"): _latin1_encode}
    for prefix in ("numpy.core", "numpy._core"):
        table[(f"{prefix}.multiarray", "_reconstruct")] = multiarray._reconstruct
        table[(f"{prefix}.multiarray", "scalar")] = multiarray.scalar
        if hasattr(numeric, "_frombuffer"):
            table[(f"{prefix}.numeric", "_frombuffer")] = numeric._frombuffer
    return table


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, tuples, str, bytes, numbers and numpy arrays/scalars; refuses anything else.

    Plain containers and numbers need no global lookup; every global goes through `find_class`, which
    admits only the numpy reconstruction helpers (`_reconstruct`, `scalar`, `_frombuffer`, `ndarray`, `dtype`) and a
    Latin-1-only `_codecs.encode`. Anything else (e.g. `os.system`, `builtins.eval`) raises before it is called.
    """

    _ALLOWED: dict[tuple[str, str], Any] | None = None

    def __init__(self, file, source: str = "<pickle>"):
        super().__init__(file)
        self.source = source
        if RestrictedUnpickler._ALLOWED is None:
            RestrictedUnpickler._ALLOWED = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:  # noqa: D401 - pickle API
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise DatasetError(
                f"{self.source}: refusing to unpickle '{module}.{name}'. brainllm reads the authors' pickles with a "
                "restricted unpickler that allows only containers, strings, numbers and numpy arrays, because "
                "unpickling anything else can run arbitrary code. If this file really needs that type, convert "
                "it with a trusted tool to .npy/.json first."
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise DatasetError(f"{self.source}: persistent ids (as in torch.save files) are not supported.")


def restricted_load(path: str | os.PathLike) -> Any:
    """Load a pickle file with `RestrictedUnpickler`; errors name the file."""
    path = Path(path)
    raw = read_input_bytes(path)
    try:
        return RestrictedUnpickler(io.BytesIO(raw), str(path)).load()
    except DatasetError:
        raise
    except Exception as err:  # malformed or truncated pickles raise many kinds of error
        raise DatasetError(f"{path} is not a readable pickle ({type(err).__name__}: {err}).") from err


def restricted_loads(data: bytes, source: str = "<bytes>") -> Any:
    """`restricted_load` for bytes already in memory."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), source).load()
    except DatasetError:
        raise
    except Exception as err:
        raise DatasetError(f"{source} is not a readable pickle ({type(err).__name__}: {err}).") from err


# ------------------------------------------------------------------------------------------- layout
def _find_folder(src: Path, dataset: str) -> Path:
    for candidate in (src, src / dataset.capitalize(), src / dataset, src / dataset.capitalize() / dataset.capitalize()):
        if candidate.is_dir() and any(candidate.glob("*.wq.pkl")):
            return candidate
    raise DatasetError(f"No *.wq.pkl under {src} (or its {dataset.capitalize()}/ folder); expected the authors' "
                       "released files.")


def _guess_dataset(src: Path) -> str:
    """The dataset a folder holds: from its name (or a `Pereira/`, `Huth/`, `Narratives/` folder in it), else from
    the layout of its `*.wq.pkl` files (`_layout_of`)."""
    for d in DATASETS:
        if d in src.name.lower() or (src / d.capitalize()).is_dir():
            return d
    texts = sorted(src.glob("*.wq.pkl")) if src.is_dir() else []
    if texts:
        dataset = _layout_of(restricted_load(texts[0]), texts[0])
        if dataset is not None:
            log.info("%s: the %s layout (%s keys); reading it as dataset=%s.", texts[0], dataset.capitalize(),
                     _KEY_KINDS[dataset], dataset)
            return dataset
    raise DatasetError(f"Cannot tell which dataset {src} holds (no Pereira/Huth/Narratives in its name, and "
                       f"{'no *.wq.pkl in it' if not texts else f'{texts[0].name} has keys of no known layout'}); "
                       "pass dataset=pereira (CLI: -o dataset=pereira), or huth or narratives.")


_KEY_KINDS = {"pereira": "passage-id", "huth": "story-name", "narratives": "sub-XXX"}


def _layout_of(text: Any, path: Path) -> str | None:
    """pereira | huth | narratives from the keys of a `*.wq.pkl` dict, or None when they fit no layout."""
    if not isinstance(text, dict) or not text:
        return None
    keys = list(text)
    if all(isinstance(k, str) and k.startswith("sub-") for k in keys):
        return "narratives"
    if all((isinstance(k, (int, np.integer)) and not isinstance(k, bool)) or (isinstance(k, str) and k.isdigit())
           for k in keys):
        return "pereira"
    if all(isinstance(k, str) for k in keys):
        return "huth"
    return None


def _guess_subject(folder: Path, dataset: str) -> str:
    """The one subject of a Pereira/Huth folder: the stem of its only `<subj>.wq.pkl` (e.g. `example`)."""
    stems = sorted(p.name[:-len(".wq.pkl")] for p in folder.glob("*.wq.pkl"))
    if dataset != "narratives" and len(stems) == 1:
        log.info("%s: one subject file, %s.wq.pkl; reading it as subject=%s.", folder, stems[0], stems[0])
        return stems[0]
    if dataset == "narratives":
        which, example = "the participant's sub-XXX key in the story files", "sub-016"
    else:
        which, example = f"one of {stems}", stems[0] if stems else "P01"
    raise DatasetError(f"{folder} holds {len(stems)} {dataset} *.wq.pkl files: pass the subject, {which} "
                       f"(CLI: -o subject={example}).")


def _fmri_file(folder: Path, stem: str, pca: bool) -> Path:
    path = folder / (f"{stem}.pca1000.wq.pkl.dic" if pca else f"{stem}.wq.pkl.dic")
    if not path.exists():
        raise DatasetError(f"{path} does not exist; it holds the fMRI for {stem}.wq.pkl"
                           f"{' (pass pca=false to use the non-PCA file; CLI: -o pca=false)' if pca else ''}.")
    return path


def _chunks(item: Any, where: str) -> list[tuple[str, np.ndarray]]:
    if not isinstance(item, dict) or not isinstance(item.get("word"), (list, tuple)):
        raise DatasetError(f"{where}: an item must be a dict with a 'word' list of chunks, found {type(item).__name__}"
                           f"{' with keys ' + str(sorted(map(str, item))) if isinstance(item, dict) else ''}.")
    out = []
    for k, chunk in enumerate(item["word"]):
        if not isinstance(chunk, dict) or "content" not in chunk or "additional" not in chunk:
            raise DatasetError(f"{where}: chunk {k} must be a dict with 'content' and 'additional'.")
        idx = np.atleast_1d(np.asarray(chunk["additional"]))
        if idx.dtype.kind not in "iu" and not (idx.dtype.kind == "f" and np.all(idx == np.round(idx))):
            raise DatasetError(f"{where}: chunk {k} 'additional' must hold row indices, found {idx.dtype}.")
        out.append((str(chunk["content"]), idx.astype(np.int64)))
    return out


def _fmri(entry: Any, where: str) -> np.ndarray:
    if not isinstance(entry, dict) or "fmri" not in entry:
        raise DatasetError(f"{where}: expected a dict with key 'fmri', found "
                           f"{sorted(map(str, entry)) if isinstance(entry, dict) else type(entry).__name__}.")
    arr = np.asarray(entry["fmri"])
    if arr.ndim != 2 or arr.dtype.kind not in "fiu":
        raise DatasetError(f"{where}: 'fmri' must be a 2-D numeric (frames x features) array, found {arr.dtype} {arr.shape}.")
    return arr.astype(np.float32)


def read_released(src: str | os.PathLike, subject: str | None = None, dataset: str | None = None,
                  stories: Sequence[str] | str | None = None, pca: bool = True, u2s: str | None = None,
                  task: str = "continuation") -> Recording:
    """Read the authors' pickles for one subject into a `Recording` (frames as released).

    Args:
        src: the folder holding the files (or its parent with a `Pereira/`, `Huth/`, `Narratives/` folder).
        subject: `P01` (Pereira), `1` (Huth), `sub-016` / `016` (Narratives); default for Pereira/Huth: the stem
            of the folder's only `<subj>.wq.pkl` (`example` for the authors' example).
        dataset: pereira | huth | narratives (default: from the folder name, else the files' layout).
        stories: Narratives stories to read (default: from `u2s` if given, else every story with this subject).
        pca: read `*.pca1000.wq.pkl.dic` (True) or `*.wq.pkl.dic`.
        u2s: the authors' `dataset_info/u2s.json` (Narratives subject -> stories).
        task: `continuation` (the authors' samples) or `sentence` (one sample per item: no prompt, the whole
            item as continuation, the frames of all its chunks); see `tasks`.
    """
    check_task(task)
    src = Path(src)
    dataset = (dataset or _guess_dataset(src)).lower()
    if dataset not in DATASETS:
        raise DatasetError(f"dataset must be one of {DATASETS}, got {dataset!r}.")
    folder = _find_folder(src, dataset)
    if subject is None:
        subject = _guess_subject(folder, dataset)
    units: list[tuple[str, list, np.ndarray, str]] = []  # (stimulus, items, fmri, where)
    if dataset == "narratives":
        subject = subject if str(subject).startswith("sub-") else f"sub-{subject}"
        if stories is not None:
            names = [stories] if isinstance(stories, str) else list(stories)
        elif u2s is not None:
            mapping = read_json(u2s)
            if subject not in mapping:
                raise DatasetError(f"{u2s} has no subject {subject}.")
            names = list(mapping[subject])
        else:
            names = sorted(p.name[:-len(".wq.pkl")] for p in folder.glob("*.wq.pkl"))
        for story in names:
            text = restricted_load(folder / f"{story}.wq.pkl")
            if not isinstance(text, dict):
                raise DatasetError(f"{folder / story}.wq.pkl: expected a dict of subject -> items.")
            if subject not in text:
                if stories is None and u2s is None:
                    continue
                raise DatasetError(f"{folder / story}.wq.pkl has no subject {subject}; it has {len(text)} subjects.")
            fmri_path = _fmri_file(folder, story, pca)
            fmri = restricted_load(fmri_path)
            if not isinstance(fmri, dict) or subject not in fmri:
                raise DatasetError(f"{fmri_path}: no entry for {subject}.")
            units.append((story, text[subject], _fmri(fmri[subject], f"{fmri_path}[{subject}]"), f"{story}.wq.pkl"))
        if not units:
            raise DatasetError(f"No story in {folder} holds subject {subject}.")
    else:
        text_path = folder / f"{subject}.wq.pkl"
        text = restricted_load(text_path)
        fmri_path = _fmri_file(folder, str(subject), pca)
        fmri = restricted_load(fmri_path)
        if not isinstance(text, dict) or not isinstance(fmri, dict):
            raise DatasetError(f"{text_path} and {fmri_path} must each hold a dict keyed by passage/story.")
        for key, items in text.items():
            if key not in fmri:
                raise DatasetError(f"{fmri_path}: no fMRI for key {key!r} of {text_path.name}.")
            units.append((str(key), items, _fmri(fmri[key], f"{fmri_path}[{key!r}]"), f"{text_path.name}[{key!r}]"))
    lower = dataset == "huth"
    samples, blocks, dims, skipped = [], [], set(), Counter()
    offset = 0
    for stimulus, items, frames, where in units:
        if not isinstance(items, (list, tuple)):
            raise DatasetError(f"{where}: expected a list of items, found {type(items).__name__}.")
        dims.add(frames.shape[1])
        for i, item in enumerate(items):
            chunks = _chunks(item, f"{where} item {i}")
            for k, prompt, continuation in task_texts([c for c, _ in chunks], task):
                # the sentence task reads the frames of all the item's chunks
                idx = chunks[k][1] if k else np.unique(np.concatenate([i for _, i in chunks] or [np.zeros(0, np.int64)]))
                if lower:
                    prompt, continuation = prompt.lower(), continuation.lower()
                if not continuation.strip():
                    skipped["blank_continuation"] += 1
                    continue
                if len(idx) == 0:
                    skipped["no_frames"] += 1
                    continue
                if idx.min() < 0 or idx.max() >= len(frames):
                    raise DatasetError(f"{where} item {i} chunk {k}: frame index {int(idx.max())} outside the "
                                       f"{len(frames)} fMRI rows of that key.")
                samples.append(Sample(f"{stimulus}_i{i}_k{k}", stimulus, str(subject), prompt.strip(),
                                      continuation.strip(), [offset + int(j) for j in idx],
                                      {"item": i, "k": k}))
        blocks.append(frames)
        offset += len(frames)
    if len(dims) != 1:
        raise DatasetError(f"The released fMRI arrays have different widths {sorted(dims)}; they cannot be stacked.")
    raw = np.concatenate(blocks)
    steps = [{"step": "released", "dataset": dataset, "files": folder.name, "pca_file": pca,
              "note": "frames as released by the authors: PCA fitted by them on unknown frames (possibly including "
                      "test data); not refittable"}]
    meta = {"subject": str(subject), "source": f"released ({dataset})", "simulated": False,
            "design": "sentence" if dataset == "pereira" else "story", "task": task, "tr": None if dataset == "pereira" else
            (2.0 if dataset == "huth" else 1.5)}
    log.info("Released %s %s: %d keys, %d frames x %d, %d samples.", dataset, subject, len(units), len(raw),
             raw.shape[1], len(samples))
    return Recording(raw, samples, meta, runs=[], preprocessing=steps,
                     dropped={f"chunks_{k}": v for k, v in skipped.items()})
