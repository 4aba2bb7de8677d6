"""What every command shares: one-line errors, stderr console, JSON on stdout."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console

from binarize.errors import BinarizeError

F = TypeVar("F", bound=Callable[..., Any])

#: Tables, progress and messages go to stderr so that stdout carries only ``--json`` output.
console = Console(stderr=True)


def fail(err: BinarizeError) -> None:
    """Prints ``error: <what> — <fix>`` to stderr and exits 1."""
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(1)


def handles_errors(command: F) -> F:
    """Decorates a command so that a `BinarizeError` becomes one line and exit status 1."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except BinarizeError as err:
            fail(err)

    return wrapper  # type: ignore[return-value]


def emit_json(payload: Any) -> None:
    """Writes one JSON object to stdout (the machine-readable output of ``--json``)."""
    sys.stdout.write(json.dumps(payload, indent=2, default=_jsonable) + "\n")
    sys.stdout.flush()


def _jsonable(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if hasattr(value, "item"):
        return value.item()
    return str(value)
