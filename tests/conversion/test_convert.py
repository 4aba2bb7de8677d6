"""The conversion pass: policy, rules, tracing fallback, and representative torchvision models."""

import warnings

import pytest
import torch
import torchvision
from torch import nn

import binarize
from binarize import BinarizeConfig, LayerConfig, LayerRule
from binarize.errors import ConfigError, ConversionError
from binarize.nn import BinaryConv2d, BinaryLayer, BinaryLinear
from binarize import provenance_of


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.body = nn.Conv2d(16, 32, 3, padding=1)
        self.depthwise = nn.Conv2d(32, 32, 3, padding=1, groups=32)
        self.down = nn.Conv2d(32, 32, 1, stride=2)
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        x = self.down(self.depthwise(torch.tanh(self.body(self.stem(x)))))
        return self.head(x.mean(dim=(2, 3)))


class Untraceable(Small):
    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow defeats symbolic tracing
            x = x * 1.0
        return super().forward(x)


def decisions(model):
    return {row.fqn: row.reason for row in provenance_of(model).report.rows}


def test_default_policy_keeps_first_last_depthwise():
    converted = binarize.convert(Small())
    assert decisions(converted) == {
        "stem": "kept: first layer",
        "body": "binarized",
        "depthwise": "kept: depthwise",
        "down": "binarized",
        "head": "kept: last layer",
    }
    assert isinstance(converted.get_submodule("body"), BinaryConv2d)
    assert type(converted.get_submodule("stem")) is nn.Conv2d
    assert isinstance(converted, torch.fx.GraphModule)


def test_input_model_is_never_modified():
    model = Small()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    binarize.convert(model)
    assert all(type(m) in (Small, nn.Conv2d, nn.Linear) for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_rule_precedence_exact_over_regex_over_type_over_builtin():
    layer = LayerConfig(weight_estimator="ste", input_estimator=None)
    config = BinarizeConfig(
        layer=layer,
        keep_downsample=True,
        rules=(
            LayerRule("type:Conv2d", None),
            LayerRule("re:b.*", layer),
            LayerRule("stem", layer),
            LayerRule("type:Linear", LayerConfig(weight_estimator="clipped_ste")),
        ),
    )
    got = decisions(binarize.convert(Small(), config))
    assert got["stem"] == "binarized: rule 'stem'"  # exact beats type and the first-layer default
    assert got["body"] == "binarized: rule 're:b.*'"  # regex beats type
    assert got["depthwise"] == "float: rule 'type:Conv2d'"
    assert got["down"] == "float: rule 'type:Conv2d'"
    assert got["head"] == "binarized: rule 'type:Linear'"


def test_rule_parsing_and_errors():
    base = LayerConfig()
    assert LayerRule.parse("head=float", base).layer is None
    rule = LayerRule.parse("re:layer4\\..*=estimator:clipped_ste,input:none", base)
    assert rule.layer.weight_estimator == "clipped_ste" and rule.layer.input_estimator is None
    with pytest.raises(ConfigError, match="does not compile"):
        LayerRule.parse("re:layer[=float", base)
    with pytest.raises(ConfigError, match="unknown layer rule key 'colour'"):
        LayerRule.parse("head=colour:red", base)


def test_bireal_policy_keeps_downsample_and_min_fan_in():
    got = decisions(binarize.convert(Small(), BinarizeConfig(keep_downsample=True, min_fan_in=200)))
    assert got["down"] == "kept: 1x1 downsample"
    assert got["body"] == "kept: fan-in 144 < min_fan_in 200"


def test_fallback_swaps_by_name_with_warning_and_strict_refuses():
    x = torch.randn(2, 3, 8, 8)
    with pytest.warns(UserWarning, match="tracing failed"):
        converted = binarize.convert(Untraceable(), example_inputs=(x,))
    assert provenance_of(converted).report.mode == "fallback"
    assert isinstance(converted.body, BinaryConv2d) and type(converted.stem) is nn.Conv2d
    assert converted(x).shape == (2, 10)
    with pytest.raises(ConversionError, match="cannot trace Untraceable"):
        binarize.convert(Untraceable(), BinarizeConfig(strict=True))


def test_relu_fed_binary_inputs_are_reported_under_keep():
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 16, 3), nn.Flatten(), nn.LazyLinear(2))
    model(torch.randn(1, 3, 8, 8))
    config = BinarizeConfig(activation_policy="keep")
    report = provenance_of(binarize.convert(model, config, example_inputs=(torch.randn(1, 3, 8, 8),))).report
    assert any("ReLU-type output" in w and "bypass" in w for w in report.warnings)
    assert report.input_signs == {"2": 0.0}  # sign(ReLU(x)) is +1 everywhere
    assert any("one input sign" in w and "'2'" not in w for w in report.warnings)


REPRESENTATIVE = ["resnet18", "mobilenet_v3_small", "efficientnet_b0", "squeezenet1_1", "googlenet", "regnet_y_400mf", "vit_b_16", "swin_t"]


def _train_step_grads(model, x):
    """Runs a training forward/backward and returns the binary layers."""
    model.train()
    outputs = model(x)
    outputs = tuple(o for o in outputs if o is not None) if isinstance(outputs, tuple) else (outputs,)
    # A squared loss: a plain sum gives train-mode BatchNorm a constant gradient, which it zeroes.
    sum(o.square().mean() for o in outputs).backward()
    return outputs, [m for m in model.modules() if isinstance(m, BinaryLayer)]


@pytest.mark.parametrize("name", REPRESENTATIVE)
def test_torchvision_model_converts_trains_and_infers(name):
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None)
    for param in model.parameters():  # ViT's zero-initialised head would stop every gradient
        if param.dim() > 1 and not param.ne(0).any():
            nn.init.normal_(param, std=0.02)
    for module in model.modules():  # a random drop (stochastic depth) could stop a block's gradient
        if isinstance(module, (nn.Dropout, torchvision.ops.StochasticDepth)):
            module.p = 0.0  # before conversion: the converted graph follows the model's own mode
    size = 224 if name.startswith("vit") else 64
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected = model.eval()(x).shape
    for layer in (LayerConfig(), LayerConfig(input_estimator=None)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            converted = binarize.convert(model, BinarizeConfig(layer=layer), example_inputs=(x,))
        report = provenance_of(converted).report
        assert report.binarized_layers > 0
        assert not report.rows[0].binarized and not report.rows[-1].binarized
        outputs, binary_layers = _train_step_grads(converted, x)
        assert outputs[0].shape == expected  # GoogLeNet adds auxiliary logits in training
        assert len(binary_layers) == report.binarized_layers
        assert all(m.weight.grad is not None for m in binary_layers)
        with torch.no_grad():
            assert converted.eval()(x).shape == expected
    # W1A1 after a ReLU sees constant +1 inputs and can get exactly zero gradients (the report
    # warns); with float inputs every latent weight must receive a nonzero gradient.
    assert all(m.weight.grad.ne(0).any() for m in binary_layers)


def test_vit_attention_projections_are_reported_not_swapped():
    converted = binarize.convert(torchvision.models.vit_b_16())
    rows = {row.fqn: row for row in provenance_of(converted).report.rows}
    out_proj = rows["encoder.layers.encoder_layer_0.self_attention.out_proj"]
    assert not out_proj.binarized and "not called" in out_proj.reason
    assert isinstance(converted.get_submodule("encoder.layers.encoder_layer_0.mlp.0"), BinaryLinear)
