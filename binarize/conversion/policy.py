"""Which Conv/Linear layers become binary, with the reason for every decision."""

from __future__ import annotations

from dataclasses import dataclass

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


def matching_rule(rules: tuple[LayerRule, ...], fqn: str, module: nn.Module) -> LayerRule | None:
    """The highest-precedence rule matching ``fqn`` (exact > re: > type:; first listed wins)."""
    matches = [rule for rule in rules if rule.matches(fqn, type(module))]
    return min(matches, key=lambda rule: _RULE_ORDER[rule.kind], default=None)


def decide(
    config: BinarizeConfig,
    fqn: str,
    module: nn.Module,
    *,
    first: str | None,
    last: str | None,
    called: bool,
) -> Decision:
    """The decision for one weighted layer; ``first``/``last`` are the graph's end layers."""
    if not called:
        return Decision(fqn, None, "kept: not called as a module (its weight is used inside its parent)")
    if binary_counterpart(module) is None:
        return Decision(fqn, None, f"kept: no binary counterpart for {type(module).__name__}")
    rule = matching_rule(config.rules, fqn, module)
    if rule is not None:
        action = "float" if rule.layer is None else "binarized"
        return Decision(fqn, rule.layer, f"{action}: rule {rule.pattern!r}")
    builtin = [
        (config.keep_first and fqn == first, "kept: first layer"),
        (config.keep_last and fqn == last, "kept: last layer"),
        (config.keep_depthwise and is_depthwise(module), "kept: depthwise"),
        (config.keep_downsample and is_downsample(module), "kept: 1x1 downsample"),
        (fan_in(module) < config.min_fan_in, f"kept: fan-in {fan_in(module)} < min_fan_in {config.min_fan_in}"),
    ]
    for applies, reason in builtin:
        if applies:
            return Decision(fqn, None, reason)
    return Decision(fqn, config.layer, "binarized")
