"""Errors that carry what went wrong and how to fix it, printed as one line."""

from __future__ import annotations

import re

_TERMINAL_COLOURS = re.compile(r"\x1b\[[0-9;]*m")


class BinarizeError(Exception):
    """Base of every error binarize raises on purpose.

    ``str(err)`` is one line: ``"<what> — <fix>"``. The CLI prints it as
    ``error: <what> — <fix>`` and exits 1.
    """

    def __init__(self, what: str, fix: str) -> None:
        self.what = " ".join(str(what).split())
        self.fix = " ".join(str(fix).split())
        super().__init__(f"{self.what} — {self.fix}")


def first_line(exc: BaseException, limit: int = 200) -> str:
    """What a one-line error quotes of ``exc``: its message's first line without terminal
    colours, at most ``limit`` characters (the exception's type name when it has no message)."""
    lines = _TERMINAL_COLOURS.sub("", str(exc)).strip().splitlines()
    return lines[0][:limit] if lines else type(exc).__name__


class ConfigError(BinarizeError, ValueError):
    """A configuration value, estimator name, rule or recipe is invalid."""


class ModelSourceError(BinarizeError):
    """A model source cannot be found, parsed or loaded."""


class UnsafeSourceError(ModelSourceError):
    """Loading the source would execute code from the file and trust was not given."""


class ConversionError(BinarizeError):
    """A model cannot be converted as asked (tracing failed under strict, unsupported graph)."""


class FormatError(BinarizeError):
    """A packed `.bnz` file is malformed or of an unsupported version."""


class DataError(BinarizeError):
    """A data set is missing or not in the expected layout."""


class OutputExistsError(BinarizeError):
    """An output file exists and overwriting was not asked for."""


class Interrupted(BinarizeError):
    """The user stopped a run (Ctrl-C); the message says where it can resume."""


class OutputError(BinarizeError):
    """An output file or folder cannot be written (no space, no permission, not a folder)."""
