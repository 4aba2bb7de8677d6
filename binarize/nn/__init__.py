"""Binary layers and the pieces they are built from (scaling, weight transforms)."""

from binarize.nn.layers import (
    BinaryConv1d,
    BinaryConv2d,
    BinaryLayer,
    BinaryLinear,
    binary_counterpart,
)
from binarize.nn import libra  # noqa: F401  (registers libra_pb and power_of_two)
from binarize.nn.scaling import create_scaling, register_scaling, scaling_names
from binarize.nn.threshold import InputThreshold
from binarize.nn.transforms import create_transform, register_transform, transform_names

__all__ = [
    "BinaryConv1d",
    "BinaryConv2d",
    "BinaryLayer",
    "BinaryLinear",
    "InputThreshold",
    "binary_counterpart",
    "create_scaling",
    "create_transform",
    "register_scaling",
    "register_transform",
    "scaling_names",
    "transform_names",
]
