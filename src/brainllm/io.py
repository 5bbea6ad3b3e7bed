"""Small file helpers shared by every stage: atomic writes and strict JSON-lines reading.

Every file brainllm writes goes through a temporary file in the same folder and an `os.replace`, so a
crash never leaves a half-written file under the final name.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from .errors import BrainLLMError, DatasetError


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it is renamed onto `path`, on failure removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented JSON, atomically."""
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def file_sha1(path: str | os.PathLike) -> str | None:
    """The SHA-1 hex digest of a file's bytes, or None when it does not exist (what a stored result was computed
    from, e.g. the trained adapter)."""
    path = Path(path)
    return hashlib.sha1(path.read_bytes()).hexdigest() if path.exists() else None


def read_input_bytes(path: str | os.PathLike, kind: str = "") -> bytes:
    """The bytes of an input data file; a missing file raises `DatasetError` naming it (`kind`: e.g. "TextGrid")."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"{kind + ' ' if kind else ''}{path} does not exist.") from None


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, raising `BrainLLMError` with the path if it is missing or malformed."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except json.JSONDecodeError as err:
        raise BrainLLMError(f"{path} is not valid JSON ({err}); the file may be truncated.") from err


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> int:
    """Write one JSON object per line, atomically. Returns the number of rows written."""
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def append_jsonl(path: str | os.PathLike, row: dict) -> None:
    """Append one row to a JSON-lines log (used for per-epoch metrics; a torn last line is detected on read)."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSON-lines file; a malformed line (e.g. a truncated last line) raises with its line number."""
    rows: list[dict] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            if not line.endswith("\n"):
                raise BrainLLMError(
                    f"{path}: line {lineno} has no newline at its end; the file was truncated while being written."
                )
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise BrainLLMError(f"{path}: line {lineno} is not valid JSON ({err}).") from err
            if not isinstance(row, dict):
                raise BrainLLMError(f"{path}: line {lineno} is a {type(row).__name__}, expected a JSON object.")
            rows.append(row)
    return rows


def replace_dir(tmp_dir: Path, final_dir: Path, overwrite: bool) -> None:
    """Move a fully written `tmp_dir` onto `final_dir` (same filesystem); the old folder goes only after."""
    if final_dir.exists():
        if not overwrite:
            shutil.rmtree(tmp_dir, ignore_errors=True)
            raise BrainLLMError(f"{final_dir} already exists; pass overwrite=True (CLI: --overwrite) to replace it.")
        old = final_dir.with_name(f".{final_dir.name}.old-{os.getpid()}")
        os.replace(final_dir, old)
        os.replace(tmp_dir, final_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp_dir, final_dir)


def staging_dir(final_dir: Path) -> Path:
    """A fresh empty folder beside `final_dir` to write into before `replace_dir`."""
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{final_dir.name}.", suffix=".tmp", dir=final_dir.parent))
