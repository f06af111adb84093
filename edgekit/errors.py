"""Named errors. The CLI prints any EdgekitError as one line and exits with code 2."""

from __future__ import annotations

import re

__all__ = [
    "runtime_reason",
    "EdgekitError",
    "InputError",
    "ModelLoadError",
    "DataError",
    "ExportError",
    "UnavailableError",
    "ConfigError",
]


class EdgekitError(Exception):
    """Base class: a problem with the user's input or environment, reported without a traceback."""


class InputError(EdgekitError):
    """A bad argument: unknown name, out-of-range value, output path that is a file."""


class ModelLoadError(EdgekitError):
    """A model file that is missing, corrupt, untrusted or does not match its architecture."""


class DataError(EdgekitError):
    """A dataset folder without classes or images, or an image that cannot be decoded."""


class ExportError(EdgekitError):
    """An exporter failed; benchmark rows catch it and report "export failed"."""


class UnavailableError(EdgekitError):
    """A runtime or SDK that is not installed here (e.g. TensorRT); rows read "unavailable"."""


class ConfigError(EdgekitError):
    """A YAML file (profile, recipe) that fails validation; the message names the field."""


def runtime_reason(err: BaseException, limit: int = 300) -> str:
    """A runtime's exception as one readable line: whitespace folded and OpenVINO's nested
    "Exception from src/...cpp:117:" locations dropped (its first line holds nothing else)."""
    text = re.sub(r"Exception from \S+:\d+:\s*", "", " ".join(str(err).split()))
    return f"{type(err).__name__}: {text[:limit]}" if text else type(err).__name__
