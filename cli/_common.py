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
console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


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


def parse_key_values(items: list[str], flag: str) -> dict[str, str]:
    """``["k=v", ...]`` → ``{"k": "v"}`` with a one-line error for malformed items."""
    from binarize.errors import ConfigError

    parsed: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} {item!r} is not KEY=VALUE", f"write e.g. {flag} o_end=3")
        parsed[key.strip()] = value.strip()
    return parsed


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1,3,224,224"`` → ``(1, 3, 224, 224)``."""
    from binarize.errors import ConfigError

    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if not shape or any(d <= 0 for d in shape):
        raise ConfigError(f"input shape {text!r} is not a list of positive integers", "write e.g. 1,3,224,224")
    return shape


# Options shared by every command that reads a model.
ARCH_OPTION = typer.Option(None, "--arch", help="Architecture for a state-dict file: torchvision:NAME or binarize:NAME.")
WEIGHTS_OPTION = typer.Option(None, "--weights", help="State-dict file to load into a named architecture.")
TRUST_OPTION = typer.Option(False, "--trust", help="Allow what runs code from a file: unpickling a saved module or a .pt2 archive (and checkpoints made from them), following a path an .onnx file names.")
JSON_OPTION = typer.Option(False, "--json", help="Print one JSON object on stdout.")
FORCE_OPTION = typer.Option(False, "--force", help="Overwrite existing output files.")
