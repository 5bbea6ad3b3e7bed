"""Fixtures of the evaluation tests: fake run folders in the generation output format (see fakeruns.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .fakeruns import write_fake_run


@pytest.fixture
def fake_run(tmp_path: Path) -> Path:
    """A run with a strong brain-specific effect: 12 stimuli x 3 samples, 3 permutations, cross-loss."""
    return write_fake_run(tmp_path / "run_strong", signal=1.0, seed=0)


@pytest.fixture(scope="session")
def fake_runs(tmp_path_factory) -> list[Path]:
    """Three runs (10 stimuli x 3 samples) differing in backbone, ROI dataset and training size (read only)."""
    base = tmp_path_factory.mktemp("runs")
    common = {"n_stimuli": 10, "n_train": 40}
    return [write_fake_run(base / "llama_all", signal=1.0, seed=0, backbone="tiny-llama",
                           dataset="/data/sim_all", max_train_samples=None, **common),
            write_fake_run(base / "gpt2_language", signal=0.4, seed=1, backbone="tiny-gpt2",
                           dataset="/data/sim_roi_language", max_train_samples=10, **common),
            write_fake_run(base / "llama_visual", signal=0.6, seed=2, backbone="tiny-llama",
                           dataset="/data/sim_roi_visual", max_train_samples=20, **common)]
