"""The activation policy: binary layers fed by ReLU-type activations see informative signs."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torchvision.models.resnet import BasicBlock

import binarize
from binarize import BinarizeConfig, load_checkpoint, save_checkpoint
from binarize.checkpoint import model_record
from binarize.loading import model_from_record
from binarize.conversion.copying import copy_model
from binarize.errors import ConfigError
from binarize import Provenance, provenance_of, set_provenance


def residual_net() -> nn.Module:
    """Stem (conv, BN, in-place ReLU) and two torchvision BasicBlocks: block "3" reads the stem
    ReLU through conv1 and its identity shortcut; block "4" reads block 3's final ReLU."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
        BasicBlock(16, 16), BasicBlock(16, 16),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )  # fmt: skip


def node(gm, target):
    return next(n for n in gm.graph.nodes if n.op == "call_module" and n.target == target)


def captured_inputs(model, names, x):
    """The first input each named module receives in one forward."""
    seen = {}
    hooks = [
        model.get_submodule(name).register_forward_pre_hook(lambda _m, a, name=name: seen.setdefault(name, a[0].clone()))
        for name in names
    ]
    model(x)
    for hook in hooks:
        hook.remove()
    return seen


def captured_outputs(model, names, x):
    seen = {}
    hooks = [
        model.get_submodule(name).register_forward_hook(lambda _m, _a, out, name=name: seen.setdefault(name, out.clone()))
        for name in names
    ]
    model(x)
    for hook in hooks:
        hook.remove()
    return seen


def test_bypass_feeds_binary_convs_the_pre_activation_and_shortcuts_the_relu_output():
    x = torch.randn(2, 3, 8, 8)
    converted = binarize.convert(residual_net(), example_inputs=(x,))
    graph = converted.graph
    # block 3: conv1 reads the stem's BatchNorm (ReLU's input); conv2 reads bn1, not ReLU
    assert node(converted, "3.conv1").args[0] is node(converted, "1")
    assert node(converted, "3.conv2").args[0] is node(converted, "3.bn1")
    # block 3's shortcut still reads the stem ReLU's output, which is kept for it
    add = next(n for n in graph.nodes if n.op == "call_function" and "add" in n.name)
    assert node(converted, "2") in add.args
    # block 4: conv1 reads block 3's sum (before its ReLU), its shortcut reads the ReLU
    second_add = [n for n in graph.nodes if n.op == "call_function" and "add" in n.name][1]
    assert node(converted, "4.conv1").args[0] is add
    relu_of_block3 = next(a for a in second_add.args if a.op == "call_module" and a.target == "3.relu")
    assert relu_of_block3.args[0] is add
    report = provenance_of(converted).report
    assert report.activation_policy == "bypass" and len(report.activation_rewrites) == 4
    # numbers: the binary conv gets exactly the BatchNorm output, negatives intact (the
    # in-place ReLU was made out-of-place so it cannot clobber them)
    converted.eval()
    inputs = captured_inputs(converted, ["3.conv1", "4.conv1"], x)
    outputs = captured_outputs(converted, ["1"], x)
    assert torch.equal(inputs["3.conv1"], outputs["1"]) and (inputs["3.conv1"] < 0).any()
    assert (inputs["4.conv1"] < 0).any()
    assert all(0.2 < p < 0.8 for p in report.input_signs.values())


def test_bypass_keeps_the_float_path_of_the_network_unchanged():
    """With W1A32 layers (float inputs) bypass changes only what binary inputs would read:
    the network computes what the float network computes once the binary layers are put back."""
    model = residual_net().eval()
    config = BinarizeConfig(activation_policy="keep")
    kept = binarize.convert(model, config)
    bypassed = binarize.convert(model)
    x = torch.randn(2, 3, 8, 8)
    # same parameters; outputs differ only because binary layers now see the pre-activation
    assert kept.state_dict().keys() == bypassed.state_dict().keys()
    relu_out = captured_inputs(bypassed, ["3.conv1"], x)["3.conv1"]
    assert torch.equal(F.relu(relu_out), captured_inputs(kept.eval(), ["3.conv1"], x)["3.conv1"])


def test_hardtanh_replaces_the_feeding_activations_by_a_clip():
    x = torch.randn(2, 3, 8, 8)
    converted = binarize.convert(residual_net(), BinarizeConfig(activation_policy="hardtanh"), example_inputs=(x,))
    clips = [n for n in converted.graph.nodes if n.op == "call_function" and n.target is F.hardtanh]
    assert len(clips) == 4  # stem ReLU, block 3's two ReLU calls, block 4's first
    assert node(converted, "3.conv1").args[0] is clips[0]
    seen = captured_inputs(converted.eval(), ["3.conv1"], x)["3.conv1"]
    assert seen.min() >= -1 and seen.max() <= 1 and (seen < 0).any()


def test_bypass_looks_through_pooling_and_squeeze_excitation_gates():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 16, 3, padding=1)
            self.pool = nn.MaxPool2d(2)
            self.body = nn.Conv2d(16, 16, 3, padding=1)
            self.gate = nn.Conv2d(16, 16, 1)
            self.project = nn.Conv2d(16, 16, 1)
            self.head = nn.Linear(16, 2)

        def forward(self, x):
            x = self.body(self.pool(F.relu(self.stem(x))))
            x = F.relu(x) * torch.sigmoid(self.gate(x.mean((2, 3), keepdim=True)))
            return self.head(self.project(x).mean((2, 3)))

    x = torch.randn(4, 3, 8, 8)
    converted = binarize.convert(Net(), BinarizeConfig(min_fan_in=0), example_inputs=(x,))
    assert node(converted, "body").args[0].target == "pool"
    assert node(converted, "body").args[0].args[0] is node(converted, "stem")
    project_input = node(converted, "project").args[0]
    assert node(converted, "body") in project_input.args  # x · gate with x before its ReLU
    assert all(0.05 < p < 0.95 for p in provenance_of(converted).report.input_signs.values())


def test_keep_warns_and_the_sign_check_names_the_fix():
    x = torch.randn(2, 3, 8, 8)
    report = provenance_of(binarize.convert(residual_net(), BinarizeConfig(activation_policy="keep"), example_inputs=(x,))).report
    assert report.activation_rewrites == ()
    assert all(p == 0.0 for p in report.input_signs.values()) and len(report.input_signs) == 4
    assert any("4 binary layer(s) see one input sign" in w and "--activation-policy bypass" in w for w in report.warnings)


def test_activation_policy_round_trips_and_is_validated():
    config = BinarizeConfig(activation_policy="hardtanh")
    assert BinarizeConfig.from_dict(config.to_dict()) == config
    assert BinarizeConfig.from_dict({}).activation_policy == "bypass"
    with pytest.raises(ConfigError, match="unknown activation policy 'clip'"):
        BinarizeConfig(activation_policy="clip")


def test_checkpoints_replay_the_policy_and_old_ones_replay_without_rewrite(tmp_path):
    x = torch.randn(2, 3, 8, 8)
    model = residual_net()
    set_provenance(model, Provenance(input_shape=(2, 3, 8, 8)))
    for policy in ("bypass", "hardtanh"):
        converted = binarize.convert(model, BinarizeConfig(activation_policy=policy)).eval()
        path = save_checkpoint(converted, tmp_path / f"{policy}.pt")
        assert torch.equal(load_checkpoint(path, model=model).eval()(x), converted(x))
    # a record written before the policy existed has no activation_policy: no rewrite
    old = binarize.convert(model, BinarizeConfig(activation_policy="keep")).eval()
    record = model_record(old)
    del record["config"]["activation_policy"]
    record["source"] = {"kind": "python"}
    rebuilt = model_from_record(record, model=model).eval()
    assert provenance_of(rebuilt).report.activation_rewrites == ()
    assert torch.equal(rebuilt(x), old(x))


def test_models_holding_non_leaf_tensors_convert():
    """timm's LeViT/EfficientViT/TinyViT cache attention biases computed from parameters; a
    plain deepcopy refuses them ("Only Tensors created explicitly by the user ...")."""

    class Cached(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 16, 3)
            self.body = nn.Conv2d(16, 16, 3)
            self.head = nn.Linear(16, 2)
            self.bias = nn.Parameter(torch.ones(16))
            self.cache = {"cpu": self.bias * 2}  # a non-leaf tensor kept on the module

        def forward(self, x):
            return self.head((self.body(torch.tanh(self.stem(x))) + self.cache["cpu"][:, None, None]).mean((2, 3)))

    model = Cached()
    copied = copy_model(model)
    assert torch.equal(copied.cache["cpu"], model.cache["cpu"].detach()) and copied.cache["cpu"].is_leaf
    assert model.cache["cpu"].grad_fn is not None  # the original is untouched
    x = torch.randn(2, 3, 8, 8)
    converted = binarize.convert(model, example_inputs=(x,))
    assert converted(x).shape == (2, 2) and provenance_of(converted).report.binarized_layers == 1


def test_bypass_concatenates_the_branches_pre_activations_once():
    """Inception/SqueezeNet: branches end in ReLUs, are concatenated, and several binary convs
    read the concatenation; they share one concatenation of the pre-activations."""

    class Branches(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 16, 3, padding=1)
            self.left, self.right = nn.Conv2d(16, 16, 1), nn.Conv2d(16, 16, 3, padding=1)
            self.a, self.b = nn.Conv2d(32, 16, 1), nn.Conv2d(32, 16, 3, padding=1)
            self.head = nn.Linear(32, 2)

        def forward(self, x):
            x = torch.tanh(self.stem(x))
            x = torch.cat([F.relu(self.left(x)), F.relu(self.right(x))], 1)
            return self.head(torch.cat([self.a(x), self.b(x)], 1).mean((2, 3)))

    x = torch.randn(4, 3, 8, 8)
    converted = binarize.convert(Branches(), example_inputs=(x,))
    a_input, b_input = node(converted, "a").args[0], node(converted, "b").args[0]
    assert a_input is b_input and a_input.target is torch.cat
    assert list(a_input.args[0]) == [node(converted, "left"), node(converted, "right")]
    assert all(0.2 < p < 0.8 for p in provenance_of(converted).report.input_signs.values())
    for policy in ("keep", "hardtanh"):
        converted = binarize.convert(Branches(), BinarizeConfig(activation_policy=policy), example_inputs=(x,))
        signs = [provenance_of(converted).report.input_signs[name] for name in ("a", "b")]
        assert all(p == 0.0 for p in signs) if policy == "keep" else all(0.2 < p < 0.8 for p in signs)
