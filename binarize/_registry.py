"""Name → factory registries with did-you-mean errors."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

from binarize.errors import BinarizeError, ConfigError

T = TypeVar("T")


def did_you_mean(name: str, choices: Iterable[str], render: Callable[[str], str] = repr) -> str:
    """``"did you mean <closest>? "`` when a choice is close to ``name``, else ``""``."""
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f"did you mean {render(close[0])}? " if close else ""


class Registry(Generic[T]):
    """Maps names to factories; unknown names raise ``error`` (a `ConfigError` unless told)
    suggesting the closest.

    ``usage`` writes an entry as the user types it (e.g. ``cifar10:PATH`` for a data set that
    takes a folder); suggestions and `usages` use it, lookups use the bare name.
    """

    def __init__(
        self,
        kind: str,
        *,
        error: type[BinarizeError] = ConfigError,
        usage: Callable[[str, T], str] = lambda name, entry: name,
    ) -> None:
        self.kind = kind
        self._error = error
        self._usage = usage
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
            raise self._error(f"unknown {self.kind} {name!r}", self.suggestion(name)) from None

    def suggestion(self, name: str) -> str:
        usages = dict(zip(self._entries, self.usages()))
        close = did_you_mean(name, usages, render=lambda close: repr(usages[close]))
        return f"{close}valid {self.kind}s: {', '.join(usages.values())}"

    def names(self) -> list[str]:
        return list(self._entries)

    def usages(self) -> list[str]:
        """Every entry as the user writes it, in registration order."""
        return [self._usage(name, entry) for name, entry in self._entries.items()]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)
