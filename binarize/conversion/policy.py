"""Which Conv/Linear layers become binary, with the reason for every decision."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import torch.fx
from torch import nn

from binarize.config import BinarizeConfig, LayerConfig, LayerRule
from binarize.nn.layers import binary_counterpart

#: Layer types reported by conversion (the ones users think of as "weighted").
WEIGHTED_TYPES = (nn.modules.conv._ConvNd, nn.Linear)

_RULE_ORDER = {"fqn": 0, "re": 1, "type": 2}


@dataclass(frozen=True)
class Decision:
    """The fate of one weighted layer: binarized with ``layer`` config, or kept float."""

    fqn: str
    layer: LayerConfig | None
    reason: str

    @property
    def binarize(self) -> bool:
        return self.layer is not None


def fan_in(module: nn.Module) -> int:
    """Length of one output's dot product: C/g·kh·kw for convs, in_features for Linear."""
    return int(module.weight[0].numel())


def is_depthwise(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1 and module.groups == module.in_channels


def is_downsample(module: nn.Module) -> bool:
    """A 1x1 strided convolution: the shortcut of a residual block (Bi-Real Net keeps it float)."""
    return (
        isinstance(module, nn.modules.conv._ConvNd)
        and all(k == 1 for k in module.kernel_size)
        and any(s > 1 for s in module.stride)
    )


def input_readers(gm: torch.fx.GraphModule) -> set[str]:
    """The weighted layers reading the graph's input directly: through no other weighted layer
    (nor an opaque leaf holding one), e.g. both of MobileOne's parallel stem convolutions."""
    weighted = {name for name, m in gm.named_modules() if isinstance(m, WEIGHTED_TYPES)}
    holding = {name for name, m in gm.named_modules() if any(isinstance(s, WEIGHTED_TYPES) for s in m.modules())}
    raw: set[torch.fx.Node] = set()  # nodes computed from the input without a weighted layer
    readers = set()
    for node in gm.graph.nodes:
        reads = node.op == "placeholder" or (
            not _metadata(node) and any(arg in raw for arg in node.all_input_nodes)
        )
        if node.op == "call_module" and str(node.target) in holding:
            if reads and str(node.target) in weighted:
                readers.add(str(node.target))
        elif reads:
            raw.add(node)
    return readers


def _metadata(node: torch.fx.Node) -> bool:
    """Whether ``node`` reads only a tensor's shape, type or device (a ViT's class token is
    expanded to the input's batch size: it does not read the input's values)."""
    if node.op == "call_function" and node.target in (getattr, len, torch.numel):
        return True
    return node.op == "call_method" and node.target in ("size", "dim", "numel", "type", "get_device")


def matching_rule(rules: tuple[LayerRule, ...], fqn: str, module: nn.Module) -> LayerRule | None:
    """The highest-precedence rule matching ``fqn`` (exact > re: > type:; first listed wins)."""
    matches = [rule for rule in rules if rule.matches(fqn, type(module))]
    return min(matches, key=lambda rule: _RULE_ORDER[rule.kind], default=None)


def decide(
    config: BinarizeConfig,
    fqn: str,
    module: nn.Module,
    *,
    first: Collection[str],
    last: str | None,
    called: bool,
) -> Decision:
    """The decision for one weighted layer; ``first`` are the layers reading the model's input
    (`input_readers`, and the first in execution order), ``last`` the last one."""
    if not called:
        return Decision(fqn, None, "kept: not called as a module (its weight is used inside its parent)")
    if binary_counterpart(module) is None:
        return Decision(fqn, None, f"kept: no binary counterpart for {type(module).__name__}")
    rule = matching_rule(config.rules, fqn, module)
    if rule is not None:
        action = "float" if rule.layer is None else "binarized"
        return Decision(fqn, rule.layer, f"{action}: rule {rule.pattern!r}")
    builtin = [
        (config.keep_first and fqn in first, "kept: first layer"),
        (config.keep_last and fqn == last, "kept: last layer"),
        (config.keep_depthwise and is_depthwise(module), "kept: depthwise"),
        (config.keep_downsample and is_downsample(module), "kept: 1x1 downsample"),
        (fan_in(module) < config.min_fan_in, f"kept: fan-in {fan_in(module)} < min_fan_in {config.min_fan_in}"),
    ]
    for applies, reason in builtin:
        if applies:
            return Decision(fqn, None, reason)
    return Decision(fqn, config.layer, "binarized")
