"""What a list of formats asks of a run: the scheme it quantizes with, and the entry writing each.

One run quantizes the model once, with one scheme, and every format of the list writes that result
(docs/formats.md, "Several formats in one call"). For GGUF, whose recipes plan every layer
themselves, the rule is:

* **One GGUF recipe per list.** Two (``gguf:q4_k_m,gguf:q2_k``) are refused: each plans the layers
  its own way.
* **A GGUF recipe alone** quantizes with the recipe's scheme: ``gguf:q4_k_m`` picks ``GGUF:Q4_K_M``
  when no scheme is given (logged); a given scheme must be a GGUF scheme of the recipe's default
  block type (``GGUF:Q4_K_M``, ``GGUF:Q4_K_S``, ``GGUF:Q4_K`` for ``gguf:q4_k_m``), else it is
  refused. Intel's replaces any scheme silently.
* **A GGUF recipe beside integer formats** (``auto_round,auto_gptq,gguf:q4_k_m``; Intel's refuses
  the list): those formats store integer codes with integer zero points, which cannot hold
  llama.cpp's blocks (a K-quant's sub-block minimum is a float), so the run quantizes with the
  integer scheme (W4A16 when none is given; a GGUF scheme is refused) and they store exactly what
  they would store alone. The GGUF file is written from the same quantized weights: each quantized
  layer quantized again, at write time, to the type the recipe gives it (llama.cpp's round-to-nearest,
  what ``llama-quantize`` does to a dequantized checkpoint), layers left in 16 bits as f16
  (:data:`autoround.formats.gguf.CONVERTERS`; a warning says so).

:func:`run_scheme` chooses the scheme, :func:`entries` the entry writing each format (pre-flight
checks and saving ask it), :func:`adapt_plan` applies the formats' own per-layer choices.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from autoround.dtypes.gguf_blocks import block_type
from autoround.errors import FormatError, SchemeError
from autoround.formats import gguf
from autoround.formats.base import Format
from autoround.formats.gguf_recipes import recipe_named
from autoround.formats.registry import FORMATS, check_formats
from autoround.intel_defaults import INTEL
from autoround.layer_plan import LayerPlan
from autoround.schemes import Scheme, SchemeLike, parse_scheme

logger = logging.getLogger(__name__)


def _split(formats: str | Sequence[str]) -> tuple[tuple[str, ...], str | None]:
    """The format keys and the one GGUF recipe among them (None: none)."""
    names = check_formats(formats)
    found = [name for name in names if FORMATS[name].quant_method == gguf.QUANT_METHOD]
    if len(found) > 1:
        raise FormatError(
            f"format list {','.join(names)} names {len(found)} GGUF recipes ({', '.join(found)}); one run "
            f"writes one GGUF recipe (each plans the layers its own way): keep one, run again for another"
        )
    return names, (found[0] if found else None)


def entries(formats: str | Sequence[str]) -> dict[str, Format]:
    """The entry that writes each format of the list: the registry's, except a GGUF recipe beside
    other formats, written from their integer weights by its converter.

    Raises:
        FormatError: an unknown or read-only format, or several GGUF recipes.
    """
    names, recipe = _split(formats)
    converts = recipe is not None and len(names) > 1
    return {name: gguf.CONVERTERS[name] if converts and name == recipe else FORMATS[name] for name in names}


def _own_scheme(recipe: str) -> str:
    """The scheme a GGUF recipe quantizes with: ``gguf:q4_k_m`` -> ``GGUF:Q4_K_M``."""
    return recipe.upper()


def default_scheme_name(formats: str | Sequence[str]) -> str:
    """The scheme a run of ``formats`` quantizes with when none is given: a GGUF recipe's own when
    it is the only format, else Intel's default (``W4A16``)."""
    names, recipe = _split(formats)
    return _own_scheme(recipe) if recipe is not None and len(names) == 1 else INTEL.scheme


def _describe(scheme: Scheme) -> str:
    return f"{scheme.data_type} {scheme.bits}-bit group {scheme.group_size} {'sym' if scheme.sym else 'asym'}"


def _label(scheme: SchemeLike | None, overrides: Mapping[str, Any]) -> str:
    """The scheme as the caller gave it, for messages: ``'W4A16' with bits=8``."""
    if isinstance(scheme, str):
        text = repr(scheme)
    elif scheme is not None:
        text = _describe(parse_scheme(scheme))
    else:
        text = f"{INTEL.scheme!r} (the default)"
    given = ", ".join(f"{key}={value}" for key, value in overrides.items() if value is not None)
    return f"{text} with {given}" if given else text


def run_scheme(scheme: SchemeLike | None, formats: str | Sequence[str], **overrides: Any) -> Scheme:
    """The scheme a run writing ``formats`` quantizes with: ``scheme`` (None: not given) with the
    field ``overrides`` that are not None (``bits=8``), as the module's rule says.

    Raises:
        FormatError: an unknown format, or several GGUF recipes.
        SchemeError: a scheme the list cannot take (naming it and what is allowed).
    """
    names, recipe = _split(formats)
    given = scheme is not None or any(value is not None for value in overrides.values())
    if recipe is not None and len(names) == 1 and not given:
        own = _own_scheme(recipe)
        logger.info("format %s alone: quantizing with its scheme %s (no scheme given)", recipe, own)
        return parse_scheme(own)
    chosen = parse_scheme(scheme if scheme is not None else INTEL.scheme, **overrides)
    if recipe is None:
        return chosen
    entry = block_type(chosen.data_type, chosen.bits, chosen.sym, chosen.group_size)
    if len(names) > 1 and entry is not None:
        others = ", ".join(name for name in names if name != recipe)
        raise SchemeError(
            f"scheme {_label(scheme, overrides)} is a GGUF scheme, which the formats beside {recipe} "
            f"({others}) cannot store (integer codes only); beside them {recipe} is written from the "
            f"integer-quantized weights, each layer quantized again to the recipe's types: pass an "
            f"integer scheme (W4A16 when none is given; `autoround list scheme`), or write {recipe} "
            f"alone to quantize with its own types"
        )
    default = recipe_named(recipe.partition(":")[2]).default
    if len(names) == 1 and (entry is None or entry.name != default):
        own = _own_scheme(recipe)
        raise SchemeError(
            f"scheme {_label(scheme, overrides)} conflicts with format {recipe}, which quantizes with "
            f"llama.cpp's {default} blocks: leave the scheme out ({own} is used) or pass {own}; "
            f"layer_config with GGUF schemes (e.g. GGUF:Q8_0) gives single layers other types"
        )
    return chosen


def adapt_plan(model: nn.Module, plan: LayerPlan, formats: str | Sequence[str]) -> LayerPlan:
    """``plan`` with the per-layer choices of the entries writing ``formats`` (a GGUF recipe's
    block types when it is the only format); says when a GGUF file will be converted."""
    chosen = entries(formats)
    for entry in chosen.values():
        plan = entry.adapt(model, plan)
    converted = [name for name, entry in chosen.items() if entry is not FORMATS[name]]
    for name in converted:
        others = ", ".join(n for n in chosen if n != name)
        logger.warning(
            "%s beside %s: the GGUF file is written from the same integer-quantized weights, each "
            "quantized layer quantized again to the type llama.cpp's recipe gives it (round-to-nearest); "
            "for a file quantized with the recipe's own types, write %s alone",
            name,
            others,
            name,
        )
    return plan
