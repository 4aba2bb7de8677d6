"""Weight transforms applied to the latent weight before binarization (e.g. IR-Net's Libra-PB)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from binarize._registry import Registry

_TRANSFORMS: Registry[Callable[[], nn.Module]] = Registry("weight transform")


def register_transform(name: str) -> Callable[[Callable[[], nn.Module]], Callable[[], nn.Module]]:
    """Decorator registering a weight-transform module class under ``name``."""
    return _TRANSFORMS.register(name)


def transform_names() -> list[str]:
    """Names accepted as ``weight_transform``."""
    return _TRANSFORMS.names()


def create_transform(name: str | nn.Module | None) -> nn.Module | None:
    """The transform ``name`` (None for no transform; a module instance is returned as is)."""
    if name is None or isinstance(name, nn.Module):
        return name
    return _TRANSFORMS.get(name)()
