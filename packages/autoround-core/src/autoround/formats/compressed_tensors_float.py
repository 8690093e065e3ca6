"""compressed-tensors layouts of the float weight-only data types (the ``llm_compressor`` format).

compressed-tensors 0.19 stores each float type in its own layout, named by the ``format`` of the
layer's ``config_groups`` entry; every one dequantizes ``element * scale`` (NVFP4: ``element *
(block_scale / global_scale)``). Per quantized layer, (out, in) weights:

- ``fp`` (FP8 E4M3), ``"naive-quantized"`` (what compressed-tensors infers for FP8 weights without
  activation arguments, and what Intel's export writes; ``"float-quantized"`` is the same layout
  with activations): ``weight`` float8_e4m3fn (out, in) and ``weight_scale`` float32, (1,) per
  tensor (strategy ``tensor``), (out, 1) per channel (``channel``), (out, in / group) per
  group (``group``) or, for a scheme's 2-D tiles (``block_shape``, FP8_BLOCK), (ceil(out / rows),
  ceil(in / columns)) per tile (strategy ``block``, ``block_structure [rows, columns]``; edge
  tiles partial, as compressed-tensors pads them);
- ``nv_fp`` 4-bit (NVFP4, blocks of 16), ``"nvfp4-pack-quantized"`` (strategy ``tensor_group``):
  ``weight_packed`` uint8 (out, in / 2), two E2M1 codes a byte (the even column in the low
  nibble; a code is the sign in bit 3 over the index of the magnitude in 0, 0.5, 1, 1.5, 2, 3, 4,
  6), ``weight_scale`` float8_e4m3fn (out, in / 16) and ``weight_global_scale`` float32 (1,);
- ``mx_fp`` / ``mx_fp_rceil`` 4-bit (MXFP4, blocks of 32), ``"mxfp4-pack-quantized"``:
  ``weight_packed`` as NVFP4's and ``weight_scale`` uint8 (out, in / 32), the E8M0 exponent
  ``127 + log2(scale)``;
- ``mx_fp`` / ``mx_fp_rceil`` 8-bit (MXFP8, E4M3 elements), ``"mxfp8-quantized"``: ``weight``
  float8_e4m3fn (out, in) and ``weight_scale`` uint8 (out, in / 32), E8M0 as MXFP4's.

compressed-tensors cuts groups without a partial last one, so a float group size must divide the
layer's input width (:func:`float_problem`; tiles may be partial). MX 6-bit, ``mx_fp6e3m2``,
``mx_fp8e5m2`` and ``mx_int`` have no compressed-tensors layout. The quantization arguments are those of
compressed-tensors' presets (``FP8_DYNAMIC``'s weights, ``NVFP4A16``, ``MXFP4A16``,
``MXFP8A16``) with the scheme's strategy and group size.
"""

from __future__ import annotations

from typing import Any

import torch

from autoround.layer_quant import LayerQuant, group_width, tile_grid
from autoround.schemes import PER_CHANNEL, PER_TENSOR, Scheme

#: compressed-tensors' layout name per float data type (MX: per bit width).
FP8_FORMAT = "naive-quantized"
NVFP4_FORMAT = "nvfp4-pack-quantized"
MX_FORMATS = {4: "mxfp4-pack-quantized", 8: "mxfp8-quantized"}
#: The data types whose shared scales are powers of two (E8M0), with E2M1 / E4M3 elements.
MX_TYPES = ("mx_fp", "mx_fp_rceil")
MX_NV_TYPES = ("nv_fp", *MX_TYPES)
FLOAT_TYPES = ("fp", *MX_NV_TYPES)
#: Fixed blocks of NVFP4 and MX.
NV_GROUP, MX_GROUP = 16, 32
#: E2M1 magnitudes in code order, and the midpoints that round a value to the nearest one.
E2M1_GRID = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
_E2M1_MIDPOINTS = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0])
E4M3_MAX = 448.0
E8M0_BIAS = 127


def group_format(scheme: Scheme) -> str:
    """The compressed-tensors layout (``format``) of a float scheme."""
    if scheme.data_type == "nv_fp":
        return NVFP4_FORMAT
    if scheme.data_type in MX_TYPES:
        return MX_FORMATS[scheme.bits]
    return FP8_FORMAT


def float_problem(scheme: Scheme, in_features: int | None = None) -> str | None:
    """What of a float scheme has no compressed-tensors layout (None: it has one); with
    ``in_features``, a group size that does not divide the input width too."""
    if scheme.data_type in MX_TYPES and scheme.bits not in MX_FORMATS:
        return f"{scheme.data_type} {scheme.bits}-bit (compressed-tensors has MXFP4 and MXFP8 only)"
    if scheme.block_shape is not None:  # compressed-tensors pads edge tiles (strategy "block")
        return None
    if in_features is not None and scheme.group_size > 0 and in_features % scheme.group_size:
        return (
            f"{scheme.data_type} group_size {scheme.group_size} on {in_features} inputs "
            "(compressed-tensors' float groups must divide the input width)"
        )
    return None


def float_weight_args(scheme: Scheme) -> dict[str, Any]:
    """compressed-tensors' ``QuantizationArgs`` of a float weight scheme, as ``to_dict`` writes them."""
    block = None if scheme.block_shape is None else list(scheme.block_shape)
    if block is not None:
        strategy, group = "block", None
    elif scheme.group_size == PER_TENSOR:
        strategy, group = "tensor", None
    elif scheme.group_size == PER_CHANNEL:
        strategy, group = "channel", None
    else:
        strategy, group = ("tensor_group" if scheme.data_type == "nv_fp" else "group"), scheme.group_size
    scale_dtype = None
    if scheme.data_type == "nv_fp":
        scale_dtype = str(torch.float8_e4m3fn)
    elif scheme.data_type in MX_TYPES:
        scale_dtype = str(torch.uint8)  # E8M0 exponents: what tells MXFP8 from plain FP8 groups
    return {
        "actorder": None,
        "block_structure": block,
        "dynamic": False,
        "group_size": group,
        "num_bits": scheme.bits,
        "observer": None,
        "observer_kwargs": {},
        "scale_dtype": scale_dtype,
        "strategy": strategy,
        "symmetric": True,
        "type": "float",
        "zp_dtype": None,
    }


def _per_tile(per_tile: torch.Tensor, shape: tuple[int, int], block: tuple[int, int]) -> torch.Tensor:
    """(row tiles, column tiles) -> (out, in), each tile's value over its elements."""
    full = per_tile.repeat_interleave(block[0], dim=0).repeat_interleave(block[1], dim=1)
    return full[: shape[0], : shape[1]]


def _per_column(per_group: torch.Tensor, in_features: int, width: int) -> torch.Tensor:
    return per_group.repeat_interleave(width, dim=1)[:, :in_features]


def _elements(weight: torch.Tensor, scale: torch.Tensor, width: int) -> torch.Tensor:
    """``weight / scale`` in float32 (0 where the scale is 0), the scale repeated over its group:
    the elements up to the rounding of the weight's dtype, far below half an element step."""
    return _divided(weight, _per_column(scale.float(), weight.shape[1], width))


def _divided(weight: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
    """``weight / full`` in float32, 0 where ``full`` (a float32 (out, in) scale) is 0."""
    return torch.where(full == 0, torch.zeros_like(full), weight.float() / full)


def pack_e2m1(values: torch.Tensor, signed_zero: bool) -> torch.Tensor:
    """(out, in) values on the E2M1 grid -> uint8 (out, in / 2) in compressed-tensors' order:
    code ``sign << 3 | index of |value|``, the even column in the low nibble. ``signed_zero``:
    whether -0.0 keeps its sign bit (code 8, as compressed-tensors and Intel's MXFP4 export write
    it) or is code 0 (Intel's NVFP4 export); both decode to zero."""
    index = torch.bucketize(values.abs().float(), _E2M1_MIDPOINTS.to(values.device)).to(torch.uint8)
    negative = torch.signbit(values) if signed_zero else values < 0
    codes = index | (negative.to(torch.uint8) << 3)
    pairs = codes.reshape(codes.shape[0], -1, 2)
    return (pairs[..., 0] | (pairs[..., 1] << 4)).contiguous()


def e8m0(scale: torch.Tensor) -> torch.Tensor:
    """Power-of-two float scales as E8M0 exponents (uint8, ``127 + log2``), exactly."""
    _, exponent = torch.frexp(scale.float())  # scale = 0.5 * 2**exponent
    return (exponent - 1 + E8M0_BIAS).to(torch.uint8)


def nv_scales(quant: LayerQuant) -> tuple[torch.Tensor, torch.Tensor]:
    """NVFP4's E4M3 block scales (out, groups) and float32 global scale (1,).

    ``quant.scale`` is each block's effective scale ``block / global``. Without the global scale
    (a :class:`LayerQuant` rebuilt without it: plain RTN's), it is recovered from the largest
    block, whose scale NVFP4 sets to 448 (E4M3's largest): the block scales come out the same
    and the global one within a float32 rounding or two (the weights it decompresses to, in
    bfloat16, are the same in practice: tested).
    """
    scale = quant.scale.float()
    gs = quant.global_scale
    if gs is None:
        top = scale.max()
        gs = torch.where(top > 0, E4M3_MAX / top, torch.zeros_like(top))
    gs = gs.reshape(1).to(torch.float32)
    return (scale * gs).to(torch.float8_e4m3fn), gs.cpu()


def pack_float_layer(weight: torch.Tensor, quant: LayerQuant) -> dict[str, torch.Tensor]:
    """One float layer's compressed-tensors tensors from its quantize-dequantized (out, in) weight."""
    scheme = quant.scheme
    if scheme.block_shape is not None:
        return _pack_tiles(weight, quant, scheme.block_shape)
    width = group_width(scheme, weight.shape[1])
    elements = _elements(weight, quant.scale, width)
    if scheme.data_type == "nv_fp":
        block, gs = nv_scales(quant)
        packed = pack_e2m1(elements, signed_zero=False)
        return {"weight_packed": packed, "weight_scale": block, "weight_global_scale": gs}
    if scheme.data_type in MX_TYPES:
        exponents = e8m0(quant.scale).contiguous()
        if scheme.bits == 4:
            return {"weight_packed": pack_e2m1(elements, signed_zero=True), "weight_scale": exponents}
        return {"weight": elements.to(torch.float8_e4m3fn), "weight_scale": exponents}
    scale = quant.scale.float()
    if scheme.group_size == PER_TENSOR:
        scale = scale[:1, 0]
    return {"weight": elements.to(torch.float8_e4m3fn), "weight_scale": scale.contiguous()}


def _pack_tiles(weight: torch.Tensor, quant: LayerQuant, block: tuple[int, int]) -> dict[str, torch.Tensor]:
    """FP8_BLOCK: E4M3 ``weight`` (out, in) and float32 ``weight_scale`` (row tiles, column tiles)."""
    grid = tile_grid(quant.scheme, (weight.shape[0], weight.shape[1]))
    if tuple(quant.scale.shape) != grid:
        raise ValueError(
            f"tile scales of shape {tuple(quant.scale.shape)}, expected {grid} for {tuple(weight.shape)}"
        )
    scale = quant.scale.float()
    elements = _divided(weight, _per_tile(scale, (weight.shape[0], weight.shape[1]), block))
    return {"weight": elements.to(torch.float8_e4m3fn), "weight_scale": scale.contiguous()}
