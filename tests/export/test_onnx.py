"""ONNX export: standard ops, dynamic batch, full checker, onnxruntime parity with PyTorch."""

import numpy as np
import onnx
import pytest
import torch
import torchvision
from torch import nn

from binarize import convert
from binarize.errors import ConversionError, OutputExistsError
from binarize.export.onnx import TOLERANCE, export_onnx, inference_session, run_session
from binarize.nn import BinaryConv2d, BinaryLinear
from binarize.nn.frozen import freeze


def small_binary_net() -> nn.Module:
    """Float first conv, a binary conv with binary inputs, a W1A32 linear."""
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        BinaryConv2d.from_float(nn.Conv2d(16, 32, 3, padding=1, stride=2)),
        nn.BatchNorm2d(32),
        nn.Hardtanh(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        BinaryLinear.from_float(nn.Linear(32, 10), input_estimator=None),
    )
    return net.eval()


def test_export_writes_standard_onnx_with_dynamic_batch(tmp_path):
    model = small_binary_net()
    result = export_onnx(model, tmp_path / "net.onnx", (torch.randn(2, 3, 16, 16),))
    assert result.passed and result.checked and result.exporter == "torchscript"
    assert result.max_abs_diff <= TOLERANCE and result.top1_agreement == 1.0
    assert result.batch_sizes == [2, 4]
    loaded = onnx.load(str(result.path))
    assert {o.domain for o in loaded.opset_import} <= {"", "ai.onnx"}
    assert max(o.version for o in loaded.opset_import) >= 17
    assert {n.domain for n in loaded.graph.node} <= {""}
    assert {"Conv", "GreaterOrEqual", "Mul"} <= set(result.operators)
    assert loaded.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch
    # An independent batch of 7 through onnxruntime equals the frozen PyTorch model.
    x = torch.randn(7, 3, 16, 16)
    with torch.no_grad():
        expected = freeze(model)(x).numpy()
    actual = run_session(inference_session(result.path, threads=1), (x,))
    assert actual.shape == (7, 10)
    np.testing.assert_allclose(actual, expected, atol=1e-5, rtol=0)


def test_export_refuses_overwrite_and_old_opset(tmp_path):
    path = tmp_path / "net.onnx"
    path.write_bytes(b"keep")
    with pytest.raises(OutputExistsError):
        export_onnx(small_binary_net(), path, (torch.randn(1, 3, 8, 8),))
    assert path.read_bytes() == b"keep"
    with pytest.raises(ConversionError, match="opset 13"):
        export_onnx(small_binary_net(), tmp_path / "other.onnx", (torch.randn(1, 3, 8, 8),), opset=13)


def test_export_does_not_change_the_model(tmp_path):
    model = small_binary_net().train()
    export_onnx(model, tmp_path / "net.onnx", (torch.randn(2, 3, 8, 8),))
    assert model.training and isinstance(model[2], BinaryConv2d)


@pytest.mark.parametrize(
    "name",
    [
        "resnet18",
        "mobilenet_v2",
        "efficientnet_b0",
        pytest.param("vgg11_bn", marks=pytest.mark.slow),
    ],
)
def test_converted_torchvision_models_match_onnxruntime(tmp_path, name):
    model = torchvision.models.get_model(name, num_classes=10).eval()
    binary = convert(model, example_inputs=(torch.randn(1, 3, 64, 64),)).eval()
    result = export_onnx(binary, tmp_path / f"{name}.onnx", (torch.randn(2, 3, 64, 64),))
    assert result.max_abs_diff <= TOLERANCE, result
    assert result.top1_agreement == 1.0
    assert "GreaterOrEqual" in result.operators  # binary inputs are exported as x >= 0


def _tiny_graph(path, domain: str, op: str) -> None:
    from onnx import TensorProto, helper

    node = helper.make_node(op, ["x"], ["y"], domain=domain)
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
    )
    opsets = [helper.make_opsetid("", 18)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    onnx.save(helper.make_model(graph, opset_imports=opsets), str(path))


def test_check_refuses_custom_domains_and_invalid_graphs(tmp_path):
    from binarize.export.onnx import check_onnx_file

    _tiny_graph(tmp_path / "ok.onnx", "", "Relu")
    assert check_onnx_file(tmp_path / "ok.onnx") == ["Relu"]
    _tiny_graph(tmp_path / "custom.onnx", "com.example", "BinarySign")
    with pytest.raises(ConversionError, match="non-standard operators .*com.example::BinarySign"):
        check_onnx_file(tmp_path / "custom.onnx")
    _tiny_graph(tmp_path / "bad.onnx", "", "NoSuchOp")
    with pytest.raises(ConversionError, match="fails onnx.checker"):
        check_onnx_file(tmp_path / "bad.onnx")


def test_falls_back_to_dynamo_when_torchscript_cannot_export(tmp_path):
    # Adaptive pooling 4→3 is not a factor: the TorchScript-based exporter refuses it.
    model = nn.Sequential(
        BinaryConv2d.from_float(nn.Conv2d(3, 8, 3, padding=1)), nn.AdaptiveAvgPool2d(3), nn.Flatten(), nn.Linear(72, 5)
    ).eval()
    result = export_onnx(model, tmp_path / "pool.onnx", (torch.randn(2, 3, 4, 4),))
    assert result.exporter == "dynamo" and result.passed


class BakedBatch(nn.Module):
    """``int(size)`` is a constant to the tracer: the exported graph would only run at batch 2."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = BinaryConv2d.from_float(nn.Conv2d(3, 4, 3))
        self.fc = nn.Linear(36, 5)

    def forward(self, x):
        y = self.conv(x)
        return self.fc(y.reshape(int(y.shape[0]), -1))


def test_a_graph_that_fails_another_batch_size_is_refused_with_both_reasons(tmp_path):
    with pytest.raises(ConversionError) as caught:
        export_onnx(BakedBatch().eval(), tmp_path / "baked.onnx", (torch.randn(2, 3, 5, 5),))
    message = str(caught.value)
    assert "torchscript: " in message and "dynamo: " in message and "\n" not in message
