"""The `binarize` ONNX operator domain (version 1): op names, attributes, and their schemas.

SPEC.md is the normative text; this module is its machine-readable half, shared by the writer,
the validator and the runtime. `register_schemas` tells `onnx.checker` and ONNX shape inference
about the two ops (inputs, attributes, output type), so a packed file checks like any model.
Imports only onnx and NumPy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

DOMAIN = "binarize"
DOMAIN_VERSION = 1
CONV = "BinaryConv"
LINEAR = "BinaryLinear"
OPS = (CONV, LINEAR)
ACTIVATIONS = ("none", "relu", "hardtanh", "prelu")

#: Input positions (ONNX optional inputs are empty names).
X, W, SCALE, SHIFT, RESIDUAL, SLOPE = range(6)

#: Upper bounds that keep a small file from declaring huge work (SPEC §5).
MAX_KERNEL = 64
MAX_STRIDE = 64
MAX_ROW_BITS = 1 << 24


@dataclass(frozen=True)
class ConvAttributes:
    """A `BinaryConv` node's attributes with defaults applied; spatial rank 1 (conv1d) or 2."""

    in_channels: int
    kernel_shape: tuple[int, ...]
    strides: tuple[int, ...]
    pads: tuple[int, ...]  # begins then ends, as ONNX Conv: (top, left, bottom, right) in 2-d
    dilations: tuple[int, ...]
    group: int
    binarize_input: bool
    activation: str

    @property
    def row_bits(self) -> int:
        """K = (C / group) · Π kernel_shape: bits per output channel."""
        return self.in_channels // self.group * int(np.prod(self.kernel_shape))


@dataclass(frozen=True)
class LinearAttributes:
    """A `BinaryLinear` node's attributes with defaults applied."""

    in_features: int
    binarize_input: bool
    activation: str

    @property
    def row_bits(self) -> int:
        return self.in_features


def words_per_row(bits: int) -> int:
    """uint64 words that hold one row of ``bits`` bits."""
    return (bits + 63) // 64


def register_schemas() -> None:
    """Registers the domain's schemas with onnx (once per process)."""
    from onnx import TensorProto, defs, helper

    if defs.has(CONV, DOMAIN):
        return
    Param = defs.OpSchema.FormalParameter

    def Attr(name: str, default: object, doc: str, **kwargs: bool) -> defs.OpSchema.Attribute:
        if isinstance(default, defs.OpSchema.AttrType):
            return defs.OpSchema.Attribute(name, default, doc, **kwargs)
        return defs.OpSchema.Attribute(name, helper.make_attribute(name, default), doc)

    optional = defs.OpSchema.FormalParameterOption.Optional
    types = [("T", ["tensor(float)"], "activations"), ("U", ["tensor(uint64)"], "packed sign bits")]
    inputs = [
        Param("X", "T", "input activations"),
        Param("W", "U", "packed weights [O, ceil(K/64)]"),
        Param("scale", "T", "per-output-channel scale [O]"),
        Param("shift", "T", "per-output-channel shift [O]"),
        Param("R", "T", "residual added before the activation", param_option=optional),
        Param("slope", "T", "PReLU slope [O]", param_option=optional),
    ]
    common = [
        Attr("binarize_input", 1, "1: X is binarized by sign (W1A1); 0: float X (W1A32)"),
        Attr("activation", "none", "none, relu, hardtanh or prelu"),
    ]
    ints = defs.OpSchema.AttrType.INTS
    conv_attributes = [
        Attr("in_channels", defs.OpSchema.AttrType.INT, "C"),
        Attr("kernel_shape", ints, "[kh, kw] or [k]"),
        Attr("strides", ints, "default 1s", required=False),
        Attr("pads", ints, "zero padding, begins then ends; default 0s", required=False),
        Attr("dilations", ints, "default 1s", required=False),
        Attr("group", 1, "groups"),
    ]
    float_type = helper.make_tensor_type_proto(TensorProto.FLOAT, None)

    def output_is_float(context: Any) -> None:
        context.set_output_type(0, float_type)

    for name, attributes in ((CONV, conv_attributes), (LINEAR, [Attr("in_features", defs.OpSchema.AttrType.INT, "K")])):
        schema = defs.OpSchema(
            name, DOMAIN, DOMAIN_VERSION, f"binarize::{name}, see binarize/packed/SPEC.md",
            inputs=inputs, outputs=[Param("Y", "T", "output")], type_constraints=types,
            attributes=[*attributes, *common],
        )
        schema.set_type_and_shape_inference_function(output_is_float)
        defs.register_schema(schema)
