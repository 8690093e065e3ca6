"""The ``auto_round`` format's float weight types, written as Intel auto-round 0.16.1 writes them.

Intel's ``auto_round`` export takes two paths for float weights (``export/formats/backends/
autoround.py``):

* MX / NV types (``mx_fp``, ``mx_fp_rceil``, ``nv_fp``; ``export_to_nvfp_mx.py`` with
  ``qlinear_fp.QuantLinear``): packing ``auto_round:llm_compressor``, compressed-tensors' tensors
  (MXFP4 ``weight_packed`` + E8M0 ``weight_scale``; MXFP8 ``weight`` float8 + E8M0; NVFP4
  ``weight_packed`` + E4M3 ``weight_scale`` + float32 ``weight_global_scale``), byte for byte
  what :func:`~autoround.formats.compressed_tensors_float.pack_float_layer` makes (tested against
  Intel's exports), biases float16.
* MXINT4 (``mx_int`` 4-bit, group 32; ``export_to_nvfp_mx.py`` with ``qlinear_int.QuantLinear``,
  as Intel packs every data type without "fp" in its name): packing ``auto_round`` (Intel's
  default name), ``weight_packed`` uint8 (out, in/2) and E8M0 ``weight_scale`` uint8 (out, in/32)
  as MXFP4's, the elements sign-magnitude with magnitudes ``i / 4`` (:func:`pack_mxint4`), biases
  float16. Intel's ``QuantLinear`` packs 4 bits only ("Only 4 bits are supported.").
* FP8 (``fp`` 8-bit, ``export_to_fp8.py``'s ``FP8QLinear``): no ``packing_format`` weight-only,
  ``auto_round:fp8_static`` with static activations (``FP8_STATIC``);
  ``fmt: "e4m3"`` and ``activation_scheme`` (``"dynamic"`` when the scheme's activations are
  dynamic, else ``"static"``) in the config; ``weight`` float8_e4m3fn (out, in) and
  ``weight_scale`` **in the model's dtype**, flattened: ``(1,)`` per tensor (``FPW8A16``),
  ``(out,)`` per channel (group_size -1). The bias keeps its dtype.

Both write the scheme keys, Intel's recorded settings, ``block_name_to_quantize``, and
``extra_config`` as the integer path does (:func:`autoround.formats.auto_round.quantization_config`);
act_* keys of a weight-only scheme are dropped, as Intel's ``filter_quantization_config`` does.

Dynamic MX activations (Intel's ``MXFP4`` / ``MXFP8`` presets and their ``_RCEIL`` forms: W4A4 /
W8A8, and ``MXINT4`` W4A4, MX blocks of 32; :data:`MX_ACT_KINDS`) add the act_* keys to the config
and no tensor.
Intel's ``auto_round`` export refuses FP8 per-token dynamic activations (``llm_compressor``
writes them). ``FP8_BLOCK`` (FP8 weights in 2-D tiles, dynamic FP8 activations per group of
``act_group_size`` features) is written as Intel's ``FP8BlockQLinear``: packing
``auto_round:fp8``, ``group_size`` and ``weight_block_size`` the tile ``[rows, columns]``, ``fmt``
and ``activation_scheme: "dynamic"``; ``weight`` float8_e4m3fn and ``weight_scale_inv`` (row
tiles, column tiles) in the model's dtype, edge tiles partial.

Calibrated activations (:mod:`autoround.formats.act_scales`) add one tensor per layer:
``FP8_STATIC`` (``activation_scheme: "static"``) an ``input_scale`` (1,) in the model's dtype
(``FP8QLinear``), NVFP4 W4A4 an ``input_global_scale`` (1,) float32 (``qlinear_fp``).

Which float schemes are written: those the loaders read back (:data:`autoround.nn.float_weights.
LAYOUTS`): MX 4/8-bit and MXINT4 in groups of 32, NVFP4 in groups of 16, FP8 per tensor, per
channel or in groups (a flat ``(out * groups,)`` scale, as Intel writes it; the groups must divide the width).
Every quantized layer of a float checkpoint must be a float type of the same path (Intel packs
an MX/NV export's integer layers, or an FP8 export's MX layers, in layouts its float loaders do
not read), and ``mx_int`` layers stand only beside ``mx_int`` ones (one packing name a config).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch

from autoround.dtypes.activations import activation_kind
from autoround.formats.base import ACT_KEYS, PLAIN_PACKING, CheckpointSpec
from autoround.formats.compressed_tensors_float import MX_GROUP, MX_NV_TYPES, e8m0, pack_float_layer
from autoround.layer_quant import LayerQuant
from autoround.nn.float_weights import LLM_COMPRESSOR_PACKING, layout_for, why_not
from autoround.nn.input_scales import calibrated_kind
from autoround.quantized_model import QuantizedModel
from autoround.schemes import Scheme

#: The dynamic activation kinds Intel's ``MXFP4`` / ``MXFP8`` (``_RCEIL``) and ``MXINT4`` presets
#: write beside MX weights: config keys only (``act_data_type``, ``act_bits``, ``act_group_size``
#: 32, ``act_dynamic``), no tensor; loaders quantize each input per block of 32 as they are read.
MX_ACT_KINDS = ("mxfp4", "mxfp8", "mxfp4_rceil", "mxfp8_rceil", "mxint4")
#: MX integers: Intel's integer MX export (packing ``auto_round``), 4-bit only.
MX_INT = "mx_int"
#: The packing Intel's config names for FP8 in 2-D tiles (FP8_BLOCK).
FP8_BLOCK_PACKING = "auto_round:fp8"
#: The FP8 element format Intel's config names (``fmt``); e5m2 is not written.
FP8_FMT = "e4m3"
#: The packing Intel's config names for FP8 with static activations (FP8_STATIC); weight-only and
#: dynamic FP8 name none.
FP8_STATIC_PACKING = "auto_round:fp8_static"


def is_float_scheme(scheme: Scheme | None) -> bool:
    """Whether a layer's scheme is one of the float weight types (None: an unquantized layer)."""
    return scheme is not None and (scheme.data_type in ("fp", MX_INT) or scheme.data_type in MX_NV_TYPES)


def packing_of(data_type: str) -> str:
    """The ``packing_format`` Intel's config names for an MX / NV data type: ``auto_round`` for
    ``mx_int`` (its integer exporter), ``auto_round:llm_compressor`` for the others (FP8's
    depends on the scheme: :func:`float_config`)."""
    return PLAIN_PACKING if data_type == MX_INT else LLM_COMPRESSOR_PACKING


def float_problem(scheme: Scheme, in_features: int | None = None) -> str | None:
    """What of a float scheme the ``auto_round`` format does not write (None: it does); with
    ``in_features``, a width its groups do not divide (Intel's packing refuses it too)."""
    if not scheme.sym:
        return f"{scheme.data_type} asymmetric (float types are symmetric)"
    if not scheme.is_weight_only and scheme.block_shape is None and activation_kind(scheme) == "fp8_group":
        return "FP8 per-group activations without 2-D weight tiles (auto_round writes them with FP8_BLOCK)"
    layout = layout_for(scheme.data_type, scheme.bits, scheme.group_size, scheme.block_shape)
    if layout is None:
        return (
            f"{scheme.data_type} {scheme.bits}-bit group_size {scheme.group_size} "
            "(auto_round writes mx_fp(_rceil) 4/8-bit group 32, mx_int 4-bit group 32, nv_fp 4-bit group 16, "
            "fp 8-bit per tensor, per channel, in groups or in 2-D tiles)"
        )
    if (
        in_features is not None
        and layout.block is None
        and layout.group_size
        and in_features % layout.group_size
    ):
        return (
            f"{scheme.data_type} group_size {layout.group_size} on {in_features} inputs "
            "(a partial last group)"
        )
    return None


def is_float_model(qm: QuantizedModel) -> bool:
    """Whether ``qm`` is written by the float path (its default scheme is a float type)."""
    return is_float_scheme(qm.scheme)


def mixing_problems(default: Scheme, layers: Mapping[str, Scheme]) -> list[str]:
    """Layers (name -> scheme) a float (or integer) ``auto_round`` checkpoint cannot hold beside
    its ``default`` scheme: integer and float layers mixed, FP8 beside MX / NV types, or
    ``mx_int`` beside another type."""
    float_default = is_float_scheme(default)
    default_fp8 = default.data_type == "fp"
    default_packing = packing_of(default.data_type)
    found = []
    for name, scheme in layers.items():
        if is_float_scheme(scheme) != float_default:
            why = "integer beside float layers" if float_default else "float beside integer layers"
        elif float_default and (scheme.data_type == "fp") != default_fp8:
            why = "FP8 beside MX / NV float layers (Intel writes them in different layouts)"
        elif float_default and not default_fp8 and packing_of(scheme.data_type) != default_packing:
            why = f"{scheme.data_type} beside {default.data_type} layers (one packing a checkpoint)"
        else:
            continue
        found.append(
            f"{name}: {scheme.data_type} {scheme.bits}-bit, {why}, cannot be stored in format 'auto_round'"
        )
    return found


def float_config(base: dict[str, Any], default: Scheme) -> dict[str, Any]:
    """Intel's float ``quantization_config`` from the integer path's (scheme keys, settings,
    blocks, ``extra_config``): its packing name, or FP8's ``fmt`` / ``activation_scheme``; the
    activation fields where the scheme quantizes activations (Intel keeps them then)."""
    config = dict(base)
    if not default.is_weight_only:
        fields = default.to_dict()
        config.update({k: fields[k] for k in ACT_KEYS if fields.get(k) is not None})
    if default.block_shape is not None:  # Intel's FP8BlockQLinear export (FP8_BLOCK)
        config.update(group_size=list(default.block_shape), weight_block_size=list(default.block_shape))
        config.update(packing_format=FP8_BLOCK_PACKING, fmt=FP8_FMT, activation_scheme="dynamic")
    elif default.data_type == "fp" and calibrated_kind(default) == "fp8_static":
        config["packing_format"] = FP8_STATIC_PACKING
        config["fmt"] = FP8_FMT
        config["activation_scheme"] = "static"
    elif default.data_type == "fp":
        config.pop("packing_format", None)  # Intel's FP8 export passes no backend: no packing named
        config["fmt"] = FP8_FMT
        # Intel's act_dynamic defaults to True: only an explicit False is "static"
        config["activation_scheme"] = "static" if default.act_dynamic is False else "dynamic"
    else:
        config["packing_format"] = packing_of(default.data_type)
    return config


def model_dtype(model: torch.nn.Module) -> torch.dtype:
    """The model's dtype as transformers' ``model.dtype`` reports it (its first floating-point
    parameter's), which Intel's FP8 export casts the scales to."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def pack_layer(weight: torch.Tensor, quant: LayerQuant, model_dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """One float layer's tensors from its quantize-dequantized (out, in) weight, as Intel stores
    them in ``auto_round`` format: compressed-tensors' for MX / NV; FP8's scale cast to
    ``model_dtype`` and flattened (Intel's ``FP8QLinear`` holds ``scale.view(-1).to(model.dtype)``)."""
    if quant.scheme.data_type == MX_INT:
        return pack_mxint4(weight, quant)
    tensors = pack_float_layer(weight, quant)
    if quant.scheme.block_shape is not None:  # FP8BlockQLinear: the tile scales by another name
        scale = tensors.pop("weight_scale")
        return {**tensors, "weight_scale_inv": scale.to(model_dtype).contiguous()}
    if quant.scheme.data_type == "fp":
        tensors["weight_scale"] = tensors["weight_scale"].reshape(-1).to(model_dtype).contiguous()
    return tensors


def pack_mxint4(weight: torch.Tensor, quant: LayerQuant) -> dict[str, torch.Tensor]:
    """An MXINT4 layer's ``weight_packed`` and E8M0 ``weight_scale`` from its quantize-dequantized
    (out, in) weight, as Intel's ``qlinear_int.QuantLinear.pack``: each element ``w / scale`` (a
    multiple of 1/4 up to 1.75, exact) as ``sign << 3 | 4 * |element|``, the sign taken from the
    sign bit (a -0.0 weight is code 8, as Intel's ``torch.signbit`` writes it), the even column
    in the low nibble."""
    scale = quant.scale.float()
    elements = weight.float() / scale.repeat_interleave(MX_GROUP, dim=1)[:, : weight.shape[1]]
    index = torch.round(elements.abs() * 4).clamp(max=7).to(torch.uint8)
    codes = index | (torch.signbit(elements).to(torch.uint8) << 3)
    pairs = codes.reshape(codes.shape[0], -1, 2)
    packed = (pairs[..., 0] | (pairs[..., 1] << 4)).contiguous()
    return {"weight_packed": packed, "weight_scale": e8m0(quant.scale).contiguous()}


@dataclasses.dataclass(frozen=True)
class TiledFloatSpec(CheckpointSpec):
    """The spec of an FP8_BLOCK checkpoint (Intel's ``FP8BlockQLinear``): its layers keep the
    default's 2-D tiles, which :class:`CheckpointSpec` refuses (no integer loader reads tiles)."""

    def scheme_for(self, layer_name: str) -> Scheme | None:
        block = self.default.block_shape
        flat = CheckpointSpec(
            dataclasses.replace(self.default, block_shape=None),
            self.packing_format,
            self.block_names,
            self.extra_config,
            self.layout,
            self.ignored_tensors,
        )
        scheme = flat.scheme_for(layer_name)
        assert block is not None, "a TiledFloatSpec's default tiles its weights"
        # a layer of the default's type and width keeps its tiles; another entry is what it says
        if scheme is None or (scheme.data_type, scheme.bits, scheme.group_size) != ("fp", 8, block[1]):
            return scheme
        return dataclasses.replace(scheme, block_shape=block)


def float_layout_problem(scheme: Scheme) -> str | None:
    """Why a float scheme's layout cannot be read (None: it can), 2-D tiles included."""
    return why_not(scheme.data_type, scheme.bits, scheme.group_size, scheme.block_shape)
