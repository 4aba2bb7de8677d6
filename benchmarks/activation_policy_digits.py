"""Which activation policy should be the default? Measured on a ReLU residual CNN.

A torchvision-style residual net (torchvision's own ``BasicBlock``: in-place ReLU before each
binary conv, identity and 1x1 shortcuts reading the ReLU output) is trained in float on the
offline digits data, then converted W1A1 under each ``activation_policy`` and fine-tuned with
the same budget (distilled from the float net). Repeated for several seeds; prints a table
(mean top-1 ± standard error, finite runs, first/last epoch loss) and writes JSON.

    python benchmarks/activation_policy_digits.py [--seeds 3] [--epochs 5] [--estimator reste] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock

from binarize import BinarizeConfig, LayerConfig, convert
from binarize.config import ACTIVATION_POLICIES
from binarize.data import get_datasets
from binarize.train import FinetuneConfig, evaluate, finetune


def residual_net(width: int = 32, classes: int = 10) -> nn.Module:
    """Stem conv, four BasicBlocks (one strided, with a 1x1 downsample), pooled linear head."""
    downsample = nn.Sequential(nn.Conv2d(width, 2 * width, 1, stride=2, bias=False), nn.BatchNorm2d(2 * width))
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
        BasicBlock(width, width),
        BasicBlock(width, width),
        BasicBlock(width, 2 * width, stride=2, downsample=downsample),
        BasicBlock(2 * width, 2 * width),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * width, classes),
    )


def run(seeds: int, epochs: int, float_epochs: int, estimator: str) -> dict:
    torch.set_num_threads(1)  # a small net on a shared machine: threads only add contention
    splits = get_datasets("digits")
    sink = open("/dev/null", "w")
    tune = FinetuneConfig(epochs=epochs, lr=1e-3, distill_weight=0.5, log_every=10**6, device="cpu")
    layer = LayerConfig(weight_estimator=estimator, input_estimator=estimator)
    runs: dict[str, list[dict]] = {policy: [] for policy in ACTIVATION_POLICIES}
    float_scores = []
    started = time.monotonic()
    for seed in range(seeds):
        torch.manual_seed(seed)
        float_model = residual_net()
        finetune(float_model, splits.train, config=tune.replace(epochs=float_epochs, lr=3e-3, seed=seed, distill_weight=0.0), stream=sink)
        float_scores.append(evaluate(float_model, splits.test).top1)
        for policy in ACTIVATION_POLICIES:
            binary = convert(float_model, BinarizeConfig(layer=layer, activation_policy=policy), example_inputs=(splits.train[0][0][None],))
            before = evaluate(binary, splits.test).top1
            result = finetune(binary, splits.train, config=tune.replace(seed=seed), teacher=float_model, stream=sink)
            losses = [entry["train_loss"] for entry in result.history]
            top1 = evaluate(binary, splits.test).top1
            runs[policy].append({"seed": seed, "top1": top1, "before": before, "finite": math.isfinite(top1) and all(map(math.isfinite, losses)), "losses": losses})
    rows = []
    for policy, results in runs.items():
        scores = [r["top1"] for r in results]
        mean = sum(scores) / len(scores)
        std = math.sqrt(sum((s - mean) ** 2 for s in scores) / max(len(scores) - 1, 1))
        rows.append({
            "policy": policy, "mean_top1": mean, "stderr": std / math.sqrt(len(scores)), "n": len(scores),
            "before_finetune_top1": sum(r["before"] for r in results) / len(results),
            "finite_runs": sum(r["finite"] for r in results), "runs": results,
        })
    return {
        "model": "BasicBlock ResNet (width 32, blocks 32-32-64s2-64, ReLU), W1A1, first and last layers float",
        "protocol": f"{seeds} seeds; float {float_epochs} epochs (adam 3e-3); fine-tune {epochs} epochs "
                    f"(adam 1e-3 cosine, distill w=0.5) with {estimator}; digits fixed test split",
        "float_top1": sum(float_scores) / len(float_scores),
        "seconds": time.monotonic() - started,
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--float-epochs", type=int, default=10)
    parser.add_argument("--estimator", default="reste")
    parser.add_argument("--json", help="also write the result to this file")
    args = parser.parse_args()
    result = run(args.seeds, args.epochs, args.float_epochs, args.estimator)
    print(f"{result['model']}\n{result['protocol']}\nfloat top-1 {result['float_top1']:.2f}%\n")
    print(f"{'policy':10} {'top-1 %':>8} {'± s.e.':>7} {'before FT':>10} {'finite':>7}")
    for row in result["rows"]:
        print(f"{row['policy']:10} {row['mean_top1']:8.2f} {row['stderr']:7.2f} {row['before_finetune_top1']:10.2f} {row['finite_runs']:>4}/{row['n']}")
    if args.json:
        with open(args.json, "w") as stream:
            json.dump(result, stream, indent=2)


if __name__ == "__main__":
    main()
