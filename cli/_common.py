"""What every command shares: one-line errors, stderr console, JSON on stdout."""

from __future__ import annotations

import functools
import json
import sys
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import torch
import typer
from rich.console import Console
from torch import nn

from binarize import (
    ARCHITECTURE_PREFIXES,
    BinarizeError,
    ConfigError,
    ModelSourceError,
    first_line,
    forward_once,
    os_error,
)

F = TypeVar("F", bound=Callable[..., Any])

#: Tables, progress and messages go to stderr so that stdout carries only ``--json`` output.
console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def fail(err: BinarizeError) -> None:
    """Prints ``error: <what> — <fix>`` to stderr and exits 1."""
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(1)


def handles_errors(command: F) -> F:
    """Decorates a command so that a `BinarizeError`, or an OS failure no library call turned
    into one (a full disk while appending metrics, say), becomes one line and exit status 1.
    Under ``--json`` Python warnings are dropped: stderr stays quiet (the JSON carries binarize's
    own warnings, e.g. the conversion report's)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with warnings.catch_warnings():
                if kwargs.get("as_json") or kwargs.get("json_output"):
                    warnings.simplefilter("ignore")
                return command(*args, **kwargs)
        except BinarizeError as err:
            fail(err)
        except OSError as exc:
            fail(os_error(exc))
        except (AssertionError, RuntimeError) as exc:
            if not _is_export_shape_guard(exc):
                raise
            fail(ModelSourceError(
                f"the model comes from a torch.export archive traced for one input shape only ({first_line(exc, 120)})",
                "re-export it with a dynamic batch dimension (torch.export.export(..., dynamic_shapes=...)) "
                "or pass inputs of the shape it was traced with (e.g. --batch-size 1)",
            ))

    return wrapper  # type: ignore[return-value]


def _is_export_shape_guard(exc: BaseException) -> bool:
    """True for the errors a module unlifted from a static `torch.export` program raises on an
    input of another shape (its guards are checked in forward)."""
    text = str(exc)
    return text.startswith("Guard failed:") or (text.startswith("Expected input at") and "dynamic_shapes" in text)


def one_of(names: Iterable[str]) -> str:
    """The sentence that lists an option's valid values in its help: ``"One of: a, b, c."``"""
    return f"One of: {', '.join(names)}."


def load_source(
    source: str, *, weights: Path | None, arch: str | None, trust: bool, num_classes: int | None = None
) -> nn.Module:
    """`load_model`, refusing --weights and --arch where the source would ignore them: --weights
    goes with a named architecture (torchvision:NAME, binarize:NAME, timm:NAME), --arch with a state-dict file."""
    from binarize import load_model

    named = source.startswith(ARCHITECTURE_PREFIXES)
    if weights is not None and not named:
        raise ConfigError(
            f"--weights is ignored for {source}: it loads a state dict into a named architecture",
            "give torchvision:NAME, binarize:NAME or timm:NAME with --weights, or pass the state-dict file as the model with --arch",
        )
    if arch is not None and named:
        raise ConfigError(f"--arch is ignored for {source}: it names the architecture already",
                          "drop --arch, or pass a state-dict file as the model with --arch")
    return load_model(source, weights=weights, arch=arch, trust=trust, num_classes=num_classes)


def check_input_shape(
    model: Callable[[torch.Tensor], Any],
    shape: tuple[int, ...],
    what: str,
    fix: str | None = None,
) -> None:
    """Runs ``model`` once on zeros of ``shape`` so that a shape it cannot take (wrong channel
    count, rank or size) is one line naming the shape, not a traceback from deep inside."""
    failure = _failure_on(model, shape)
    if failure is not None:
        raise ConfigError(
            f"{what} cannot take an input of shape {','.join(map(str, shape))} ({first_line(failure, 160)})",
            fix or "pass --input-shape N,C,H,W as the model expects (channels first)",
        )


def takes_batch(model: Callable[[torch.Tensor], Any], shape: tuple[int, ...]) -> bool:
    """Whether ``model`` runs on zeros of ``shape`` (e.g. another batch size than recorded)."""
    return _failure_on(model, shape) is None


def _failure_on(model: Callable[[torch.Tensor], Any], shape: tuple[int, ...]) -> Exception | None:
    """What running ``model`` once on zeros of ``shape`` raised, or None."""
    try:
        forward_once(model, torch.zeros(shape))
    except Exception as exc:  # models fail on a shape they cannot take with many error types
        return exc
    return None


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
    parsed: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} {item!r} is not KEY=VALUE", f"write e.g. {flag} o_end=3")
        parsed[key.strip()] = value.strip()
    return parsed


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1,3,224,224"`` → ``(1, 3, 224, 224)``."""
    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if not shape or any(d <= 0 for d in shape):
        raise ConfigError(f"input shape {text!r} is not a list of positive integers", "write e.g. 1,3,224,224")
    return shape


# Options shared by every command that reads a model.
ARCH_OPTION = typer.Option(None, "--arch", metavar="SOURCE", help="Architecture for a state-dict file: torchvision:NAME or binarize:NAME.")
WEIGHTS_OPTION = typer.Option(None, "--weights", help="State-dict file to load into a named architecture.")
TRUST_OPTION = typer.Option(False, "--trust", help="Allow what runs code from a file: unpickling a saved module or a .pt2 archive (and checkpoints made from them), following a path an .onnx file names.")
NUM_CLASSES_OPTION = typer.Option(None, "--num-classes", min=1, help="Outputs of a named architecture (torchvision:/binarize:/timm: or --arch), e.g. the class count of your data set. Default: the architecture's own (1000 for torchvision).")
JSON_OPTION = typer.Option(False, "--json", help="Print one JSON object on stdout.")
FORCE_OPTION = typer.Option(False, "--force", help="Overwrite existing output files.")
