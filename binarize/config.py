"""Frozen, validated configuration dataclasses with ``to_dict``/``from_dict``.

Imports nothing else of binarize except ``errors``; names of estimators, scalings and
transforms are validated where they are used (`convert`), so this module stays a leaf.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from binarize.errors import ConfigError


@dataclass(frozen=True)
class LayerConfig:
    """How one binary layer is built.

    Attributes:
        weight_estimator: registry name of the estimator binarizing the latent weights.
        weight_estimator_args: its hyperparameters (e.g. ``{"o_end": 3.0}`` for reste).
        input_estimator: estimator for the layer input, or ``None`` for float activations
            (W1A32); ``clipped_ste`` (BinaryNet) by default. Defaults to the weight estimator's
            name when omitted in ``from_dict``.
        input_estimator_args: its hyperparameters.
        scaling: α rule: ``none``, ``channel_mean`` (XNOR/Bi-Real), ``tensor_mean`` (ReSTE),
            ``learned``, or any registered scaling; ``None`` takes the weight estimator's own
            default (its paper's choice, e.g. ``tensor_mean`` for reste), else ``channel_mean``.
        weight_transform: transform applied before binarizing (``libra_pb``), ``"none"`` for
            none, or ``None`` for the weight estimator's default (Libra-PB for irnet).
        input_threshold: binarize ``x − τ_c`` instead of ``x``, τ one trainable value per input
            channel (ReActNet's RSign; a `binarize.nn.InputThreshold` module in front of the
            layer, started at each channel's median on the example input). `convert` sets it
            on layers whose input is nearly one-signed (see
            `BinarizeConfig.min_informative_fraction`); set it here for every layer. Needs a
            traced graph (not the swap-by-name fallback) and binary inputs.
    """

    weight_estimator: str = "ste"
    weight_estimator_args: Mapping[str, Any] = field(default_factory=dict)
    # clipped_ste, not ste: the input's sign backward must ignore out-of-range inputs, or deep
    # nets whose binary layers read unnormalised sums (ResNet streams, MobileOne branches) gain
    # the sum's spread per layer (1e7 at resnet101's stem at initialisation)
    input_estimator: str | None = "clipped_ste"
    input_estimator_args: Mapping[str, Any] = field(default_factory=dict)
    scaling: str | None = None
    weight_transform: str | None = None
    input_threshold: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "weight_estimator_args", dict(self.weight_estimator_args))
        object.__setattr__(self, "input_estimator_args", dict(self.input_estimator_args))
        object.__setattr__(self, "input_threshold", _flag(self.input_threshold, "input_threshold"))
        if self.input_estimator == "none":
            object.__setattr__(self, "input_estimator", None)
        if self.input_estimator is None and self.input_estimator_args:
            raise ConfigError(
                "input estimator arguments given with float inputs (input_estimator=none)",
                "drop the input estimator arguments or choose an input estimator",
            )
        if self.input_estimator is None and self.input_threshold:
            raise ConfigError(
                "an input threshold given with float inputs (input_estimator=none)",
                "drop input_threshold or choose an input estimator",
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def named(
        cls,
        estimator: str | None = None,
        estimator_args: Mapping[str, Any] | None = None,
        *,
        input_estimator: str | None = None,
        input_estimator_args: Mapping[str, Any] | None = None,
        scaling: str | None = None,
        weight_transform: str | None = None,
    ) -> LayerConfig:
        """The layer configuration a front end's ``--estimator``/``--input-estimator`` name.

        A named ``estimator`` binarizes the weights and, unless ``input_estimator`` is given
        (``"none"``: float inputs), the inputs too, with the same arguments; with no
        ``estimator`` both keep the defaults (``ste`` weights, ``clipped_ste`` inputs).

        Example:
            >>> LayerConfig.named("reste", {"o_end": 3.0}).input_estimator_args
            {'o_end': 3.0}
            >>> LayerConfig.named().input_estimator, LayerConfig.named(input_estimator="none").input_estimator
            ('clipped_ste', None)
        """
        base = cls() if estimator is None else cls(weight_estimator=estimator, input_estimator=estimator)
        chosen_input = base.input_estimator if input_estimator is None else input_estimator
        if input_estimator_args is None:
            same = estimator is not None and chosen_input == estimator
            input_estimator_args = (estimator_args or {}) if same else {}
        return dataclasses.replace(
            base,
            weight_estimator_args=dict(estimator_args or {}),
            input_estimator=chosen_input,
            input_estimator_args={} if chosen_input in (None, "none") else input_estimator_args,
            scaling=scaling,
            weight_transform=weight_transform,
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LayerConfig:
        return cls(**_known_keys(cls, data, "layer config"))

    def with_overrides(self, overrides: Mapping[str, Any]) -> LayerConfig:
        """A copy with ``overrides`` applied (keys checked, one-line error otherwise)."""
        return dataclasses.replace(self, **_known_keys(LayerConfig, overrides, "layer rule"))


@dataclass(frozen=True)
class LayerRule:
    """Overrides the decision for the Conv/Linear layers that ``pattern`` matches.

    ``pattern`` is an exact fqn (``layer1.0.conv1``), a regular expression on the fqn
    (``re:layer4\\..*``), or a class name (``type:Linear``). ``layer`` is the configuration of
    the matched layers, or ``None`` to keep them float. Precedence: exact fqn > ``re:`` >
    ``type:`` > the built-in policy (first/last/depthwise/downsample) > the global layer config.
    """

    pattern: str
    layer: LayerConfig | None = None

    def __post_init__(self) -> None:
        if not self.pattern or self.pattern in ("re:", "type:"):
            raise ConfigError("empty rule pattern", "write e.g. 'layer1.0.conv1=float'")
        if self.pattern.startswith("re:"):
            try:
                re.compile(self.pattern[3:])
            except re.error as exc:
                raise ConfigError(
                    f"rule regex {self.pattern[3:]!r} does not compile ({exc})",
                    "fix the regular expression after 're:'",
                ) from None

    @property
    def kind(self) -> str:
        """``fqn``, ``re`` or ``type``."""
        if self.pattern.startswith("re:"):
            return "re"
        if self.pattern.startswith("type:"):
            return "type"
        return "fqn"

    def matches(self, fqn: str, module_type: type) -> bool:
        if self.kind == "re":
            return re.fullmatch(self.pattern[3:], fqn) is not None
        if self.kind == "type":
            name = self.pattern[5:]
            return any(k.__name__ == name or k.__qualname__ == name for k in module_type.__mro__)
        return fqn == self.pattern

    def to_dict(self) -> dict[str, Any]:
        return {"pattern": self.pattern, "layer": None if self.layer is None else self.layer.to_dict()}

    @classmethod
    def parse(cls, text: str, base: LayerConfig) -> LayerRule:
        """Parses ``PATTERN=float``, ``PATTERN=binary`` or ``PATTERN=key:value,...``.

        Keys are `LayerConfig` fields or the short forms ``estimator``, ``input``,
        ``transform``; values override ``base`` (the global layer config).
        """
        pattern, sep, value = text.rpartition("=")
        if not sep or not pattern:
            raise ConfigError(
                f"rule {text!r} has no '='",
                "write PATTERN=float, PATTERN=binary or PATTERN=estimator:reste,scaling:none",
            )
        value = value.strip()
        if value == "float":
            return cls(pattern, None)
        if value == "binary":
            return cls(pattern, base)
        overrides: dict[str, Any] = {}
        for item in value.split(","):
            key, colon, setting = item.partition(":")
            if not colon:
                raise ConfigError(
                    f"rule value {item!r} in {text!r} is not key:value",
                    "use float, binary, or key:value pairs like estimator:reste,scaling:none",
                )
            key = _RULE_KEYS.get(key.strip(), key.strip())
            overrides[key] = None if setting.strip() == "none" and key == "input_estimator" else setting.strip()
        return cls(pattern, base.with_overrides(overrides))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LayerRule:
        layer = data.get("layer")
        return cls(data["pattern"], None if layer is None else LayerConfig.from_dict(layer))


@dataclass(frozen=True)
class BinarizeConfig:
    """What `convert` binarizes and how.

    Attributes:
        layer: the configuration of every binarized layer unless a rule says otherwise.
        keep_first: keep the first weighted layers float: the first in execution order and, in
            a traced graph, every one reading the model's input through no other weighted
            layer (MobileOne's parallel stem convolutions).
        keep_last: keep the last weighted layer of the graph float.
        keep_depthwise: keep depthwise convolutions (groups == in_channels > 1) float.
        keep_downsample: keep 1x1 strided convolutions (residual shortcuts) float: with
            ``keep_first``/``keep_last`` this is the Bi-Real Net policy.
        min_fan_in: keep layers whose fan-in (C/g·kh·kw) is below this float: too short a
            binary dot product loses more than it saves.
        rules: per-layer overrides, see `LayerRule`.
        strict: raise instead of falling back to swapping modules by name when tracing fails.
        activation_policy: what to do where a binary layer's input comes from an activation
            whose output has one sign (ReLU, ReLU6, Hardsigmoid, Sigmoid), whose sign is then
            constant: ``bypass`` binarizes the activation's input while float consumers keep
            its output, ``hardtanh`` replaces the activation by a clip to [-1, 1], ``keep``
            changes nothing (and warns). See `ACTIVATION_POLICIES`.
        min_informative_fraction: the cut-off for nearly one-signed binary inputs. A binary
            layer whose input's less frequent sign is rarer than this on the example input
            (train-mode BatchNorm), but not absent, gets a learned input threshold
            (`LayerConfig.input_threshold`): a max-pool of centred values (ResNet's first
            block after the stem, Inception's pool branch) or a squeeze-excitation average is
            > 0 in 99.5 % or more of its elements. 0 switches this off. (An input of one sign
            only keeps float inputs instead: no threshold splits a ReLU output's zeros.)

    Examples:
        >>> from binarize import BinarizeConfig, LayerConfig, LayerRule
        >>> config = BinarizeConfig(layer=LayerConfig("reste"), rules=(LayerRule("re:head.*", None),))
        >>> config.layer.weight_estimator, config.keep_first
        ('reste', True)
        >>> BinarizeConfig.from_dict(config.to_dict()) == config
        True
    """

    layer: LayerConfig = field(default_factory=LayerConfig)
    keep_first: bool = True
    keep_last: bool = True
    keep_depthwise: bool = True
    keep_downsample: bool = False
    min_fan_in: int = 16
    rules: tuple[LayerRule, ...] = ()
    strict: bool = False
    activation_policy: str = "bypass"
    min_informative_fraction: float = 0.05

    def __post_init__(self) -> None:
        object.__setattr__(self, "rules", tuple(self.rules))
        if not 0.0 <= self.min_informative_fraction <= 0.5:
            raise ConfigError(
                f"min_informative_fraction={self.min_informative_fraction} is outside [0, 0.5]",
                "use a fraction of the less frequent sign, e.g. 0.05 (0 switches input thresholds off)",
            )
        if self.activation_policy not in ACTIVATION_POLICIES:
            raise ConfigError(
                f"unknown activation policy {self.activation_policy!r}",
                f"use one of {', '.join(ACTIVATION_POLICIES)}",
            )
        if self.min_fan_in < 0:
            raise ConfigError(f"min_fan_in={self.min_fan_in} is negative", "use 0 or more")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["layer"] = self.layer.to_dict()
        data["rules"] = [rule.to_dict() for rule in self.rules]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BinarizeConfig:
        values = _known_keys(cls, data, "binarize config")
        if "layer" in values:
            values["layer"] = LayerConfig.from_dict(values["layer"])
        if "rules" in values:
            values["rules"] = tuple(LayerRule.from_dict(r) for r in values["rules"])
        return cls(**values)


#: Modes of `BinarizeConfig.activation_policy` (the first is the default, chosen by measurement:
#: see the README's "Activations before binary layers").
ACTIVATION_POLICIES = ("bypass", "hardtanh", "keep")

_RULE_KEYS = {
    "estimator": "weight_estimator", "input": "input_estimator", "transform": "weight_transform",
    "threshold": "input_threshold",
}  # fmt: skip


def _flag(value: Any, name: str) -> bool:
    """A bool, or its spelling in a rule (``threshold:true``)."""
    spelled = {"true": True, "false": False, "on": True, "off": False, "1": True, "0": False}
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in spelled:
        return spelled[value.strip().lower()]
    raise ConfigError(f"{name}={value!r} is not true or false", f"write {name}=true or {name}=false")


def _known_keys(cls: type, data: Mapping[str, Any], what: str) -> dict[str, Any]:
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = [key for key in data if key not in valid]
    if unknown:
        raise ConfigError(f"unknown {what} key {unknown[0]!r}", f"valid keys: {', '.join(valid)}")
    return dict(data)
