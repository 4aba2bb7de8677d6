"""Name → factory registries with did-you-mean errors."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

from binarize.errors import ConfigError

T = TypeVar("T")


def did_you_mean(name: str, choices: Iterable[str], render: Callable[[str], str] = repr) -> str:
    """``"did you mean <closest>? "`` when a choice is close to ``name``, else ``""``."""
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f"did you mean {render(close[0])}? " if close else ""


class Registry(Generic[T]):
    """Maps names to factories; unknown names raise a `ConfigError` suggesting the closest."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers ``obj`` under ``name`` (names are unique)."""

        def decorate(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            return obj

        return decorate

    def get(self, name: str) -> T:
        """The entry named ``name``, or a `ConfigError` naming the closest match."""
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(f"unknown {self.kind} {name!r}", self.suggestion(name)) from None

    def suggestion(self, name: str) -> str:
        return f"{did_you_mean(name, self._entries)}valid {self.kind}s: {', '.join(self.names())}"

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)
