"""The loop's parts against hand-computed numbers, and small end-to-end runs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Subset, TensorDataset

from binarize import BinarizeConfig, LayerConfig, convert
from binarize.data import get_datasets
from binarize.errors import ConfigError
from binarize.nn.layers import BinaryLayer
from binarize.sources import build_architecture
from binarize.train import FinetuneConfig, evaluate, finetune, teacher_from_converted
from binarize.train.batchnorm import reestimate_batchnorm
from binarize.train.distill import distillation_loss
from binarize.train.optim import build_optimizer, build_scheduler

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def digits():
    return get_datasets("digits")


def _binary(estimator: str = "reste", width: int = 8) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    float_model = build_architecture("binarize:digits_cnn", width=width)
    config = BinarizeConfig(layer=LayerConfig(weight_estimator=estimator, input_estimator=estimator))
    return float_model, convert(float_model, config)


def test_cosine_warmup_and_step_schedules() -> None:
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    config = FinetuneConfig(epochs=2, warmup_epochs=0.5, lr=1.0)
    scheduler = build_scheduler(optimizer, config, steps_per_epoch=4)  # 8 steps, 2 of warm-up
    factors = []
    for _ in range(8):
        factors.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected = [0.5, 1.0] + [0.5 * (1 + math.cos(math.pi * k / 6)) for k in range(6)]
    assert factors == pytest.approx(expected)
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    step = build_scheduler(optimizer, FinetuneConfig(epochs=4, schedule="step", step_epochs=2, step_gamma=0.1), 3)
    assert [step.lr_lambdas[0](s) for s in (0, 5, 6, 11)] == pytest.approx([1, 1, 0.1, 0.1])


def test_binary_weights_get_their_own_decay() -> None:
    _, binary = _binary()
    optimizer = build_optimizer(binary, FinetuneConfig(weight_decay=1e-4, binary_weight_decay=0.0))
    latent = {id(m.weight) for m in binary.modules() if isinstance(m, BinaryLayer)}
    binary_group, other_group = optimizer.param_groups
    assert {id(p) for p in binary_group["params"]} == latent and binary_group["weight_decay"] == 0.0
    assert other_group["weight_decay"] == 1e-4
    assert len(other_group["params"]) == sum(1 for _ in binary.parameters()) - len(latent)


def test_distillation_loss_matches_a_numpy_formula() -> None:
    student = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    teacher = torch.tensor([[2.0, 1.0, 0.0], [0.5, 0.5, 2.0]])
    targets = torch.tensor([1, 2])

    def log_softmax(z: np.ndarray) -> np.ndarray:
        return z - np.log(np.exp(z).sum(1, keepdims=True))

    s, t, temp = student.double().numpy(), teacher.double().numpy(), 2.0
    ce = -log_softmax(s)[[0, 1], [1, 2]].mean()
    p_t = np.exp(log_softmax(t / temp))
    kl = (p_t * (log_softmax(t / temp) - log_softmax(s / temp))).sum(1).mean()
    got = distillation_loss(student, targets, teacher, weight=0.25, temperature=temp, label_smoothing=0.0)
    assert got.item() == pytest.approx(0.75 * ce + 0.25 * temp**2 * kl, rel=1e-6)
    plain = distillation_loss(student, targets, None, weight=0.25, temperature=temp, label_smoothing=0.0)
    assert plain.item() == pytest.approx(ce, rel=1e-6)


def test_teacher_from_converted_is_the_float_model() -> None:
    float_model, binary = _binary()
    teacher = teacher_from_converted(binary)
    x = torch.randn(5, 1, 8, 8)
    assert not any(isinstance(m, BinaryLayer) for m in teacher.modules())
    assert torch.allclose(teacher(x), float_model.eval()(x), atol=1e-6)
    assert not any(p.requires_grad for p in teacher.parameters())


def test_evaluate_counts_top1_top5_and_loss() -> None:
    logits = torch.tensor([[9.0, 8, 7, 6, 5, 4], [0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0], [0, 0, 0, 0, 9, 1]])
    labels = torch.tensor([0, 0, 5, 4])  # top-1 right: 1st and 4th; top-5: all but the 2nd and 3rd
    model = nn.Sequential(nn.Flatten(), nn.Identity())
    model.register_parameter("anchor", nn.Parameter(torch.zeros(1)))
    result = evaluate(model, TensorDataset(logits, labels), batch_size=3)
    assert (result.top1, result.top5, result.count) == (50.0, 50.0, 4)
    assert result.loss == pytest.approx(nn.functional.cross_entropy(logits, labels).item())


def test_bn_reestimation_gives_the_data_statistics() -> None:
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3))
    inputs = torch.randn(40, 1, 6, 6)
    data = TensorDataset(inputs, torch.zeros(40, dtype=torch.long))
    assert reestimate_batchnorm(model, data, batches=4, batch_size=10, device=torch.device("cpu")) == 1
    features = model[0](inputs).detach()
    per_batch = features.view(4, 10, 3, 4, 4)
    assert torch.allclose(model[1].running_mean, features.mean((0, 2, 3)), atol=1e-5)
    expected_var = per_batch.transpose(1, 2).reshape(4, 3, -1).var(dim=2, unbiased=True).mean(0)
    assert torch.allclose(model[1].running_var, expected_var, atol=1e-5)
    assert model[1].momentum == 0.1


def test_finetune_is_deterministic_drives_schedules_and_learns(digits, tmp_path: Path) -> None:
    train, test = Subset(digits.train, range(256)), Subset(digits.test, range(128))
    config = FinetuneConfig(epochs=2, batch_size=32, lr=3e-3, device="cpu", log_every=1000)
    runs = []
    for seed in (0, 0, 1):
        float_model, binary = _binary()
        before = evaluate(binary, test).loss
        result = finetune(binary, train, config=config.replace(seed=seed), teacher=float_model, eval_data=test,
                          output_dir=tmp_path / str(len(runs)))
        runs.append((binary.state_dict(), result))
    (first, result), (second, _), (third, _) = runs
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not all(torch.equal(first[k], third[k]) for k in first)
    assert result.final.loss < before and result.steps == 16
    lines = (tmp_path / "0" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3 and '"epoch": 2' in lines[1]
    assert set(result.checkpoints) == {"last", "best"}


def test_reste_progress_follows_steps(digits) -> None:
    _, binary = _binary()
    finetune(binary, Subset(digits.train, range(64)), config=FinetuneConfig(epochs=2, batch_size=16, device="cpu"))
    layer = next(m for m in binary.modules() if isinstance(m, BinaryLayer))
    p = 7 / 8  # the last of 8 steps ran at progress 7/8
    assert float(layer.weight_estimator.o) == pytest.approx(1 + 2 * (1 - math.cos(math.pi * p / 2)))


def test_ste_clips_latent_weights(digits) -> None:
    _, binary = _binary("ste")
    with torch.no_grad():
        for m in binary.modules():
            if isinstance(m, BinaryLayer):
                m.weight.mul_(50)
    finetune(binary, Subset(digits.train, range(32)), config=FinetuneConfig(epochs=1, batch_size=16, device="cpu"))
    latent = [m.weight for m in binary.modules() if isinstance(m, BinaryLayer)]
    assert max(w.abs().max().item() for w in latent) == 1.0


def test_resume_refuses_a_changed_config(digits, tmp_path: Path) -> None:
    _, binary = _binary()
    config = FinetuneConfig(epochs=1, batch_size=16, device="cpu")
    finetune(binary, Subset(digits.train, range(32)), config=config, output_dir=tmp_path)
    with pytest.raises(ConfigError, match="resuming with a different config \\(lr=0.5"):
        finetune(binary, Subset(digits.train, range(32)), config=config.replace(lr=0.5), resume_from=tmp_path / "last.pt")
    with pytest.raises(ConfigError, match="smaller than one batch"):
        finetune(binary, Subset(digits.train, range(8)), config=config)
