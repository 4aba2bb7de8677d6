"""Exports every torchvision classification model, converted with the default policy, to ONNX.

For each model of ``torchvision.models.list_models(module=torchvision.models)`` (weights=None):
convert, then `binarize.export_onnx` (freeze, export, full ``onnx.checker``, standard-op check,
onnxruntime vs PyTorch on a batch of 2 and a batch of 4). Prints one row per model — exporter,
file size, max |Δlogit|, top-1 agreement, seconds — and the count that pass (max |Δlogit|
≤ 1e-4 and identical top-1). ``--json FILE`` writes the rows. Takes an hour or more on 2 cores.

    python benchmarks/onnx_torchvision.py [--only resnet18,vit_b_16] [--skip vit_h_14] [--json out.json]

Last run (torch 2.15, onnxruntime 1.31, 2 CPU cores, ~45 min; vit_h_14 and regnet_y_128gf
skipped: their float32 ONNX files exceed protobuf's 2 GB): 73/78 pass, max |Δlogit| ≤ 1.2e-5.
The five failures are sign flips of activations within float rounding of 0, not export
errors (both exporters give the same numbers): swin_v2_s/b and maxvit_t (GELU underflows to
−0 in one runtime and not the other), efficientnet_b7 and efficientnet_v2_s (SiLU tails,
millions of activations). See `binarize.export.onnx`.
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torchvision
import binarize
from binarize import provenance_of


def input_size(name: str) -> int:
    """Smallest comfortable resolution: ViT and MaxViT need their training size, the rest accept less."""
    return 224 if "vit" in name else 96


def check(name: str, directory: Path) -> dict:
    """Converts and exports one model; the row holds the parity numbers."""
    start = time.perf_counter()
    model = torchvision.models.get_model(name, weights=None).eval()
    with torch.no_grad():  # ViT heads start at zero: logits would be constant and parity trivial
        for parameter in model.parameters():
            if parameter.dim() > 1 and not parameter.any():
                parameter.normal_(0, 0.02)
    size = input_size(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        binary = binarize.convert(model, example_inputs=(torch.randn(1, 3, size, size),)).eval()
    del model
    path = directory / f"{name}.onnx"
    try:
        result = binarize.export_onnx(binary, path, (torch.randn(2, 3, size, size),), force=True)
    finally:
        path.unlink(missing_ok=True)
    return result.to_dict() | {
        "model": name,
        "ok": result.passed,
        "binarized": provenance_of(binary).report.binarized_layers,
        "seconds": round(time.perf_counter() - start, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated model names")
    parser.add_argument("--skip", default="", help="comma-separated model names to leave out (e.g. for memory)")
    parser.add_argument("--json", default=None, help="write the rows to this file")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else torchvision.models.list_models(module=torchvision.models)
    names = [name for name in names if name not in set(args.skip.split(","))]
    torch.manual_seed(0)
    rows = []
    print(f"{'model':28} {'exporter':11} {'binary':>6} {'MB':>8} {'max|Δ|':>9} {'top-1':>6} {'s':>6}")
    with tempfile.TemporaryDirectory() as directory:
        for name in names:
            try:
                row = check(name, Path(directory))
            except Exception as exc:  # report every failure and keep going
                row = {"model": name, "ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
            rows.append(row)
            if "error" in row:
                print(f"{name:28} FAILED {row['error']}", flush=True)
            else:
                print(
                    f"{name:28} {row['exporter']:11} {row['binarized']:>6} {row['size_bytes'] / 1e6:>8.1f} "
                    f"{row['max_abs_diff']:>9.2e} {100 * row['top1_agreement']:>5.0f}% {row['seconds']:>6}",
                    flush=True,
                )
            gc.collect()
    passed = sum(row["ok"] for row in rows)
    print(f"\n{passed}/{len(rows)} converted torchvision classification models export to ONNX with onnxruntime parity")
    if args.json:
        with open(args.json, "w") as stream:
            json.dump(rows, stream, indent=1)


if __name__ == "__main__":
    main()
