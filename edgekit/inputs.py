"""Validate user input once, at the edge: names, lists, counts. Everything inward is typed."""

from __future__ import annotations

from typing import Iterable

from .errors import InputError

__all__ = ["parse_list", "parse_backends", "parse_precisions", "parse_threads", "check_classes"]


def parse_list(value: str | Iterable[str] | None) -> list[str]:
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    return [s.strip() for s in items if s and s.strip()]


def parse_backends(value: str | Iterable[str]) -> list[str]:
    from .backends import BACKENDS, all_backends

    names, valid = parse_list(value), all_backends()
    if not names:
        raise InputError(f"no backend given; valid: {', '.join(valid)}")
    return [BACKENDS.resolve(n) for n in names]


def parse_precisions(value: str | Iterable[str]) -> list[str]:
    from .backends import PRECISIONS

    names = parse_list(value)
    bad = [p for p in names if p not in PRECISIONS]
    if bad or not names:
        raise InputError(f"unknown precision {', '.join(bad) or '(none)'}; valid: {', '.join(PRECISIONS)}")
    return names


def parse_threads(value: str | int | Iterable[int]) -> list[int]:
    if isinstance(value, int):
        items = [value]
    else:
        try:
            items = [int(t) for t in parse_list(value if isinstance(value, str) else map(str, value))]
        except ValueError:
            raise InputError(f"--threads must be positive integers like 1 or 1,2 (got {value!r})") from None
    if not items or any(t < 1 for t in items):
        raise InputError(f"--threads must be positive integers like 1 or 1,2 (got {value!r})")
    return items


def check_classes(num_classes: int, classes: list[str], data: str) -> None:
    """A model whose output count differs from the dataset's classes cannot be scored on it."""
    if num_classes != len(classes):
        raise InputError(f"the model has {num_classes} outputs but {data} has {len(classes)} classes; "
                         "pass data with the classes the model was trained on")
