"""Atomic outputs: nothing edgekit writes is ever left half-written."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .errors import InputError

__all__ = ["atomic_path", "atomic_write_text", "atomic_write_json", "check_out_dir", "staged_dir"]


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` for a writer; rename it into place on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary name in the same folder, then rename (atomic on POSIX)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def check_out_dir(out: Path) -> Path:
    """Refuse an output path that exists as a file, before any work starts."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"output path {out} is a file; pass a directory path with --out")
    return out


@contextlib.contextmanager
def staged_dir(out: Path) -> Iterator[Path]:
    """Yield a staging folder beside `out`; on success move its files into `out`.

    On any error the staging folder is removed, so a failed run leaves no partial output.
    Files already in `out` that the run did not produce are kept.
    """
    out = check_out_dir(Path(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    out.mkdir(exist_ok=True)
    for item in sorted(stage.rglob("*")):
        if item.is_file():
            dest = out / item.relative_to(stage)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(item, dest)
    shutil.rmtree(stage, ignore_errors=True)
