"""``AutoScheme``: what a mixed-precision search is asked for, as small validated data.

Its fields and defaults are Intel auto-round 0.16.1's (``auto_round.auto_scheme.AutoScheme``):
``AutoScheme(avg_bits=3.0, options="W2A16G64,W4A16,W8A16")`` asks for a per-layer plan over those
schemes averaging at most 3.0 bits per weight, counted as Intel counts them
(:mod:`autoround.auto_scheme.bits`). What can be checked without a model is checked on creation;
the range ``avg_bits`` may take depends on the model's layer shapes and ``layer_config`` pins and
is checked against the model before the search starts
(:func:`autoround.auto_scheme.search_space`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from autoround.errors import SchemeError
from autoround.formats.preflight import check_schemes
from autoround.schemes import PRESETS, Scheme, SchemeLike, parse_scheme

logger = logging.getLogger(__name__)

#: The measures built (docs/auto_scheme.md): ``"default"``, each layer's Fisher-weighted output
#: error in closed form; ``"block"``, each unit's Fisher-weighted decoder-block output error, the
#: block re-run per option (slower). Intel's ``"default"`` / ``"DeltaLoss"`` name its own measure.
METHODS = ("default", "block")
#: Intel's defaults for the search's calibration, used when a field is None.
DEFAULT_NSAMPLES = 16
DEFAULT_SEQLEN = 256
MOE_SEQLEN = 128
DEFAULT_BATCH_SIZE = 8
#: Intel's fields that tune its own memory placement; accepted, no effect here (the search always
#: holds one decoder block and two activation buffers).
NO_EFFECT_FIELDS = {
    "device_map": None,
    "enable_torch_compile": None,
    "low_gpu_mem_usage": True,
    "low_cpu_mem_usage": True,
}


@dataclass(frozen=True)
class AutoScheme:
    """A mixed-precision plan to search: each layer (or group of layers that must share one)
    gets one of ``options`` so that the model's average bits per weight is at most ``avg_bits``
    and the measured quantization error is least (docs/auto_scheme.md).

    Attributes:
        avg_bits: the budget, bits per weight over the layers the plan quantizes (pinned layers
            and layers kept in 16 bits for their shape count too; lm_head only when quantized).
        options: candidate schemes, a comma- or space-separated string of preset names
            (``"W2A16G64,W4A16,W8A16"``, any case) or a sequence of preset names, :class:`Scheme`
            objects or field mappings. Duplicates (``GGUF:Q4_K_S`` and ``GGUF:Q4_K_M`` are one
            scheme) are dropped; on creation ``options`` becomes the tuple of their names.
        shared_layers: groups of layer names or patterns that must share one scheme (Intel's
            rule: a group of exact names is one group; otherwise, in each decoder block, the
            layers any of its patterns match form one group). vLLM's fused layers (q/k/v,
            gate/up, the experts of one MoE block) are always grouped.
        ignore_scale_zp_bits: count weight bits only, not the scales' and zero points'.
        nsamples, seqlen, batch_size, dataset: the search's calibration (None: 16 samples of 256
            tokens, 128 for MoE models, in batches of 8, from the run's dataset).
        schemes: the options as schemes (set on creation).
    """

    avg_bits: float
    options: str | Sequence[SchemeLike]
    shared_layers: Sequence[Sequence[str]] | None = None
    method: str = "default"
    ignore_scale_zp_bits: bool = False
    batch_size: int | None = None
    nsamples: int | None = None
    seqlen: int | None = None
    dataset: str | None = None
    device_map: Any = None
    enable_torch_compile: bool | None = None
    low_gpu_mem_usage: bool = True
    low_cpu_mem_usage: bool = True
    schemes: tuple[Scheme, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        _check_avg_bits(self.avg_bits)
        names, schemes = parse_options(self.options)
        object.__setattr__(self, "options", names)
        object.__setattr__(self, "schemes", schemes)
        object.__setattr__(self, "shared_layers", _shared_layers(self.shared_layers))
        if self.method not in METHODS:
            raise SchemeError(f"AutoScheme method={self.method!r} is not built; allowed: {list(METHODS)}")
        if not isinstance(self.ignore_scale_zp_bits, bool):
            raise SchemeError(
                f"ignore_scale_zp_bits must be True or False, got {self.ignore_scale_zp_bits!r}"
            )
        for name in ("batch_size", "nsamples", "seqlen"):
            _check_positive(name, getattr(self, name))
        if self.dataset is not None and not isinstance(self.dataset, str):
            raise SchemeError(f"AutoScheme dataset must be a dataset spec string, got {self.dataset!r}")
        changed = sorted(k for k, default in NO_EFFECT_FIELDS.items() if getattr(self, k) != default)
        if changed:
            logger.warning("AutoScheme: Intel's %s have no effect here (the search holds one block)", changed)

    @property
    def names(self) -> tuple[str, ...]:
        """The options' names, in order (what ``options`` became on creation)."""
        return cast(tuple[str, ...], self.options)

    @property
    def search_batch_size(self) -> int:
        """Samples per block forward of the search."""
        return self.batch_size or DEFAULT_BATCH_SIZE

    def calibration_shape(self, moe: bool) -> tuple[int, int]:
        """(nsamples, seqlen) of the search's calibration; Intel's shorter default for MoE models."""
        return self.nsamples or DEFAULT_NSAMPLES, self.seqlen or (MOE_SEQLEN if moe else DEFAULT_SEQLEN)


def check_options(auto: AutoScheme, formats: str | Sequence[str]) -> None:
    """Refuse, before any work, an option some of ``formats`` cannot store (naming the option and
    the formats that can)."""
    for name, option in zip(auto.names, auto.schemes, strict=True):
        try:
            if option.is_quantized:
                check_schemes(option, None, formats)
        except SchemeError as exc:
            raise SchemeError(f"AutoScheme option {name}: {exc}") from exc


def _check_avg_bits(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SchemeError(
            f"AutoScheme avg_bits must be one number of bits per weight, got {value!r} "
            f"(a list of targets, Intel's multi-target search, is not built)"
        )
    if not 0 < value <= 16:
        raise SchemeError(
            f"AutoScheme avg_bits={value!r} is outside (0, 16]; the range a model allows lies between "
            f"its average at the cheapest and at the dearest option (checked against the model)"
        )


def _check_positive(name: str, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise SchemeError(f"AutoScheme {name} must be a positive integer or None, got {value!r}")


def _split(options: str) -> list[str]:
    return [part for part in options.replace(",", " ").split() if part]


def parse_options(options: str | Sequence[SchemeLike]) -> tuple[tuple[str, ...], tuple[Scheme, ...]]:
    """The options' names and schemes, duplicates dropped (the first name kept).

    Raises:
        SchemeError: no option, an unknown preset name (listing the presets), an invalid scheme,
            or only 16-bit options.
    """
    items: list[SchemeLike] = list(_split(options)) if isinstance(options, str) else list(options or ())
    if not items:
        raise SchemeError(
            f"AutoScheme options is empty; give the candidate schemes, e.g. 'W2A16G64,W4A16,W8A16' "
            f"(presets: {sorted(PRESETS)})"
        )
    names: list[str] = []
    schemes: list[Scheme] = []
    for item in items:
        scheme = _option_scheme(item)
        if scheme in schemes:
            logger.info(
                "AutoScheme: option %s dropped, the same scheme as %s", item, names[schemes.index(scheme)]
            )
            continue
        names.append(option_name(item, scheme))
        schemes.append(scheme)
    if not any(s.is_quantized for s in schemes):
        raise SchemeError(f"AutoScheme options {names} keep every layer in 16 bits: add a quantized scheme")
    return tuple(names), tuple(schemes)


def _option_scheme(item: SchemeLike) -> Scheme:
    if isinstance(item, str) and item.strip().upper() not in PRESETS:
        raise SchemeError(
            f"unknown AutoScheme option {item!r}; allowed: the presets {sorted(PRESETS)}, Scheme "
            f"objects or mappings of scheme fields"
        )
    try:
        return parse_scheme(item)
    except SchemeError as exc:
        raise SchemeError(f"AutoScheme option {item!r}: {exc}") from exc


def option_name(item: SchemeLike, scheme: Scheme) -> str:
    """A preset name for the option (as given when it is one), else a description of its fields."""
    if isinstance(item, str):
        return item.strip().upper()
    for name, preset in PRESETS.items():
        if preset == scheme:
            return name
    return describe(scheme)


def describe(scheme: Scheme) -> str:
    """``int W3 G32 asym``: a scheme that has no preset name, for logs and messages."""
    return f"{scheme.data_type} W{scheme.bits} G{scheme.group_size} {'sym' if scheme.sym else 'asym'}"


def _shared_layers(groups: Sequence[Sequence[str]] | None) -> tuple[tuple[str, ...], ...] | None:
    if groups is None:
        return None
    if isinstance(groups, str | Mapping) or not isinstance(groups, Sequence):
        raise SchemeError(f"AutoScheme shared_layers must be a list of groups of layer names, got {groups!r}")
    checked = []
    for group in groups:
        if isinstance(group, str) or not isinstance(group, Sequence) or not group:
            raise SchemeError(
                f"AutoScheme shared_layers: each group must be a non-empty list of layer names or "
                f"patterns, got {group!r} (e.g. [['q_proj', 'k_proj'], ['mlp.down_proj']])"
            )
        if not all(isinstance(name, str) and name for name in group):
            raise SchemeError(
                f"AutoScheme shared_layers: group {list(group)!r} holds a non-string or empty name"
            )
        checked.append(tuple(group))
    return tuple(checked)
