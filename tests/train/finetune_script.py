"""A small fine-tuning run executed in a subprocess by the resume and torchrun tests.

usage: python finetune_script.py OUTPUT_DIR [--resume CKPT] [--model cnn|mlp]
Writes OUTPUT_DIR/final.pt (the trained state dict) when the run completes.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Subset

from binarize.config import BinarizeConfig, LayerConfig
from binarize import convert
from binarize.data import get_datasets
from binarize.sources import build_architecture
from binarize.train import FinetuneConfig, finetune

CONFIG = FinetuneConfig(
    epochs=2, batch_size=32, lr=2e-3, warmup_epochs=0.5, checkpoint_every=4, log_every=1, distill_weight=0.5,
    bn_reestimate_batches=2, device="cpu",
)


def mlp() -> nn.Module:
    """No BatchNorm: per-process batch statistics would make DDP differ from one process."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.Hardtanh(), nn.Linear(48, 48), nn.Hardtanh(), nn.Linear(48, 10))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("output")
    parser.add_argument("--resume")
    parser.add_argument("--model", default="cnn")
    args = parser.parse_args()
    torch.set_num_threads(1)
    splits = get_datasets("digits")
    train, test = Subset(splits.train, range(320)), Subset(splits.test, range(128))
    torch.manual_seed(1)
    float_model = build_architecture("binarize:digits_cnn", width=8) if args.model == "cnn" else mlp()
    binary = convert(float_model, BinarizeConfig(layer=LayerConfig(weight_estimator="reste", input_estimator="reste")),
                     example_inputs=(torch.zeros(1, 1, 8, 8),))
    finetune(binary, train, config=CONFIG.replace(bn_reestimate_batches=2 if args.model == "cnn" else 0),
             teacher=float_model, eval_data=test, resume_from=args.resume, output_dir=args.output)
    if int(os.environ.get("RANK", "0")) == 0:
        torch.save(binary.state_dict(), Path(args.output) / "final.pt")


if __name__ == "__main__":
    main()
