"""Knowledge distillation from the float model a binary one was converted from."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

from binarize.nn.layers import BinaryLayer


def teacher_from_converted(model: nn.Module) -> nn.Module:
    """The float model behind a converted one: a copy with every binary layer replaced by
    ``to_float()`` (its latent weights). For a freshly converted model these are exactly the
    original float weights; after fine-tuning it is only an approximation."""
    teacher = copy.deepcopy(model)
    for name, module in list(teacher.named_modules()):
        if isinstance(module, BinaryLayer):
            teacher.set_submodule(name, module.to_float())
    return frozen_teacher(teacher)


def frozen_teacher(model: nn.Module) -> nn.Module:
    """``model`` in eval mode with gradients off, as a teacher should be."""
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def distillation_loss(
    student_logits: torch.Tensor,
    targets: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    *,
    weight: float,
    temperature: float,
    label_smoothing: float,
) -> torch.Tensor:
    """``(1 − w)·CE(student, labels) + w·T²·KL(softmax(teacher/T) ‖ softmax(student/T))``.

    Without a teacher (or with w = 0) this is the plain (label-smoothed) cross-entropy. The T²
    factor keeps the soft term's gradient scale independent of T (Hinton et al. 2015)."""
    hard = F.cross_entropy(student_logits, targets, label_smoothing=label_smoothing)
    if teacher_logits is None or weight == 0:
        return hard
    soft = F.kl_div(
        F.log_softmax(student_logits / temperature, dim=1),
        F.log_softmax(teacher_logits / temperature, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    return (1 - weight) * hard + weight * temperature**2 * soft
