"""Stimulus passages written for brainllm: 12 topics x 10 passages, one sentence per line, passages separated
by a blank line. They are the stimuli of the simulated participant (`brainllm.data.simulate`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ...errors import DatasetError

CORPUS_DIR = Path(__file__).parent


@dataclass(frozen=True)
class Passage:
    """A short passage: `id` is `<topic>_<nn>`, `sentences` keep their final punctuation."""

    id: str
    topic: str
    sentences: tuple[str, ...]


def load_corpus(folder: Path = CORPUS_DIR) -> list[Passage]:
    """Read every `<topic>.txt` in `folder`, in sorted topic order."""
    passages: list[Passage] = []
    for path in sorted(folder.glob("*.txt")):
        blocks = [b for b in path.read_text(encoding="utf-8").split("\n\n") if b.strip()]
        for i, block in enumerate(blocks):
            sentences = tuple(line.strip() for line in block.splitlines() if line.strip())
            passages.append(Passage(f"{path.stem}_{i:02d}", path.stem, sentences))
    if not passages:
        raise DatasetError(f"No passages found in {folder}; the package corpus is missing (reinstall brainllm).")
    return passages
