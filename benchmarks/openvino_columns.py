"""The OpenVINO column of the deployment benchmarks: the same packed file, the same weights, the
same process, timed on binarize's packed runtime and on OpenVINO (`binarize.packed.openvino_engine`).

`time_engines` is the function `packed_end_to_end.py` and `packed_layers.py` call for their
OpenVINO column; run standalone, this script prints both engines for the Bi-Real ResNet-18
(random weights) at 224² batch 1 and for its 3×3 layer shapes (one binary conv per file), at 1
and 2 threads, as a table and as JSON. Needs ``pip install 'binarize[openvino]'``. Timings on a
shared machine are noisy: read the ratios, measured in one run.

    python benchmarks/openvino_columns.py [--repeats 30] [--json openvino_columns.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torchvision
from packed_timing import timed
from torch import nn

from binarize import BinarizeConfig, convert
from binarize.nn import BinaryConv2d
from binarize.packed import load_packed, save_packed
from binarize.packed.openvino_engine import load_openvino

LAYER_SHAPES = [(56, 64), (28, 128), (14, 256), (7, 512)]  # ResNet-18's 3x3 convs: (spatial size, channels)


def time_engines(path: Path, feed: np.ndarray, threads: int, repeats: int) -> dict[str, object]:
    """Both engines on one packed file: times, OpenVINO's speedup, and their largest logit gap."""
    packed = load_packed(path, threads=threads)
    expected = packed(feed)
    packed_time = timed(partial(packed, feed), repeats)
    del packed  # one engine loaded at a time
    openvino = load_openvino(path, threads=threads)
    gap = float(np.abs(openvino(feed) - expected).max())
    openvino_time = timed(partial(openvino, feed), repeats)
    return {"packed": packed_time, "openvino": openvino_time, "max_abs_diff": gap,
            "openvino_speedup": packed_time["median_ms"] / openvino_time["median_ms"]}


def bireal_resnet18(folder: Path) -> tuple[Path, np.ndarray]:
    """The Bi-Real-policy ResNet-18 (binary 3x3 convs; first conv, last linear and 1x1 shortcuts
    float), random weights, as a packed file, with a 224² batch-1 input."""
    torch.manual_seed(0)
    x = torch.randn(1, 3, 224, 224)
    model = convert(torchvision.models.resnet18().eval(), BinarizeConfig(keep_downsample=True)).eval()
    return save_packed(model, folder / "resnet18-bireal.bnz", (x,)), x.numpy()


def binary_layer(folder: Path, size: int, channels: int) -> tuple[Path, np.ndarray]:
    """One W1A1 3x3 conv (stride 1, zero padding 1) as a packed file, with a batch-1 input."""
    torch.manual_seed(0)
    x = torch.randn(1, channels, size, size)
    layer = nn.Sequential(BinaryConv2d.from_float(nn.Conv2d(channels, channels, 3, padding=1, bias=False))).eval()
    return save_packed(layer, folder / f"conv{size}x{channels}.bnz", (x,)), x.numpy()


def run(repeats: int) -> list[dict[str, object]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cases = {"resnet18-bireal-224": bireal_resnet18(folder)}
        cases.update({f"conv3x3 {size}x{size}x{channels}": binary_layer(folder, size, channels)
                      for size, channels in LAYER_SHAPES})
        for threads in (1, 2):
            for name, (path, feed) in cases.items():
                rows.append({"case": name, "threads": threads, **time_engines(path, feed, threads, repeats)})
    return rows


def print_table(rows: list[dict[str, object]]) -> None:
    def fmt(cell: dict[str, float]) -> str:
        return f"{cell['median_ms']:.2f} ({cell['min_ms']:.2f})"

    print(f"{'case':>24} {'thr':>3} {'packed ms':>17} {'openvino ms':>17} {'ov speedup':>10} {'max |Δ|':>9}")
    for r in rows:
        print(f"{r['case']:>24} {r['threads']:>3} {fmt(r['packed']):>17} {fmt(r['openvino']):>17} "
              f"{r['openvino_speedup']:>10.2f} {r['max_abs_diff']:>9.2g}")
    print("ms: median (min) at batch 1; ov speedup = packed / openvino (> 1: OpenVINO is faster)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per measurement")
    parser.add_argument("--json", default="openvino_columns.json", help="where to write the results")
    args = parser.parse_args()
    import openvino

    from binarize.packed import kernels

    rows = run(args.repeats)
    print_table(rows)
    with open(args.json, "w") as handle:
        json.dump({"openvino": openvino.__version__, "kernel_path": kernels.active_path(), "rows": rows}, handle,
                  indent=2)


if __name__ == "__main__":
    main()
