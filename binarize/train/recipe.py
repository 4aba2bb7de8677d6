"""Recipes: TOML files that fix a paper's (or the demo's) setting, validated when loaded.

A recipe has three tables, all optional::

    [recipe]            # what it is and what it should reach
    description = "ReSTE, ResNet-20 on CIFAR-10, W1A1"
    model = "binarize:resnet20"
    data = "cifar10:data/cifar10"
    reference = "ReSTE (ICCV 2023) Table 2: 86.75 % top-1"
    reference_top1 = 86.75

    [convert]           # a BinarizeConfig (with [convert.layer] a LayerConfig)
    [finetune]          # a FinetuneConfig

Unknown tables or keys, wrong types and invalid values are one-line `ConfigError`s.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from binarize.config import BinarizeConfig
from binarize.errors import ConfigError
from binarize.train.config import FinetuneConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

TABLES = ("recipe", "convert", "finetune")
RECIPE_KEYS: dict[str, type | tuple[type, ...]] = {"description": str, "model": str, "data": str, "reference": str, "reference_top1": (int, float)}


@dataclass(frozen=True)
class Recipe:
    """A loaded, validated recipe."""

    path: str
    description: str
    model: str | None
    data: str | None
    reference: str | None
    reference_top1: float | None
    convert: BinarizeConfig
    finetune: FinetuneConfig
    #: the keys the file set in [finetune] (command-line flags override these)
    finetune_keys: tuple[str, ...] = ()


#: The recipes installed with the package (``binarize/recipes/*.toml``), found by name.
INSTALLED = Path(__file__).resolve().parents[1] / "recipes"


def recipe_names() -> list[str]:
    """Names of the installed recipes, e.g. ``reste_resnet20_cifar10``."""
    return sorted(path.stem for path in INSTALLED.glob("*.toml"))


def recipe_path(name: str | Path) -> Path:
    """A recipe file: ``dir/x.toml``, ``dir/x`` (``.toml`` added), or the name of an installed
    recipe (``reste_resnet20_cifar10``); a one-line error listing the installed ones otherwise."""
    path = Path(name)
    candidates = [path] if path.suffix == ".toml" else [path.with_name(path.name + ".toml"), path]
    if path.parent == Path("."):
        candidates.append(INSTALLED / f"{path.stem}.toml")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    from binarize._registry import did_you_mean

    raise ConfigError(f"recipe {str(name)!r} not found",
                      f"{did_you_mean(path.stem, recipe_names())}give a recipe file or an installed recipe: "
                      f"{', '.join(recipe_names())}")


def load_recipe(name: str | Path) -> Recipe:
    """Reads and validates a recipe file."""
    path = recipe_path(name)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"recipe {path} is not valid TOML ({exc})", "fix the syntax at that line") from None
    return recipe_from_dict(data, str(path))


def recipe_from_dict(data: Mapping[str, Any], path: str = "<recipe>") -> Recipe:
    """Validates the parsed tables of a recipe."""
    unknown = [key for key in data if key not in TABLES]
    if unknown:
        raise ConfigError(f"recipe {path}: unknown table [{unknown[0]}]", f"valid tables: {', '.join(TABLES)}")
    meta = _table(data, "recipe", path)
    for key, value in meta.items():
        if key not in RECIPE_KEYS:
            raise ConfigError(f"recipe {path}: unknown key {key!r} in [recipe]", f"valid keys: {', '.join(RECIPE_KEYS)}")
        if not isinstance(value, RECIPE_KEYS[key]) or isinstance(value, bool):
            raise ConfigError(f"recipe {path}: [recipe] {key}={value!r} has the wrong type", "see the installed recipes in binarize/recipes/ for examples")
    finetune_table = _table(data, "finetune", path)
    try:
        convert = BinarizeConfig.from_dict(_table(data, "convert", path))
        _check_estimators(convert)
        finetune = FinetuneConfig.from_dict(finetune_table)
    except ConfigError as err:
        raise ConfigError(f"recipe {path}: {err.what}", err.fix) from None
    except TypeError as err:
        raise ConfigError(f"recipe {path}: bad [convert] value ({err})", "see BinarizeConfig's fields") from None
    reference_top1 = meta.get("reference_top1")
    return Recipe(
        path=path,
        description=meta.get("description", ""),
        model=meta.get("model"),
        data=meta.get("data"),
        reference=meta.get("reference"),
        reference_top1=None if reference_top1 is None else float(reference_top1),
        convert=convert,
        finetune=finetune,
        finetune_keys=tuple(finetune_table),
    )


def _table(data: Mapping[str, Any], name: str, path: str) -> dict[str, Any]:
    table = data.get(name, {})
    if not isinstance(table, Mapping):
        raise ConfigError(f"recipe {path}: {name} must be a table", f"write [{name}] followed by key = value lines")
    return dict(table)


def _check_estimators(config: BinarizeConfig) -> None:
    """Estimator names and their arguments exist (the same check `convert` makes later)."""
    from binarize.estimators import coerce_hparams

    layers = [config.layer] + [rule.layer for rule in config.rules if rule.layer is not None]
    for layer in layers:
        coerce_hparams(layer.weight_estimator, layer.weight_estimator_args)
        if layer.input_estimator is not None:
            coerce_hparams(layer.input_estimator, layer.input_estimator_args)
