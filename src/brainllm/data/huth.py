"""Reader for the Huth/LeBel 2023 story data (OpenNeuro ds003020 derivatives, as used by Tang et al. 2023).

Files read (from the `derivative/` folder; the `data_train` layout of HuthLab/semantic-decoding also works):

* `preprocessed_data/<SUBJ>/<story>.hf5`: key `data`, float64 `(respdict[story] - 20, V)`, rows = TRs;
* `TextGrids/<story>.TextGrid`: tier `word` (tier 1 when unnamed); filler labels are dropped and a word's time
  is its interval midpoint, in seconds from audio onset;
* `respdict.json`: untrimmed TR count per story, used to check the row count.

Timing: TR = 2 s; response row i is the TR centred 2i + 11 s after audio onset, i.e. it covers audio time
[2i + 10, 2i + 12). A word at time t therefore falls in row floor((t - 10) / 2) (negative for the first 10 s).

Repeated test stories (`wheretheressmoke`): a 3-D `data` `(R, T, V)` is R repeats; a 2-D `data` with R times the
expected rows is refused unless `repeat_layout="stacked"` says it is R stacked repeats. Repeats are averaged
(`repeats="average"`, default) or kept as separate runs of the same stimulus (`repeats="keep"`).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import DatasetError
from ..io import read_json
from .dataset import Run
from .preprocess import Recording, tr_chunk_samples
from .textgrid import read_textgrid

log = logging.getLogger(__name__)

TR = 2.0
ROW0_START = 10.0  # audio time (s) at which response row 0 begins
TRIMMED_TRS = 20   # rows = respdict - 20
FILLERS = frozenset({"sentence_start", "sentence_end", "br", "lg", "ls", "ns", "sp", ""})


def _layout(src: Path, response_dir: str | None, textgrid_dir: str | None,
            respdict: str | None) -> tuple[Path, Path, Path | None]:
    """(folder of subject folders with .hf5, folder of TextGrids, respdict.json or None)."""
    if (src / "derivative").is_dir():
        src = src / "derivative"
    candidates = [("preprocessed_data", "TextGrids"), ("train_response", "train_stimulus")]
    resp = Path(response_dir) if response_dir else None
    grids = Path(textgrid_dir) if textgrid_dir else None
    for r, g in candidates:
        if resp is None and (src / r).is_dir():
            resp = src / r
        if grids is None and (src / g).is_dir():
            grids = src / g
    if resp is None or grids is None:
        raise DatasetError(f"{src}: expected ds003020 'derivative/' (preprocessed_data/<SUBJ>/*.hf5 and TextGrids/) or "
                           "semantic-decoding 'data_train/' (train_response/, train_stimulus/); found "
                           f"{sorted(p.name for p in src.iterdir()) if src.is_dir() else 'no folder'}. Pass "
                           "response_dir= and textgrid_dir= for other layouts.")
    rd = Path(respdict) if respdict else (src / "respdict.json")
    return resp, grids, rd if rd.exists() else None


def story_words(path: Path, tier: int | str | None = None, lowercase: bool = True) -> tuple[list[str], np.ndarray, int]:
    """Words and midpoint times (s) of a story's word tier, fillers dropped: `(words, times (n,), n_dropped)`."""
    grid = read_textgrid(path)
    if tier is None:
        names = [n.lower() for n in grid.names()]
        tier = grid.names()[names.index("word")] if "word" in names else (
            grid.names()[names.index("words")] if "words" in names else 1)
    chosen = grid.tier(tier)
    words, times, dropped = [], [], 0
    for iv in chosen.intervals:
        label = iv.text.strip()
        if label.lower().strip("{}").strip() in FILLERS:
            dropped += 1
            continue
        words.append(label.lower() if lowercase else label)
        times.append(iv.mid)
    return words, np.asarray(times, dtype=np.float64), dropped


def _load_response(path: Path, expected_rows: int | None, repeat_layout: str | None) -> np.ndarray:
    """`data` of one .hf5 as float32 `(R, T, V)` (R = 1 unless the file holds repeats)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "data" not in f:
                raise DatasetError(f"{path}: no dataset 'data' (found keys {list(f.keys())}); expected the TRs x voxels "
                                   "response matrix of ds003020 preprocessed_data.")
            data = np.asarray(f["data"][()], dtype=np.float32)
    except OSError as err:
        raise DatasetError(f"{path} cannot be read as HDF5 ({err}); the file may be a git-annex pointer that was "
                           "never downloaded (`datalad get`).") from err
    if data.ndim == 3:
        if expected_rows is not None and data.shape[1] != expected_rows:
            raise DatasetError(f"{path}: 'data' has shape {data.shape} (repeats, TRs, voxels) but respdict says "
                               f"{expected_rows} trimmed TRs per repeat.")
        return data
    if data.ndim != 2:
        raise DatasetError(f"{path}: 'data' should be 2-D (TRs, voxels) or 3-D (repeats, TRs, voxels), found {data.shape}.")
    if expected_rows is None or data.shape[0] == expected_rows:
        return data[None]
    if data.shape[0] % expected_rows == 0 and data.shape[0] > expected_rows:
        n_rep = data.shape[0] // expected_rows
        if repeat_layout == "stacked":
            log.info("%s: reading %d rows as %d stacked repeats of %d TRs (repeat_layout=stacked).", path.name,
                     data.shape[0], n_rep, expected_rows)
            return data.reshape(n_rep, expected_rows, data.shape[1])
        raise DatasetError(f"{path}: 'data' has {data.shape[0]} rows, {n_rep} x the {expected_rows} trimmed TRs that "
                           "respdict gives; it looks like stacked repeats. brainllm never reshapes silently: pass "
                           "repeat_layout=stacked (CLI: -o repeat_layout=stacked) if it is, or exclude the story.")
    raise DatasetError(f"{path}: 'data' has {data.shape[0]} rows, but respdict.json says {expected_rows + TRIMMED_TRS} "
                       f"TRs, i.e. {expected_rows} rows after the 20-TR trimming. The file and respdict.json do not "
                       "match; pass check_respdict=false (CLI: -o check_respdict=false) only if you know this file is "
                       "trimmed differently.")


def read_huth(src: str | os.PathLike, subject: str | None = None, stories: Sequence[str] | str | None = None,
              exclude_stories: Sequence[str] | str | None = None, repeats: str = "average",
              repeat_layout: str | None = None, hrf_delay: int = 1, frames_per_sample: int = 4,
              prompt_words: int = 20, word_tier: int | str | None = None, roi_file: str | None = None,
              roi: str | Sequence[str] | None = None, response_dir: str | None = None,
              textgrid_dir: str | None = None, respdict: str | None = None, check_respdict: bool = True,
              lowercase: bool = True) -> Recording:
    """Read one subject's stories into a `Recording` (frames = TRs, one sample per TR with words).

    Args:
        src: ds003020's `derivative/` folder (or the dataset root, or semantic-decoding's `data_train/`).
        subject: e.g. `UTS01` (default: the only subject folder).
        stories / exclude_stories: which stories (default: every .hf5 of the subject with a TextGrid).
        repeats: `average` or `keep` for multi-repeat files; repeat_layout: `stacked` to accept 2-D stacked repeats.
        hrf_delay, frames_per_sample: frames of the chunk in row i are rows i+hrf_delay .. +frames_per_sample-1.
        prompt_words: words of preceding context in a prompt.
        word_tier: TextGrid tier name or 0-based index (default `word`, else tier 1).
        roi_file, roi: a JSON of 0-based voxel lists (semantic-decoding `ROIs/<SUBJ>.json`) and the key(s) to keep.
        check_respdict: refuse files whose rows differ from respdict - 20.
        lowercase: lower-case the words (as the Huth transcripts and the authors' code do).
    """
    if repeats not in ("average", "keep"):
        raise DatasetError(f"repeats must be 'average' or 'keep', got {repeats!r}.")
    if hrf_delay < 0 or frames_per_sample < 1 or prompt_words < 0:
        raise DatasetError("hrf_delay and prompt_words must be >= 0 and frames_per_sample >= 1.")
    src = Path(src)
    resp_root, grid_dir, respdict_path = _layout(src, response_dir, textgrid_dir, respdict)
    subjects = sorted(p.name for p in resp_root.iterdir() if p.is_dir())
    if subject is None:
        if len(subjects) != 1:
            raise DatasetError(f"{resp_root} holds subjects {subjects}; pass subject=<one of them> "
                               f"(CLI: -o subject={subjects[0] if subjects else '...'}).")
        subject = subjects[0]
    subj_dir = resp_root / subject
    if not subj_dir.is_dir():
        raise DatasetError(f"No folder {subj_dir}; subjects available: {subjects}.")
    rd = {k: int(v) for k, v in read_json(respdict_path).items()} if respdict_path else {}
    if not rd:
        log.warning("No respdict.json found: row counts cannot be checked against the untrimmed TR counts.")
    available = sorted(p.stem for p in subj_dir.glob("*.hf5"))
    wanted = ([stories] if isinstance(stories, str) else list(stories)) if stories else available
    excluded = {exclude_stories} if isinstance(exclude_stories, str) else set(exclude_stories or ())
    missing = [s for s in wanted if s not in available]
    if missing:
        raise DatasetError(f"{subj_dir}: no .hf5 for stories {missing}; available: {available}.")
    roi_cols = None
    if roi_file is not None:
        rois = read_json(roi_file)
        names = [roi] if isinstance(roi, str) else list(roi or rois)
        bad = [n for n in names if n not in rois]
        if bad:
            raise DatasetError(f"{roi_file}: no ROI {bad}; it has {sorted(rois)}.")
        roi_cols = np.unique(np.concatenate([np.asarray(rois[n], dtype=np.int64) for n in names]))
    dropped: dict[str, Any] = {"filler_tokens": 0, "words_outside_run": 0}
    skipped: Counter = Counter()
    no_grid = []
    runs_data, runs, samples, info = [], [], [], {}
    timeline: list[Run] = []
    n_vox = None
    offset = 0
    for story in wanted:
        if story in excluded:
            continue
        grid = grid_dir / f"{story}.TextGrid"
        if not grid.exists():
            no_grid.append(story)
            log.info("Skipping %s: no TextGrid %s.", story, grid)
            continue
        path = subj_dir / f"{story}.hf5"
        expected = rd[story] - TRIMMED_TRS if (check_respdict and story in rd) else None
        data = _load_response(path, expected, repeat_layout)  # (R, T, V)
        if n_vox is None:
            n_vox = data.shape[2]
        elif data.shape[2] != n_vox:
            raise DatasetError(f"{path}: {data.shape[2]} voxels, but earlier stories have {n_vox}; all stories of a "
                               "subject must share the voxel columns.")
        if roi_cols is not None:
            if roi_cols.max() >= n_vox or roi_cols.min() < 0:
                raise DatasetError(f"{roi_file}: voxel index {roi_cols.max()} outside the {n_vox} columns of {path}.")
            data = data[:, :, roi_cols]
        n_rows = data.shape[1]
        words, times, n_fill = story_words(grid, word_tier, lowercase)
        dropped["filler_tokens"] += n_fill
        end = TR * n_rows + ROW0_START + TR * 5  # audio time at which the simulated scan ends (2 * respdict - 20)
        inside = (times >= 0) & (times <= end)
        if (~inside).sum() > 0.1 * max(1, len(times)):
            raise DatasetError(f"{grid}: {(~inside).sum()} of {len(times)} words lie outside the run (0..{end:.0f} s for "
                               f"{n_rows} rows of {path.name}); the TextGrid does not belong to this response file.")
        dropped["words_outside_run"] += int((~inside).sum())
        words = [w for w, ok in zip(words, inside) if ok]
        times = times[inside]
        word_rows = np.floor((times - ROW0_START) / TR).astype(np.int64)
        reps = [data.mean(axis=0)] if repeats == "average" else list(data)
        if data.shape[0] > 1:
            log.info("%s: %d repeats %s.", story, data.shape[0], "averaged" if repeats == "average" else "kept as runs")
        for r, run in enumerate(reps):
            name = story if len(reps) == 1 else f"{story}_rep{r:02d}"
            made, why = tr_chunk_samples(words, word_rows, n_rows, name=name, stimulus=story, subject=subject,
                                         frame_offset=offset, hrf_delay=hrf_delay, frames_per_sample=frames_per_sample,
                                         prompt_words=prompt_words, record_span=True, extra={"run": name})
            samples += made
            skipped.update(why)
            runs_data.append(run)
            runs.append((offset, offset + n_rows))
            timeline.append(Run(name, story, (offset, offset + n_rows),
                                [ROW0_START + TR * (i + 0.5) for i in range(n_rows)], words, times.tolist()))
            offset += n_rows
        info[story] = {"rows": n_rows, "repeats": int(data.shape[0]), "words": len(words)}
    if not runs_data:
        raise DatasetError(f"No story of {subject} could be read (missing TextGrids: {no_grid}).")
    if no_grid:
        dropped["stories_without_textgrid"] = no_grid
    dropped.update({f"chunks_{k}": v for k, v in skipped.items()})
    steps = [{"step": "read", "layout": "ds003020 derivative", "stories": info, "voxels": int(n_vox),
              "alignment": "row i = TR centred 2i+11 s after audio onset; word time = TextGrid midpoint",
              "chunking": {"tr": TR, "hrf_delay_trs": hrf_delay, "frames_per_sample": frames_per_sample,
                           "prompt_words": prompt_words}}]
    if roi_cols is not None:
        steps.append({"step": "roi", "file": str(roi_file), "rois": roi, "voxels": int(len(roi_cols)),
                      "fitted_on": "nothing (ROI lists shipped with the data)"})
    if any(v["repeats"] > 1 for v in info.values()):
        steps.append({"step": "repeats", "mode": repeats,
                      "stories": {k: v["repeats"] for k, v in info.items() if v["repeats"] > 1}})
    meta = {"subject": subject, "source": "huth2023 (ds003020)", "simulated": False, "design": "story", "tr": TR,
            "hrf_delay": hrf_delay, "frames_per_sample": frames_per_sample}
    log.info("Huth %s: %d stories, %d runs, %d TRs, %d samples.", subject, len(info), len(runs), offset, len(samples))
    columns = roi_cols if roi_cols is not None else np.arange(n_vox)
    return Recording(np.concatenate(runs_data), samples, meta, runs=runs, columns=columns, preprocessing=steps,
                     dropped=dropped, timeline=timeline)
