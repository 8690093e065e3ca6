"""Dynamic per-token activation quantization (W8A8): the quantize-dequantize of a layer's input,
and which activation schemes are built.

Two kinds are built, both symmetric, dynamic (a scale per forward, computed from the input) and
per token (``act_group_size=-1``: one scale per row of the input seen as (tokens, features), as
Intel reshapes it):

* ``int8``: Intel's ``rtn_int_sym`` (what its ``WrapperWALayer`` runs after a round-to-nearest
  run): ``scale = ±absmax / 128`` rounded to float16 (Intel's default ``scale_dtype``), its sign
  that of the value of largest magnitude negated, so that value maps to code -128 (the full
  signed range); magnitude at least 1e-5; ``q = clamp(round(x / scale), -128, 127)``;
  ``x̂ = q * scale`` in the input's dtype (float32 arithmetic for float32 and bfloat16 inputs,
  the scale being float16; float16 inputs compute in float16).
* ``fp8``: Intel's ``fp8_sym``: ``scale = max(absmax / 448, 1 / (448 * 512))`` in float32 (the
  floor copied from vLLM), ``x̂ = e4m3(clamp(x / scale, -448, 448)) * scale`` in the input's
  dtype (a float16 input goes through bfloat16 first, as Intel's does).

Both are bit for bit Intel 0.16.1's (tests/fixtures/intel/act_qdq.safetensors). What the
served model computes differs slightly (docs/float_types_serving.md): vLLM's CPU int8 kernel
uses ``scale = absmax / 127`` in float32 (compressed-tensors' own formula: ``absmax / 127.5``),
and its FP8 one multiplies by the scale's reciprocal instead of dividing.
"""

from __future__ import annotations

from typing import Literal, Protocol

import torch

ActKind = Literal["int8", "fp8"]


class Scheme(Protocol):
    """The fields of :class:`autoround.schemes.Scheme` the activation rules read (a protocol:
    ``schemes`` sits above the data types and imports this module)."""

    @property
    def bits(self) -> int: ...
    @property
    def group_size(self) -> int: ...
    @property
    def sym(self) -> bool: ...
    @property
    def data_type(self) -> str: ...
    @property
    def act_bits(self) -> int: ...
    @property
    def act_group_size(self) -> int | None: ...
    @property
    def act_sym(self) -> bool | None: ...
    @property
    def act_data_type(self) -> str | None: ...
    @property
    def act_dynamic(self) -> bool | None: ...
    @property
    def block_shape(self) -> tuple[int, int] | None: ...
    @property
    def is_weight_only(self) -> bool: ...


#: Intel's default ``scale_dtype`` (float16) and the smallest scale magnitude it keeps with it.
INT_SCALE_DTYPE = torch.float16
INT_SCALE_FLOOR = 1e-5
E4M3_MAX = float(torch.finfo(torch.float8_e4m3fn).max)
#: The smallest FP8 activation scale (vLLM's ``_FP8_MIN_SCALING_FACTOR``, which Intel copies).
FP8_SCALE_FLOOR = 1.0 / (E4M3_MAX * 512.0)

#: Activation bits, group size and the weight schemes each built kind goes with, in words.
BUILT_WORDS = (
    "act_bits=8, act_dynamic=True, act_group_size=-1 (per token), act_sym=True, with "
    "act_data_type='int' on int 8-bit symmetric per-channel weights (scheme='INT8_W8A8') or "
    "act_data_type='fp' on fp 8-bit per-channel weights (scheme='FP8_STATIC', act_dynamic=True, "
    "act_group_size=-1)"
)


def _rows(x: torch.Tensor) -> torch.Tensor:
    """``x`` as (tokens, features): every leading dimension is a token dimension."""
    return x.reshape(-1, x.shape[-1])


def qdq_int_per_token(x: torch.Tensor, bits: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Intel's symmetric integer quantize-dequantize of ``x``, one scale per token.

    Returns the quantize-dequantized ``x`` (its shape and dtype) and the scales (tokens, 1),
    float16 (signed: see the module docstring).
    """
    rows = _rows(x)
    maxq = 2 ** (bits - 1)
    low = torch.clamp(rows.min(-1)[0], max=0)
    high = torch.clamp(rows.max(-1)[0], min=0)
    low_abs = -low
    # The sign makes the value of largest magnitude land on -maxq (one more code than +maxq - 1).
    signed_max = (2 * (high < low_abs).int() - 1) * torch.max(high, low_abs)
    scale = (signed_max / maxq).to(INT_SCALE_DTYPE)
    scale = torch.where(
        scale < 0, torch.clamp(scale, max=-INT_SCALE_FLOOR), torch.clamp(scale, min=INT_SCALE_FLOOR)
    ).unsqueeze(-1)
    codes = rows.div(scale).round_().clamp_(-maxq, maxq - 1)
    return codes.mul_(scale).to(x.dtype).reshape(x.shape), scale


def qdq_fp8_per_token(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Intel's FP8 E4M3 quantize-dequantize of ``x``, one float32 scale per token.

    Returns the quantize-dequantized ``x`` (its shape and dtype) and the scales (tokens, 1).
    """
    rows = _rows(x)
    scale = torch.max(torch.abs(rows), dim=-1)[0].to(torch.float32) / E4M3_MAX
    scale = torch.clip(scale, min=FP8_SCALE_FLOOR).unsqueeze(-1)
    if rows.dtype == torch.float16:  # Intel's detour (it avoids NaN gradients there)
        rows = rows.to(torch.bfloat16)
    elements = torch.clip(rows / scale, -E4M3_MAX, E4M3_MAX)
    elements = elements.to(torch.float8_e4m3fn).to(elements.dtype)
    return (elements * scale).to(x.dtype).reshape(x.shape), scale


def qdq_activation(x: torch.Tensor, kind: ActKind) -> torch.Tensor:
    """The quantize-dequantized input of a layer whose activations are of ``kind``."""
    if kind == "int8":
        return qdq_int_per_token(x)[0]
    return qdq_fp8_per_token(x)[0]


def activation_fields(scheme: Scheme) -> tuple[str, int, bool, bool]:
    """``(act_data_type, act_group_size, act_sym, act_dynamic)`` with Intel's fallbacks for unset
    fields: the weights' data type, group size and symmetry; dynamic."""
    data_type = scheme.act_data_type if scheme.act_data_type is not None else scheme.data_type
    group = scheme.act_group_size if scheme.act_group_size is not None else scheme.group_size
    sym = scheme.act_sym if scheme.act_sym is not None else scheme.sym
    dynamic = scheme.act_dynamic if scheme.act_dynamic is not None else True
    return data_type, group, sym, dynamic


def activation_problem(scheme: Scheme) -> str | None:
    """What of an activation-quantizing scheme is not built (None: it is), naming the field.

    Built: :data:`BUILT_WORDS`. Weight-only schemes have no problem here."""
    if scheme.is_weight_only:
        return None
    data_type, group, sym, dynamic = activation_fields(scheme)
    if not dynamic:
        return (
            "static activations (act_dynamic=False) need calibrated activation ranges, which are "
            "not built yet; use act_dynamic=True"
        )
    if scheme.act_bits != 8:
        return f"act_bits={scheme.act_bits} is not built; act_bits=8"
    if data_type not in ("int", "fp"):
        return f"act_data_type={data_type!r} is not built; 'int' or 'fp'"
    if group != -1:
        return f"act_group_size={group} (per group or per tensor) is not built; act_group_size=-1 (per token)"
    if not sym:
        return "act_sym=False (asymmetric activations) is not built; act_sym=True"
    if scheme.block_shape is not None:
        return f"2-D weight blocks (block_shape={scheme.block_shape}, FP8_BLOCK) are not built yet"
    weights_fit = scheme.bits == 8 and scheme.group_size == -1 and scheme.data_type == data_type
    if not weights_fit or (data_type == "int" and not scheme.sym):
        return (
            f"{data_type} 8-bit activations go with {data_type} 8-bit"
            f"{' symmetric' if data_type == 'int' else ''} per-channel weights (group_size=-1), "
            f"not {scheme.data_type} {scheme.bits}-bit {'sym' if scheme.sym else 'asym'} "
            f"group_size={scheme.group_size}"
        )
    return None


def activation_kind(scheme: Scheme) -> ActKind | None:
    """The built activation kind of ``scheme``; None for a weight-only one.

    Raises:
        NotImplementedError: the scheme quantizes activations in a way not built.
    """
    if scheme.is_weight_only:
        return None
    problem = activation_problem(scheme)
    if problem is not None:
        raise NotImplementedError(problem)
    return "int8" if activation_fields(scheme)[0] == "int" else "fp8"
