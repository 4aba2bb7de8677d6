"""Name → model constructor registry of the zoo."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from binarize._registry import Registry
from binarize.errors import ConfigError

_MODELS: Registry[Callable[..., nn.Module]] = Registry("model")


def register(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a model constructor under ``name`` (``binarize:NAME``)."""
    return _MODELS.register(name)


def names() -> list[str]:
    """Names of the zoo's models."""
    return _MODELS.names()


def create(name: str, **kwargs: Any) -> nn.Module:
    """An untrained model ``name`` built with ``kwargs`` (e.g. ``num_classes=100``)."""
    constructor = _MODELS.get(name)
    try:
        return constructor(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"model {name!r} does not accept these arguments ({exc})", "see its docstring") from None
