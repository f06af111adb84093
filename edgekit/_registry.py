"""A tiny name -> object registry shared by models, backends and profiles."""

from __future__ import annotations

import fnmatch
from typing import Generic, Iterator, TypeVar

from .errors import InputError

T = TypeVar("T")

__all__ = ["Registry"]


class Registry(Generic[T]):
    """Maps names to objects. Duplicate registration is a programming error and raises."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str, obj: T, *, aliases: tuple[str, ...] = ()) -> T:
        if name in self._items or name in self._aliases:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._items[name] = obj
        for alias in aliases:
            if alias in self._items or alias in self._aliases:
                raise ValueError(f"{self.kind} alias {alias!r} is already registered")
            self._aliases[alias] = name
        return obj

    def resolve(self, name: str) -> str:
        """Canonical name for `name` or an alias; raises InputError listing valid names."""
        if name in self._items:
            return name
        if name in self._aliases:
            return self._aliases[name]
        close = [n for n in self.names() if name.lower() in n.lower()][:8]
        hint = f" (close: {', '.join(close)})" if close else ""
        valid = ", ".join(self.names()) if len(self._items) <= 20 else f"see `edgekit {self.kind}s`"
        raise InputError(f"unknown {self.kind} {name!r}{hint}; valid: {valid}")

    def get(self, name: str) -> T:
        return self._items[self.resolve(name)]

    def __contains__(self, name: object) -> bool:
        return name in self._items or name in self._aliases

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._items if fnmatch.fnmatch(n, pattern))

    def aliases(self) -> dict[str, str]:
        return dict(self._aliases)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
