"""Optional int8 for the float layers (first, last, kept-float) of an exported ONNX file.

onnxruntime's static quantization in QDQ form with uint8 activations and int8 weights (U8S8;
on x86 CPUs S8S8 QDQ runs about 3× slower). Only Conv/Gemm/MatMul nodes whose weights are not
all ±1 are quantized: the binary layers keep their exact ±1 arithmetic. The result uses
standard ONNX operators (QuantizeLinear/DequantizeLinear) and is no longer bit-exact, so its
agreement with PyTorch is reported rather than enforced.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from binarize._files import atomic_path
from binarize.errors import ConversionError

QUANTIZABLE = ("Conv", "Gemm", "MatMul")


@dataclass(frozen=True)
class QuantizeResult:
    """Which nodes became int8, the new size, and agreement with the float reference."""

    path: Path
    nodes: list[str]
    size_bytes: int
    max_abs_diff: float
    top1_agreement: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"path": str(self.path)}


def float_weight_nodes(path: str | Path) -> list[str]:
    """Names of the Conv/Gemm/MatMul nodes of an ONNX file whose weight is not all ±1."""
    import onnx

    model = onnx.load(str(path))
    weights = {init.name: init for init in model.graph.initializer}
    names = []
    for node in model.graph.node:
        if node.op_type in QUANTIZABLE and len(node.input) > 1 and node.input[1] in weights:
            values = onnx.numpy_helper.to_array(weights[node.input[1]])
            if not np.all(np.abs(values) == 1):
                names.append(node.name)
    return names


def quantize_float_layers(
    path: str | Path,
    calibration_inputs: Sequence[torch.Tensor],
    reference: Callable[[torch.Tensor], torch.Tensor],
    check_inputs: torch.Tensor,
) -> QuantizeResult:
    """Rewrites the ONNX file at ``path`` with its float layers in int8 (U8S8 QDQ).

    ``calibration_inputs`` are batches for the activation ranges (use real data where you
    can); ``reference`` (the frozen PyTorch model) and ``check_inputs`` give the reported
    agreement. Raises `ConversionError` when there is no float layer to quantize.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from binarize.export.onnx import check_onnx_file, inference_session, run_session

    path = Path(path)
    nodes = float_weight_nodes(path)
    if not nodes:
        raise ConversionError(f"{path} has no float Conv/Gemm/MatMul layer", "export without --int8-float-layers")
    input_name = inference_session(path).get_inputs()[0].name

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter([{input_name: x.detach().cpu().numpy()} for x in calibration_inputs])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    logging.disable(logging.WARNING)  # onnxruntime logs advice on the root logger; our result says enough
    try:
        with atomic_path(path) as temporary:
            quantize_static(
                str(path), str(temporary), Batches(), quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                per_channel=True, nodes_to_quantize=nodes,
            )
    finally:
        logging.disable(logging.NOTSET)
    check_onnx_file(path)
    with torch.no_grad():
        expected = reference(check_inputs).float().numpy()
    actual = run_session(inference_session(path), (check_inputs,))
    return QuantizeResult(
        path=path,
        nodes=nodes,
        size_bytes=path.stat().st_size,
        max_abs_diff=float(np.abs(actual - expected).max()),
        top1_agreement=float((actual.argmax(1) == expected.argmax(1)).mean()),
    )
