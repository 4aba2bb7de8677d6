"""End-to-end benchmark: packed runtime vs onnxruntime fp32 vs onnxruntime int8 (U8S8).

Models (random weights, batch 1): the Bi-Real-policy ResNet-18 (binary 3x3 convs; first conv,
last linear and 1x1 shortcuts float) at 224x224, and the CIFAR ResNet-20 (`binarize:resnet20`)
at 32x32. onnxruntime runs the *float* network (fp32) and its static QOperator quantization
(QLinearConv, U8 activations, S8 weights): the deployments a `.bnz` file competes with. Threads
1 and 2. Prints a table and writes JSON. Timings are best-of-N on a possibly shared machine:
read them, never assert them.

    python benchmarks/packed_end_to_end.py [--repeats 30] [--json packed_end_to_end.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import torchvision
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from torch import nn

from binarize import BinarizeConfig, convert
from binarize.models import create
from binarize.packed import PackedModel, load_packed, save_packed


def best_time(fn: Callable[[], object], repeats: int) -> float:
    """Fastest of ``repeats`` calls after warm-up (seconds): least disturbed by other processes."""
    for _ in range(3):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return min(samples)


class _Calibration(CalibrationDataReader):
    def __init__(self, name: str, shape: tuple[int, ...], count: int = 8) -> None:
        rng = np.random.default_rng(0)
        self._batches = iter([{name: rng.standard_normal(shape).astype(np.float32)} for _ in range(count)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def onnx_files(model: nn.Module, shape: tuple[int, ...], folder: Path) -> tuple[Path, Path]:
    """The float model as fp32 ONNX and its static int8 (QLinearConv, U8S8) quantization."""
    fp32, prepared, int8 = folder / "fp32.onnx", folder / "prepared.onnx", folder / "int8.onnx"
    torch.onnx.export(model, (torch.randn(shape),), str(fp32), dynamo=False, input_names=["x"], opset_version=17)
    quant_pre_process(str(fp32), str(prepared))  # folds constants into initializers, infers shapes
    quantize_static(str(prepared), str(int8), _Calibration("x", shape), quant_format=QuantFormat.QOperator,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return fp32, int8


def session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _time_session(path: Path, threads: int, feed: dict[str, np.ndarray], repeats: int) -> float:
    runner = session(path, threads)
    elapsed = best_time(lambda: runner.run(None, feed), repeats)
    del runner
    return elapsed


def best_binary_time(packed: PackedModel, x: torch.Tensor, repeats: int) -> float:
    """Seconds in the binary layers (per layer, best of the profiled runs, summed)."""
    best: dict[str, float] = {}
    for _ in range(repeats):
        packed(x, profile=True)
        for name, seconds in packed.per_layer_times().items():
            best[name] = min(best.get(name, seconds), seconds)
    ops = packed.node_ops()
    return sum(t for name, t in best.items() if ops[name].startswith("binary."))


def models() -> dict[str, tuple[nn.Module, nn.Module, tuple[int, ...]]]:
    """name → (float model, binary model, input shape)."""
    resnet18 = torchvision.models.resnet18().eval()
    resnet20 = create("resnet20").eval()
    return {
        "resnet18-bireal-224": (resnet18, convert(resnet18, BinarizeConfig(keep_downsample=True)), (1, 3, 224, 224)),
        "resnet20-cifar-32": (resnet20, convert(resnet20, BinarizeConfig()), (1, 3, 32, 32)),
    }


def run(repeats: int) -> list[dict[str, object]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, (float_model, binary_model, shape) in models().items():
            x = torch.randn(shape)
            packed_path = save_packed(binary_model, folder / f"{name}.bnz", (x,))
            packed = load_packed(packed_path)
            (folder / name).mkdir()
            fp32_path, int8_path = onnx_files(float_model, shape, folder / name)
            for threads in (1, 2):
                PackedModel.set_num_threads(threads)
                t_packed = best_time(lambda: packed(x), repeats)
                binary_s = best_binary_time(packed, x, repeats)
                # sessions live only while timed: idle onnxruntime pools spin and would slow the rest
                feed = {"x": x.numpy()}
                t_fp32 = _time_session(fp32_path, threads, feed, repeats)
                t_int8 = _time_session(int8_path, threads, feed, repeats)
                rows.append({
                    "model": name, "threads": threads, "packed_ms": t_packed * 1e3,
                    "packed_binary_layers_ms": binary_s * 1e3, "ort_fp32_ms": t_fp32 * 1e3,
                    "ort_int8_ms": t_int8 * 1e3, "speedup_vs_fp32": t_fp32 / t_packed,
                    "speedup_vs_int8": t_int8 / t_packed,
                    "bnz_bytes": packed_path.stat().st_size, "onnx_fp32_bytes": fp32_path.stat().st_size,
                    "onnx_int8_bytes": int8_path.stat().st_size,
                })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per measurement (best of)")
    parser.add_argument("--json", default="packed_end_to_end.json", help="where to write the results")
    args = parser.parse_args()
    rows = run(args.repeats)
    print(f"{'model':>20} {'thr':>3} {'packed ms':>10} {'(binary)':>9} {'ort fp32':>9} {'ort int8':>9} "
          f"{'x fp32':>7} {'x int8':>7} {'.bnz MB':>8} {'fp32 MB':>8} {'int8 MB':>8}")
    for r in rows:
        print(f"{r['model']:>20} {r['threads']:>3} {r['packed_ms']:>10.2f} {r['packed_binary_layers_ms']:>9.2f} "
              f"{r['ort_fp32_ms']:>9.2f} {r['ort_int8_ms']:>9.2f} {r['speedup_vs_fp32']:>7.2f} "
              f"{r['speedup_vs_int8']:>7.2f} {r['bnz_bytes'] / 1e6:>8.2f} {r['onnx_fp32_bytes'] / 1e6:>8.2f} "
              f"{r['onnx_int8_bytes'] / 1e6:>8.2f}")
    with open(args.json, "w") as handle:
        json.dump({"onnxruntime": ort.__version__, "torch": torch.__version__, "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
