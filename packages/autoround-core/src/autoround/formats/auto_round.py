"""The ``auto_round`` checkpoint format, as Intel auto-round writes it, in its three packings.

``auto_round`` takes Intel's choice per default scheme: symmetric schemes use packing
``auto_round:auto_gptq`` (GPTQ layout, zero points stored minus one); asymmetric ones
``auto_round`` (same layout, zero points stored as they are). Intel's names
``auto_round:auto_gptq`` and ``auto_round:auto_awq`` force a packing: GPTQ's zero-minus-one
layout for every scheme, or AutoAWQ's gemm layout (4-bit; float32 tensors saved as float16, as
Intel does). The top-level scheme sits in ``config.json``'s ``quantization_config`` (also written
to ``quantization_config.json``); block layers that differ from it, and every quantized layer
outside the blocks (``lm_head``, with all its fields), are listed in ``extra_config`` by exact
name. Unquantized tensors keep their names and dtypes; tied embeddings stay tied, unless the
tied ``lm_head`` is quantized: then the embedding is stored dense, ``lm_head`` packed, and
``config.json`` says ``tie_word_embeddings: false``.

Float weight types (MXFP4 / MXFP8 / NVFP4, FP8 per tensor, channel, group or in 2-D tiles; with
their calibrated, dynamic MX or FP8_BLOCK activations) are written as Intel's float exports write
them (:mod:`autoround.formats.auto_round_float`): packing ``auto_round:llm_compressor`` for MX /
NV, none (``fmt``, ``activation_scheme``) for FP8, ``auto_round:fp8`` for FP8_BLOCK's tiles.
Integer weights with integer per-token activations (INT8_W8A8, INT4 W4A4): Intel's packing
``auto_round:fake``, weights stored dense (:mod:`autoround.formats.auto_round_fake`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from autoround._version import __version__
from autoround.dtypes.activations import activation_problem
from autoround.errors import CheckpointError
from autoround.formats import auto_round_fake as fake
from autoround.formats import auto_round_float, awq_layout
from autoround.formats.act_scales import input_tensors
from autoround.formats.base import (
    ACT_KEYS,
    AWQ_PACKING,
    GPTQ_PACKING,
    PLAIN_PACKING,
    QUANT_METHOD,
    SCHEME_KEYS,
    ZERO_OFFSET,
    Capabilities,
    CheckpointSpec,
    Format,
    SaveFn,
    blocks_and_extra,
    quant_method_of,
)
from autoround.formats.checkpoint import LayerTensors, write_checkpoint
from autoround.formats.gptq_layout import pack_layer, zero_problems
from autoround.layer_plan import LayerPlan
from autoround.layer_quant import LayerQuant
from autoround.nn.float_weights import LLM_COMPRESSOR_PACKING, is_float_type
from autoround.packing import SUPPORTED_BITS
from autoround.quantized_model import QuantizedModel
from autoround.schemes import UNQUANTIZED_BITS, Scheme

logger = logging.getLogger(__name__)

REQUIRED_KEYS = ("quant_method", "packing_format", *SCHEME_KEYS)
#: What the GPTQ / plain packings store: integers of the bit widths the GPTQ int32 packing is
#: built for (Intel also packs 5-7 bits; not yet we).
CAPABILITIES = Capabilities(data_types=("int",), bits=SUPPORTED_BITS)
#: The float weight types ``auto_round`` (Intel's choice of packing) also writes.
FLOAT_DATA_TYPES = ("mx_fp", "mx_fp_rceil", "mx_int", "nv_fp", "fp")


def _layout_problem(scheme: Scheme, in_features: int | None) -> str | None:
    """What ``FLOAT_CAPABILITIES``' fields cannot say: which float bits and groups are written."""
    return auto_round_float.float_problem(scheme, in_features) if scheme.data_type != "int" else None


#: What ``auto_round`` stores: the integer packings' schemes, and the float types Intel's float
#: exports write, one family per checkpoint (:func:`auto_round_float.mixing_problems`).
FLOAT_CAPABILITIES = Capabilities(
    data_types=("int", *FLOAT_DATA_TYPES),
    bits=SUPPORTED_BITS,
    check=_layout_problem,
    note=(
        "mx_fp(_rceil) 4/8-bit group 32, mx_int 4-bit group 32 (MXINT4), nv_fp 4-bit group 16, "
        "fp 8-bit per tensor or channel, all symmetric; "
        "no integer beside float layers; calibrated activations with FP8 / NVFP4 weights; "
        "dynamic MX activations per 32 (MXFP4 / MXFP8, floor or RCEIL exponents, MXINT4: Intel's "
        "presets); FP8_BLOCK (fp 8-bit 2-D tiles, dynamic FP8 activations per group); not "
        "FP8 per-token dynamic activations (Intel's auto_round export refuses them: "
        f"llm_compressor writes them); {fake.NOTE}"
    ),
    activations=("fp8_static", "nvfp4", *auto_round_float.MX_ACT_KINDS, "fp8_group", *fake.ACT_KINDS),
    blocks=True,
)
#: Who loads what it writes (``autoround list``; docs/formats.md says what was run here).
RUNTIMES = ("autoround", "transformers + autoround-hf", "vLLM + autoround-vllm")


def packing_format_for(scheme: Scheme) -> str:
    """Intel's choice: GPTQ's zero-minus-one layout for symmetric schemes."""
    return GPTQ_PACKING if scheme.sym else PLAIN_PACKING


def _extra_entry(scheme: Scheme | None, default: Scheme, in_blocks: bool) -> dict[str, Any]:
    if scheme is None:
        return {"bits": UNQUANTIZED_BITS, "data_type": "fp"}
    fields = scheme.to_dict()
    if not in_blocks:  # layers outside the blocks are listed with every field, as Intel does
        return {k: fields[k] for k in SCHEME_KEYS}
    base = default.to_dict()
    return {k: v for k, v in fields.items() if base.get(k) != v}


def to_config(qm: QuantizedModel, packing: str | None = None) -> dict[str, Any]:
    """The ``quantization_config`` dict for a quantized model (``packing``: Intel's choice when None)."""
    return quantization_config(qm.scheme, qm.plan, qm.settings, _dense_block_matrices(qm), packing)


def quantization_config(
    default: Scheme,
    plan: LayerPlan,
    settings: Mapping[str, Any],
    dense_block_matrices: Sequence[str] = (),
    packing: str | None = None,
) -> dict[str, Any]:
    """:func:`to_config` from its parts: the default scheme, the plan, the recorded settings and
    the block modules holding a matrix the plan does not cover (model-free quantization passes
    the ones it found in a checkpoint's tensors)."""
    config: dict[str, Any] = {k: default.to_dict()[k] for k in SCHEME_KEYS}
    config.update(settings)
    config.update(
        autoround_version=__version__,
        block_name_to_quantize=",".join(plan.block_names),
        quant_method=QUANT_METHOD,
        packing_format=packing or packing_format_for(default),
    )
    extra: dict[str, dict[str, Any]] = {}
    for name, scheme in plan.overrides(default).items():
        in_blocks = any(name.startswith(b + ".") for b in plan.block_names)
        extra[name] = _extra_entry(scheme, default, in_blocks)
    for name in dense_block_matrices:
        extra[name] = _extra_entry(None, default, in_blocks=True)
    if extra:
        config["extra_config"] = extra
    return config


def _dense_block_matrices(qm: QuantizedModel) -> list[str]:
    """Modules inside the blocks that hold a matrix the plan does not cover, stored dense.

    A MoE router (``mlp.gate``) is no Linear in transformers but is one in vLLM, whose reader
    would assume the default scheme inside the blocks: it is listed as 16-bit.
    """
    plan = qm.plan
    return [
        name
        for name, module in qm.model.named_modules()
        if name not in plan.layers
        and any(name.startswith(block + ".") for block in plan.block_names)
        and isinstance(getattr(module, "weight", None), torch.Tensor)
        and module.weight.ndim == 2
        and not isinstance(module, torch.nn.Embedding)
    ]


def parse_config(config: Mapping[str, Any]) -> CheckpointSpec:
    """Validate a ``quantization_config``; errors name the offending key and what is allowed.

    Intel's float layouts are read by :func:`parse_float_config`, packing ``auto_round:fake`` by
    :mod:`~autoround.formats.auto_round_fake`; a float ``data_type`` in an integer packing is refused."""
    if config.get("packing_format") == fake.FAKE_PACKING:
        return fake.parse_fake_config(config)
    if _float_config(config):
        return parse_float_config(config)
    missing = [k for k in REQUIRED_KEYS if k not in config]
    if missing:
        raise CheckpointError(
            f"quantization_config is missing key(s) {missing}; required: {list(REQUIRED_KEYS)}"
        )
    if config["quant_method"] != QUANT_METHOD:
        raise CheckpointError(
            f"quantization_config.quant_method is {config['quant_method']!r}; "
            f"this format reads {QUANT_METHOD!r}"
        )
    if config["packing_format"] not in ZERO_OFFSET:
        raise CheckpointError(
            f"quantization_config.packing_format {config['packing_format']!r} is not supported; "
            f"allowed: {sorted(ZERO_OFFSET)}"
        )
    try:
        default = Scheme.from_dict({k: config[k] for k in SCHEME_KEYS})
    except (ValueError, NotImplementedError) as exc:
        raise CheckpointError(f"quantization_config: {exc}") from exc
    if default.data_type not in CAPABILITIES.data_types:
        floats = ""
        if is_float_type(default.data_type):
            floats = f" (float types: with packing_format {LLM_COMPRESSOR_PACKING!r}, or none for FP8)"
        raise CheckpointError(
            f"quantization_config.data_type={default.data_type!r} cannot be read from this format; "
            f"allowed: {list(CAPABILITIES.data_types)}{floats}"
        )
    if default.bits not in CAPABILITIES.bits:
        raise CheckpointError(
            f"quantization_config.bits={default.bits} cannot be unpacked; allowed: {list(CAPABILITIES.bits)}"
        )
    return CheckpointSpec(default, config["packing_format"], *blocks_and_extra(config))


#: Intel's float ``data_type`` spelled with its bits (``mx_fp4``, ``mx_int4``, ``nv_fp4``, ``fp8``).
_TYPE_WITH_BITS = re.compile(r"^(mx_fp|mx_int|nv_fp|fp)\d+$")
#: The packings an FP8 config may name: Intel writes none (the HF config then fills in its
#: default for a symmetric scheme) or, for FP8_STATIC, its own; or ours after a save_pretrained.
_FP8_PACKINGS = (
    None,
    PLAIN_PACKING,
    GPTQ_PACKING,
    auto_round_float.FP8_STATIC_PACKING,
    auto_round_float.FP8_BLOCK_PACKING,
)


def _float_config(config: Mapping[str, Any]) -> bool:
    """Whether a config is one of Intel's float layouts: an MX / NV type in packing
    ``auto_round:llm_compressor`` (``mx_int``: ``auto_round``), or FP8 (Intel names no packing for it)."""
    match = _TYPE_WITH_BITS.match(str(config.get("data_type")))
    family = match.group(1) if match else str(config.get("data_type"))
    if family == "fp":
        return config.get("packing_format") in _FP8_PACKINGS
    return is_float_type(family) and config.get("packing_format") == auto_round_float.packing_of(family)


def parse_float_config(config: Mapping[str, Any]) -> CheckpointSpec:
    """The spec of Intel's weight-only float checkpoints (layouts: :mod:`autoround.nn.float_weights`).

    MX / NV layers name packing ``auto_round:llm_compressor`` (MXINT4: ``auto_round``); FP8 ones
    (``FPW8A16``) none, and
    ``fmt`` ``e4m3``. Activations are read where their scale is calibrated and stored
    (``FP8_STATIC``'s ``input_scale``, NVFP4 W4A4's ``input_global_scale``:
    :mod:`autoround.formats.act_scales`), and the dynamic MX activations Intel's MX presets
    write (config keys only); other activation quantization (``act_bits`` below 16) stays
    refused, as for integer checkpoints; every quantized layer, ``extra_config`` ones included,
    must have a float layout.
    """
    missing = [k for k in ("quant_method", *SCHEME_KEYS) if k not in config]
    if missing:
        raise CheckpointError(f"quantization_config is missing key(s) {missing}")
    if config["quant_method"] != QUANT_METHOD:
        raise CheckpointError(
            f"quantization_config.quant_method is {config['quant_method']!r}; "
            f"this format reads {QUANT_METHOD!r}"
        )
    default = _float_default(config)
    packing = config.get("packing_format")
    if default.data_type == "fp":
        if packing not in _FP8_PACKINGS or config.get("fmt", "e4m3") != "e4m3":
            raise CheckpointError(
                f"quantization_config: an FP8 checkpoint with packing_format={packing!r}, "
                f"fmt={config.get('fmt')!r} is not read; allowed: no packing_format "
                f"(or {list(_FP8_PACKINGS[1:])}), fmt 'e4m3'"
            )
        packing = PLAIN_PACKING
    else:
        wanted = auto_round_float.packing_of(default.data_type)
        if packing != wanted:
            raise CheckpointError(
                f"quantization_config.packing_format {packing!r} is not read for data_type "
                f"{default.data_type!r}; allowed: {wanted!r}"
            )
        packing = wanted
    blocks, extra = blocks_and_extra(config)
    spec_type = auto_round_float.TiledFloatSpec if default.block_shape is not None else CheckpointSpec
    spec = spec_type(default, packing, blocks, extra)
    for name in ["", *extra]:  # "": a block layer of the default scheme
        scheme = default if not name else _extra_scheme(spec, name)
        reason = None if scheme is None else auto_round_float.float_layout_problem(scheme)
        if reason is not None:
            where = f"extra_config[{name!r}]" if name else "quantization_config"
            raise CheckpointError(f"{where}: {reason}")
    return spec


def _float_default(config: Mapping[str, Any]) -> Scheme:
    """The default scheme of a float config, its activation fields where it quantizes them.

    Raises:
        CheckpointError: a bad field, or activations the format does not store (dynamic FP8 ones
            are read through compressed-tensors).
    """
    act_bits = config.get("act_bits")
    quantized_acts = act_bits is not None and int(act_bits) < UNQUANTIZED_BITS
    keys = (*SCHEME_KEYS, *ACT_KEYS) if quantized_acts else SCHEME_KEYS
    try:
        default = Scheme.from_dict({k: config[k] for k in keys if config.get(k) is not None})
    except (ValueError, NotImplementedError) as exc:
        raise CheckpointError(f"quantization_config: {exc}") from exc
    if quantized_acts and not FLOAT_CAPABILITIES.stores_activations(default):
        why = activation_problem(default) or "these dynamic activations are read through compressed-tensors"
        raise CheckpointError(
            f"quantization_config.act_bits={act_bits} (act_data_type={config.get('act_data_type')!r}, "
            f"act_dynamic={config.get('act_dynamic')!r}): {why}; autoround reads calibrated activations "
            "(FP8_STATIC: fp 8-bit static per tensor; NVFP4: nv_fp4_with_static_gs), dynamic MX "
            f"activations ({', '.join(auto_round_float.MX_ACT_KINDS)}), FP8_BLOCK's FP8 per group with its "
            "2-D weight tiles, or the weight-only form (act_bits=16)"
        )
    return default


def _extra_scheme(spec: CheckpointSpec, name: str) -> Scheme | None:
    try:
        return spec.scheme_for(name)
    except (ValueError, NotImplementedError) as exc:  # activation quantization, a bad field
        raise CheckpointError(f"quantization_config.extra_config[{name!r}]: {exc}") from exc


def _pack_for(packing: str) -> LayerTensors:
    """One layer's tensors in a packing: GPTQ's layout (zeros stored minus one, or as they are),
    or AutoAWQ's gemm layout."""
    if packing == AWQ_PACKING:
        return lambda name, weight, quant: awq_layout.pack_layer(weight, quant)
    offset = ZERO_OFFSET[packing]
    return lambda name, weight, quant: pack_layer(weight, quant, offset)


def write_float(qm: QuantizedModel, directory: Path) -> None:
    """Intel's ``auto_round`` checkpoint of a model quantized with float weight types."""
    config = auto_round_float.float_config(to_config(qm), qm.scheme)
    dtype = auto_round_float.model_dtype(qm.model)

    def tensors(name: str, weight: torch.Tensor, quant: LayerQuant) -> dict[str, torch.Tensor]:
        # Intel's FP8QLinear holds input_scale in the model's dtype, qlinear_fp the global scale in float32
        return {**auto_round_float.pack_layer(weight, quant, dtype), **input_tensors(name, quant, dtype)}

    # Intel's MX / NV layers hold their bias in float16; its FP8 layer keeps the bias as it is
    bias_dtype = None if qm.scheme.data_type == "fp" else torch.float16
    write_checkpoint(qm, directory, config, tensors, bias_dtype=bias_dtype)
    logger.info("wrote %d %s layers to %s", len(qm.layers), qm.scheme.data_type, directory)


def writer_for(packing: str | None = None, export_dtype: torch.dtype | None = None) -> SaveFn:
    """The writer of an auto_round checkpoint whose layers use ``packing`` (None: Intel's choice
    per scheme, :func:`packing_format_for`, its float or fake layouts: see the module's text)."""

    def write(qm: QuantizedModel, directory: Path) -> None:
        if packing is None and auto_round_float.is_float_model(qm):
            write_float(qm, directory)
            return
        if packing is None and fake.is_fake_model(qm):
            fake.write_fake(qm, directory, to_config(qm, fake.FAKE_PACKING))
            return
        chosen = packing or packing_format_for(qm.scheme)
        config = to_config(qm, chosen)
        write_checkpoint(qm, directory, config, _pack_for(chosen), export_dtype=export_dtype)
        logger.info("wrote %d quantized layers with packing %s to %s", len(qm.layers), chosen, directory)

    return write


def can_read(config: Mapping[str, Any]) -> bool:
    """An auto-round ``quantization_config`` in the GPTQ layout (GPTQ's and AWQ's readers go first)."""
    return quant_method_of(config) == QUANT_METHOD


def to_auto_round(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config itself, ``quant_method`` filled in (a config without one is taken as ours)."""
    return {**config, "quant_method": QUANT_METHOD}


def read_spec(config: Mapping[str, Any], block_names: Sequence[str] = ()) -> CheckpointSpec:
    """:func:`parse_config`, blocks filled in from ``block_names`` when the config names none."""
    return parse_config(config).with_default_blocks(block_names)


FORMAT = Format(
    "auto_round", QUANT_METHOD, FLOAT_CAPABILITIES, can_read, to_auto_round, read_spec,
    writer=writer_for(), runtimes=RUNTIMES, check_mixing=fake.mixing_problems,
)  # fmt: skip
#: Intel's ``auto_round:auto_gptq``: GPTQ's zero-minus-one packing whatever the scheme (asymmetric
#: layers too, so a zero point of 0 is refused: GPTQ's convention cannot hold it).
GPTQ_PACKED = Format(
    GPTQ_PACKING, QUANT_METHOD, CAPABILITIES, writer=writer_for(GPTQ_PACKING), runtimes=RUNTIMES,
    read_via="auto_round", check_quantized=zero_problems,
)  # fmt: skip
#: Intel's ``auto_round:auto_awq``: AutoAWQ's gemm packing inside an auto-round config (read by
#: the AWQ reader, which knows that packing name).
AWQ_PACKED = Format(
    AWQ_PACKING, QUANT_METHOD, awq_layout.CAPABILITIES, writer=writer_for(AWQ_PACKING, torch.float16),
    runtimes=("autoround", "transformers + autoround-hf", "vLLM inc (stock)"), read_via="auto_awq",
)  # fmt: skip
