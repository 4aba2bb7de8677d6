"""Per-layer benchmark: packed binary 3x3 conv vs onnxruntime fp32 Conv and int8 QLinearConv.

ResNet-18's 3x3 shapes at batch 1 (56²×64, 28²×128, 14²×256, 7²×512), threads 1 and 2. The
packed time includes packing the activations' signs, the xor/popcount kernel, the border
correction and the scale; onnxruntime runs one Conv (fp32) or one QLinearConv (U8 activations,
S8 weights) on already-quantized input. Prints a table and writes JSON (``--json PATH``).
Ratios are measured in one run and are noisy on shared machines: read them, never assert them.

    python benchmarks/packed_layers.py [--repeats 200] [--json packed_layers.json]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np
import onnxruntime as ort
import torch
from onnx import TensorProto, helper

from binarize.packed import kernels
from binarize.packed.bits import pack_signs
from binarize.packed.runtime import BinaryConv

SHAPES = [(56, 64), (28, 128), (14, 256), (7, 512)]  # (spatial size, channels), 3x3, stride 1, pad 1


def best_time(fn: Callable[[], object], repeats: int) -> float:
    """Fastest of ``repeats`` timed calls after a warm-up (seconds): the least disturbed by
    other processes on a shared machine."""
    for _ in range(max(3, repeats // 10)):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return min(samples)


def onnx_conv(channels: int, quantized: bool) -> bytes:
    weight = np.random.default_rng(0).standard_normal((channels, channels, 3, 3)).astype(np.float32)
    attrs = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [1, 1]}
    if not quantized:
        node = helper.make_node("Conv", ["x", "w"], ["y"], **attrs)
        inits = [helper.make_tensor("w", TensorProto.FLOAT, weight.shape, weight.ravel())]
        x_type = TensorProto.FLOAT
    else:
        names = ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"]
        node = helper.make_node("QLinearConv", names, ["y"], **attrs)
        w8 = np.clip(np.round(weight * 40), -127, 127).astype(np.int8)
        inits = [
            helper.make_tensor("xs", TensorProto.FLOAT, [], [0.02]),
            helper.make_tensor("xz", TensorProto.UINT8, [], [128]),
            helper.make_tensor("w", TensorProto.INT8, w8.shape, w8.ravel().tolist()),
            helper.make_tensor("ws", TensorProto.FLOAT, [], [0.025]),
            helper.make_tensor("wz", TensorProto.INT8, [], [0]),
            helper.make_tensor("ys", TensorProto.FLOAT, [], [0.05]),
            helper.make_tensor("yz", TensorProto.UINT8, [], [128]),
        ]
        x_type = TensorProto.UINT8
    graph = helper.make_graph(
        [node], "conv", [helper.make_tensor_value_info("x", x_type, [1, channels, None, None])],
        [helper.make_tensor_value_info("y", x_type, None)], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # readable by older onnxruntime releases too
    return model.SerializeToString()


def ort_session(model: bytes, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def packed_layer(channels: int) -> BinaryConv:
    signs = np.where(np.random.default_rng(1).random((channels, channels * 9)) < 0.5, -1.0, 1.0)
    params = {"dims": 2, "in_channels": channels, "out_channels": channels, "kernel_size": [3, 3],
              "stride": [1, 1], "padding": [1, 1], "dilation": [1, 1], "groups": 1,
              "padding_mode": "zeros", "binary_input": True}
    return BinaryConv(params, pack_signs(signs), np.ones(channels, np.float32), np.zeros(channels, np.float32))


def run(repeats: int) -> list[dict[str, float]]:
    rows = []
    for threads in (1, 2):
        kernels.set_num_threads(threads)
        torch.set_num_threads(threads)
        for size, channels in SHAPES:
            x = torch.randn(1, channels, size, size).contiguous(memory_format=torch.channels_last)
            layer = packed_layer(channels)
            fp32 = ort_session(onnx_conv(channels, quantized=False), threads)
            int8 = ort_session(onnx_conv(channels, quantized=True), threads)
            x8 = np.random.default_rng(2).integers(0, 255, (1, channels, size, size), dtype=np.uint8)
            xf = x.numpy()
            with torch.no_grad():
                t_packed = best_time(lambda: layer(x), repeats)
            bits = kernels.pack_conv_input(xf, 1, (1, 1))
            border = layer._border_correction(size, size, (1, 1))
            ones, zeros = np.ones(channels, np.float32), np.zeros(channels, np.float32)
            t_kernel = best_time(  # the xor/popcount kernel alone, on already packed activations
                lambda: kernels.binary_conv(bits, layer.words, (1, 1), (1, 1), (size, size), channels * 9,
                                            border, ones, zeros),
                repeats,
            )
            x_nchw = x.contiguous().numpy()  # what onnxruntime expects, so it needs no copy
            t_fp32 = best_time(lambda: fp32.run(None, {"x": x_nchw}), repeats)
            t_int8 = best_time(lambda: int8.run(None, {"x": x8}), repeats)
            macs = channels * size * size * channels * 9
            rows.append({
                "threads": threads, "shape": f"{size}x{size}x{channels}", "K": channels * 9,
                "packed_ms": t_packed * 1e3, "kernel_only_ms": t_kernel * 1e3,
                "ort_fp32_ms": t_fp32 * 1e3, "ort_int8_ms": t_int8 * 1e3,
                "speedup_vs_fp32": t_fp32 / t_packed, "speedup_vs_int8": t_int8 / t_packed,
                "tbitmac_per_s": macs / t_packed / 1e12,
                "tbitmac_per_s_per_core": macs / t_packed / 1e12 / threads,
            })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200, help="timed calls per measurement (median)")
    parser.add_argument("--json", default="packed_layers.json", help="where to write the results")
    args = parser.parse_args()
    rows = run(args.repeats)
    print(f"kernels: {kernels.BACKEND}; onnxruntime {ort.__version__}")
    header = (f"{'thr':>3} {'shape':>10} {'K':>5} {'packed ms':>10} {'kernel ms':>10} {'ort fp32':>9} "
              f"{'ort int8':>9} {'x fp32':>7} {'x int8':>7} {'T bitMAC/s/core':>16}")
    print(header)
    for r in rows:
        print(f"{r['threads']:>3} {r['shape']:>10} {r['K']:>5} {r['packed_ms']:>10.3f} {r['kernel_only_ms']:>10.3f} "
              f"{r['ort_fp32_ms']:>9.3f} {r['ort_int8_ms']:>9.3f} {r['speedup_vs_fp32']:>7.2f} "
              f"{r['speedup_vs_int8']:>7.2f} {r['tbitmac_per_s_per_core']:>16.3f}")
    with open(args.json, "w") as handle:
        json.dump({"onnxruntime": ort.__version__, "kernels": kernels.BACKEND, "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
