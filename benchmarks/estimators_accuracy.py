"""Every estimator fine-tuned from the same float checkpoint on the offline digits proxy.

W1A1 ``digits_cnn`` (width 32; the stem conv and the classifier stay float), repeated stratified
k-fold cross-validation: for each repeat r and fold f one float model is trained on the other
folds, then every estimator converts and fine-tunes (with distillation) that same float model
and is scored on fold f. A "scratch" row trains the same ReSTE binary net from random weights
for the same number of epochs, without a teacher. Prints mean top-1, its standard error
(std / √n over the n = repeats·folds scores), the float accuracy, as a table and JSON.

    python benchmarks/estimators_digits.py [--repeats 3] [--folds 5] [--epochs 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import torch
from torch.utils.data import TensorDataset

from binarize import BinarizeConfig, LayerConfig, convert
from binarize.data.digits import digits_tensors
from binarize.sources import build_architecture
from binarize.train import FinetuneConfig, evaluate, finetune

#: estimator → (weight estimator, input estimator). AdaSTE and PSA are weight-/activation-only
#: methods in their papers: AdaSTE's weights are paired with clipped-STE activations here, and
#: PSA is absent because its chain rule does not hold across BatchNorm and residual additions.
SETTINGS = {
    "ste": ("ste", "ste"),
    "clipped_ste": ("clipped_ste", "clipped_ste"),
    "reste": ("reste", "reste"),
    "irnet": ("irnet", "irnet"),
    "adaste (+clipped_ste acts)": ("adaste", "clipped_ste"),
    "dste": ("dste", "dste"),
    "approxsign": ("approxsign", "approxsign"),
}
FLOAT = FinetuneConfig(epochs=10, lr=3e-3, log_every=10**6, device="cpu")


def folds(labels: torch.Tensor, count: int, seed: int) -> list[torch.Tensor]:
    """Stratified folds: each class's examples, shuffled with ``seed``, dealt round-robin."""
    assignment = torch.empty_like(labels)
    generator = torch.Generator().manual_seed(seed)
    for label in labels.unique():
        where = (labels == label).nonzero().flatten()
        where = where[torch.randperm(len(where), generator=generator)]
        assignment[where] = torch.arange(len(where)) % count
    return [(assignment == f) for f in range(count)]


def run(repeats: int, fold_count: int, epochs: int, quiet: bool) -> dict:
    torch.set_num_threads(1)  # a 20 k-parameter net: threads only add contention
    images, labels = digits_tensors()
    tune = FinetuneConfig(epochs=epochs, lr=1e-3, distill_weight=0.5, temperature=2.0, log_every=10**6, device="cpu")
    scores: dict[str, list[float]] = {name: [] for name in ["float", *SETTINGS, "scratch (reste, no teacher)"]}
    before: dict[str, list[float]] = {name: [] for name in SETTINGS}
    sink = open("/dev/null", "w")
    started = time.monotonic()
    for repeat in range(repeats):
        for fold, test_mask in enumerate(folds(labels, fold_count, seed=repeat)):
            train = TensorDataset(images[~test_mask], labels[~test_mask])
            test = TensorDataset(images[test_mask], labels[test_mask])
            seed = 1000 * repeat + fold
            torch.manual_seed(seed)
            float_model = build_architecture("binarize:digits_cnn")
            finetune(float_model, train, config=FLOAT.replace(seed=seed), stream=sink)
            scores["float"].append(evaluate(float_model, test).top1)
            for name, (weights, inputs) in SETTINGS.items():
                config = BinarizeConfig(layer=LayerConfig(weight_estimator=weights, input_estimator=inputs))
                binary = convert(float_model, config)
                before[name].append(evaluate(binary, test).top1)
                finetune(binary, train, config=tune.replace(seed=seed), teacher=float_model, stream=sink)
                scores[name].append(evaluate(binary, test).top1)
            torch.manual_seed(seed)
            scratch = convert(build_architecture("binarize:digits_cnn"), BinarizeConfig(layer=LayerConfig("reste", input_estimator="reste")))
            finetune(scratch, train, config=tune.replace(seed=seed, distill_weight=0.0), stream=sink)
            scores["scratch (reste, no teacher)"].append(evaluate(scratch, test).top1)
            if not quiet:
                done = repeat * fold_count + fold + 1
                print(f"split {done}/{repeats * fold_count} done, {time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)
    rows = []
    for name, values in scores.items():
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / max(len(values) - 1, 1))
        prior = before.get(name)
        rows.append({
            "setting": name, "mean_top1": mean, "stderr": std / math.sqrt(len(values)), "n": len(values),
            "before_finetune_top1": None if prior is None else sum(prior) / len(prior),
        })
    return {
        "model": "binarize:digits_cnn (width 32), W1A1, first and last layers float",
        "protocol": f"{repeats}x repeated stratified {fold_count}-fold CV, fine-tune {epochs} epochs (adam 1e-3 cosine, "
                    f"distill w=0.5 T=2), float {FLOAT.epochs} epochs",
        "seconds": time.monotonic() - started,
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--json", help="also write the result to this file")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    result = run(args.repeats, args.folds, args.epochs, args.quiet)
    print(f"{result['model']}\n{result['protocol']}\n")
    print(f"{'setting':30} {'top-1 %':>8} {'± s.e.':>7} {'before FT':>10} {'n':>3}")
    for row in result["rows"]:
        prior = "" if row["before_finetune_top1"] is None else f"{row['before_finetune_top1']:.2f}"
        print(f"{row['setting']:30} {row['mean_top1']:8.2f} {row['stderr']:7.2f} {prior:>10} {row['n']:3d}")
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as stream:
            json.dump(result, stream, indent=2)


if __name__ == "__main__":
    main()
