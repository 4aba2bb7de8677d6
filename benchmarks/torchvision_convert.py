"""Converts every torchvision classification model and checks it trains and infers.

For each model of ``torchvision.models.list_models(module=torchvision.models)`` (weights=None):
convert with the default policy, run forward in train and eval mode (same output shape as the
float model), backward (every binary layer's latent weight gets a gradient), and check the
first and last weighted layers stayed float. Prints a table and a final count; ``--json FILE``
writes the rows. Takes tens of minutes on 2 cores (the largest models are hundreds of MB).

    python benchmarks/torchvision_convert.py [--only resnet18,vit_b_16] [--json out.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import time
import warnings

import torch
import torchvision

import binarize
from binarize.nn import BinaryLayer


def input_size(name: str) -> int:
    """Smallest comfortable resolution: ViT/MaxViT need their training size, Inception-v3's
    auxiliary head needs 299, the rest accept less."""
    if name == "inception_v3":
        return 299
    return 224 if name.startswith(("vit", "maxvit")) else 96


def check(name: str) -> dict:
    row: dict = {"model": name}
    start = time.perf_counter()
    model = torchvision.models.get_model(name, weights=None)
    for param in model.parameters():  # ViT's zero-initialised head would stop every gradient
        if param.dim() > 1 and not param.ne(0).any():
            torch.nn.init.normal_(param, std=0.02)
    size = input_size(name)
    x = torch.randn(2, 3, size, size)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        binary = binarize.convert(model, example_inputs=(x,))
    report = binary.binarize_report
    row.update(mode=report.mode, binarized=report.binarized_layers, layers=len(report.rows))
    with torch.no_grad():
        expected = _logits(model.eval()(x)).shape
    binary.train()
    for module in binary.modules():  # randomness (stochastic depth) could drop a whole block
        if isinstance(module, (torch.nn.Dropout, torchvision.ops.StochasticDepth)):
            module.eval()
    outputs = binary(x)
    out = _logits(outputs)
    # Auxiliary heads (GoogLeNet, Inception) are binary layers too: backpropagate every output.
    heads = [o for o in outputs if o is not None] if isinstance(outputs, tuple) else [outputs]
    sum(o.float().square().mean() for o in heads).backward()
    layers = [m for m in binary.modules() if isinstance(m, BinaryLayer)]
    row["grads"] = all(m.weight.grad is not None for m in layers)
    # Informational: W1A1 after a ReLU sees constant +1 inputs (the report warns), which can give
    # exactly zero or, through BatchNorm over constants, overflowing gradients at random init.
    row["nonzero"] = sum(bool(m.weight.grad.ne(0).any()) for m in layers if m.weight.grad is not None)
    row["finite"] = all(bool(m.weight.grad.isfinite().all()) for m in layers if m.weight.grad is not None)
    binary.eval()
    with torch.no_grad():
        row["eval_shape"] = _logits(binary(x)).shape == expected
    row["train_shape"] = out.shape == expected
    first, last = report.rows[0], report.rows[-1]
    row["ends_float"] = not first.binarized and not last.binarized
    row["ok"] = row["grads"] and row["eval_shape"] and row["train_shape"] and row["ends_float"] and row["binarized"] > 0
    row["warnings"] = [str(w.message) for w in caught if "binarize" in str(w.message)]
    row["seconds"] = round(time.perf_counter() - start, 1)
    return row


def _logits(output):
    # GoogLeNet/Inception return namedtuples in train mode; the first field is the logits.
    return output[0] if isinstance(output, tuple) else output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated model names")
    parser.add_argument("--json", default=None, help="write the rows to this file")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else torchvision.models.list_models(module=torchvision.models)
    torch.manual_seed(0)
    rows = []
    print(f"{'model':28} {'mode':8} {'binarized':>10} {'fwd/bwd':>8} {'grad≠0':>7} {'finite':>7} {'ends float':>10} {'s':>6}")
    for name in names:
        try:
            row = check(name)
        except Exception as exc:  # report every failure and keep going
            row = {"model": name, "ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
        rows.append(row)
        if "error" in row:
            print(f"{name:28} FAILED {row['error']}", flush=True)
        else:
            fwd = "ok" if row["grads"] and row["train_shape"] and row["eval_shape"] else "FAIL"
            print(
                f"{name:28} {row['mode']:8} {row['binarized']:>4}/{row['layers']:<5} {fwd:>8} {row['nonzero']:>7} {str(row['finite']):>7} "
                f"{str(row['ends_float']):>10} {row['seconds']:>6}",
                flush=True,
            )
        gc.collect()
    passed = sum(row["ok"] for row in rows)
    finite = sum(row.get("finite", False) for row in rows)
    print(f"\n{passed}/{len(rows)} torchvision classification models converted, forward/backward passed")
    print(f"{finite}/{len(rows)} with finite gradients at random initialisation")
    if args.json:
        with open(args.json, "w") as stream:
            json.dump(rows, stream, indent=1)


if __name__ == "__main__":
    main()
