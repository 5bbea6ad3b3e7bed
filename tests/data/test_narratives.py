import json

import nibabel as nib
import numpy as np
import pytest

from brainllm.data.convert import convert
from brainllm.data.narratives import read_narratives
from brainllm.errors import DatasetError
from tests.data.real_fixtures import NARRATIVES_TASKS, write_narratives

MEDIAL = (0, 5, 6)


def _func(root, subject, task):
    return root / "derivatives" / "afni-smooth" / subject / "func" / f"{subject}_task-{task}"


def test_fsaverage6_medial_wall_dropped_and_words_mapped_to_1_5_s_trs(tmp_path):
    write_narratives(tmp_path, tasks=("pieman",))
    rec = read_narratives(tmp_path, "001")
    assert rec.meta["subject"] == "sub-001" and rec.meta["tr"] == 1.5
    assert rec.raw.shape == (40, 2 * (40 - len(MEDIAL))) and np.isfinite(rec.raw).all()
    assert rec.columns.tolist() == [v for v in range(40) if v not in MEDIAL] + [40 + v for v in range(40) if v not in MEDIAL]
    left = np.stack([d.data for d in nib.load(str(_func(tmp_path, "sub-001", "pieman")) +
                                               "_space-fsaverage6_hemi-L_desc-clean.func.gii").darrays])
    np.testing.assert_array_equal(rec.raw[:, :37], left[10:50][:, [v for v in range(40) if v not in MEDIAL]])
    doc = json.loads((tmp_path / "stimuli" / "gentle" / "pieman" / "align.json").read_text())
    aligned = [(w["word"], (w["start"] + w["end"]) / 2) for w in doc["words"] if w["case"] == "success"]
    for s in rec.samples:
        i = s.extra["tr_index"]
        heard = [w for w, t in aligned if int(np.floor((0.0 + t) / 1.5)) - 10 == i]  # audio onset 0, story onset TR 10
        assert all(w in s.continuation.split() for w in heard)
        assert s.frames == [i + 2 + j for j in range(4)] and s.stimulus == "pieman"
    assert rec.dropped["unaligned_words_interpolated"] > 0


def test_slumlordreach_is_split_into_two_stories_by_its_story_events(tmp_path):
    words = write_narratives(tmp_path, tasks=("slumlordreach",))
    rec = read_narratives(tmp_path, "sub-001")
    assert rec.runs == [(0, 30), (30, 60)]
    stories = rec.preprocessing[0]["stories"]
    assert set(stories) == {"slumlord", "reach"}
    between = rec.dropped.get("words_outside_story_segments", 0)  # e.g. an unaligned word interpolated into the gap
    assert stories["slumlord"]["words"] + stories["reach"]["words"] + between == len(words["slumlordreach"])
    first_reach = next(s for s in rec.samples if s.stimulus == "reach")
    assert min(first_reach.frames) >= 30 and first_reach.id.startswith("reach_tr")


def test_top_level_events_dropped_unaligned_words_and_repeated_runs(tmp_path):
    write_narratives(tmp_path, tasks=("tunnel", "lucy"), top_level_events=("lucy",), runs={"tunnel": 2})
    rec = read_narratives(tmp_path, "sub-001", unaligned="drop")
    assert rec.dropped["unaligned_words_dropped"] > 0
    assert {s.stimulus for s in rec.samples} == {"tunnel", "lucy"}
    assert rec.preprocessing[-1] == {"step": "repeats", "mode": "average"}
    kept = read_narratives(tmp_path, "sub-001", tasks="tunnel", repeats="keep")
    assert len(kept.runs) == 2 and {s.extra["run"] for s in kept.samples} == {"tunnel_run1", "tunnel_run2"}


def test_mni_volumes_with_a_brain_mask(tmp_path):
    write_narratives(tmp_path, tasks=("lucy",), mni=True)
    rec = read_narratives(tmp_path, "sub-001", space="mni", mask=str(tmp_path / "brain_mask.nii.gz"))
    assert rec.raw.shape == (32, 12)  # lucy: story 48 s = 32 TRs; mask: 2 x 2 x 3 voxels
    with pytest.raises(DatasetError, match="needs a brain mask"):
        read_narratives(tmp_path, "sub-001", space="mni")


def test_missing_or_mismatched_files_fail_clearly(tmp_path):
    write_narratives(tmp_path, tasks=("pieman", "lucy"))
    with pytest.raises(DatasetError, match="No folder .*sub-002/func"):
        read_narratives(tmp_path, "sub-002")
    with pytest.raises(DatasetError, match=r"no fsaverage6 desc-clean data for tasks \['sherlock'\]"):
        read_narratives(tmp_path, "sub-001", tasks="sherlock")
    (tmp_path / "stimuli" / "gentle" / "lucy" / "align.json").unlink()
    with pytest.raises(DatasetError, match="No word alignment .*lucy/align.json"):
        read_narratives(tmp_path, "sub-001")
    events = tmp_path / "sub-001" / "func" / "sub-001_task-pieman_events.tsv"
    events.write_text("onset\tduration\ttrial_type\n200.0\t60.0\tstory\n")
    with pytest.raises(DatasetError, match="fall outside the 90 s scan"):
        read_narratives(tmp_path, "sub-001", tasks="pieman")
    right = str(_func(tmp_path, "sub-001", "pieman")) + "_space-fsaverage6_hemi-R_desc-clean.func.gii"
    nib.save(nib.gifti.GiftiImage(darrays=[nib.gifti.GiftiDataArray(np.zeros(41, np.float32))] * 60), right)
    with pytest.raises(DatasetError, match="expected one \\(40,\\) array per TR"):
        read_narratives(tmp_path, "sub-001", tasks="pieman")


def test_convert_single_story_subject_needs_a_within_story_split(tmp_path):
    write_narratives(tmp_path, tasks=("pieman",))
    with pytest.raises(DatasetError, match=r"needs the option\(s\) \['subject'\]"):
        convert("narratives", tmp_path, tmp_path / "out")
    with pytest.raises(DatasetError, match="use split=within_story"):
        convert("narratives", tmp_path, tmp_path / "out", subject="sub-001")
    ds = convert("narratives", tmp_path, tmp_path / "out", subject="sub-001", split="within_story", gap_trs=2,
                 prompt_words=4, pca_components=5)
    split = ds.meta["split"]
    assert split["method"] == "within_story" and split["info"]["gap_trs"] == 2 and split["test"]
    assert ds.meta["source"] == "narratives (ds002345)" and ds.feature_dim == 5
    assert NARRATIVES_TASKS["pieman"][1] == ds.frames.shape[0] + 20  # 40 story TRs of a 60-TR scan
