"""Dynamic activation quantization: the quantize-dequantize of a layer's input, and which
activation schemes are built.

The built kinds are the registry :data:`~autoround.dtypes.act_kinds.ACT_KINDS` (kind name ->
entry), all symmetric and dynamic (scales computed from the input on every forward):

* ``int8``: per token (``act_group_size=-1``: one scale per row of the input seen as (tokens,
  features), as Intel reshapes it), Intel's ``rtn_int_sym`` (what its ``WrapperWALayer`` runs
  after a round-to-nearest run): ``scale = ±absmax / 128`` rounded to float16 (Intel's default
  ``scale_dtype``), its sign that of the value of largest magnitude negated, so that value maps
  to code -128 (the full signed range); magnitude at least 1e-5;
  ``q = clamp(round(x / scale), -128, 127)``; ``x̂ = q * scale`` in the input's dtype (float32
  arithmetic for float32 and bfloat16 inputs, the scale being float16; float16 inputs compute in
  float16). With INT8 symmetric per-channel weights (``INT8_W8A8``).
* ``fp8``: per token, Intel's ``fp8_sym``: ``scale = max(absmax / 448, 1 / (448 * 512))`` in
  float32 (the floor copied from vLLM), ``x̂ = e4m3(clamp(x / scale, -448, 448)) * scale`` in the
  input's dtype (a float16 input goes through bfloat16 first, as Intel's does). With FP8
  per-channel weights (``FP8_STATIC`` with ``act_dynamic=True, act_group_size=-1``).
* ``fp8_group``: the same per group of ``act_group_size`` features (``FP8_BLOCK``'s activations).
* MX (``mxfp4``, ``mxfp6``, ``mxfp8``, their ``_rceil`` forms, ``mxint4``, ``mxint8``): per block
  of 32 features, the MX weight types' own round-to-nearest (:mod:`autoround.dtypes.mx_fp`),
  as Intel's ``quant_mx`` / ``quant_mx_rceil`` quantize activations (the ``MXFP4``, ``MXFP8``,
  ``MXFP4_RCEIL``, ``MXFP8_RCEIL``, ``MXINT4`` presets).

The grouped kinds take any weights the weight side builds; the per-token ones go with 8-bit
per-channel weights of their type. All are bit for bit Intel 0.16.1's
(tests/fixtures/intel/act_qdq.safetensors, act_qdq_mx.safetensors); the formulas are
:mod:`autoround.dtypes.act_formulas`. What a served model computes differs slightly
(docs/float_types_serving.md): vLLM's CPU int8 kernel uses ``scale = absmax / 127`` in float32
(compressed-tensors' own formula: ``absmax / 127.5``), its FP8 one multiplies by the scale's
reciprocal instead of dividing, and compressed-tensors rounds an MX block's exponent its own way.
Not built, refused naming the field: static activations, asymmetric ones, NVFP4 activations
(their global scale is calibrated), and the fields no entry takes.
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
from autoround.dtypes.act_kinds import ACT_KINDS, ActKindEntry, Scheme, built_words, kinds_of

#: An activation kind: a key of :data:`~autoround.dtypes.act_kinds.ACT_KINDS`.
ActKind = str

#: What is built, in words (error messages): derived from the registry.
BUILT_WORDS = built_words()

#: Activation types whose scales need a calibrated global scale (NVFP4's two-level scales).
GLOBAL_SCALE_TYPES = ("nv_fp", "nv_fp4_with_static_gs")

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
    "qdq_activation",
    "qdq_fp8_per_token",
    "qdq_groups",
    "qdq_int_per_token",
]


def qdq_activation(x: torch.Tensor, kind: ActKind, group_size: int | None = None) -> torch.Tensor:
    """The quantize-dequantized input of a layer whose activations are of ``kind``;
    ``group_size`` (``act_group_size``) for the kinds whose grouping is the scheme's choice
    (``fp8_group``), None for the others (their own: per token or 32).

    Raises:
        KeyError: ``kind`` is not built.
        ValueError: a ``fp8_group`` kind without its group size.
    """
    entry = ACT_KINDS[kind]
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
    if not dynamic:
        return (
            "static activations (act_dynamic=False) need calibrated activation ranges, which are "
            "not built yet; use act_dynamic=True"
        )
    if data_type in GLOBAL_SCALE_TYPES:
        return (
            f"act_data_type={data_type!r} (NVFP4 activations) needs a global scale calibrated on "
            f"activations, which is not built; built act_data_type: {_built_types()}"
        )
    if not sym:
        return "act_sym=False (asymmetric activations) is not built; act_sym=True"
    typed = kinds_of(data_type)
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
    return (
        f"act_group_size={group} ({_group_name(group)}) is not built for {data_type} "
        f"{scheme.act_bits}-bit activations; {allowed}"
    )


def _built_types() -> str:
    return " or ".join(repr(t) for t in dict.fromkeys(e.data_type for e in ACT_KINDS.values()))


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
