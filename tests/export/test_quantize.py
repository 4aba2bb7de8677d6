"""Int8 float layers: only non-binary Conv/Gemm nodes are quantized; binary weights stay ±1."""

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from binarize.errors import ConversionError
from binarize.export.onnx import export_onnx
from binarize.export.quantize import float_weight_nodes, quantize_float_layers
from binarize.nn import BinaryConv2d
from binarize.nn.frozen import freeze


def net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        BinaryConv2d.from_float(nn.Conv2d(16, 16, 3, padding=1)),
        nn.BatchNorm2d(16),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 5),
    ).eval()


def test_quantizes_only_float_layers(tmp_path):
    model = net()
    path = export_onnx(model, tmp_path / "n.onnx", (torch.randn(2, 3, 12, 12),)).path
    before = onnx.load(str(path))
    conv_nodes = [n.name for n in before.graph.node if n.op_type in ("Conv", "Gemm")]
    float_nodes = float_weight_nodes(path)
    assert len(conv_nodes) == 3 and len(float_nodes) == 2  # the first conv and the classifier
    calibration = [torch.randn(8, 3, 12, 12) for _ in range(4)]
    check = torch.randn(32, 3, 12, 12)
    result = quantize_float_layers(path, calibration, freeze(model), check)
    assert result.nodes == float_nodes
    after = onnx.load(str(path))
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in after.graph.node}
    # The binary conv still reads ±1 float weights directly (no DequantizeLinear before it).
    weights = {i.name: numpy_helper.to_array(i) for i in after.graph.initializer}
    binary = [n for n in after.graph.node if n.op_type == "Conv" and n.input[1] in weights and np.all(np.abs(weights[n.input[1]]) == 1)]
    assert len(binary) == 1
    # int8 rounding moves logits a little, not wholesale.
    with torch.no_grad():
        spread = float(freeze(model)(check).std())
    assert 0 < result.max_abs_diff < 0.5 * spread
    assert result.top1_agreement >= 0.75


def test_refuses_a_file_without_float_layers(tmp_path):
    model = nn.Sequential(BinaryConv2d.from_float(nn.Conv2d(3, 4, 3)), nn.Flatten()).eval()
    path = export_onnx(model, tmp_path / "b.onnx", (torch.randn(2, 3, 5, 5),)).path
    with pytest.raises(ConversionError, match="no float"):
        quantize_float_layers(path, [torch.randn(2, 3, 5, 5)], freeze(model), torch.randn(2, 3, 5, 5))
