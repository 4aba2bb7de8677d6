"""Per-layer benchmark: the native binary conv kernel vs onnxruntime fp32 Conv and int8 U8S8 Conv.

ResNet-18's 3x3 shapes at batch 1 (56²×64, 28²×128, 14²×256, 7²×512) plus CIFAR ResNet-20's
8²×64 (K = 576 at a small image), 3x3, stride 1, zero padding 1, at 1 and 2 threads. The binary
time is one `kernels.BinaryConv` call on float input: sign packing, the xor/popcount kernel,
the exact border correction and the epilogue (scale, shift, ReLU). onnxruntime runs one fp32
Conv, and one int8 U8S8 static Conv in both encodings, QDQ (float in, Q/DQ around the conv,
which onnxruntime fuses) and QOperator (QLinearConv on already quantized uint8 input); the
faster of the two is reported. All runtimes run in one process; each reports the median and
minimum of many calls, with a pause between runtimes (their worker threads keep spinning after
a call and would steal the second core from the next one). Throughput is in T bit-MAC/s
(K·O·Ho·Wo per call) per core; "scaling" is the 1-thread time over the 2-thread time;
"siblings" is the slowest over the fastest median of four more layer objects of the same shape.

Timings on a shared machine are noisy: read the ratios, measured in one run; never assert them.

    python benchmarks/packed_layers.py [--repeats 300] [--path avx2] [--json packed_layers.json]
"""

from __future__ import annotations

import argparse
import json
import platform

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from packed_timing import timed

from binarize.packed import kernels
from binarize.packed.bits import pack_signs

SHAPES = [(56, 64), (28, 128), (14, 256), (7, 512), (8, 64)]  # (spatial size, channels), 3x3, pad 1
# int8 quantization parameters: activations ~N(0, 1) → uint8 with zero point 128
X_SCALE, W_SCALE, Y_SCALE = 0.02, 0.025, 0.05


def _tensor(name: str, array: np.ndarray):
    return numpy_helper.from_array(np.asarray(array), name)


def onnx_conv(channels: int, encoding: str) -> bytes:
    """One 3x3 conv as an ONNX model: "fp32", "qdq" (U8S8 in Q/DQ form) or "qop" (QLinearConv)."""
    weight = np.random.default_rng(0).standard_normal((channels, channels, 3, 3)).astype(np.float32)
    w8 = np.clip(np.round(weight / W_SCALE), -127, 127).astype(np.int8)
    attrs = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [1, 1]}
    scalars = [_tensor("xs", np.float32(X_SCALE)), _tensor("xz", np.uint8(128)), _tensor("ws", np.float32(W_SCALE)),
               _tensor("wz", np.int8(0)), _tensor("ys", np.float32(Y_SCALE)), _tensor("yz", np.uint8(128))]
    x_type = TensorProto.FLOAT
    if encoding == "fp32":
        nodes = [helper.make_node("Conv", ["x", "w"], ["y"], **attrs)]
        inits = [_tensor("w", weight)]
    elif encoding == "qdq":
        nodes = [
            helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
            helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
            helper.make_node("DequantizeLinear", ["w8", "ws", "wz"], ["wd"]),
            helper.make_node("Conv", ["xd", "wd"], ["c"], **attrs),
            helper.make_node("QuantizeLinear", ["c", "ys", "yz"], ["cq"]),
            helper.make_node("DequantizeLinear", ["cq", "ys", "yz"], ["y"]),
        ]
        inits = [_tensor("w8", w8), *scalars]
    else:
        nodes = [helper.make_node("QLinearConv", ["x", "xs", "xz", "w8", "ws", "wz", "ys", "yz"], ["y"], **attrs)]
        inits = [_tensor("w8", w8), *scalars]
        x_type = TensorProto.UINT8
    graph = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("x", x_type, [1, channels, None, None])],
                              [helper.make_tensor_value_info("y", x_type, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # readable by older onnxruntime releases too
    return model.SerializeToString()


def ort_session(model: bytes, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def binary_layer(channels: int, seed: int = 1) -> kernels.BinaryConv:
    rng = np.random.default_rng(seed)
    signs = np.where(rng.random((channels, channels * 9)) < 0.5, -1.0, 1.0)
    return kernels.BinaryConv(pack_signs(signs), in_channels=channels, kernel=(3, 3), padding=(1, 1, 1, 1),
                              scale=rng.random(channels, dtype=np.float32), shift=rng.random(channels, dtype=np.float32),
                              activation="relu")


def measure(size: int, channels: int, threads: int, repeats: int) -> dict:
    kernels.set_num_threads(threads)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, channels, size, size)).astype(np.float32)
    x8 = np.clip(np.round(x / X_SCALE) + 128, 0, 255).astype(np.uint8)
    layer = binary_layer(channels)
    times = {"binary": timed(lambda: layer(x), repeats)}
    for encoding, feed in (("fp32", x), ("qdq", x), ("qop", x8)):
        session = ort_session(onnx_conv(channels, encoding), threads)
        times[encoding] = timed(lambda s=session, f=feed: s.run(None, {"x": f}), repeats)
        del session
    # sibling layer objects of the same shape, built one after another: none may be slower
    siblings = [binary_layer(channels, seed) for seed in range(10, 14)]
    sibling_medians = [timed(lambda s=sibling: s(x), max(20, repeats // 4))["median_ms"] for sibling in siblings]
    int8 = "qdq" if times["qdq"]["median_ms"] <= times["qop"]["median_ms"] else "qop"
    macs = channels * 9 * channels * size * size
    binary = times["binary"]["median_ms"]
    return {
        "threads": threads, "shape": f"{size}x{size}x{channels}", "K": channels * 9, "bit_macs": macs,
        "times": times,
        "int8_encoding": int8,
        "vs_fp32": times["fp32"]["median_ms"] / binary,
        "vs_int8": times[int8]["median_ms"] / binary,
        "tbitmac_per_s_per_core": macs / binary / 1e9 / threads,
        "tbitmac_per_s_per_core_best": macs / times["binary"]["min_ms"] / 1e9 / threads,
        "siblings_slowest_over_fastest": max(sibling_medians) / min(sibling_medians),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=300, help="timed calls per runtime and shape")
    parser.add_argument("--path", choices=kernels.PATHS, default=None, help="kernel dispatch path (default: best)")
    parser.add_argument("--json", default="packed_layers.json", help="where to write the results")
    args = parser.parse_args()
    kernels.force_path(args.path)
    rows = [measure(size, channels, threads, args.repeats) for threads in (1, 2) for size, channels in SHAPES]
    one = {r["shape"]: r for r in rows if r["threads"] == 1}
    for r in rows:
        if r["threads"] == 2:
            r["scaling"] = one[r["shape"]]["times"]["binary"]["median_ms"] / r["times"]["binary"]["median_ms"]
    print(f"kernel path: {kernels.active_path()} (available: {', '.join(kernels.PATHS)}); "
          f"onnxruntime {ort.__version__}; {platform.processor() or platform.machine()}; median (min) ms")
    print(f"{'thr':>3} {'shape':>10} {'K':>5} {'binary':>15} {'ort fp32':>15} {'ort int8':>19} "
          f"{'x fp32':>7} {'x int8':>7} {'T/s/core':>9} {'best':>6} {'scaling':>7} {'siblings':>8}")
    def cell(row: dict, name: str) -> str:
        return f"{row['times'][name]['median_ms']:.3f} ({row['times'][name]['min_ms']:.3f})"

    for r in rows:
        print(f"{r['threads']:>3} {r['shape']:>10} {r['K']:>5} {cell(r, 'binary'):>15} {cell(r, 'fp32'):>15} "
              f"{r['int8_encoding'] + ' ' + cell(r, r['int8_encoding']):>19} {r['vs_fp32']:>7.1f} {r['vs_int8']:>7.2f} "
              f"{r['tbitmac_per_s_per_core']:>9.3f} {r['tbitmac_per_s_per_core_best']:>6.3f} "
              f"{r.get('scaling', float('nan')):>7.2f} {r['siblings_slowest_over_fastest']:>8.2f}")
    with open(args.json, "w") as handle:
        json.dump({"onnxruntime": ort.__version__, "kernel_path": kernels.active_path(), "paths": list(kernels.PATHS),
                   "rows": rows}, handle, indent=2)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
