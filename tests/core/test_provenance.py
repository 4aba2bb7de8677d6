"""The one record of where a model came from (`binarize.provenance`): no other state rides on
modules, and the record follows the model through copies, freeze, checkpoints and wrappers."""

from __future__ import annotations

import copy
import re
import warnings
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

import binarize
from binarize import (
    BinarizeConfig,
    LayerConfig,
    Provenance,
    provenance_of,
    set_provenance,
)
from binarize.checkpoint import model_record
from binarize.conversion.pipeline import layer_config
from binarize.nn import BinaryConv2d

ROOT = Path(__file__).resolve().parents[2]
#: The attributes binarize used to set on modules, one per fact; all now live in the record.
OLD_ATTRIBUTES = re.compile(r"binarize_(report|config|plan|source|input_shape)\b")


def _binarize_keys(model: nn.Module) -> dict[str, list[str]]:
    """Every instance attribute named like binarize's, per module (root: "")."""
    return {
        name: keys
        for name, module in model.named_modules()
        if (keys := [key for key in vars(module) if "binarize" in key])
    }


def test_no_binarize_attribute_is_set_on_modules_in_the_sources():
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for folder in ("binarize", "cli")
        for path in sorted((ROOT / folder).rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if OLD_ATTRIBUTES.search(line) or ("_binarize_provenance" in line and path.name != "provenance.py")
    ]
    assert offenders == []


def _converted(**config: object) -> nn.Module:
    model = binarize.load_model("binarize:digits_cnn")
    set_provenance(model, provenance_of(model).replace(input_shape=(2, 1, 8, 8)))
    return binarize.convert(model, BinarizeConfig(**config))


class Untraceable(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it, convert swaps by name."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(1, 16, 3), nn.Conv2d(16, 16, 3), nn.Conv2d(16, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.b(self.a(x))
        return self.c(x if x.sum() > 0 else -x)


@pytest.mark.parametrize("mode", ["fx", "fallback"])
def test_only_the_record_rides_on_the_model_through_convert_freeze_and_load(tmp_path, mode):
    float_model = binarize.load_model("binarize:digits_cnn") if mode == "fx" else Untraceable()
    if mode == "fx":
        assert _binarize_keys(float_model) == {"": ["_binarize_provenance"]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fallback's "tracing failed" warning
        converted = binarize.convert(float_model, example_inputs=(torch.randn(1, 1, 8, 8),))
    assert provenance_of(converted).report.mode == mode
    frozen = binarize.freeze(converted)
    path = binarize.save_checkpoint(converted, tmp_path / "m.pt")
    reloaded = binarize.load_checkpoint(path, model=None if mode == "fx" else Untraceable())
    for model in (converted, frozen, reloaded):
        assert _binarize_keys(model) == {"": ["_binarize_provenance"]}
    # a model binarize did not load or convert carries nothing
    assert _binarize_keys(binarize.freeze(copy.deepcopy(nn.Sequential(nn.Linear(2, 2))))) == {}


def test_record_survives_deepcopy_freeze_and_checkpoint_round_trip(tmp_path):
    converted = _converted(layer=LayerConfig(weight_estimator="reste", weight_estimator_args={"o_end": 5}))
    record = provenance_of(converted)
    assert record.source == {"kind": "binarize", "name": "digits_cnn", "kwargs": {}}
    assert record.input_shape == (2, 1, 8, 8) and record.config is not None and record.report is not None
    copied = copy.deepcopy(converted)
    frozen = binarize.freeze(copied)
    assert provenance_of(copied) == record and provenance_of(frozen) == record
    reloaded = binarize.load_checkpoint(binarize.save_checkpoint(copied, tmp_path / "m.pt"))
    again = provenance_of(reloaded)
    assert (again.source, again.input_shape, again.config) == (record.source, record.input_shape, record.config)
    assert again.report is not None and again.report.rows == record.report.rows
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(reloaded.eval()(x), converted.eval()(x))
    torch.testing.assert_close(frozen(x), converted(x))


@pytest.mark.skipif(not dist.is_available(), reason="torch built without torch.distributed")
def test_record_is_the_wrapped_modules_under_data_parallel_and_ddp(tmp_path):
    converted = _converted()
    assert provenance_of(nn.DataParallel(converted)) == provenance_of(converted)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        wrapped = nn.parallel.DistributedDataParallel(converted)
        assert provenance_of(wrapped) == provenance_of(converted)
        set_provenance(wrapped, provenance_of(wrapped).replace(input_shape=(4, 1, 8, 8)))
        assert provenance_of(converted).input_shape == (4, 1, 8, 8)  # recorded on the wrapped module
    finally:
        dist.destroy_process_group()


def test_record_survives_a_deepcopy_of_a_graph_module_and_a_plain_module():
    for model in (torch.fx.symbolic_trace(nn.Sequential(nn.Linear(3, 2))), nn.Linear(3, 2)):
        set_provenance(model, Provenance(source={"kind": "python"}, input_shape=[1, 3]))
        assert provenance_of(copy.deepcopy(model)) == Provenance(source={"kind": "python"}, input_shape=(1, 3))


def test_declared_input_shape_is_the_default_and_the_record_wins():
    class Declares(nn.Linear):
        input_shape = (1, 5)

    model = Declares(5, 2)
    assert provenance_of(model).input_shape == (1, 5)
    assert provenance_of(set_provenance(model, Provenance(input_shape=(3, 5)))).input_shape == (3, 5)
    assert provenance_of(nn.Linear(5, 2)) == Provenance()


def test_saved_plan_is_read_off_the_binary_layers(tmp_path):
    """The plan a checkpoint replays is a fact of the graph: a binary layer changed after
    conversion is saved and rebuilt as it now is, not as convert first made it."""
    converted = _converted()
    name = next(row.fqn for row in provenance_of(converted).report.rows if row.binarized)
    old = converted.get_submodule(name)
    assert isinstance(old, BinaryConv2d)
    new = BinaryConv2d.from_float(old.to_float(), weight_estimator="reste", input_estimator=None, scaling="tensor_mean")
    converted.set_submodule(name, new)
    layer = next(r["layer"] for r in model_record(converted)["plan"] if r["fqn"] == name)
    assert layer == layer_config(new).to_dict()
    assert (layer["weight_estimator"], layer["input_estimator"], layer["scaling"]) == ("reste", None, "tensor_mean")
    assert layer["weight_estimator_args"] == {"o_end": 3.0, "t": 1.5, "m": 0.1}
    reloaded = binarize.load_checkpoint(binarize.save_checkpoint(converted, tmp_path / "m.pt"))
    rebuilt = reloaded.get_submodule(name)
    assert rebuilt.input_estimator is None and type(rebuilt.weight_estimator) is type(new.weight_estimator)
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(reloaded.eval()(x), converted.eval()(x))
