"""The sentence task: one sample per sentence, no prompt, the whole sentence, its frames; the same sentences as
the paper's continuation task, from every reader that has sentences."""

import numpy as np
import pytest

from brainllm.data.convert import convert
from brainllm.data.pereira import read_pereira
from brainllm.data.released import read_released
from brainllm.data.simulate import simulate
from brainllm.data.tasks import task_texts
from brainllm.errors import DatasetError
from tests.data.real_fixtures import write_pereira, write_released


def test_task_texts_cut_a_sentence_as_each_task_asks():
    chunks = ["The old dog", "slept in", "the sun."]
    assert task_texts(chunks, "continuation") == [(1, "The old dog", "slept in"),
                                                  (2, "The old dog slept in", "the sun.")]
    assert task_texts(chunks, "sentence") == [(0, "", "The old dog slept in the sun.")]
    with pytest.raises(DatasetError, match="task must be one of"):
        task_texts(chunks, "story")


def _by_sentence(samples, key):
    out = {}
    for s in samples:
        out.setdefault((s.stimulus, s.extra[key]), []).append(s)
    return out


def _check_sentence_task(continuation_samples, sentence_samples, key):
    """One sentence sample per sentence of the continuation task: empty prompt, the sentence's whole text, the
    frames its continuation samples share."""
    paper, whole = _by_sentence(continuation_samples, key), _by_sentence(sentence_samples, key)
    assert set(paper) == set(whole) and all(len(v) == 1 for v in whole.values())
    for unit, (s,) in whole.items():
        last = max(paper[unit], key=lambda x: x.extra["k"])
        assert s.prompt == "" and s.extra["k"] == 0
        assert s.continuation == f"{last.prompt} {last.continuation}"
        assert s.frames == sorted({f for x in paper[unit] for f in x.frames})


def test_released_pereira_sentence_task(tmp_path):
    write_released(tmp_path / "Pereira", "pereira")
    paper, whole = read_released(tmp_path, "P01"), read_released(tmp_path, "P01", task="sentence")
    _check_sentence_task(paper.samples, whole.samples, "item")
    assert whole.meta["task"] == "sentence" and paper.meta["task"] == "continuation"
    np.testing.assert_array_equal(paper.raw, whole.raw)
    ds = convert("released", tmp_path, tmp_path / "out", subject="P01", task="sentence")
    assert ds.task == "sentence" and "task sentence" in ds.describe(0)


def test_pereira_and_the_simulator_sentence_task(tmp_path):
    path = write_pereira(tmp_path / "P01" / "data_384sentences.mat")
    _check_sentence_task(read_pereira(path).samples, read_pereira(path, task="sentence").samples, "sentence")
    paper = simulate(design="sentence", passages=4, voxels=64, components=8, seed=1).dataset
    whole = simulate(design="sentence", passages=4, voxels=64, components=8, seed=1, task="sentence").dataset
    _check_sentence_task(list(paper), list(whole), "sentence")
    np.testing.assert_array_equal(paper.frames, whole.frames)  # the same participant, other samples
    assert whole.task == "sentence" and paper.task == "continuation"
    with pytest.raises(DatasetError, match="needs the sentence design"):
        simulate(design="story", task="sentence")
