"""Dequantizing the float (and MX integer) weight layouts Intel auto-round 0.16.1 writes in
``auto_round`` format.

The one place of the float dequantize formulas (loaders, backends and tests use these):

* **MXFP4** (``data_type="mx_fp"`` or ``"mx_fp_rceil"``, bits 4, group 32; packing
  ``auto_round:llm_compressor``):
  ``weight_packed`` uint8 ``(out, in/2)``, two E2M1 codes a byte, the lower nibble first (sign
  bit 3, magnitude index into :data:`E2M1_VALUES`); ``weight_scale`` uint8 ``(out, in/32)``, E8M0
  biased exponents. ``w = e2m1 * 2**(scale - 127)``.
* **MXINT4** (``mx_int``, bits 4, group 32; packing ``auto_round``, Intel's integer MX export
  ``qlinear_int.QuantLinear``, read by its ``MXINT4QuantLinear``): ``weight_packed`` uint8
  ``(out, in/2)``, two codes a byte, the lower nibble first, sign-magnitude as E2M1's (sign bit
  3, a magnitude index ``i`` meaning ``i / 4``: :data:`E0M4_VALUES`; -0.0 keeps its sign bit);
  ``weight_scale`` E8M0 as MXFP4's. ``w = e0m4 * 2**(scale - 127)``.
* **MXFP8** (``mx_fp``, bits 8, group 32): ``weight`` float8_e4m3fn ``(out, in)``,
  ``weight_scale`` E8M0 as above. ``w = fp8 * 2**(scale - 127)``.
* **NVFP4** (``nv_fp``, bits 4, group 16): ``weight_packed`` as MXFP4; ``weight_scale``
  float8_e4m3fn ``(out, in/16)``; ``weight_global_scale`` float32 ``(1,)``.
  ``w = e2m1 * scale / global_scale`` (compressed-tensors' convention: the stored global scale
  is the reciprocal of the one that multiplies).
* **FP8** (``fp``, bits 8, group_size 0: one scale per tensor; Intel's ``FPW8A16``): ``weight``
  float8_e4m3fn ``(out, in)``, ``weight_scale`` in the model's float dtype, ``(1,)``.
  ``w = fp8 * scale``. Per channel (group_size -1): ``weight_scale`` ``(out,)``, one a row; in
  groups of N: ``(out * in / N,)``, row by row (Intel's ``FP8QLinear`` stores ``scale.view(-1)``).
* **FP8 in 2-D tiles** (``fp``, bits 8, ``block_shape`` (rows, columns), Intel's ``FP8_BLOCK``;
  packing ``auto_round:fp8``): ``weight`` float8_e4m3fn ``(out, in)``, ``weight_scale_inv`` in
  the model's float dtype, ``(ceil(out / rows), ceil(in / columns))``, one a tile, edge tiles
  partial (Intel's ``FP8BlockQLinear``; despite the name the scale multiplies, as DeepSeek's).
  ``w = fp8 * tile scale``.

MXFP4, MXFP8 and NVFP4 are compressed-tensors' layouts (Intel's code says it adapts theirs), so
tests check these formulas against compressed-tensors' own decompression too.

All arithmetic is float32 (every E2M1 / E4M3 value times a power of two, and E4M3 / float32
products, are exact or rounded once there); the result is cast to the asked dtype last.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: E2M1 magnitudes by 3-bit index (bit 3 of a code is the sign).
E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
#: MXINT4's magnitudes by 3-bit index (Intel's ``E0M4`` table: fixed point, two fraction bits).
E0M4_VALUES = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
#: E8M0's exponent bias: a stored byte ``e`` means ``2**(e - 127)``; 255 is NaN.
E8M0_BIAS = 127
#: Intel's packing name of the MX / NV layouts inside an auto-round config.
LLM_COMPRESSOR_PACKING = "auto_round:llm_compressor"


@dataclass(frozen=True)
class FloatLayout:
    """One float weight layout: the tensors a layer stores, their dtypes and group width.

    ``tensors`` maps each stored leaf name to its dtype (``None``: any float dtype, the model's);
    shapes follow from :meth:`shapes`.
    """

    kind: str  # "mxfp4" | "mxint4" | "mxfp8" | "nvfp4" | "fp8" | "fp8_block"
    group_size: int  # 0: one scale for the whole tensor; -1: one a row; tiles: their columns
    tensors: dict[str, torch.dtype | None]
    block: tuple[int, int] | None = None  # 2-D tiles (rows, columns); edge tiles may be partial

    def shapes(self, in_features: int, out_features: int) -> dict[str, tuple[int, ...]]:
        """Each stored tensor's shape for a layer of this size."""
        if self.block is not None:
            tiles = (-(-out_features // self.block[0]), -(-in_features // self.block[1]))
            return {"weight": (out_features, in_features), "weight_scale_inv": tiles}
        packed = (out_features, in_features // 2)
        if self.group_size > 0 and self.kind == "fp8":  # Intel's FP8QLinear flattens its scales
            scale: tuple[int, ...] = (out_features * (in_features // self.group_size),)
        elif self.group_size > 0:
            scale = (out_features, in_features // self.group_size)
        else:
            scale = (out_features,) if self.group_size else (1,)
        shapes: dict[str, tuple[int, ...]] = {
            "weight_packed": packed,
            "weight": (out_features, in_features),
            "weight_scale": scale,
            "weight_global_scale": (1,),
        }
        return {name: shapes[name] for name in self.tensors}


#: (data_type, bits) -> layout, for the schemes Intel writes weight-only.
LAYOUTS: dict[tuple[str, int], FloatLayout] = {
    ("mx_fp", 4): FloatLayout("mxfp4", 32, {"weight_packed": torch.uint8, "weight_scale": torch.uint8}),
    ("mx_int", 4): FloatLayout("mxint4", 32, {"weight_packed": torch.uint8, "weight_scale": torch.uint8}),
    ("mx_fp", 8): FloatLayout("mxfp8", 32, {"weight": torch.float8_e4m3fn, "weight_scale": torch.uint8}),
    ("nv_fp", 4): FloatLayout(
        "nvfp4",
        16,
        {
            "weight_packed": torch.uint8,
            "weight_scale": torch.float8_e4m3fn,
            "weight_global_scale": torch.float32,
        },
    ),
    ("fp", 8): FloatLayout("fp8", 0, {"weight": torch.float8_e4m3fn, "weight_scale": None}),
}
# MX with rounded-up shared exponents (Intel's ``mx_fp_rceil``) is stored as ``mx_fp`` is.
LAYOUTS.update({("mx_fp_rceil", bits): LAYOUTS[("mx_fp", bits)] for bits in (4, 8)})
#: FP8 per channel: the per-tensor layout with one scale a row.
FP8_PER_CHANNEL = FloatLayout("fp8", -1, LAYOUTS[("fp", 8)].tensors)


def fp8_tiles_layout(block: tuple[int, int]) -> FloatLayout:
    """FP8 in 2-D tiles of ``block`` (rows, columns): Intel's ``FP8BlockQLinear`` tensors."""
    return FloatLayout(
        "fp8_block", block[1], {"weight": torch.float8_e4m3fn, "weight_scale_inv": None}, (block[0], block[1])
    )


def layout_for(
    data_type: str, bits: int, group_size: int, block: tuple[int, int] | None = None
) -> FloatLayout | None:
    """The layout of a float scheme (``block``: its ``block_shape``), or None when none is read
    (the reason: :func:`why_not`)."""
    layout = LAYOUTS.get((data_type, bits))
    if block is not None:
        return fp8_tiles_layout(block) if layout is not None and layout.kind == "fp8" else None
    if layout is not None and layout.kind == "fp8" and group_size == FP8_PER_CHANNEL.group_size:
        return FP8_PER_CHANNEL
    if layout is not None and layout.kind == "fp8" and group_size > 0:
        return FloatLayout("fp8", group_size, layout.tensors)
    return layout if layout is not None and layout.group_size == group_size else None


def why_not(data_type: str, bits: int, group_size: int, block: tuple[int, int] | None = None) -> str | None:
    """Why a float scheme's layout cannot be read, or None when it can."""
    if layout_for(data_type, bits, group_size, block) is not None:
        return None
    readable = ", ".join(f"{d} bits={b} group_size={v.group_size}" for (d, b), v in LAYOUTS.items())
    readable += f", fp bits=8 group_size={FP8_PER_CHANNEL.group_size} or a positive group size"
    readable += " or 2-D tiles (block_shape)"
    scheme = f"data_type={data_type!r} bits={bits} group_size={group_size}"
    scheme += "" if block is None else f" block_shape={block}"
    return f"{scheme} is no float layout read here ({readable})"


def is_float_type(data_type: str) -> bool:
    """Whether a scheme's data type is one of the float families (MX, NV or plain FP)."""
    return data_type in {d for d, _ in LAYOUTS}


def _unpack_sign_magnitude(packed: torch.Tensor, magnitudes: tuple[float, ...]) -> torch.Tensor:
    """uint8 ``(rows, n/2)`` -> float32 ``(rows, n)``: two 4-bit codes a byte, the lower nibble
    first, each the sign (bit 3) over an index into ``magnitudes``."""
    codes = torch.stack((packed & 0x0F, packed >> 4), dim=-1).flatten(-2).long()
    table = torch.tensor(magnitudes, dtype=torch.float32, device=packed.device)
    magnitude = table[codes & 0x07]
    return torch.where((codes & 0x08) != 0, -magnitude, magnitude)


def unpack_e2m1(packed: torch.Tensor) -> torch.Tensor:
    """uint8 ``(rows, n/2)`` -> float32 ``(rows, n)`` E2M1 values, the lower nibble first."""
    return _unpack_sign_magnitude(packed, E2M1_VALUES)


def unpack_e0m4(packed: torch.Tensor) -> torch.Tensor:
    """uint8 ``(rows, n/2)`` -> float32 ``(rows, n)`` MXINT4 elements (multiples of 1/4 up to
    1.75), the lower nibble first."""
    return _unpack_sign_magnitude(packed, E0M4_VALUES)


def e8m0_to_float(scale: torch.Tensor) -> torch.Tensor:
    """E8M0 bytes -> float32 powers of two (255, E8M0's NaN, gives NaN)."""
    value = torch.exp2(scale.to(torch.float32) - E8M0_BIAS)
    return torch.where(scale == 255, torch.full_like(value, float("nan")), value)


def _blockwise(values: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``values`` (rows, n) times ``scale`` (rows, groups), each scale over n / groups columns."""
    rows, n = values.shape
    groups = scale.shape[-1]
    return (values.reshape(rows, groups, n // groups) * scale.unsqueeze(-1)).reshape(rows, n)


def dequantize_mxfp4(weight_packed: torch.Tensor, weight_scale: torch.Tensor) -> torch.Tensor:
    """MXFP4 weight, float32: ``e2m1 * 2**(scale - 127)`` per group of 32."""
    return _blockwise(unpack_e2m1(weight_packed), e8m0_to_float(weight_scale))


def dequantize_mxint4(weight_packed: torch.Tensor, weight_scale: torch.Tensor) -> torch.Tensor:
    """MXINT4 weight, float32: ``e0m4 * 2**(scale - 127)`` per group of 32."""
    return _blockwise(unpack_e0m4(weight_packed), e8m0_to_float(weight_scale))


def dequantize_mxfp8(weight: torch.Tensor, weight_scale: torch.Tensor) -> torch.Tensor:
    """MXFP8 weight, float32: ``fp8 * 2**(scale - 127)`` per group of 32."""
    return _blockwise(weight.to(torch.float32), e8m0_to_float(weight_scale))


def dequantize_nvfp4(
    weight_packed: torch.Tensor, weight_scale: torch.Tensor, weight_global_scale: torch.Tensor
) -> torch.Tensor:
    """NVFP4 weight, float32: ``e2m1 * (scale / global_scale)`` per group of 16 (the group's
    scale divided first, as compressed-tensors and Intel's packing do)."""
    scale = weight_scale.to(torch.float32) / weight_global_scale.to(torch.float32)
    return _blockwise(unpack_e2m1(weight_packed), scale)


def dequantize_fp8(weight: torch.Tensor, weight_scale: torch.Tensor) -> torch.Tensor:
    """FP8 weight with one scale for the tensor ``(1,)``, one a row ``(out,)`` or one a group of
    each row (``(out * groups,)``, row by row, as Intel flattens them), float32: ``fp8 * scale``."""
    scale = weight_scale.to(torch.float32).reshape(-1)
    values = weight.to(torch.float32)
    if scale.numel() == 1:
        return values * scale[0]
    return _blockwise(values, scale.reshape(weight.shape[0], -1))


def dequantize_fp8_tiles(weight: torch.Tensor, scale: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    """FP8 weight with one scale a 2-D tile of ``block`` (rows, columns), ``scale`` ``(row tiles,
    column tiles)``, float32: each tile's scale over its elements, the edge tiles cut to the weight."""
    full = scale.to(torch.float32).repeat_interleave(block[0], 0).repeat_interleave(block[1], 1)
    return weight.to(torch.float32) * full[: weight.shape[0], : weight.shape[1]]


def dequantize(
    kind: str, tensors: dict[str, torch.Tensor], block: tuple[int, int] | None = None
) -> torch.Tensor:
    """A layer's dense float32 weight from its stored tensors (``kind``: a :class:`FloatLayout`'s;
    ``block``: its tiles, for ``fp8_block``)."""
    if kind == "fp8_block":
        if block is None:
            raise ValueError("the fp8_block layout needs its tile shape: pass block=(rows, columns)")
        return dequantize_fp8_tiles(tensors["weight"], tensors["weight_scale_inv"], block)
    if kind == "mxfp4":
        return dequantize_mxfp4(tensors["weight_packed"], tensors["weight_scale"])
    if kind == "mxint4":
        return dequantize_mxint4(tensors["weight_packed"], tensors["weight_scale"])
    if kind == "mxfp8":
        return dequantize_mxfp8(tensors["weight"], tensors["weight_scale"])
    if kind == "nvfp4":
        return dequantize_nvfp4(
            tensors["weight_packed"], tensors["weight_scale"], tensors["weight_global_scale"]
        )
    if kind == "fp8":
        return dequantize_fp8(tensors["weight"], tensors["weight_scale"])
    raise ValueError(f"unknown float layout {kind!r}; known: {sorted(v.kind for v in LAYOUTS.values())}")
