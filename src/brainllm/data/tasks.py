"""What a sentence's chunks make into samples: the reconstruction task.

A sentence (Pereira) or a released item is cut into chunks (`chunk_words`: three for Pereira, as in the paper).

* `continuation` (the paper): sample k (k = 1 .. n-1) has prompt = chunks before k and continuation = chunk k;
* `sentence`: one sample per sentence, no prompt, the whole sentence as continuation: the sentence is decoded from
  its image alone, as in most fMRI-to-text work, and the paper's prompt-length analysis at length 0.

Both tasks keep the same sentences (those with enough words for the chunks), so their results compare.
"""

from __future__ import annotations

from typing import Sequence

from ..errors import DatasetError

TASKS = ("continuation", "sentence")


def check_task(task: str) -> str:
    """`task` if it is one of `TASKS`, else a `DatasetError` that lists them."""
    if task not in TASKS:
        raise DatasetError(f"task must be one of {list(TASKS)}, got {task!r} (CLI: -o task=sentence).")
    return task


def chunk_words(words: list[str], n_chunks: int = 3) -> list[list[str]]:
    """Cut a sentence into `n_chunks` chunks of floor(n/3) words, the remainder going to the last chunks.

    As in the authors' Pereira pickles: 7 words -> 2/2/3, 8 -> 2/3/3, 13 -> 4/4/5.
    """
    if len(words) < n_chunks:
        raise DatasetError(f"A sentence needs at least {n_chunks} words to be chunked, got {words!r}.")
    base, extra = divmod(len(words), n_chunks)
    sizes = [base + (1 if i >= n_chunks - extra else 0) for i in range(n_chunks)]
    chunks, start = [], 0
    for size in sizes:
        chunks.append(words[start:start + size])
        start += size
    return chunks


def task_texts(chunks: Sequence[str], task: str) -> list[tuple[int, str, str]]:
    """`(k, prompt, continuation)` of each sample that one sentence's chunk texts make under `task`.

    `k` is the continuation's first chunk (0 for `sentence`); texts are stripped and joined by single spaces.
    """
    parts = [c.strip() for c in chunks]
    if check_task(task) == "sentence":
        return [(0, "", " ".join(p for p in parts if p))]
    return [(k, " ".join(p for p in parts[:k] if p), parts[k]) for k in range(1, len(parts))]
