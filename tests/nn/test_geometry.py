"""ConvGeometry: the padding it computes and the convolution it runs equal nn.ConvNd's own."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from binarize.nn.geometry import ConvGeometry

SETTINGS = [
    dict(kernel_size=3, stride=1, padding=1, dilation=1, groups=1, padding_mode="zeros"),
    dict(kernel_size=(3, 4), stride=1, padding="same", dilation=1, groups=1, padding_mode="zeros"),
    dict(kernel_size=(2, 4), stride=1, padding="same", dilation=(3, 1), groups=2, padding_mode="reflect"),
    dict(kernel_size=3, stride=2, padding=(2, 1), dilation=2, groups=2, padding_mode="replicate"),
    dict(kernel_size=(1, 4), stride=1, padding="same", dilation=1, groups=4, padding_mode="circular"),
    dict(kernel_size=3, stride=(1, 2), padding="valid", dilation=1, groups=1, padding_mode="reflect"),
]


def _pairs(settings):
    """The 2-d setting and its 1-d counterpart (last spatial dimension only)."""
    last = {key: value[-1] if isinstance(value, tuple) else value for key, value in settings.items()}
    return [(nn.Conv2d(4, 8, bias=False, **settings), (2, 4, 9, 10)), (nn.Conv1d(4, 8, bias=False, **last), (2, 4, 10))]


@pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel")  # torch warns for its own conv too
@pytest.mark.parametrize("settings", SETTINGS)
def test_padding_and_convolution_equal_torch(settings):
    for conv, shape in _pairs(settings):
        geometry = ConvGeometry.of(conv)
        x = torch.randn(shape)
        if conv.padding_mode == "zeros":
            assert geometry.pad(x) is x  # the convolution pads with zeros itself
        else:
            assert torch.equal(geometry.pad(x), F.pad(x, conv._reversed_padding_repeated_twice, mode=conv.padding_mode))
        begins, ends = geometry.sides()
        pairs = [v for b, e in zip(reversed(begins), reversed(ends)) for v in (b, e)]
        assert pairs == list(conv._reversed_padding_repeated_twice)
        with torch.no_grad():
            assert torch.equal(geometry.convolve(x, conv.weight), conv(x))


def test_fields_are_those_of_the_conv():
    conv = nn.Conv2d(4, 8, (3, 5), stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=4, padding_mode="reflect")
    assert ConvGeometry.of(conv) == ConvGeometry((3, 5), (2, 1), (1, 2), (1, 2), 4, "reflect")
    assert ConvGeometry.of(nn.Conv1d(2, 2, 3, padding="same")).sides() == ((1,), (1,))
