"""Which method serves an ``auto-round`` checkpoint in vLLM: stock vLLM's ``inc`` or ours.

Pure logic over the checkpoint's ``quantization_config`` and the model's sizes, so it is tested
without vLLM. Checkpoints keep ``quant_method: auto-round``; with autoround-vllm installed, our
method takes the checkpoint where stock vLLM 0.32 cannot serve it (:func:`stock_vllm_gap` says
why), and always when the user names it (``quantization="autoround"``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from autoround.errors import CheckpointError
from autoround.formats import QUANT_METHOD, SCHEME_KEYS, parse_config
from autoround.schemes import UNQUANTIZED_BITS, Scheme

#: The name our method is registered under, in vLLM and SGLang.
METHOD_NAME = "autoround"
#: Bits stock vLLM's ``inc`` method serves on CUDA through Marlin (symmetric GPTQ packing only).
STOCK_CUDA_BITS = (4, 8)
#: Group sizes Marlin accepts.
STOCK_CUDA_GROUPS = (-1, 32, 64, 128)


def is_auto_round(quant_cfg: Mapping[str, Any]) -> bool:
    """True for a checkpoint written in the ``auto_round`` format (ours or Intel's)."""
    return quant_cfg.get("quant_method") == QUANT_METHOD


def input_widths(hf_config: Any) -> tuple[int, ...]:
    """The input widths of a decoder's Linear layers, from a transformers config (best effort)."""
    if hf_config is None:
        return ()
    text = getattr(hf_config, "get_text_config", lambda: hf_config)()
    widths = []
    hidden = getattr(text, "hidden_size", None)
    heads = getattr(text, "num_attention_heads", None)
    head_dim = getattr(text, "head_dim", None) or (hidden // heads if hidden and heads else None)
    for value in (hidden, getattr(text, "intermediate_size", None), heads and head_dim and heads * head_dim):
        if isinstance(value, int) and value > 0:
            widths.append(value)
    return tuple(widths)


def _schemes(quant_cfg: Mapping[str, Any]) -> list[Scheme]:
    """The default scheme and every quantized scheme ``extra_config`` names."""
    spec = parse_config(quant_cfg)
    schemes = [spec.default]
    for entry in spec.extra_config.values():
        fields = {k: entry[k] for k in SCHEME_KEYS if entry.get(k) is not None}
        if int(fields.get("bits", spec.default.bits)) < UNQUANTIZED_BITS:
            schemes.append(spec.default.replace(**fields))
    return schemes


def stock_vllm_gap(quant_cfg: Mapping[str, Any], device_type: str, widths: Iterable[int] = ()) -> str | None:
    """Why stock vLLM 0.32 cannot serve this ``auto-round`` checkpoint on ``device_type``, or None.

    ``widths`` are the model's Linear input widths (a group size that does not divide one leaves
    a partial last group, which stock vLLM cannot load). The config must be readable
    (:func:`unreadable` is None).
    """
    if device_type != "cuda":
        return (
            f"device {device_type!r}: stock vLLM serves int weight-only checkpoints through Marlin on "
            "CUDA only (its CPU kernel is 4-bit symmetric only and absent from AVX2 builds)"
        )
    if parse_config(quant_cfg).dense_weights:
        return "dense weights with quantized inputs (auto_round:fake): stock INC has no such layer"
    schemes = _schemes(quant_cfg)
    if len({(s.bits, s.group_size, s.sym) for s in schemes}) > 1:
        return "mixed schemes per layer (extra_config)"
    for s in schemes:
        if s.data_type != "int":
            return None  # not ours to take: stock vLLM's other INC paths (mxfp, fp8)
        if s.bits not in STOCK_CUDA_BITS:
            return f"{s.bits}-bit weights (stock Marlin serves {list(STOCK_CUDA_BITS)})"
        if not s.sym:
            return "asymmetric weights (stock INC serves symmetric GPTQ packing only)"
        if s.group_size not in STOCK_CUDA_GROUPS:
            return f"group size {s.group_size} (Marlin serves {list(STOCK_CUDA_GROUPS)})"
        partial = [w for w in widths if s.group_size > 0 and w > s.group_size and w % s.group_size]
        if partial:
            return f"partial last groups (input widths {partial} with group size {s.group_size})"
    return None


def unreadable(quant_cfg: Mapping[str, Any]) -> str | None:
    """Why autoround-core cannot read this config (a data type or bit width it does not pack), or None."""
    try:
        _schemes(quant_cfg)
    except (CheckpointError, ValueError, NotImplementedError) as exc:
        return str(exc)
    return None


def choose_method(
    quant_cfg: Mapping[str, Any],
    user_quant: str | None,
    device_type: str,
    widths: Iterable[int] = (),
) -> str | None:
    """Our method's name when it should serve the checkpoint, else None (vLLM decides).

    The user's explicit choice wins: ``quantization="autoround"`` picks ours, any other name
    (``"inc"``) leaves the choice to vLLM, and so does a config core cannot read. Intel's float
    weight-only layouts (MXFP4 / MXFP8 / NVFP4 / FP8) are read: ours on the CPU, stock on CUDA.
    """
    if not is_auto_round(quant_cfg):
        return None
    if user_quant == METHOD_NAME:
        return METHOD_NAME
    if user_quant is not None or unreadable(quant_cfg):
        return None
    return METHOD_NAME if stock_vllm_gap(quant_cfg, device_type, widths) else None
