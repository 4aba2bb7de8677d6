"""Converts every torchvision classification model and checks that it trains.

For each model of ``torchvision.models.list_models(module=torchvision.models)`` (weights=None)
the checks of `zoo_sweep` (convert with the default policy, 3 SGD steps in float32 W1A1:
finite loss and gradients, a nonzero gradient in every binary layer, no binary layer with a
constant-signed input). The smallest input each model accepts: 64×64, 224 for
ViT/MaxViT (position embeddings, windows), 299 for Inception-v3 (auxiliary head). Tens of minutes on 2 cores.

    python benchmarks/torchvision_convert.py [--only resnet18,vit_b_16] [--json out.json]
"""

from __future__ import annotations

import torch
import torchvision
from zoo_sweep import arguments, sweep

LARGEST = {"vit_h_14", "vit_l_16", "vit_l_32", "regnet_y_128gf", "regnet_y_32gf", "regnet_y_16gf"}


def input_size(name: str) -> int:
    """Smallest comfortable resolution: ViT/MaxViT need their training size, Inception-v3's
    auxiliary head needs 299, the rest accept 64."""
    if name == "inception_v3":
        return 299
    return 224 if name.startswith(("vit", "maxvit")) else 64


def build(name: str) -> tuple[torch.nn.Module, int]:
    return torchvision.models.get_model(name, weights=None), input_size(name)


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    names = args.only.split(",") if args.only else torchvision.models.list_models(module=torchvision.models)
    # The largest models last: a sweep that runs out of memory on them keeps every other row.
    names = sorted(names, key=lambda name: name in LARGEST)
    sweep(names, build, args, "torchvision classifiers")


if __name__ == "__main__":
    main()
