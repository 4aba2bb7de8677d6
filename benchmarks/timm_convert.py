"""Converts timm models (built untrained, nothing downloaded) and checks that they train.

The checks of `zoo_sweep` on the models of ``MODELS`` (the families users try first), or
``--all`` for every ``timm.list_models()`` name (hours). Needs ``pip install 'binarize[timm]'``.

    python benchmarks/timm_convert.py [--only resnet18,vit_tiny_patch16_224] [--json out.json]
"""

from __future__ import annotations

import torch
from zoo_sweep import arguments, sweep

from binarize.sources import build_architecture

MODELS = [
    "resnet18", "resnet50", "mobilenetv3_large_100", "efficientnet_b0", "convnext_atto",
    "vit_tiny_patch16_224", "deit_tiny_patch16_224", "regnety_002", "densenet121", "mobileone_s0",
    "fastvit_t8", "tiny_vit_5m_224", "pit_ti_224", "coat_lite_tiny", "xcit_nano_12_p16_224",
    "efficientvit_b0", "nfnet_l0", "vgg11_bn", "inception_v3", "mixer_b16_224",
    "levit_128s", "efficientvit_m0", "ghostnet_100", "rexnet_100", "mobilevit_xs", "poolformer_s12",
    "edgenext_xx_small", "repvgg_a0", "dla34", "cspdarknet53", "hrnet_w18_small", "swin_tiny_patch4_window7_224",
]  # fmt: skip


def build(name: str) -> tuple[torch.nn.Module, int]:
    model = build_architecture(f"timm:{name}")
    height = model.pretrained_cfg["input_size"][1]
    # Models with fixed position embeddings or windows need their own size; others run at 64.
    fixed = any(key in name for key in ("vit", "deit", "pit", "coat", "xcit", "mixer", "swin", "levit", "efficientvit_m", "mobilevit", "fastvit", "inception", "hrnet"))
    return model, height if fixed else 64


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    sweep(args.only.split(",") if args.only else MODELS, build, args, "timm models")


if __name__ == "__main__":
    main()
