"""Reader for Narratives (Nastase et al. 2021, OpenNeuro ds002345 plus its preprocessed derivatives).

Files read, relative to the dataset root:

* brain data, one of
  - `derivatives/<pipeline>/sub-XXX/func/sub-XXX_task-<task>[_run-N]_space-fsaverage6_hemi-{L,R}_desc-clean.func.gii`
    (one data array per TR, 40,962 vertices per hemisphere) with the medial wall dropped by
    `derivatives/<pipeline>/tpl-fsaverage6/tpl-fsaverage6_hemi-{L,R}_desc-cortex_mask.gii`, or
  - `..._space-MNI152NLin2009cAsym_res-native_desc-clean_bold.nii.gz` (4-D) with a 3-D brain `mask`;
  `<pipeline>` is `afni-smooth` (default) or `afni-nosmooth`;
* `sub-XXX/func/sub-XXX_task-<task>[_run-N]_events.tsv` (or the top-level `task-<task>_events.tsv`): the first
  row's onset is the audio start, `story` rows give the story segments;
* `stimuli/gentle/<task>/align.json`: Gentle word alignments, times relative to the start of the audio file.

Timing: TR = 1.5 s; a word at audio time t is heard at scan time onset + t, in volume floor((onset + t) / 1.5).
Each story segment (`story` row: onset, duration, rounded to TRs) is cropped into its own run; `slumlordreach`
holds two stories (slumlord, reach). Gentle words without times (`not-found-in-audio`) get times interpolated
from their neighbours (or are dropped, `unaligned="drop"`).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import DatasetError
from .preprocess import Recording, tr_chunk_samples

log = logging.getLogger(__name__)

TR = 1.5
FSAVERAGE6_VERTICES = 40962
MNI_SPACE = "MNI152NLin2009cAsym"
# Story segments (onset TR, duration TR) from snastase/narratives code/event_meta.json, for comparison only.
EVENT_META = {"pieman": (10, 281), "notthefallintact": (20, 365), "prettymouth": (14, 451), "sherlock": (22, 701),
              "merlin": (22, 591), "21styear": (14, 2225), "tunnel": (2, 1023), "slumlord": (20, 602),
              "reach": (646, 550), "lucy": (1, 361)}
MULTI_STORY_TASKS = {"slumlordreach": ("slumlord", "reach")}


def _subject(value: str) -> str:
    value = str(value)
    return value if value.startswith("sub-") else f"sub-{value}"


def _space(value: str) -> str:
    if value.lower() in ("mni", MNI_SPACE.lower()):
        return MNI_SPACE
    if value.lower() == "fsaverage6":
        return "fsaverage6"
    raise DatasetError(f"space must be fsaverage6 or {MNI_SPACE} (mni), got {value!r}.")


def find_runs(func_dir: Path, subject: str, space: str) -> dict[str, list[tuple[str | None, Path]]]:
    """`{task: [(run, path of the L-hemisphere GIfTI or the NIfTI)]}` for one subject."""
    suffix = ("_space-fsaverage6_hemi-L_desc-clean.func.gii" if space == "fsaverage6"
              else f"_space-{MNI_SPACE}_res-native_desc-clean_bold.nii.gz")
    pattern = re.compile(rf"^{re.escape(subject)}_task-([A-Za-z0-9]+)(?:_run-(\d+))?{re.escape(suffix)}$")
    found: dict[str, list] = {}
    for path in sorted(func_dir.glob(f"{subject}_task-*")):
        m = pattern.match(path.name)
        if m:
            found.setdefault(m.group(1), []).append((m.group(2), path))
    return found


def _read_gifti(path: Path, n_vertices: int) -> np.ndarray:
    """A func.gii time series as `(n_TR, n_vertices)` float32."""
    import nibabel as nib

    if not path.exists():
        raise DatasetError(f"{path} does not exist (each hemisphere needs its own desc-clean.func.gii).")
    img = nib.load(str(path))
    arrays = [np.asarray(d.data) for d in img.darrays]
    if len(arrays) == 1 and arrays[0].ndim == 2:
        data = arrays[0]
        data = data.T if data.shape[0] == n_vertices and data.shape[1] != n_vertices else data
    else:
        if any(a.shape != (n_vertices,) for a in arrays):
            raise DatasetError(f"{path}: data arrays of shape {sorted({a.shape for a in arrays})}; expected one "
                               f"({n_vertices},) array per TR, matching the cortex mask.")
        data = np.stack(arrays)
    if data.shape[1] != n_vertices:
        raise DatasetError(f"{path}: {data.shape[1]} vertices, but the cortex mask has {n_vertices}.")
    return data.astype(np.float32, copy=False)


def _read_mask_gifti(path: Path) -> np.ndarray:
    import nibabel as nib

    if not path.exists():
        raise DatasetError(f"Cortex mask {path} does not exist; it ships in derivatives/afni-*/tpl-fsaverage6/.")
    data = np.asarray(nib.load(str(path)).darrays[0].data).ravel()
    if data.size != FSAVERAGE6_VERTICES:
        log.info("%s has %d vertices (fsaverage6 has %d).", path.name, data.size, FSAVERAGE6_VERTICES)
    return data > 0


def _cortex_masks(root: Path, pipeline: str) -> tuple[np.ndarray, np.ndarray]:
    for pipe in dict.fromkeys([pipeline, "afni-smooth", "afni-nosmooth"]):
        folder = root / "derivatives" / pipe / "tpl-fsaverage6"
        if (folder / "tpl-fsaverage6_hemi-L_desc-cortex_mask.gii").exists():
            return tuple(_read_mask_gifti(folder / f"tpl-fsaverage6_hemi-{h}_desc-cortex_mask.gii") for h in "LR")
    raise DatasetError(f"No cortex mask tpl-fsaverage6_hemi-L_desc-cortex_mask.gii under {root}/derivatives/afni-*/"
                       "tpl-fsaverage6/; it is needed to drop the medial wall.")


def _read_nifti(path: Path, mask: np.ndarray) -> np.ndarray:
    import nibabel as nib

    img = nib.load(str(path))
    if len(img.shape) != 4 or img.shape[:3] != mask.shape:
        raise DatasetError(f"{path}: shape {img.shape}; expected 4-D (x, y, z, TRs) with x, y, z = the mask's {mask.shape}.")
    data = np.asarray(img.dataobj, dtype=np.float32)
    return data[mask].T  # (TRs, voxels)


def _mni_mask(root: Path, pipeline: str, mask: str | None) -> np.ndarray:
    import nibabel as nib

    if mask is None:
        found = sorted((root / "derivatives" / pipeline).glob(f"**/*{MNI_SPACE}*mask*.nii*"))
        if len(found) != 1:
            raise DatasetError(f"space={MNI_SPACE} needs a brain mask: pass mask=<3-D NIfTI> (CLI: -o mask=PATH) "
                               f"({len(found)} candidate masks found under derivatives/{pipeline}).")
        mask = str(found[0])
    data = np.asarray(nib.load(mask).dataobj)
    if data.ndim != 3:
        raise DatasetError(f"{mask}: a brain mask must be 3-D, found shape {data.shape}.")
    return data > 0


def read_events(root: Path, subject: str, task: str, run: str | None) -> list[dict]:
    """Rows of the run's events.tsv (subject file, else the top-level task file), onsets in seconds."""
    name = f"{subject}_task-{task}{f'_run-{run}' if run else ''}_events.tsv"
    for path in (root / subject / "func" / name, root / f"task-{task}_events.tsv"):
        if path.exists():
            with open(path, newline="", encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh, delimiter="\t"))
            if not rows or not {"onset", "duration", "trial_type"} <= set(rows[0]):
                raise DatasetError(f"{path}: expected columns onset, duration, trial_type; found "
                                   f"{list(rows[0]) if rows else 'no rows'}.")
            try:
                return [{**r, "onset": float(r["onset"]), "duration": float(r["duration"])} for r in rows]
            except ValueError as err:
                raise DatasetError(f"{path}: onset/duration must be numbers ({err}).") from err
    raise DatasetError(f"No events file for {subject} task {task}: looked for {root / subject / 'func' / name} and "
                       f"{root / f'task-{task}_events.tsv'}.")


def read_alignment(root: Path, task: str, unaligned: str) -> tuple[list[str], np.ndarray, dict]:
    """Words and their audio times (s, midpoint of start/end) from Gentle's align.json, plus what was fixed."""
    path = root / "stimuli" / "gentle" / task / "align.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"No word alignment {path}; Narratives ships Gentle alignments in stimuli/gentle/<task>/.") from None
    except json.JSONDecodeError as err:
        raise DatasetError(f"{path} is not valid JSON ({err}).") from err
    entries = doc.get("words") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise DatasetError(f"{path}: expected a JSON object with a 'words' list (Gentle output).")
    words, times = [], []
    for e in entries:
        text = str(e.get("word", "")).strip()
        if not text:
            continue
        ok = e.get("case") == "success" and "start" in e and "end" in e
        words.append(text)
        times.append(0.5 * (float(e["start"]) + float(e["end"])) if ok else np.nan)
    t = np.asarray(times, dtype=np.float64)
    missing = np.isnan(t)
    fixes = {f"unaligned_words_{'dropped' if unaligned == 'drop' else 'interpolated'}": int(missing.sum())}
    if missing.all():
        raise DatasetError(f"{path}: no word has alignment times.")
    if missing.any():
        if unaligned == "drop":
            words = [w for w, m in zip(words, missing) if not m]
            t = t[~missing]
        else:
            idx = np.arange(len(t))
            t[missing] = np.interp(idx[missing], idx[~missing], t[~missing])
    backwards = int((np.diff(t) < 0).sum())
    if backwards:
        t = np.maximum.accumulate(t)
        fixes["times_made_monotonic"] = backwards
    return words, t, fixes


def _segments(task: str, events: list[dict], source: str) -> list[tuple[str, int, int]]:
    """`(story, onset TR, duration TR)` for each story row of the events."""
    rows = sorted((r for r in events if r["trial_type"] == "story"), key=lambda r: r["onset"])
    if not rows:
        raise DatasetError(f"task {task}: the events have no 'story' row ({sorted({r['trial_type'] for r in events})}).")
    names = MULTI_STORY_TASKS.get(task)
    if names is None or len(names) != len(rows):
        names = [task] if len(rows) == 1 else [f"{task}_{k + 1}" for k in range(len(rows))]
    out = []
    for name, r in zip(names, rows):
        onset, dur = int(np.floor(r["onset"] / TR + 0.5)), int(np.floor(r["duration"] / TR + 0.5))
        if name in EVENT_META and EVENT_META[name] != (onset, dur):
            log.info("%s: events give segment (%d, %d) TRs, event_meta.json (%d, %d); using %s.", name, onset, dur,
                     *EVENT_META[name], source)
            if source == "event_meta":
                onset, dur = EVENT_META[name]
        out.append((name, onset, dur))
    return out


def read_narratives(src: str | os.PathLike, subject: str, tasks: Sequence[str] | str | None = None,
                    space: str = "fsaverage6", pipeline: str = "afni-smooth", mask: str | None = None,
                    repeats: str = "average", hrf_delay: int = 2, frames_per_sample: int = 4,
                    prompt_words: int = 20, segments: str = "events", unaligned: str = "interpolate") -> Recording:
    """Read one subject's stories into a `Recording` (frames = TRs of each story segment).

    Args:
        src: the ds002345 root (with `derivatives/`, `stimuli/gentle/` and the subject folders).
        subject: `sub-016` or `016`.
        tasks: tasks to read (default: every task with clean data for the subject).
        space: `fsaverage6` (GIfTI, medial wall dropped) or `MNI152NLin2009cAsym` (NIfTI, needs `mask`).
        pipeline: `afni-smooth` or `afni-nosmooth`.
        repeats: `average` or `keep` when a task has several runs.
        hrf_delay, frames_per_sample: frames of the chunk in TR i are TRs i+hrf_delay .. +frames_per_sample-1.
        segments: `events` (story rows of events.tsv, rounded to TRs) or `event_meta` (the published table).
        unaligned: `interpolate` or `drop` Gentle words without times.
    """
    if repeats not in ("average", "keep") or segments not in ("events", "event_meta") or \
            unaligned not in ("interpolate", "drop"):
        raise DatasetError("repeats must be average|keep, segments events|event_meta, unaligned interpolate|drop.")
    root = Path(src)
    subject = _subject(subject)
    space = _space(space)
    func_dir = root / "derivatives" / pipeline / subject / "func"
    if not func_dir.is_dir():
        raise DatasetError(f"No folder {func_dir}; expected the {pipeline} derivatives of {subject} "
                           "(datalad get derivatives/afni-smooth/<subject>).")
    runs_found = find_runs(func_dir, subject, space)
    wanted = ([tasks] if isinstance(tasks, str) else list(tasks)) if tasks else sorted(runs_found)
    missing = [t for t in wanted if t not in runs_found]
    if missing or not wanted:
        raise DatasetError(f"{func_dir}: no {space} desc-clean data for tasks {missing or wanted}; found tasks "
                           f"{sorted(runs_found)}.")
    if space == "fsaverage6":
        masks = _cortex_masks(root, pipeline)
        columns = np.concatenate([np.flatnonzero(masks[0]), len(masks[0]) + np.flatnonzero(masks[1])])
    else:
        brain = _mni_mask(root, pipeline, mask)
        columns = np.flatnonzero(brain.ravel())
    dropped: dict[str, Any] = Counter()
    skipped: Counter = Counter()
    runs_data, runs, samples, info = [], [], [], {}
    offset = 0
    for task in wanted:
        words, times, fixes = read_alignment(root, task, unaligned)
        dropped.update({k: v for k, v in fixes.items() if v})
        per_story: dict[str, list] = {}
        for run, path in runs_found[task]:
            if space == "fsaverage6":
                halves = [_read_gifti(Path(str(path).replace("hemi-L", f"hemi-{h}")), len(m)) for h, m in zip("LR", masks)]
                if halves[0].shape[0] != halves[1].shape[0]:
                    raise DatasetError(f"{path}: left hemisphere has {halves[0].shape[0]} TRs, right "
                                       f"{halves[1].shape[0]}; they must agree.")
                data = np.concatenate([halves[0][:, masks[0]], halves[1][:, masks[1]]], axis=1)
            else:
                data = _read_nifti(path, brain)
            events = read_events(root, subject, task, run)
            audio_onset = min(r["onset"] for r in events)
            scan = audio_onset + times
            n_tr = data.shape[0]
            outside = (scan < 0) | (scan >= n_tr * TR)
            if outside.sum() > 0.1 * len(scan):
                raise DatasetError(f"{path}: {int(outside.sum())} of {len(scan)} words of {task} fall outside the "
                                   f"{n_tr * TR:.0f} s scan; the alignment or events do not belong to this run.")
            tr_of_word = np.floor(scan / TR).astype(np.int64)
            covered = np.zeros(len(scan), dtype=bool)
            for story, on, dur in _segments(task, events, segments):
                if on + dur > n_tr:
                    log.info("%s: segment %s needs TRs %d..%d, the file has %d; truncating.", path.name, story, on,
                             on + dur, n_tr)
                    dropped["segment_trs_missing"] += on + dur - n_tr
                    dur = n_tr - on
                if dur <= frames_per_sample + hrf_delay:
                    raise DatasetError(f"{path}: segment {story} has {dur} TRs, too short for any sample.")
                inside = (tr_of_word >= on) & (tr_of_word < on + dur) & ~outside
                covered |= inside
                per_story.setdefault(story, []).append(
                    (run, data[on:on + dur], [w for w, ok in zip(words, inside) if ok], tr_of_word[inside] - on))
            dropped["words_outside_story_segments"] += int((~covered).sum())
        for story, parts in per_story.items():
            if repeats == "average" and len(parts) > 1:
                lengths = {len(p[1]) for p in parts}
                if len(lengths) > 1:
                    raise DatasetError(f"{subject} {story}: runs have {sorted(lengths)} TRs; they cannot be averaged. "
                                       "Pass repeats=keep.")
                parts = [(parts[0][0], np.mean([p[1] for p in parts], axis=0), parts[0][2], parts[0][3])]
                log.info("%s: %d runs averaged.", story, len(per_story[story]))
            for run, block, story_words, rows in parts:
                name = story if len(parts) == 1 else f"{story}_run{run}"
                made, why = tr_chunk_samples(story_words, rows, len(block), name=name, stimulus=story,
                                             subject=subject, frame_offset=offset, hrf_delay=hrf_delay,
                                             frames_per_sample=frames_per_sample, prompt_words=prompt_words,
                                             record_span=True, extra={"run": name, "task": task})
                samples += made
                skipped.update(why)
                runs_data.append(block)
                runs.append((offset, offset + len(block)))
                offset += len(block)
            info[story] = {"task": task, "trs": int(len(parts[0][1])), "runs": len(per_story[story]),
                           "words": len(parts[0][2])}
    dropped = {k: v for k, v in dropped.items() if v}
    dropped.update({f"chunks_{k}": v for k, v in skipped.items()})
    steps = [{"step": "read", "space": space, "pipeline": pipeline, "stories": info, "voxels": int(len(columns)),
              "alignment": "TR = floor((events onset + Gentle word midpoint) / 1.5 s)",
              "segments": segments, "chunking": {"tr": TR, "hrf_delay_trs": hrf_delay,
                                                 "frames_per_sample": frames_per_sample, "prompt_words": prompt_words}}]
    if space == "fsaverage6":
        steps.append({"step": "cortex_mask", "vertices_kept": int(len(columns)),
                      "fitted_on": "nothing (fsaverage6 medial-wall mask)"})
    if repeats == "average" and any(v["runs"] > 1 for v in info.values()):
        steps.append({"step": "repeats", "mode": "average"})
    meta = {"subject": subject, "source": "narratives (ds002345)", "simulated": False, "design": "story", "tr": TR,
            "space": space, "pipeline": pipeline, "hrf_delay": hrf_delay, "frames_per_sample": frames_per_sample}
    log.info("Narratives %s: %d stories, %d TRs, %d samples.", subject, len(info), offset, len(samples))
    return Recording(np.concatenate(runs_data), samples, meta, runs=runs, columns=columns, preprocessing=steps,
                     dropped=dropped)
