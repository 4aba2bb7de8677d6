"""A converted model's mode-dependent calls follow train()/eval(), not the mode it was traced in."""

import torch
import torchvision
from torch import nn
from torch.nn import functional as F

import binarize
from binarize.conversion.training_mode import FLAG


class ModeDependent(nn.Module):
    """Functional batch norm (as timm's BatchNormAct2d), torchvision stochastic depth, dropout."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.weight, self.bias = nn.Parameter(torch.ones(8)), nn.Parameter(torch.zeros(8))
        self.register_buffer("mean", torch.zeros(8))
        self.register_buffer("var", torch.ones(8))
        self.depth = torchvision.ops.StochasticDepth(0.5, "row")
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        x = F.batch_norm(self.stem(x), self.mean, self.var, self.weight, self.bias, training=self.training)
        x = x + self.depth(self.conv(x))
        x = F.dropout(x, 0.5, self.training)
        return self.head(x.mean(dim=(2, 3)))


def test_batch_norm_stochastic_depth_and_dropout_follow_the_mode():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 8, 8)
    float_model = ModeDependent()  # traced in training mode, as for fine-tuning
    binary = binarize.convert(float_model, example_inputs=(x,))
    assert "training = True" not in binary.code and binary.code.count(f"{FLAG}") >= 3
    binary.eval()
    with torch.no_grad():
        outputs = binary(x)
        torch.testing.assert_close(binary(x), outputs, rtol=0, atol=0)  # no random drop
        torch.testing.assert_close(binary(x[:1]), outputs[:1])  # running statistics, not the batch's
        # eval uses the running statistics (0, 1): the float stem's output passes unnormalised
        assert binary.mean.eq(0).all() and binary.var.eq(1).all()
    binary.train()
    with torch.no_grad():
        assert not torch.equal(binary(x), binary(x)), "training mode still drops"
    assert not binary.mean.eq(0).all(), "training mode updates the running statistics"


def test_torchvision_efficientnet_infers_deterministically_after_conversion():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    binary = binarize.convert(torchvision.models.efficientnet_b0(), example_inputs=(x,)).eval()
    with torch.no_grad():
        torch.testing.assert_close(binary(x), binary(x), rtol=0, atol=0)
        torch.testing.assert_close(binary(x[1:]), binary(x)[1:])
