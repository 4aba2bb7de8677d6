"""FinetuneConfig validation and recipes: every shipped recipe loads; bad ones fail in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from binarize.errors import ConfigError
from binarize.train import FinetuneConfig
from binarize.train.recipe import load_recipe

RECIPES = sorted((Path(__file__).parents[2] / "binarize" / "recipes").glob("*.toml"))


def test_config_round_trip_and_replace() -> None:
    config = FinetuneConfig(epochs=3, lr=0.1, optimizer="sgd", clip_latent_weights=True)
    assert FinetuneConfig.from_dict(config.to_dict()) == config
    assert config.replace(lr=1).lr == 1.0 and isinstance(config.replace(lr=1).lr, float)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"optimizer": "lamb"}, "optimizer 'lamb' is not supported — use one of: sgd, adam, adamw, fenbp"),
        ({"epochs": 0}, "epochs=0 is invalid"),
        ({"lr": -1.0}, "lr=-1.0 is invalid"),
        ({"label_smoothing": 1.0}, r"label_smoothing=1.0 is outside \[0, 1\)"),
        ({"warmup_epochs": 20.0}, "warmup_epochs=20.0 exceeds epochs=10"),
        ({"schedule": "linear"}, "schedule 'linear' is not supported"),
    ],
)
def test_config_rejects_bad_values(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        FinetuneConfig(**changes)


def test_from_dict_rejects_unknown_keys_and_types() -> None:
    with pytest.raises(ConfigError, match="unknown finetune key 'epoch' — valid keys: epochs"):
        FinetuneConfig.from_dict({"epoch": 3})
    with pytest.raises(ConfigError, match="finetune epochs='3' is not a int"):
        FinetuneConfig.from_dict({"epochs": "3"})
    with pytest.raises(ConfigError, match="amp=1 is not a bool"):
        FinetuneConfig.from_dict({"amp": 1})


def test_every_shipped_recipe_loads() -> None:
    assert len(RECIPES) >= 10
    for path in RECIPES:
        recipe = load_recipe(path)
        assert recipe.description
        if recipe.model and recipe.model.startswith("binarize:"):
            from binarize import models

            assert recipe.model.split(":")[1] in models.names()


def test_paper_references_are_written_in_the_recipes() -> None:
    expected = {"reste_resnet20_cifar10": 86.75, "reste_vgg_small_cifar10": 92.55, "reste_resnet18_cifar10": 92.63,
                "reste_resnet18_imagenet": 60.88, "irnet_resnet20_cifar10": 86.5, "irnet_resnet18_cifar10": 91.5,
                "irnet_vgg_small_cifar10": 90.4, "irnet_resnet18_imagenet": 58.1}
    for name, top1 in expected.items():
        recipe = load_recipe(RECIPES[0].parent / name)
        assert recipe.reference_top1 == top1
    reste = load_recipe(RECIPES[0].parent / "reste_resnet20_cifar10.toml")
    assert (reste.finetune.optimizer, reste.finetune.lr, reste.finetune.weight_decay, reste.finetune.warmup_epochs) == ("sgd", 0.1, 1e-4, 5.0)
    assert reste.convert.layer.weight_estimator_args == {"o_end": 3.0}


def test_demo_recipe_matches_the_demo() -> None:
    from binarize import demo

    recipe = load_recipe(RECIPES[0].parent / "digits_demo")
    assert recipe.convert == demo.CONVERSION
    shown = {k: getattr(recipe.finetune, k) for k in recipe.finetune_keys}
    assert shown == {k: getattr(demo.FINETUNING, k) for k in recipe.finetune_keys}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[trainer]\nepochs = 1\n", r"unknown table \[trainer\] — valid tables: recipe, convert, finetune"),
        ("[finetune]\nepohcs = 1\n", "unknown finetune key 'epohcs'"),
        ("[finetune]\nlr = -0.1\n", "lr=-0.1 is invalid"),
        ("[convert.layer]\nweight_estimator = \"rest\"\n", "unknown estimator 'rest' — did you mean 'reste'"),
        ("[convert.layer]\nweight_estimator = \"reste\"\nweight_estimator_args = { o_fin = 3 }\n", "o_fin"),
        ("[recipe]\nmodel = 3\n", r"\[recipe\] model=3 has the wrong type"),
        ("[finetune\n", "is not valid TOML"),
    ],
)
def test_bad_recipes_fail_in_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_recipe(path)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="recipe 'nowhere' not found"):
        load_recipe("nowhere")
