"""Atomic outputs: nothing edgekit writes is ever left half-written."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .errors import ConfigError, InputError

__all__ = ["atomic_path", "remove_stale_temps", "atomic_write_text", "atomic_write_json", "read_json", "check_out_dir",
           "staged_dir", "read_yaml_model"]


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


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete what a killed writer left of `atomic_path` temporaries (.NAME.XXXX.tmp.EXT) in
    `folder`: a SIGKILL lands between write and rename, and a resumed run must not keep it."""
    stale = [p for p in Path(folder).glob(".*.tmp*") if p.is_file()]
    for p in stale:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    return stale


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


def read_json(path: Path, what: str) -> Any:
    """A JSON file edgekit wrote (atomically, so only a hand edit or another tool breaks it):
    one error line naming it, not a decoder traceback."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"cannot read {what} {path}: {e}; restore it or re-run into a new --out") from None


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


def read_yaml_model(path: Path, schema, what: str, *, tags: tuple[str, ...] = ()):
    """Read a YAML mapping and validate it with the pydantic `schema`; every failure is a
    ConfigError naming the file and the first wrong field. `tags` are the values of a
    discriminated union (recipe stages): dropped from field paths, listed when unknown."""
    import yaml
    from pydantic import ValidationError

    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read {what} {path}: {str(e).splitlines()[0]}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path} must be a YAML mapping of fields")
    try:
        return schema.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"] if p not in tags) or "(root)"
        msg = err["msg"]
        if err["type"] == "union_tag_invalid":
            key = str(err.get("ctx", {}).get("discriminator", "")).strip("'")
            field += f".{key}"
            msg = f"unknown {key} {err.get('input', {}).get(key)!r}; valid: {', '.join(tags)}"
        raise ConfigError(f"{what} {path}: field '{field}': {msg}") from e
