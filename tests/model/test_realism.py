"""The realism profile: a planted linear map is identified near 1 and an unrelated feature near chance; pure-noise
simulated frames give chance on every row; the command prints the table and writes the JSON."""

import json
import zlib

import numpy as np

from brainllm.data.dataset import BrainTextDataset, Sample
from brainllm.model.realism import DIRECTIONS, LENGTH_POSITION, profile_table, profile_units, realism_profile


def _vectors(texts, salt: str, dim: int = 24) -> np.ndarray:
    """A fixed random vector per text (the same text always gets the same vector)."""
    return np.stack([np.random.default_rng(zlib.crc32((salt + t).encode())).standard_normal(dim) for t in texts])


def fake_spaces(texts):
    """A feature provider without any model: `minilm` and `input embedding` are unrelated random codes."""
    return {"minilm": _vectors(texts, "a"), "input embedding": _vectors(texts, "b")}


def planted_dataset(n_stimuli: int = 40, per_stimulus: int = 4, noise: float = 0.3, seed: int = 0):
    """Sentence-design-like data (two samples share each sentence's frame) whose frames are a fixed linear map of
    the `minilm` code of the sentence, plus noise."""
    rng = np.random.default_rng(seed)
    samples, sentences = [], []
    for p in range(n_stimuli):
        for j in range(per_stimulus):
            words = [f"w{p}x{j}y{k}" for k in range(int(rng.integers(6, 14)))]
            row = len(sentences)
            sentences.append(" ".join(words))
            third = len(words) // 3
            samples += [Sample(f"p{p}_s{j}_k1", f"p{p}", "subj", " ".join(words[:third]),
                               " ".join(words[third:2 * third]), [row]),
                        Sample(f"p{p}_s{j}_k2", f"p{p}", "subj", " ".join(words[:2 * third]),
                               " ".join(words[2 * third:]), [row])]
    code = _vectors(sentences, "a")
    frames = code @ rng.standard_normal((code.shape[1], 32)) + noise * rng.standard_normal((len(sentences), 32))
    return BrainTextDataset(frames.astype(np.float32), samples, {"subject": "subj", "source": "test"})


def test_units_are_whole_sentences_once_each():
    ds = planted_dataset(n_stimuli=5)
    units = profile_units(ds)
    assert len(units.texts) == 20 and units.frames.shape == (20, 32)
    k2 = [s for s in ds if s.id.endswith("_k2")]
    assert units.texts == [f"{s.prompt} {s.continuation}" for s in k2]
    assert units.positions.tolist() == [0, 1, 2, 3] * 5


def test_planted_feature_is_identified_and_an_unrelated_one_is_not():
    profile = realism_profile(planted_dataset(), spaces=fake_spaces, layers=(0,))
    rows = profile["rows"]
    assert list(rows) == ["minilm", "input embedding", LENGTH_POSITION]
    for d in DIRECTIONS:
        assert rows["minilm"][d]["across"] > 0.95 and rows["minilm"][d]["within"] > 0.9, rows["minilm"]
        assert abs(rows["input embedding"][d]["across"] - 0.5) < 0.07, rows["input embedding"]
    table = profile_table({"a": profile, "b": profile})
    assert "| minilm |" in table and table.splitlines()[2].endswith("| 0.000 |")


def test_pure_noise_simulation_gives_chance_on_every_row():
    """SNR 0 (the default participant but for the backbone: tests stay offline): every row 0.5 +- 0.05."""
    from brainllm.data.simulate import minilm_spaces, simulate

    ds = simulate(design="sentence", snr=0.0, seed=0).dataset  # the default participant, without a backbone
    profile = realism_profile(ds, spaces=minilm_spaces, layers=())
    for name, row in profile["rows"].items():
        for d in DIRECTIONS:
            for k in ("across", "within"):
                assert abs(row[d][k] - 0.5) < 0.05, (name, d, k, row[d][k])


def test_profile_command_with_a_tiny_backbone(tmp_path, tiny_llama_path):
    from typer.testing import CliRunner

    from brainllm.cli import app

    planted_dataset(n_stimuli=10).save(tmp_path / "d")
    out = tmp_path / "p.json"
    res = CliRunner().invoke(app, ["inspect", str(tmp_path / "d"), "--profile", "--backbone", str(tiny_llama_path),
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    written = json.loads(out.read_text())
    # the tiny backbone has 2 blocks: layers 0 and 2 of the fixed list are profiled, the deeper ones left out
    assert list(written["rows"]) == ["minilm", "input embedding", "layer 2", LENGTH_POSITION]
    assert "| layer 2 |" in res.output and str(out) in res.output
