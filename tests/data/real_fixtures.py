"""Builders of SMALL files in the real datasets' formats (keys, dtypes, nesting, file names and layouts as in
docs/datasets.md), so the readers are exercised the way real downloads exercise them. Everything is seeded."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np

VOCAB = ("the a old young river city farmer music doctor storm ship bread garden song market winter light road "
         "child teacher quiet bright slowly carried watched built found opened across under near every small").split()


def sentence(rng: np.random.Generator, n_words: int) -> str:
    words = [VOCAB[i] for i in rng.integers(0, len(VOCAB), n_words)]
    return " ".join(words).capitalize() + "."


# ------------------------------------------------------------------------------------------------ Pereira
def _cell(values, shape) -> np.ndarray:
    arr = np.empty(shape, dtype=object)
    for i, v in enumerate(values):
        arr[np.unravel_index(i, shape)] = v
    return arr


def write_pereira(path: Path, n_passages: int = 8, per_passage: int = 4, n_voxels: int = 60, n_topics: int = 4,
                  variant: str = "data", column_cells: bool = True, seed: int = 0, short_sentence: bool = False,
                  coords: np.ndarray | None = None, data: np.ndarray | None = None) -> Path:
    """A Pereira sentence-experiment .mat file (MATLAB v5), `data_*` (examples_passagesentences) or `examples_*`."""
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    n = n_passages * per_passage
    sentences = [sentence(rng, int(rng.integers(5, 13))) for _ in range(n)]
    if short_sentence:
        sentences[1] = "Bees hum."
    passage_of = np.repeat(np.arange(1, n_passages + 1), per_passage).astype(np.float64)[:, None]
    topic_of_passage = (np.arange(n_passages) % n_topics + 1).astype(np.float64)[:, None]
    shape = (lambda k: (k, 1)) if column_cells else (lambda k: (1, k))
    atlases = ["languageLH", "MD"]
    rois = [["L_IFG", "L_MFG", "L_PostTemp"], ["MD_a"]]
    cols = [[np.array([1., 2., 3.]), np.array([4., 5.]), np.array([10.])], [np.array([20., 21., 22., 23.])]]
    meta = {
        "atlases": _cell(atlases, shape(2)),
        "rois": _cell([_cell(r, shape(len(r))) for r in rois], shape(2)),
        "roiColumns": _cell([_cell([c[:, None] for c in cs], shape(len(cs))) for cs in cols], shape(2)),
        "colToCoord": (coords if coords is not None else np.stack(np.unravel_index(np.arange(n_voxels), (79, 95, 69)), 1)
                       + 1).astype(np.float64),
        "dimensions": np.array([[79., 95., 69.]]),
        "indicesIn3D": np.arange(1, n_voxels + 1, dtype=np.float64)[:, None],
    }
    brain = data if data is not None else rng.standard_normal((n, n_voxels))
    content = {
        "keySentences": _cell(sentences, (n, 1)),
        "labelsPassageForEachSentence": passage_of,
        "keyPassages": _cell([f"passage{p}" for p in range(n_passages)], (n_passages, 1)),
        "labelsPassageCategory": topic_of_passage,
        "keyPassageCategory": _cell([f"topic{t}" for t in range(n_topics)], (1, n_topics)),
        "meta": meta,
    }
    if variant == "data":
        content["examples_passagesentences"] = brain.astype(np.float64)
        content["examples_passages"] = rng.standard_normal((n_passages, n_voxels))
    else:
        content["examples"] = brain.astype(np.float64)
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(path, content)
    return path


# ------------------------------------------------------------------------------------------------ Huth
def textgrid_long(tiers: list[tuple[str, list[tuple[float, float, str]]]], xmax: float) -> str:
    lines = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "", "xmin = 0 ", f"xmax = {xmax} ",
             "tiers? <exists> ", f"size = {len(tiers)} ", "item []: "]
    for t, (name, items) in enumerate(tiers, 1):
        lines += [f"    item [{t}]:", '        class = "IntervalTier" ', f'        name = "{name}" ',
                  "        xmin = 0 ", f"        xmax = {xmax} ", f"        intervals: size = {len(items)} "]
        for i, (a, b, text) in enumerate(items, 1):
            lines += [f"        intervals [{i}]:", f"            xmin = {a} ", f"            xmax = {b} ",
                      f'            text = "{text}" ']
    return "\n".join(lines) + "\n"


def textgrid_short(tiers: list[tuple[str, list[tuple[float, float, str]]]], xmax: float) -> str:
    lines = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "", "0", str(xmax), "<exists>", str(len(tiers))]
    for name, items in tiers:
        lines += ['"IntervalTier"', f'"{name}"', "0", str(xmax), str(len(items))]
        for a, b, text in items:
            lines += [str(a), str(b), f'"{text}"']
    return "\n".join(lines) + "\n"


def story_transcript(rng: np.random.Generator, duration: float, start: float = 2.0):
    """Word intervals with fillers, from `start` to `duration - 4` s: `(items, words, midpoints)`."""
    items, words, mids = [], [], []
    t = start
    while t < duration - 4:
        if rng.random() < 0.15:
            label = str(rng.choice(["sp", "{BR}", "{LG}", "", "{NS}"]))
        else:
            label = VOCAB[int(rng.integers(0, len(VOCAB)))].upper()
        d = round(float(rng.uniform(0.2, 0.5)), 3)
        items.append((round(t, 3), round(t + d, 3), label))
        if label.lower().strip("{}").strip() not in {"sp", "br", "lg", "ns", ""}:
            words.append(label.lower())
            mids.append(round(t, 3) + d / 2)
        t = round(t + d, 3)
    return items, words, np.asarray(mids)


def write_huth(root: Path, subject: str = "UTS01", stories: dict[str, int] | None = None, n_voxels: int = 30,
               seed: int = 0, nan_voxel: int | None = None, repeated: dict[str, int] | None = None,
               stacked: bool = False, short_format: tuple[str, ...] = ()) -> dict:
    """A ds003020 `derivative/` folder: respdict.json, TextGrids/<story>.TextGrid, preprocessed_data/<SUBJ>/*.hf5.

    `stories`: story -> untrimmed TR count (respdict); the .hf5 has respdict - 20 rows, float64. `repeated`:
    story -> number of repeats, written 3-D (R, T, V) or, with `stacked`, 2-D (R*T, V). Returns the transcripts.
    """
    import h5py

    rng = np.random.default_rng(seed)
    stories = stories or {"alpha": 60, "bravo": 55, "charlie": 58, "delta": 62}
    repeated = repeated or {}
    deriv = root / "derivative"
    (deriv / "TextGrids").mkdir(parents=True, exist_ok=True)
    (deriv / "preprocessed_data" / subject).mkdir(parents=True, exist_ok=True)
    (deriv / "respdict.json").write_text(json.dumps(stories))
    transcripts = {}
    for story, n_raw in stories.items():
        rows = n_raw - 20
        duration = 2 * rows + 20  # the audio the trimmed scan covers
        items, words, mids = story_transcript(rng, duration)
        phones = [(a, b, "AH") for a, b, _ in items]
        writer = textgrid_short if story in short_format else textgrid_long
        (deriv / "TextGrids" / f"{story}.TextGrid").write_text(writer([("phone", phones), ("word", items)], duration))
        reps = repeated.get(story, 1)
        data = rng.standard_normal((reps, rows, n_voxels))
        if nan_voxel is not None:
            data[..., nan_voxel] = np.nan
        if reps == 1:
            data = data[0]
        elif stacked:
            data = data.reshape(reps * rows, n_voxels)
        with h5py.File(deriv / "preprocessed_data" / subject / f"{story}.hf5", "w") as f:
            f.create_dataset("data", data=data.astype(np.float64))
        transcripts[story] = (words, mids)
    return transcripts


# ------------------------------------------------------------------------------------------------ Narratives
def _gifti(arrays: list[np.ndarray], path: Path) -> None:
    import nibabel as nib

    img = nib.gifti.GiftiImage(darrays=[nib.gifti.GiftiDataArray(a) for a in arrays])
    nib.save(img, str(path))


NARRATIVES_TASKS = {
    # task: (events rows (onset, duration, trial_type), scan TRs)
    "pieman": ([(0.0, 15.0, "music"), (15.0, 60.0, "story")], 60),
    "tunnel": ([(3.0, 54.0, "story")], 45),
    "lucy": ([(3.0, 48.0, "story")], 40),
    "slumlordreach": ([(4.5, 25.0, "music"), (29.5, 45.0, "story"), (79.5, 25.0, "music"), (104.5, 45.0, "story")], 110),
}


def write_narratives(root: Path, subject: str = "sub-001", tasks: tuple[str, ...] = ("pieman", "tunnel", "lucy"),
                     n_vertices: int = 40, medial: tuple[int, ...] = (0, 5, 6), seed: int = 0,
                     pipeline: str = "afni-smooth", top_level_events: tuple[str, ...] = (),
                     runs: dict[str, int] | None = None, mni: bool = False) -> dict:
    """A ds002345 root: derivatives/<pipeline>/ clean GIfTIs (one data array per TR, NaN on the medial wall) and
    cortex masks, sub-XXX/func/*_events.tsv, stimuli/gentle/<task>/align.json. Returns the word lists."""
    rng = np.random.default_rng(seed)
    func = root / "derivatives" / pipeline / subject / "func"
    func.mkdir(parents=True, exist_ok=True)
    tpl = root / "derivatives" / pipeline / "tpl-fsaverage6"
    tpl.mkdir(parents=True, exist_ok=True)
    mask = np.ones(n_vertices, dtype=np.int32)
    mask[list(medial)] = 0
    for h in "LR":
        _gifti([mask], tpl / f"tpl-fsaverage6_hemi-{h}_desc-cortex_mask.gii")
    (root / subject / "func").mkdir(parents=True, exist_ok=True)
    words_by_task = {}
    runs = runs or {}
    for task in tasks:
        events, n_tr = NARRATIVES_TASKS[task]
        audio_onset = events[0][0]
        end = max(o + d for o, d, _ in events) - audio_onset
        entries, words = [], []
        for onset, dur, kind in events:
            if kind != "story":
                continue
            t = onset - audio_onset + 0.5
            while t < onset - audio_onset + dur - 1.0:
                w = VOCAB[int(rng.integers(0, len(VOCAB)))]
                d = float(rng.uniform(0.2, 0.45))
                if rng.random() < 0.1:
                    entries.append({"word": w.capitalize(), "case": "not-found-in-audio"})
                else:
                    entries.append({"alignedWord": w, "case": "success", "start": round(t, 3), "end": round(t + d, 3),
                                    "word": w.capitalize()})
                words.append(w.capitalize())
                t += d + 0.05
        gentle = root / "stimuli" / "gentle" / task
        gentle.mkdir(parents=True, exist_ok=True)
        (gentle / "align.json").write_text(json.dumps({"transcript": " ".join(words), "words": entries}))
        words_by_task[task] = words
        assert end <= n_tr * 1.5
        tsv = "onset\tduration\ttrial_type\tstim_file\n" + "".join(
            f"{o}\t{d}\t{k}\t{task}_audio.wav\n" for o, d, k in events)
        n_runs = runs.get(task, 1)
        for r in range(n_runs):
            run = f"_run-{r + 1}" if n_runs > 1 else ""
            stem = f"{subject}_task-{task}{run}"
            if task in top_level_events:
                (root / f"task-{task}_events.tsv").write_text(tsv)
            else:
                (root / subject / "func" / f"{stem}_events.tsv").write_text(tsv)
            for h in "LR":
                data = rng.standard_normal((n_tr, n_vertices)).astype(np.float32)
                data[:, list(medial)] = np.nan
                _gifti(list(data), func / f"{stem}_space-fsaverage6_hemi-{h}_desc-clean.func.gii")
            if mni:
                import nibabel as nib

                vol = rng.standard_normal((4, 4, 3, n_tr)).astype(np.float32)
                nib.save(nib.Nifti1Image(vol, np.eye(4)),
                         str(func / f"{stem}_space-MNI152NLin2009cAsym_res-native_desc-clean_bold.nii.gz"))
    if mni:
        import nibabel as nib

        brain = np.zeros((4, 4, 3), dtype=np.uint8)
        brain[1:3, 1:3, :] = 1
        nib.save(nib.Nifti1Image(brain, np.eye(4)), str(root / "brain_mask.nii.gz"))
    return words_by_task


# ------------------------------------------------------------------------------------------------ released
def numpy1_pickle(obj) -> bytes:
    """Pickle protocol 3 with numpy 1.x module names (`numpy.core.multiarray`), as the authors' files have."""
    return pickle.dumps(obj, protocol=3).replace(b"cnumpy._core.", b"cnumpy.core.")


def released_items(rng: np.random.Generator, n_items: int, n_frames: int, per_item_frames: int = 1):
    items = []
    for i in range(n_items):
        chunks = []
        for k in range(3):
            idx = np.array([(i + j) % n_frames for j in range(per_item_frames)], dtype=np.int64)
            chunks.append({"content": sentence(rng, 3).rstrip("."), "additional": idx, "nFixations": k,
                           "term_level_EEG": {"raw": [-1]}})
        items.append({"content": " ".join(c["content"] for c in chunks), "word": chunks, "prev_content": "[CLS]",
                      "trail_id": i, "sid": [i], "fmri_length": 1})
    return items


def write_released(folder: Path, dataset: str, subject: str = "P01", seed: int = 0, numpy1: bool = True) -> None:
    """The authors' pickles: Pereira/Huth `<subj>.wq.pkl` + `<subj>.pca1000.wq.pkl.dic`; Narratives per story."""
    rng = np.random.default_rng(seed)
    dump = numpy1_pickle if numpy1 else (lambda o: pickle.dumps(o, protocol=4))
    folder.mkdir(parents=True, exist_ok=True)
    if dataset in ("pereira", "huth"):
        keys = [np.int64(k) for k in range(6)] if dataset == "pereira" else ["alpha", "bravo", "charlie", "delta"]
        n_frames = 4 if dataset == "pereira" else 12
        text = {k: released_items(rng, 4 if dataset == "pereira" else 10, n_frames, 1 if dataset == "pereira" else 4)
                for k in keys}
        fmri = {k: {"index2trial": k, "fmri": rng.standard_normal((n_frames, 16)).astype(np.float32),
                    "words": [item["content"].split() for item in text[k]]} for k in keys}
        (folder / f"{subject}.wq.pkl").write_bytes(dump(text))
        (folder / f"{subject}.pca1000.wq.pkl.dic").write_bytes(dump(fmri))
    else:
        for story in ("pieman", "tunnel", "lucy"):
            text = {subject: released_items(rng, 8, 10, 4), "sub-999": released_items(rng, 2, 10, 4)}
            fmri = {subject: {"fmri": rng.standard_normal((10, 16)).astype(np.float32)},
                    "sub-999": {"fmri": rng.standard_normal((10, 16)).astype(np.float32)}}
            (folder / f"{story}.wq.pkl").write_bytes(dump(text))
            (folder / f"{story}.pca1000.wq.pkl.dic").write_bytes(dump(fmri))
