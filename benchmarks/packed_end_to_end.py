"""End-to-end benchmark: the packed runtime vs onnxruntime fp32 / int8 (U8S8) vs OpenVINO.

Models (random weights, batch 1): the Bi-Real-policy ResNet-18 (binary 3x3 convs; first conv,
last linear and 1x1 shortcuts float) at 224x224, and the CIFAR ResNet-20 (`binarize:resnet20`)
at 32x32. onnxruntime runs the *float* network in fp32 and as static int8 U8S8 (QDQ and
QOperator; the faster is reported): the deployments a packed file competes with. The packed
file runs with f32 float parts and with ``int8_float_layers``, and the same file on OpenVINO
(its BinaryConvolution engine, f32 float parts; needs ``binarize[openvino]``). Threads 1 and 2; each runtime
is timed in the same process, median and minimum of many calls, with a pause between
runtimes (idle worker threads of one runtime must not steal the core of the next), in
``--rounds`` rounds of every runtime in turn: a speed-up is the median of the rounds' own
ratios, which a shared machine's drifting speed affects far less than runtimes timed minutes
apart; with
``--contention`` the packed runtime and the int8 session are timed again while other processes
keep every core busy, and the table gives each one's busy/idle ratio. Resident
memory after loading each packed file is measured in a fresh process that cannot import torch,
against the runtime's fixed cost (the same process after loading a tiny packed file).
Prints a table and writes JSON. Timings on a shared machine are noisy: read the ratios.

    python benchmarks/packed_end_to_end.py [--repeats 50] [--rounds 3] [--contention] [--json packed_end_to_end.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import torchvision
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process
from packed_timing import busy_cores, timed
from torch import nn

from binarize import BinarizeConfig, convert
from binarize.models import create
from binarize.nn import BinaryConv2d
from binarize.packed import PackedModel, load_packed, save_packed
from binarize.packed.openvino_engine import load_openvino


class _Calibration(CalibrationDataReader):
    def __init__(self, name: str, shape: tuple[int, ...], count: int = 8) -> None:
        rng = np.random.default_rng(0)
        self._batches = iter([{name: rng.standard_normal(shape).astype(np.float32)} for _ in range(count)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def onnx_files(model: nn.Module, shape: tuple[int, ...], folder: Path) -> dict[str, Path]:
    """The float model as fp32 ONNX and its static int8 U8S8 quantizations (QDQ, QOperator)."""
    files = {"fp32": folder / "fp32.onnx"}
    prepared = folder / "prepared.onnx"
    torch.onnx.export(model, (torch.randn(shape),), str(files["fp32"]), dynamo=False, input_names=["x"],
                      opset_version=17)
    quant_pre_process(str(files["fp32"]), str(prepared))  # folds constants into initializers, infers shapes
    for form in (QuantFormat.QDQ, QuantFormat.QOperator):
        files[f"int8_{form.name}"] = folder / f"int8_{form.name}.onnx"
        quantize_static(str(prepared), str(files[f"int8_{form.name}"]), _Calibration("x", shape), quant_format=form,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)
    return files


def session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def resident_memory(path: Path, warm_up: Path) -> dict[str, float]:
    """Resident memory (MB) of a fresh process that cannot import torch: ``fixed`` is what the
    runtime costs before any model (Python, NumPy, onnx, onnxruntime, the kernels, warmed up by
    loading the tiny file ``warm_up``); ``loaded`` is what loading ``path`` adds to it."""
    script = (
        "import importlib.abc, sys\n"
        "class Refuse(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'numba'): raise ImportError(name)\n"
        "sys.meta_path.insert(0, Refuse())\n"
        "import json\n"
        "from binarize.packed import load_packed\n"
        "def rss(): return int(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1]) / 1024\n"
        f"tiny = load_packed({str(warm_up)!r}, threads=1)\n"
        "before = rss()\n"
        f"model = load_packed({str(path)!r}, threads=1)\n"
        "print(json.dumps({'fixed_mb': before, 'loaded_mb': rss() - before, 'kernel_weight_mb': model.weight_bytes / 2**20}))\n"
    )
    # run beside the files, not in a checkout (whose source tree would shadow the installed kernels)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=path.parent, check=True)
    numbers = json.loads(result.stdout)
    numbers["file_mb"] = path.stat().st_size / 2**20
    numbers["loaded_over_file"] = numbers["loaded_mb"] / numbers["file_mb"]
    return numbers


def tiny_packed(folder: Path) -> Path:
    """The smallest packed model: one binary conv between a float conv and a float linear."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3), BinaryConv2d.from_float(nn.Conv2d(8, 8, 3)), nn.Flatten(),
                          nn.Linear(8 * 4 * 4, 2)).eval()
    return save_packed(model, folder / "tiny.bnz", (torch.randn(1, 3, 8, 8),))


def models() -> dict[str, tuple[nn.Module, nn.Module, tuple[int, ...]]]:
    """name → (float model, binary model, input shape)."""
    resnet18 = torchvision.models.resnet18().eval()
    resnet20 = create("resnet20").eval()
    return {
        "resnet18-bireal-224": (resnet18, convert(resnet18, BinarizeConfig(keep_downsample=True)), (1, 3, 224, 224)),
        "resnet20-cifar-32": (resnet20, convert(resnet20, BinarizeConfig()), (1, 3, 32, 32)),
    }


def profiled_step_times(packed: PackedModel, feed: np.ndarray, calls: int) -> dict[str, float]:
    """Seconds per step, the median of ``calls`` profiled calls (one call's times vary too much
    on a shared machine: their sum can exceed the median of whole calls by half)."""
    samples = []
    for _ in range(calls):
        packed(feed, profile=True)
        samples.append(packed.per_layer_times())
    return {step: float(np.median([sample[step] for sample in samples])) for step in samples[0]}


def run(repeats: int, contention: bool, rounds: int) -> list[dict[str, object]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        warm_up = tiny_packed(folder)
        for name, (float_model, binary_model, shape) in models().items():
            x = torch.randn(shape)
            feed = x.numpy()
            packed_path = save_packed(binary_model, folder / f"{name}.bnz", (x,))
            (folder / name).mkdir()
            files = onnx_files(float_model, shape, folder / name)
            memory = resident_memory(packed_path, warm_up)
            for threads in (1, 2):
                row: dict[str, object] = {"model": name, "threads": threads, **memory}
                per_round = [time_runtimes(packed_path, files, threads, feed, repeats) for _ in range(rounds)]
                row.update(combine_rounds(per_round))
                packed = load_packed(packed_path, threads=threads)
                kinds = packed.step_kinds()
                steps = profiled_step_times(packed, feed, repeats)
                row["packed_binary_ms"] = 1e3 * sum(t for s, t in steps.items() if kinds[s] != "float")
                row["packed_float_ms"] = 1e3 * sum(t for s, t in steps.items() if kinds[s] == "float")
                del packed
                if contention:
                    row.update(contended(packed_path, files[row["ort_int8_best"].removeprefix("ort_")], threads, feed, repeats))
                    row["packed_busy_over_idle"] = row["packed_busy"]["median_ms"] / row["packed"]["median_ms"]
                    row["int8_busy_over_idle"] = row["ort_int8_busy"]["median_ms"] / row[row["ort_int8_best"]]["median_ms"]
                row["onnx_fp32_mb"] = files["fp32"].stat().st_size / 2**20
                rows.append(row)
    return rows


def time_runtimes(packed_path: Path, files: dict[str, Path], threads: int, feed: np.ndarray, repeats: int) -> dict[str, dict[str, float]]:
    """One round: every runtime timed once, one after another (each lives only while timed:
    idle onnxruntime pools spin and would slow the rest)."""
    times = {}
    packed = load_packed(packed_path, threads=threads)
    times["packed"] = timed(partial(packed, feed), repeats)
    del packed
    quantized = load_packed(packed_path, threads=threads, int8_float_layers=True)
    times["packed_int8_float_layers"] = timed(partial(quantized, feed), repeats)
    del quantized
    for key, path in files.items():
        runner = session(path, threads)
        times[f"ort_{key}"] = timed(partial(runner.run, None, {"x": feed}), repeats)
        del runner
    # the strongest binary peer: the same file on OpenVINO's BinaryConvolution (binarize[openvino])
    engine = load_openvino(packed_path, threads=threads)
    times["openvino"] = timed(partial(engine, feed), repeats)
    return times


def combine_rounds(per_round: list[dict[str, dict[str, float]]]) -> dict[str, object]:
    """Each runtime's median of round medians and minimum of minimums; each speed-up the median
    of the rounds' own ratios (a shared machine's speed drifts by 1.5-2x between minutes, and
    runtimes timed seconds apart in one round see the same speed)."""
    row: dict[str, object] = {
        key: {"median_ms": float(np.median([r[key]["median_ms"] for r in per_round])),
              "min_ms": min(r[key]["min_ms"] for r in per_round)}
        for key in per_round[0]
    }
    row["ort_int8_best"] = min(("ort_int8_QDQ", "ort_int8_QOperator"), key=lambda k: row[k]["median_ms"])  # type: ignore[index]

    def ratio(numerator: str, denominator: str) -> float:
        return float(np.median([_median_ms(r, numerator) / _median_ms(r, denominator) for r in per_round]))

    row["speedup_vs_fp32"] = ratio("ort_fp32", "packed")
    row["speedup_vs_int8"] = ratio("int8", "packed")
    row["speedup_vs_openvino"] = ratio("openvino", "packed")
    row["int8_float_layers_speedup_vs_int8"] = ratio("int8", "packed_int8_float_layers")
    row["rounds"] = len(per_round)
    return row


def _median_ms(times: dict[str, dict[str, float]], key: str) -> float:
    """One round's median of runtime ``key``; "int8" is the faster of the two int8 encodings."""
    if key == "int8":
        return min(times["ort_int8_QDQ"]["median_ms"], times["ort_int8_QOperator"]["median_ms"])
    return times[key]["median_ms"]


def contended(packed_path: Path, int8_path: Path, threads: int, feed: np.ndarray, repeats: int) -> dict[str, object]:
    """The packed runtime and onnxruntime int8 timed again while other processes keep every core busy."""
    packed = load_packed(packed_path, threads=threads)
    runner = session(int8_path, threads)
    with busy_cores():
        times = {"packed_busy": timed(partial(packed, feed), repeats),
                 "ort_int8_busy": timed(partial(runner.run, None, {"x": feed}), repeats)}
    return times


def print_table(rows: list[dict[str, object]]) -> None:
    header = (f"{'model':>20} {'thr':>3} {'packed ms':>15} {'(bin/float)':>12} {'packed+i8fl':>15} {'ort fp32':>15} "
              f"{'ort int8':>15} {'openvino':>15} {'x fp32':>7} {'x int8':>7} {'x ov':>6} {'i8fl x int8':>11} {'file MB':>8} {'RSS+ MB':>8} {'fixed MB':>8}")
    print(header)

    def fmt(cell: dict[str, float]) -> str:
        return f"{cell['median_ms']:.2f} ({cell['min_ms']:.2f})"

    for r in rows:
        int8 = r[r["ort_int8_best"]]
        print(f"{r['model']:>20} {r['threads']:>3} {fmt(r['packed']):>15} "
              f"{r['packed_binary_ms']:>5.2f}/{r['packed_float_ms']:<6.2f} {fmt(r['packed_int8_float_layers']):>15} "
              f"{fmt(r['ort_fp32']):>15} {fmt(int8):>15} {fmt(r['openvino']):>15} {r['speedup_vs_fp32']:>7.2f} "
              f"{r['speedup_vs_int8']:>7.2f} {r['speedup_vs_openvino']:>6.2f} "
              f"{r['int8_float_layers_speedup_vs_int8']:>11.2f} {r['file_mb']:>8.2f} "
              f"{r['loaded_mb']:>8.2f} {r['fixed_mb']:>8.1f}")
    print("ms: median of round medians (min); x …: speed-ups, medians of the rounds' own ratios; bin/float = the packed runtime's binary nodes and float segments, sums of per-step medians "
          "over as many profiled calls; int8 = the faster of QDQ and QOperator; openvino = the same .bnz on OpenVINO (f32 float parts); RSS+ = resident memory added by loading the "
          "packed file; fixed = RSS of the runtime before it (python, numpy, onnx, onnxruntime, kernels, warmed up)")
    if all("packed_busy" in r for r in rows):
        print("\nwith every core kept busy by other processes (--contention): median (min) ms, busy/idle median")
        print(f"{'model':>20} {'thr':>3} {'packed busy':>17} {'busy/idle':>9} {'ort int8 busy':>17} {'busy/idle':>9}")
        for r in rows:
            print(f"{r['model']:>20} {r['threads']:>3} {fmt(r['packed_busy']):>17} {r['packed_busy_over_idle']:>9.2f} "
                  f"{fmt(r['ort_int8_busy']):>17} {r['int8_busy_over_idle']:>9.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50, help="timed calls per measurement")
    parser.add_argument("--json", default="packed_end_to_end.json", help="where to write the results")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every runtime in turn; speed-ups are medians of per-round ratios")
    parser.add_argument("--contention", action="store_true",
                        help="also time packed and int8 while other processes keep every core busy")
    args = parser.parse_args()
    from binarize.packed import kernels

    rows = run(args.repeats, args.contention, args.rounds)
    print_table(rows)
    with open(args.json, "w") as handle:
        json.dump({"onnxruntime": ort.__version__, "torch": torch.__version__, "kernel_path": kernels.active_path(),
                   "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
