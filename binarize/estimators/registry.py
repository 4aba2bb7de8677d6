"""The estimator registry: ``register``, ``create``, ``names``, ``get``."""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping
from typing import Any

from binarize._registry import Registry, did_you_mean
from binarize.errors import ConfigError
from binarize.estimators.base import Estimator, hparam_defaults

_REGISTRY: Registry[type[Estimator]] = Registry("estimator")


def register(name: str) -> Callable[[type[Estimator]], type[Estimator]]:
    """Class decorator registering an `Estimator` subclass under ``name``.

    Examples:
        >>> import torch
        >>> from binarize import estimators
        >>> @estimators.register("tanh_ste")
        ... class TanhSTE(estimators.Estimator):
        ...     paper, summary = "an example", "gradient of tanh"
        ...     def derivative(self, x):
        ...         return 1 - torch.tanh(x) ** 2
        ...     def keep_for_backward(self, x):
        ...         return x
        ...     def backward_kept(self, x, grad):
        ...         return grad * self.derivative(x)
        ...     def surrogate(self, x):
        ...         return torch.tanh(x)
        >>> x = torch.tensor([-2.0, 0.0, 2.0], requires_grad=True)
        >>> y = estimators.create("tanh_ste")(x)
        >>> y.tolist()  # sign, with sign(0) = +1
        [-1.0, 1.0, 1.0]
        >>> y.sum().backward()
        >>> [round(g, 4) for g in x.grad.tolist()]
        [0.0707, 1.0, 0.0707]
    """

    def decorate(cls: type[Estimator]) -> type[Estimator]:
        cls.name = name
        return _REGISTRY.register(name)(cls)

    return decorate


def names() -> list[str]:
    """Registered estimator names, in registration order."""
    return _REGISTRY.names()


def get(name: str) -> type[Estimator]:
    """The estimator class registered as ``name`` (did-you-mean `ConfigError` otherwise)."""
    return _REGISTRY.get(name)


def defaults(name: str) -> dict[str, Any]:
    """Hyperparameters of estimator ``name`` with their default values."""
    return hparam_defaults(get(name))


def create(name: str | Estimator, **hparams: Any) -> Estimator:
    """Builds estimator ``name`` with ``hparams``; an `Estimator` instance is returned as is.

    String values (from the CLI or a recipe) are parsed to the type of the default.
    Unknown keys and unparsable values raise a one-line `ConfigError` listing the valid keys.

    Examples:
        >>> import torch
        >>> from binarize import estimators
        >>> est = estimators.create("reste", o_end="3")  # strings parse to the default's type
        >>> est.hparams()["o_end"]
        3.0
        >>> est(torch.tensor([-0.5, 0.0, 0.5])).tolist()
        [-1.0, 1.0, 1.0]
    """
    if isinstance(name, Estimator):
        if hparams:
            raise ConfigError(
                f"hyperparameters given with an estimator object {name!r}",
                "pass the estimator name instead, or set them on the object",
            )
        return name
    return get(name)(**coerce_hparams(name, hparams))


def coerce_hparams(name: str, hparams: Mapping[str, Any]) -> dict[str, Any]:
    """Validates keys of ``hparams`` for estimator ``name`` and parses string values."""
    valid = defaults(name)
    out: dict[str, Any] = {}
    for key, value in hparams.items():
        if key not in valid:
            keys = ", ".join(valid) or "none"
            raise ConfigError(
                f"estimator {name!r} has no hyperparameter {key!r}", f"{did_you_mean(key, valid)}valid keys: {keys}"
            )
        out[key] = _coerce(name, key, value, valid[key])
    return out


def _coerce(name: str, key: str, value: Any, default: Any) -> Any:
    kind = type(default)
    if isinstance(value, str) and kind is not str:
        try:
            value = ast.literal_eval(value.strip()) if value.strip() not in ("true", "false") else value.strip() == "true"
        except (ValueError, SyntaxError):
            raise ConfigError(
                f"{name}.{key}={value!r} is not a {kind.__name__}",
                f"give a {kind.__name__} like {key}={default!r}",
            ) from None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if default is not None and not isinstance(value, kind):
        raise ConfigError(
            f"{name}.{key}={value!r} is not a {kind.__name__}",
            f"give a {kind.__name__} like {key}={default!r}",
        )
    return value
