"""What a training step through a binary layer costs: no host syncs, little saved memory, bf16."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from binarize.estimators import names
from binarize.nn import BinaryConv2d
from binarize.nn.scaling import scaling_names
from binarize.progress import set_progress

PER_LAYER = [name for name in names() if name != "psa"]  # psa's input slot needs a linked chain


class ForbidHostReads(TorchDispatchMode):
    """Raises on ``aten._local_scalar_dense``: what ``.item()``, ``float()`` and ``.tolist()``
    of a tensor call (a device-to-host sync on accelerators)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            raise AssertionError("a tensor was read back to the host")
        return func(*args, **(kwargs or {}))


def layer_and_input(name: str, channels: int = 8, dtype=torch.float32) -> tuple[BinaryConv2d, torch.Tensor]:
    torch.manual_seed(0)
    layer = BinaryConv2d.from_float(
        nn.Conv2d(channels, channels, 3, padding=1, bias=False), weight_estimator=name, input_estimator=name
    )
    return layer.to(dtype).train(), torch.randn(2, channels, 6, 6, dtype=dtype, requires_grad=True)


def test_the_guard_catches_a_host_read() -> None:
    with pytest.raises(AssertionError, match="host"), ForbidHostReads():
        float(torch.ones(()) * 2)


@pytest.mark.parametrize("name", PER_LAYER)
@pytest.mark.parametrize("progress", [0.0, 1.0])
def test_forward_and_backward_never_read_a_tensor_back(name: str, progress: float) -> None:
    layer, x = layer_and_input(name)
    with ForbidHostReads():
        set_progress(layer, progress)
        layer(x).square().sum().backward()
    assert x.grad.abs().sum() > 0 and layer.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", PER_LAYER)
def test_saved_activations_are_the_conv_input_and_at_most_one_more(name: str) -> None:
    """Autograd keeps what float keeps (the conv's input, here ±1) plus at most what the
    estimator's backward needs: nothing (ste), a 1-byte mask (clipped_ste) or the input once."""
    layer, x = layer_and_input(name, channels=16)
    saved: dict[int, tuple[int, torch.dtype]] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        if tensor.numel() == x.numel():  # activation-sized (input and output have x's shape)
            saved[tensor.untyped_storage().data_ptr()] = (tensor.untyped_storage().nbytes(), tensor.dtype)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = layer(x)
    out.sum().backward()
    extra = {"ste": 0, "clipped_ste": x.numel()}.get(name, x.numel() * x.element_size())
    assert sum(nbytes for nbytes, _ in saved.values()) == x.numel() * x.element_size() + extra
    assert len(saved) == (1 if extra == 0 else 2)


@pytest.mark.parametrize("name", PER_LAYER)
def test_bf16_autocast_matches_float32(name: str) -> None:
    """Under CPU bf16 autocast (the input estimator then sees the bf16 output of a float
    conv, as in a network) the output and gradients stay within bf16 rounding of float32
    (tolerance 2e-2 relative to the largest value: bf16 keeps 8 significant bits)."""
    layer, x = layer_and_input(name)
    before = nn.Conv2d(8, 8, 1)
    set_progress(layer, 0.5)
    if layer.input_estimator.stochastic:  # compare the expectation's gradient, not samples
        layer.eval()
    results = []
    for autocast in (False, True):
        layer.zero_grad(set_to_none=True)
        x.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            inputs = before(x)
            assert inputs.dtype == (torch.bfloat16 if autocast else torch.float32)
            out = layer(inputs)
        out.float().square().sum().backward()
        results.append((out.float().detach(), x.grad.clone(), layer.weight.grad.clone()))
    for want, got in zip(*results):
        scale = want.abs().max()
        assert (got - want).abs().max() <= 2e-2 * scale, (got - want).abs().max() / scale


@pytest.mark.parametrize("scaling", scaling_names())
def test_the_conv_output_is_kept_only_when_alpha_takes_a_gradient(scaling: str) -> None:
    """With α detached (channel_mean, power_of_two, none) the scale and bias are applied in
    place on the conv's fresh output and autograd keeps nothing output-sized; α's own gradient
    Σ g·out (learned, tensor_mean) needs that output, kept once."""
    torch.manual_seed(0)
    layer = BinaryConv2d.from_float(nn.Conv2d(8, 16, 3, padding=1), weight_estimator="ste", input_estimator="ste", scaling=scaling)
    x = torch.randn(2, 8, 7, 7, requires_grad=True)  # output 2·16·7·7: no other tensor has its size
    output_sized: list[int] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        if tensor.numel() == 2 * 16 * 7 * 7:
            output_sized.append(tensor.untyped_storage().nbytes())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = layer(x)
    out.square().sum().backward()
    alpha_learns = layer.scaling(layer.weight).requires_grad
    assert alpha_learns == (scaling in ("learned", "tensor_mean"))
    assert output_sized == ([out.numel() * out.element_size()] if alpha_learns else [])
    assert layer.weight.grad.abs().sum() > 0


def test_dste_keeps_the_probability_it_sampled_from() -> None:
    """DSTE's forward computes σ(x/s) to sample; it keeps that (one activation-sized tensor,
    the same size as x) and its backward reads it instead of recomputing it from x."""
    from binarize.estimators.dste import DSTE

    estimator = DSTE(s=0.5).train()
    x = torch.randn(64, dtype=torch.float64, requires_grad=True)
    kept: list[torch.Tensor] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t) or t, lambda t: t):
        out = estimator(x)
    grad = torch.randn(64, dtype=torch.float64)
    out.backward(grad)
    p = torch.sigmoid(x.detach() / 0.5)
    assert len(kept) == 1 and torch.equal(kept[0], p)
    assert torch.allclose(x.grad, grad * (2 / 0.5) * p * (1 - p), rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", PER_LAYER)
def test_nothing_is_kept_when_no_gradient_is_needed(name: str) -> None:
    """An input that takes no gradient (inference, or data fed to a binary first layer) runs
    the forward value alone: the backward's tensors are never computed."""
    from binarize.estimators import create

    estimator = create(name).train()
    estimator.keep_for_backward = estimator.forward_and_keep = lambda x: pytest.fail("kept for no backward")
    torch.manual_seed(0)
    x = torch.randn(32)
    out = estimator(x)
    assert out.shape == x.shape and not out.requires_grad
