"""Model sources (torchvision, state dicts, .pt2, pickled modules) and safe checkpoints."""

import pytest
import torch
import torchvision
from torch import nn

import binarize
from binarize import BinarizeConfig, LayerConfig
from binarize.checkpoint import save_checkpoint
from binarize.loading import load_checkpoint
from binarize.errors import ModelSourceError, OutputExistsError, UnsafeSourceError
from binarize import provenance_of


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3)
        self.b = nn.Conv2d(8, 8, 3)
        self.c = nn.Linear(8, 4)

    def forward(self, x):
        return self.c(torch.tanh(self.b(torch.tanh(self.a(x)))).mean(dim=(2, 3)))


def test_torchvision_name_and_weights_file(tmp_path):
    reference = torchvision.models.get_model("resnet18", weights=None)
    path = tmp_path / "resnet18-weights.pth"
    torch.save(reference.state_dict(), path)
    model = binarize.load_model("torchvision:resnet18", weights=path)
    assert torch.equal(model.fc.weight, reference.fc.weight)
    assert provenance_of(model).source == {"kind": "torchvision", "name": "resnet18", "kwargs": {}}


def test_unknown_torchvision_name_suggests():
    with pytest.raises(ModelSourceError, match="did you mean torchvision:resnet18"):
        binarize.load_model("torchvision:resnet19")


def test_state_dict_needs_arch_and_must_fit(tmp_path):
    path = tmp_path / "sd.pt"
    torch.save(torchvision.models.get_model("resnet18").state_dict(), path)
    with pytest.raises(ModelSourceError, match="--arch"):
        binarize.load_model(path)
    assert isinstance(binarize.load_model(path, arch="torchvision:resnet18"), torchvision.models.ResNet)
    with pytest.raises(ModelSourceError, match="does not fit"):
        binarize.load_model(path, arch="torchvision:alexnet")


def test_pickled_module_needs_trust(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(torchvision.models.get_model("resnet18"), path)
    with pytest.raises(UnsafeSourceError, match="--trust"):
        binarize.load_model(path)
    assert isinstance(binarize.load_model(path, trust=True), torchvision.models.ResNet)


def test_corrupt_and_missing_files_are_one_line_errors(tmp_path):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ModelSourceError, match="cannot read") as err:
        binarize.load_model(bad)
    assert "\n" not in str(err.value)
    with pytest.raises(ModelSourceError, match="not found"):
        binarize.load_model(tmp_path / "absent.pt")


def test_exported_program_converts_and_round_trips(tmp_path):
    model = Tiny().eval()
    path = tmp_path / "tiny.pt2"
    torch.export.save(torch.export.export(model, (torch.randn(2, 3, 8, 8),)), path)
    with pytest.raises(UnsafeSourceError, match="torch.export archive"):
        binarize.load_model(path)  # torch.export.load unpickles parts of the archive
    loaded = binarize.load_model(path, trust=True)
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(loaded(x), model(x))
    converted = binarize.convert(loaded, BinarizeConfig(min_fan_in=0)).eval()
    assert [row.fqn for row in provenance_of(converted).report.rows if row.binarized] == ["b"]
    save_checkpoint(converted, tmp_path / "tiny.binarized.pt")
    with pytest.raises(UnsafeSourceError, match="embeds"):
        load_checkpoint(tmp_path / "tiny.binarized.pt")
    reloaded = load_checkpoint(tmp_path / "tiny.binarized.pt", trust=True).eval()
    torch.testing.assert_close(reloaded(x), converted(x))


def test_checkpoint_rebuilds_converted_model_exactly_without_unpickling(tmp_path):
    layer = LayerConfig(weight_estimator="clipped_ste", input_estimator=None, scaling="learned")
    converted = binarize.convert(binarize.load_model("torchvision:resnet18"), BinarizeConfig(layer=layer, keep_downsample=True))
    with torch.no_grad():
        converted.get_submodule("layer1.0.conv1").scaling.alpha.mul_(3.0)  # a trained-looking state
    path = save_checkpoint(converted, tmp_path / "r18.binarized.pt")
    payload = torch.load(path, weights_only=True)  # plain data only
    assert payload["model"]["source"]["name"] == "resnet18"
    reloaded = load_checkpoint(path)
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(reloaded.eval()(x), converted.eval()(x))
    assert provenance_of(reloaded).report.to_dict()["counts"] == provenance_of(converted).report.to_dict()["counts"]
    with pytest.raises(OutputExistsError, match="--force"):
        save_checkpoint(converted, path)


def test_checkpoint_of_own_class_needs_the_model(tmp_path):
    converted = binarize.convert(Tiny(), BinarizeConfig(min_fan_in=0))
    path = save_checkpoint(converted, tmp_path / "own.pt")
    with pytest.raises(ModelSourceError, match="model=YourModel"):
        load_checkpoint(path)
    reloaded = load_checkpoint(path, model=Tiny())
    x = torch.randn(1, 3, 8, 8)
    torch.testing.assert_close(reloaded.eval()(x), converted.eval()(x))


def test_exported_program_keeps_its_input_shape_through_conversion(tmp_path):
    """Regression: deep-copying a GraphModule dropped the recorded input shape."""
    path = tmp_path / "tiny.pt2"
    torch.export.save(torch.export.export(Tiny().eval(), (torch.randn(2, 3, 8, 8),)), path)
    converted = binarize.convert(binarize.load_model(path, trust=True), BinarizeConfig(min_fan_in=0))
    assert provenance_of(converted).input_shape == (2, 3, 8, 8)
    save_checkpoint(converted, tmp_path / "t.pt")
    assert provenance_of(load_checkpoint(tmp_path / "t.pt", trust=True)).input_shape == (2, 3, 8, 8)
