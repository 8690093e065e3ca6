"""Activation quantization: the quantize-dequantize of a layer's input, and which activation
schemes are built.

The built kinds are the registry :data:`~autoround.dtypes.act_kinds.ACT_KINDS` (kind name ->
entry), all symmetric; dynamic ones (scales computed from the input on every forward):

* ``int8``: per token (``act_group_size=-1``: one scale per row of the input seen as (tokens,
  features), as Intel reshapes it), Intel's ``rtn_int_sym`` (what its ``WrapperWALayer`` runs
  after a round-to-nearest run): ``scale = ±absmax / 128`` rounded to float16 (Intel's default
  ``scale_dtype``), its sign that of the value of largest magnitude negated, so that value maps
  to code -128 (the full signed range); magnitude at least 1e-5;
  ``q = clamp(round(x / scale), -128, 127)``; ``x̂ = q * scale`` in the input's dtype (float32
  arithmetic for float32 and bfloat16 inputs, the scale being float16; float16 inputs compute in
  float16). With INT8 symmetric per-channel weights (``INT8_W8A8``).
* ``int4``: the same at 4 bits (``±absmax / 8``, codes -8..7), with INT4 symmetric per-channel
  weights (Intel's ``INT4`` preset, W4A4).
* ``fp8``: per token, Intel's ``fp8_sym``: ``scale = max(absmax / 448, 1 / (448 * 512))`` in
  float32 (the floor copied from vLLM), ``x̂ = e4m3(clamp(x / scale, -448, 448)) * scale`` in the
  input's dtype (a float16 input goes through bfloat16 first, as Intel's does). With FP8
  per-channel weights (``FP8_STATIC`` with ``act_dynamic=True, act_group_size=-1``).
* ``fp8_group``: the same per group of ``act_group_size`` features (``FP8_BLOCK``'s activations).
* MX (``mxfp4``, ``mxfp6``, ``mxfp8``, their ``_rceil`` forms, ``mxint4``, ``mxint8``): per block
  of 32 features, the MX weight types' own round-to-nearest (:mod:`autoround.dtypes.mx_fp`),
  as Intel's ``quant_mx`` / ``quant_mx_rceil`` quantize activations (the ``MXFP4``, ``MXFP8``,
  ``MXFP4_RCEIL``, ``MXFP8_RCEIL``, ``MXINT4`` presets).

Calibrated ones, whose range is each layer's largest ``|input|`` on the calibration set (Intel's
``act_max``, :attr:`~autoround.layer_quant.LayerQuant.input_absmax`;
:mod:`autoround.algorithms.act_calibration`), selected by ``act_dynamic=False`` or a type named
static (Intel's ``check_need_act_calibration``):

* ``fp8_static``: FP8 E4M3 with one scale per tensor (``act_group_size=0``), Intel's ``fp8_sym``
  with ``tensor_max``: ``scale = max(absmax / 448, 1 / (448 * 512))`` in float32; SignRound tunes
  a factor in [0, 1] on the range (``act_max_scale``). With FP8 per-channel weights
  (``FP8_STATIC``).
* ``nvfp4``: ``act_data_type="nv_fp4_with_static_gs"``, E2M1 elements with an E4M3 scale per 16
  features computed per forward, relative to the global scale ``448 * 6 / absmax`` (Intel's
  ``nv_fp4_with_static_gs``). With NVFP4 weights (``NVFP4``, W4A4).

The grouped kinds take any weights the weight side builds; the per-token ones go with
per-channel weights of their type and width. All are bit for bit Intel 0.16.1's
(tests/fixtures/intel/act_qdq.safetensors, act_qdq_mx.safetensors, act_static.safetensors); the
formulas are :mod:`autoround.dtypes.act_formulas`. What a served model computes differs slightly
(docs/float_types_serving.md): vLLM's CPU int8 kernel uses ``scale = absmax / 127`` in float32
(compressed-tensors' own formula: ``absmax / 127.5``), its FP8 one multiplies by the scale's
reciprocal instead of dividing, and compressed-tensors rounds an MX block's exponent its own way.
Not built, refused naming the field: asymmetric activations, static ones of other types or
groupings, NVFP4 activations whose global scale is each input's own (``act_data_type="nv_fp"``),
and the fields no entry takes.
"""

from __future__ import annotations

import torch

from autoround.dtypes.act_formulas import (
    E4M3_MAX,
    FP8_SCALE_FLOOR,
    INT_SCALE_DTYPE,
    INT_SCALE_FLOOR,
    qdq_fp8_per_token,
    qdq_groups,
    qdq_int_per_token,
)
from autoround.dtypes.act_kinds import (
    ACT_KINDS,
    ActKindEntry,
    Scheme,
    built_words,
    kinds_of,
    needs_range,
)

#: An activation kind: a key of :data:`~autoround.dtypes.act_kinds.ACT_KINDS`.
ActKind = str

#: What is built, in words (error messages): derived from the registry.
BUILT_WORDS = built_words()

#: Activation types with NVFP4's two-level scales (a per-tensor global scale over E4M3 block ones).
GLOBAL_SCALE_TYPES = ("nv_fp", "nv_fp4_with_static_gs")
#: Of those, the one whose global scale would be each input's own (Intel's ``nv_fp4``): not built.
DYNAMIC_GLOBAL_SCALE_TYPES = ("nv_fp",)

__all__ = [
    "ACT_KINDS",
    "BUILT_WORDS",
    "E4M3_MAX",
    "FP8_SCALE_FLOOR",
    "INT_SCALE_DTYPE",
    "INT_SCALE_FLOOR",
    "ActKind",
    "Scheme",
    "activation_entry",
    "activation_fields",
    "activation_kind",
    "activation_problem",
    "calibrated_entry",
    "qdq_activation",
    "qdq_fp8_per_token",
    "qdq_groups",
    "qdq_int_per_token",
]


def qdq_activation(
    x: torch.Tensor,
    kind: ActKind,
    group_size: int | None = None,
    absmax: torch.Tensor | None = None,
    range_factor: torch.Tensor | float = 1.0,
) -> torch.Tensor:
    """The quantize-dequantized input of a layer whose activations are of ``kind``;
    ``group_size`` (``act_group_size``) for the kinds whose grouping is the scheme's choice
    (``fp8_group``), None for the others (their own: per token, 32, per tensor, 16).
    ``absmax``: a calibrated kind's range (the layer's ``input_absmax``), times
    ``range_factor`` where the kind tunes one.

    Raises:
        KeyError: ``kind`` is not built.
        ValueError: a ``fp8_group`` kind without its group size; a calibrated kind without its
            range (or a dynamic one given one).
    """
    entry = ACT_KINDS[kind]
    if entry.calibrated is not None:
        if absmax is None:
            raise ValueError(f"activation kind {kind!r} quantizes with a calibrated range: pass absmax=")
        return entry.calibrated(x, absmax, range_factor)[0]
    if absmax is not None:
        raise ValueError(f"activation kind {kind!r} is dynamic: it takes no calibrated range")
    group = entry.default_group if group_size is None else group_size
    if group is None:
        raise ValueError(f"activation kind {kind!r} needs its act_group_size (a positive size)")
    return entry.qdq(x, group)[0]


def activation_fields(scheme: Scheme) -> tuple[str, int, bool, bool]:
    """``(act_data_type, act_group_size, act_sym, act_dynamic)`` with Intel's fallbacks for unset
    fields: the weights' data type, group size and symmetry; dynamic."""
    data_type = scheme.act_data_type if scheme.act_data_type is not None else scheme.data_type
    group = scheme.act_group_size if scheme.act_group_size is not None else scheme.group_size
    sym = scheme.act_sym if scheme.act_sym is not None else scheme.sym
    dynamic = scheme.act_dynamic if scheme.act_dynamic is not None else True
    return data_type, group, sym, dynamic


def _group_name(group: int) -> str:
    return {-1: "per token", 0: "per tensor"}.get(group, "per group")


def _entry_or_problem(scheme: Scheme) -> ActKindEntry | str:
    """The entry of an activation-quantizing scheme, or what is not built (naming the field)."""
    data_type, group, sym, dynamic = activation_fields(scheme)
    if data_type in DYNAMIC_GLOBAL_SCALE_TYPES:
        return (
            f"act_data_type={data_type!r} (NVFP4 activations with a global scale from each input) "
            f"is not built; act_data_type='nv_fp4_with_static_gs' (its global scale calibrated)"
        )
    if not sym:
        return "act_sym=False (asymmetric activations) is not built; act_sym=True"
    calibrated = needs_range(data_type, dynamic)
    typed = kinds_of(data_type, calibrated)
    if not typed and calibrated and kinds_of(data_type):
        return (
            f"static activations (act_dynamic=False) of act_data_type={data_type!r} have no "
            f"calibrated kind; calibrated: {_built_types(True)}; or use act_dynamic=True"
        )
    if not typed:
        return f"act_data_type={data_type!r} is not built; {_built_types()}"
    sized = [entry for entry in typed if entry.bits == scheme.act_bits]
    if not sized:
        allowed = "/".join(dict.fromkeys(str(entry.bits) for entry in typed))
        return f"act_bits={scheme.act_bits} is not built; act_bits={allowed} for act_data_type={data_type!r}"
    for entry in sized:
        if entry.takes_group(group):
            problem = entry.weights(scheme) if entry.weights is not None else None
            return entry if problem is None else problem
    allowed = " or ".join(dict.fromkeys(entry.group_words for entry in sized))
    how = "calibrated" if calibrated else "dynamic"
    return (
        f"act_group_size={group} ({_group_name(group)}) is not built for {how} {data_type} "
        f"{scheme.act_bits}-bit activations; {allowed}"
    )


def _built_types(calibrated: bool | None = None) -> str:
    """The built ``act_data_type`` names (only the calibrated or dynamic ones, if asked)."""
    entries = [e for e in ACT_KINDS.values() if calibrated in (None, e.calibrated is not None)]
    return " or ".join(repr(t) for t in dict.fromkeys(e.data_type for e in entries))


def activation_problem(scheme: Scheme) -> str | None:
    """What of an activation-quantizing scheme is not built (None: it is), naming the field.

    Built: :data:`BUILT_WORDS`. Weight-only schemes have no problem here; neither are the
    weights checked beyond what a kind requires (the weight side checks them)."""
    if scheme.is_weight_only:
        return None
    found = _entry_or_problem(scheme)
    return found if isinstance(found, str) else None


def activation_entry(scheme: Scheme) -> ActKindEntry | None:
    """The registry entry of ``scheme``'s activations; None for a weight-only scheme.

    Raises:
        NotImplementedError: the scheme quantizes activations in a way not built.
    """
    if scheme.is_weight_only:
        return None
    found = _entry_or_problem(scheme)
    if isinstance(found, str):
        raise NotImplementedError(found)
    return found


def calibrated_entry(scheme: Scheme) -> ActKindEntry | None:
    """The entry of ``scheme``'s activations when they quantize with a calibrated range (static
    FP8, NVFP4's); None for dynamic activations and weight-only schemes.

    Raises:
        NotImplementedError: the scheme quantizes activations in a way not built.
    """
    entry = activation_entry(scheme)
    return entry if entry is not None and entry.calibrated is not None else None


def activation_kind(scheme: Scheme) -> ActKind | None:
    """The built activation kind of ``scheme``; None for a weight-only one.

    Raises:
        NotImplementedError: the scheme quantizes activations in a way not built.
    """
    entry = activation_entry(scheme)
    return None if entry is None else entry.name


def activation_args(scheme: Scheme) -> tuple[ActKind, int | None] | None:
    """``(kind, group_size)`` to pass :func:`qdq_activation` for a layer quantized with
    ``scheme``; the group size only where the kind leaves its grouping to the scheme
    (``fp8_group``: its ``act_group_size``), else None. None for a weight-only scheme.

    Raises:
        NotImplementedError: the scheme quantizes activations in a way not built.
    """
    entry = activation_entry(scheme)
    if entry is None:
        return None
    return entry.name, activation_fields(scheme)[1] if entry.default_group is None else None
