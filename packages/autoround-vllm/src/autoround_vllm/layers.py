"""The scheme of a host-engine layer (vLLM / SGLang), fused layers included.

Engines fuse some checkpoint layers into one weight: ``q_proj``/``k_proj``/``v_proj`` into
``qkv_proj`` and ``gate_proj``/``up_proj`` into ``gate_up_proj``. The checkpoint stores the parts
by their own names, so the fused layer's scheme is its parts' scheme, which must be one: a mix
is refused at load time naming every part and its scheme (autoround's pre-flight refuses such a
plan before quantizing; a hand-edited or foreign checkpoint can still hold one).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from autoround.errors import UnsupportedLayerError
from autoround.formats import CheckpointSpec
from autoround.schemes import Scheme

#: Fused layer name -> its parts, for engines that do not tell us (vLLM passes its own mapping).
DEFAULT_PACKED_MODULES: dict[str, list[str]] = {
    "qkv_proj": ["q_proj", "k_proj", "v_proj"],
    "gate_up_proj": ["gate_proj", "up_proj"],
}


class FusedSchemeError(UnsupportedLayerError):
    """The parts of a layer the engine fuses were stored with different schemes."""


def describe(scheme: Scheme | None) -> str:
    """Short human form of a scheme: ``W4G128 sym``, or ``16-bit`` for an unquantized layer."""
    if scheme is None:
        return "16-bit"
    return f"W{scheme.bits}G{scheme.group_size} {'sym' if scheme.sym else 'asym'} {scheme.data_type}"


def part_names(prefix: str, packed_modules: Mapping[str, Sequence[str]] | None = None) -> list[str]:
    """Checkpoint layer names behind an engine layer ``prefix`` (itself, unless it is fused)."""
    mapping = packed_modules or DEFAULT_PACKED_MODULES
    parent, _, leaf = prefix.rpartition(".")
    parts = mapping.get(leaf)
    if not parts:
        return [prefix]
    return [f"{parent}.{p}" if parent else p for p in parts]


def _scheme_of(spec: CheckpointSpec, name: str) -> Scheme | None:
    scheme = spec.scheme_for(name)
    if scheme is None and not name.startswith("model."):
        # engines may drop the "model." prefix some checkpoints keep (and the other way round)
        scheme = spec.scheme_for(f"model.{name}")
    return scheme


def scheme_for_layer(
    spec: CheckpointSpec, prefix: str, packed_modules: Mapping[str, Sequence[str]] | None = None
) -> Scheme | None:
    """The one scheme of the engine layer ``prefix`` (None: stored in 16 bits).

    Raises:
        FusedSchemeError: the parts of a fused layer have different schemes (all named).
    """
    parts = part_names(prefix, packed_modules)
    schemes = {name: _scheme_of(spec, name) for name in parts}
    distinct = set(schemes.values())
    if len(distinct) > 1:
        listing = ", ".join(f"{name} ({describe(s)})" for name, s in schemes.items())
        raise FusedSchemeError(
            f"{prefix} is one fused weight in the engine, but the checkpoint stores its parts with "
            f"different schemes: {listing}. Quantize the parts of a fused layer with one scheme "
            "(autoround's pre-flight does this) or serve the model with transformers."
        )
    return distinct.pop()
