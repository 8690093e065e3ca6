"""compressed-tensors checkpoints (``quant_method: compressed-tensors``): Intel's ``llm_compressor``
export, for integer weight-only schemes (``pack-quantized``, below) and the float ones (FP8,
NVFP4, MXFP4, MXFP8: :mod:`autoround.formats.compressed_tensors_float`).

compressed-tensors quantizes ``q = clamp(round(w / scale) + zp, -2**(b-1), 2**(b-1) - 1)`` with
signed codes and dequantizes ``(q - zp) * scale``; autoround's integers (Intel's conventions) are
unsigned codes ``c`` with zero point ``z`` and, for symmetric weights, a signed scale (the value of
largest magnitude maps to code ``-2**(b-1)``). Both describe one grid with ``weight_scale =
scale`` (sign kept) and ``weight_zero_point = z - 2**(b-1)`` (:func:`ct_qparams`, which
autoround-llmc's modifier uses too). On disk, per quantized layer:

- ``weight_packed`` int32 (out, in * b / 32): the signed codes plus ``2**(b-1)`` (= ``c``), packed
  along the input in a little-endian bit stream (compressed-tensors' ``pack_to_int32``; the same
  stream as GPTQ's, so :func:`autoround.packing.pack_int32` writes it; 3-bit values straddle words
  as compressed-tensors >= 0.19 packs them);
- ``weight_scale`` (out, groups) in the scale's own dtype (float16, as Intel writes it: exact);
- ``weight_shape`` int64 ``[out, in]``;
- asymmetric only: ``weight_zero_point`` int32 (out * b / 32, groups), ``z`` packed along the output.

W8A8 (dynamic per-token activations, :mod:`autoround.dtypes.activations`) is stored as
compressed-tensors' own ``W8A8`` / ``FP8_DYNAMIC`` presets store it: the group's
``input_activations`` are those presets' (8 bits, ``int`` / ``float``, strategy ``token``,
symmetric, dynamic); INT8 weights in ``"int-quantized"`` (``weight`` int8 (out, in), the signed
codes, and ``weight_scale`` (out, 1)), FP8 ones in ``"float-quantized"`` (the FP8 layout below,
named as compressed-tensors names it when activations are quantized). Grouped dynamic activations
are stored as compressed-tensors' ``MXFP4`` / ``MXFP8`` / ``FP8_BLOCK`` presets store theirs
(strategy ``group``; MX with ``scale_dtype`` uint8, E8M0): MX activations (``mx_fp`` and, as
Intel's export writes them, ``mx_fp_rceil``) with MX weights of their width, in the weights'
layout; FP8 per-group activations with FP8 weights, in ``"float-quantized"``. A runtime
computes the activations' scales its own way (compressed-tensors rounds an MX block's exponent
differently from Intel's floor and rceil); only the arguments are stored. Calibrated activations
(:mod:`autoround.formats.act_scales`) are stored as compressed-tensors' ``FP8`` and ``NVFP4``
presets store them: ``FP8_STATIC`` in ``"float-quantized"`` with ``input_activations`` strategy
``tensor``, not dynamic, and a float32 ``input_scale`` (1,) per layer; NVFP4 W4A4 in the weights'
``"nvfp4-pack-quantized"`` with ``input_activations`` ``tensor_group`` 16, dynamic ``"local"``,
and a float32 ``input_global_scale`` (1,) per layer.

The config has one ``config_groups`` entry per scheme, with its own ``format`` (targets
``["Linear"]`` when there is one, the layer names otherwise, as Intel rewrites them); the
top-level ``format`` is the groups' one, or ``mixed-precision`` where they differ (as
compressed-tensors names a model of several layouts); ``ignore`` lists the Linear layers left in
16 bits. Integers are stored at 2, 3, 4 and 8 bits, not per tensor; floats as
:mod:`~autoround.formats.compressed_tensors_float` lists (not MX 6-bit, whose layout
compressed-tensors lacks). autoround does not read these checkpoints; transformers (with
compressed-tensors) and vLLM do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from autoround.dtypes.activations import ActKind, activation_entry, activation_fields, activation_kind
from autoround.formats.act_scales import calibrated_kind, ct_input_args, input_tensors
from autoround.formats.base import Capabilities, Format
from autoround.formats.checkpoint import write_checkpoint
from autoround.formats.compressed_tensors_float import (
    FLOAT_TYPES,
    MX_NV_TYPES,
    MX_TYPES,
    float_problem,
    float_weight_args,
    group_format,
    pack_float_layer,
)
from autoround.layer_quant import LayerQuant, codes_of
from autoround.packing import SUPPORTED_BITS, pack_int32
from autoround.quantized_model import QuantizedModel
from autoround.schemes import PER_CHANNEL, Scheme

METHOD = "compressed-tensors"
PACKED = "pack-quantized"
#: The layouts compressed-tensors 0.19 infers for its W8A8 and FP8_DYNAMIC presets.
INT_W8A8 = "int-quantized"
FP8_W8A8 = "float-quantized"
MIXED = "mixed-precision"


#: The MX activation kinds compressed-tensors' MXFP4 / MXFP8 arguments describe (by width).
MX_ACTIVATIONS: dict[ActKind, int] = {"mxfp4": 4, "mxfp8": 8, "mxfp4_rceil": 4, "mxfp8_rceil": 8}


def _activation_problem(scheme: Scheme, in_features: int | None) -> str | None:
    """What of a stored kind's activations has no compressed-tensors preset: MX activations
    without MX weights of their width, FP8 groups without FP8 weights or not dividing the input."""
    if calibrated_kind(scheme) is not None:  # its weights are the activation kind's own rule
        return None
    kind = activation_kind(scheme)
    if kind in MX_ACTIVATIONS and (scheme.data_type not in MX_TYPES or scheme.bits != MX_ACTIVATIONS[kind]):
        return (
            f"{kind} activations with {scheme.data_type} {scheme.bits}-bit weights (MXFP4 / MXFP8 pair them)"
        )
    if kind == "fp8_group":
        group = activation_fields(scheme)[1]
        if scheme.data_type != "fp":
            return f"fp8 per-group activations with {scheme.data_type} weights (FP8_BLOCK has fp 8-bit ones)"
        if in_features is not None and in_features % group:
            return f"act_group_size {group} on {in_features} inputs (activation groups must divide the width)"
    return None


def _layout_problem(scheme: Scheme, in_features: int | None) -> str | None:
    """What ``CAPABILITIES``' fields cannot say: integers have no per-tensor scale here (its
    tensors differ in shape; Intel's export does not write one either); floats as
    :func:`~autoround.formats.compressed_tensors_float.float_problem` says; activations as
    :func:`_activation_problem` says."""
    if not scheme.is_weight_only:
        problem = _activation_problem(scheme, in_features)
        if problem is not None:
            return problem
    if scheme.data_type == "int":
        return "int per-tensor (group_size 0)" if scheme.group_size == 0 else None
    return float_problem(scheme, in_features)


#: Integers of the bit widths the int32 stream packing is built for, and the float types
#: compressed-tensors has layouts for (their own fields limit their bits and group sizes).
CAPABILITIES = Capabilities(
    data_types=("int", *FLOAT_TYPES),
    bits=SUPPORTED_BITS,
    check=_layout_problem,
    note=(
        "int no per-tensor group; fp 8-bit, nv_fp 4-bit, mx_fp(_rceil) 4 and 8 bits; "
        "float groups dividing the input width; fp 8-bit 2-D blocks (FP8_BLOCK, block_shape)"
    ),
    activations=("int8", "fp8", "fp8_group", *MX_ACTIVATIONS, "fp8_static", "nvfp4"),
    blocks=True,
)
RUNTIMES = (
    "transformers + compressed-tensors",
    "vLLM compressed-tensors (stock; on the CPU integer 4-bit and W8A8 (INT8, FP8 dynamic) only; "
    "other floats on GPUs that have their kernels)",
)


def ct_qparams(quant: LayerQuant) -> tuple[torch.Tensor, torch.Tensor]:
    """``(weight_scale, weight_zero_point)`` in compressed-tensors' convention, (out, groups) each:
    the scale as it is (sign included), the zero point signed (int8; 0 for symmetric weights)."""
    midpoint = 2 ** (quant.scheme.bits - 1)
    zero = torch.zeros_like(quant.zero) if quant.scheme.sym else quant.zero - midpoint
    return quant.scale, zero.to(torch.int8)


def weight_args(scheme: Scheme) -> dict[str, Any]:
    """compressed-tensors' ``QuantizationArgs`` of a weight scheme, as its ``to_dict`` writes them."""
    channel = scheme.group_size == PER_CHANNEL
    return {
        "actorder": None,
        "block_structure": None,
        "dynamic": False,
        "group_size": None if channel else scheme.group_size,
        "num_bits": scheme.bits,
        "observer": None,
        "observer_kwargs": {},
        "scale_dtype": None,
        "strategy": "channel" if channel else "group",
        "symmetric": scheme.sym,
        "type": "int",
        "zp_dtype": None if scheme.sym else str(torch.int8),
    }


def activation_args(scheme: Scheme) -> dict[str, Any] | None:
    """A scheme's ``input_activations``, as compressed-tensors' presets write them (symmetric):
    dynamic ``W8A8`` / ``FP8_DYNAMIC`` per token, ``FP8_BLOCK`` per group, ``MXFP4`` / ``MXFP8``
    per group of 32 with E8M0 (uint8) scales; calibrated ``FP8`` (static, per tensor) and
    ``NVFP4`` (``tensor_group`` 16, locally dynamic); None for a weight-only scheme."""
    calibrated = calibrated_kind(scheme)
    if calibrated is not None:
        return ct_input_args(calibrated)
    entry = activation_entry(scheme)
    if entry is None:
        return None
    per_token = entry.grouping == "token"
    return {
        "actorder": None,
        "block_structure": None,
        "dynamic": True,
        "group_size": None if per_token else activation_fields(scheme)[1],
        "num_bits": entry.bits,
        "observer": None,
        "observer_kwargs": {},
        "scale_dtype": str(torch.uint8) if entry.grouping == "mx" else None,
        "strategy": "token" if per_token else "group",
        "symmetric": True,
        "type": "int" if entry.data_type == "int" else "float",
        "zp_dtype": None,
    }


def _format_of(scheme: Scheme) -> str:
    """A scheme's compressed-tensors layout (MX / NV weights keep theirs with their activations)."""
    if calibrated_kind(scheme) == "fp8_static":
        return FP8_W8A8
    if calibrated_kind(scheme) == "nvfp4":
        return group_format(scheme)
    kind = activation_kind(scheme)
    if kind is not None and kind not in MX_ACTIVATIONS:
        return INT_W8A8 if kind == "int8" else FP8_W8A8
    return group_format(scheme) if scheme.data_type in FLOAT_TYPES else PACKED


def to_config(qm: QuantizedModel) -> dict[str, Any]:
    """The ``quantization_config``: one group per scheme, in order of first use."""
    members: dict[Scheme, list[str]] = {}
    for name, scheme in qm.plan.quantized().items():
        members.setdefault(scheme, []).append(name)
    several = len(members) > 1
    groups = {
        f"group_{i}": {
            "format": _format_of(scheme),
            "input_activations": activation_args(scheme),
            "output_activations": None,
            "targets": sorted(names) if several else ["Linear"],
            "weights": float_weight_args(scheme) if scheme.data_type in FLOAT_TYPES else weight_args(scheme),
        }
        for i, (scheme, names) in enumerate(members.items())
    }
    formats = {group["format"] for group in groups.values()}
    config = {
        "config_groups": groups,
        "format": formats.pop() if len(formats) == 1 else MIXED,
        "global_compression_ratio": None,
        "ignore": [name for name, decision in qm.plan.layers.items() if decision.scheme is None],
        "kv_cache_scheme": None,
        "quant_method": METHOD,
        "quantization_status": "compressed",
    }
    if any(scheme.data_type in MX_NV_TYPES for scheme in members):
        config["provider"] = "auto-round"  # Intel's MX / NV exporter says so (its int and FP8 one not)
    return config


def pack_layer(weight: torch.Tensor, quant: LayerQuant) -> dict[str, torch.Tensor]:
    """One layer's tensors from its quantize-dequantized (out, in) weight."""
    if quant.scheme.data_type in FLOAT_TYPES:
        return pack_float_layer(weight, quant)
    bits = quant.scheme.bits
    scale, _ = ct_qparams(quant)
    if activation_kind(quant.scheme) == "int8":  # int-quantized: the signed codes as they are
        signed = codes_of(weight, quant).to(torch.int16) - quant.zero.to(torch.int16)
        return {"weight": signed.to(torch.int8), "weight_scale": scale.contiguous()}
    tensors = {
        "weight_packed": pack_int32(codes_of(weight, quant), bits, dim=1),
        "weight_scale": scale.contiguous(),
        "weight_shape": torch.tensor(list(weight.shape), dtype=torch.int64),
    }
    if not quant.scheme.sym:
        tensors["weight_zero_point"] = pack_int32(quant.zero.t().contiguous(), bits, dim=1).t().contiguous()
    return tensors


def write(qm: QuantizedModel, directory: Path) -> None:
    """Intel's ``llm_compressor`` checkpoint of ``qm`` into ``directory`` (calibrated activation
    scales float32: :func:`~autoround.formats.act_scales.input_tensors`)."""
    tensors = lambda name, weight, quant: {**pack_layer(weight, quant), **input_tensors(name, quant)}  # noqa: E731
    write_checkpoint(qm, directory, to_config(qm), tensors, bias_dtype=None)


FORMAT = Format("llm_compressor", METHOD, CAPABILITIES, writer=write, runtimes=RUNTIMES)
