"""Run in the SGLang venv: our method inside SGLang's own linear layers, against plain torch.

Usage: ``layers.py RESULT_JSON``. For each case (a ``quantization_config``), SGLang's
``QKVParallelLinear``, ``RowParallelLinear`` (o_proj, down_proj) and ``MergedColumnParallelLinear``
(gate/up) are built at SmolLM2's sizes with our config (after our plugin registered), each
checkpoint part's packed tensors go through SGLang's weight loaders (q/k/v and gate/up fused
by shard id), our method prepares the layer, and its output is compared with ``x @ W^T`` where
``W`` is dequantized from the packed tensors in plain torch (the GPTQ bit stream decoded here).
Run once per autoround-core backend: ``torch`` (fp32 input) and the CPU default (bf16 input).
One process, unsharded layers (``parallel_group="replicated"``: TP=1, no process group).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

HIDDEN, HEADS, KV_HEADS, HEAD_DIM, INTERMEDIATE = 576, 9, 3, 64, 1536
#: SGLang layer -> (its class, checkpoint parts as (name, shard id, out features), in features).
LAYERS: dict[str, tuple[str, list[tuple[str, Any, int]], int]] = {
    "self_attn.qkv_proj": (
        "qkv",
        [("self_attn.q_proj", "q", 576), ("self_attn.k_proj", "k", 192), ("self_attn.v_proj", "v", 192)],
        HIDDEN,
    ),
    "self_attn.o_proj": ("row", [("self_attn.o_proj", None, HIDDEN)], HIDDEN),
    "mlp.gate_up_proj": (
        "merged",
        [("mlp.gate_proj", 0, INTERMEDIATE), ("mlp.up_proj", 1, INTERMEDIATE)],
        HIDDEN,
    ),
    "mlp.down_proj": ("row", [("mlp.down_proj", None, HIDDEN)], INTERMEDIATE),
}
PREFIX = "model.layers.0."


def cases() -> dict[str, dict[str, Any]]:
    """Every scheme the method serves: 2/3/4/8 bits, sym and asym, groups of 128 (partial at
    576 inputs), 32 and per channel; and one checkpoint mixing schemes per layer."""
    out = {}
    for bits in (2, 3, 4, 8):
        for sym in (True, False):
            for group in (128, 32, -1):
                name = f"w{bits}g{group if group > 0 else 'chan'}_{'sym' if sym else 'asym'}"
                out[name] = {
                    "quant_method": "auto-round",
                    "packing_format": "auto_round:auto_gptq" if sym else "auto_round",
                    "bits": bits,
                    "group_size": group,
                    "sym": sym,
                    "data_type": "int",
                    "block_name_to_quantize": "model.layers",
                }
    out["mixed_8bit_down_16bit_o"] = {
        **out["w4g128_sym"],
        "extra_config": {
            f"{PREFIX}mlp.down_proj": {"bits": 8, "group_size": 64},
            f"{PREFIX}self_attn.o_proj": {"bits": 16, "data_type": "fp"},
        },
    }
    return out


def unpack(packed: torch.Tensor, bits: int, count: int, dim: int) -> torch.Tensor:
    """``count`` codes of a little-endian bit stream of int32 words along ``dim`` (GPTQ's order)."""
    words = packed.to(torch.int64) & 0xFFFFFFFF
    words = words if dim == 0 else words.t()
    start = torch.arange(count) * bits
    word, offset = start // 32, (start % 32)[:, None]
    low = words[word] >> offset
    high = words[(word + 1).clamp(max=words.shape[0] - 1)] << (32 - offset)
    codes = torch.where(offset + bits > 32, low | high, low) & ((1 << bits) - 1)
    return codes if dim == 0 else codes.t()


def dequantize(tensors: dict[str, torch.Tensor], bits: int, group: int, zero_offset: int) -> torch.Tensor:
    """The (out, in) fp32 weight the packed ``qweight``/``qzeros``/``scales`` encode."""
    scales = tensors["scales"].float()
    out_features = scales.shape[1]
    in_features = tensors["qweight"].shape[0] * 32 // bits
    codes = unpack(tensors["qweight"], bits, in_features, 0).float()  # (in, out)
    zeros = unpack(tensors["qzeros"], bits, out_features, 1).float() + zero_offset  # (groups, out)
    row_group = torch.arange(in_features) // (group if group > 0 else in_features)
    return ((codes - zeros[row_group]) * scales[row_group]).t()


def build(kind: str, config: Any, prefix: str, in_features: int, outs: list[int]) -> torch.nn.Module:
    from sglang.srt.layers.linear import MergedColumnParallelLinear, QKVParallelLinear, RowParallelLinear

    common = {"bias": False, "params_dtype": torch.bfloat16, "quant_config": config, "prefix": prefix}
    if kind == "qkv":
        return QKVParallelLinear(HIDDEN, HEAD_DIM, HEADS, KV_HEADS, parallel_group="replicated", **common)
    if kind == "merged":
        return MergedColumnParallelLinear(in_features, outs, parallel_group="replicated", **common)
    return RowParallelLinear(in_features, outs[0], parallel_group="replicated", **common)


def run_layer(config: Any, layer_name: str, seed: int) -> dict[str, Any]:
    """Build, load and run one SGLang layer; its output against the plain-torch product."""
    from autoround.formats.auto_round import ZERO_OFFSET
    from autoround.formats.gptq_layout import pack_layer
    from autoround.layer_quant import quantize_weight

    kind, parts, in_features = LAYERS[layer_name]
    layer = build(kind, config, PREFIX + layer_name, in_features, [n for _, _, n in parts])
    method = type(layer.quant_method).__name__
    dense, core_qdq = [], []
    torch.manual_seed(seed)
    for part, shard, out_features in parts:
        weight = torch.randn(out_features, in_features) * 0.05
        scheme = config.spec.scheme_for(PREFIX + part)
        if scheme is None:  # kept in 16 bits: SGLang's unquantized method and loader
            tensors = {"weight": weight.bfloat16()}
            dense.append(tensors["weight"].float())
            core_qdq.append(dense[-1])
        else:
            qdq, quant = quantize_weight(weight, scheme)
            tensors = pack_layer(qdq, quant, config.spec.zero_offset)
            dense.append(dequantize(tensors, scheme.bits, scheme.group_size, config.spec.zero_offset))
            core_qdq.append(qdq.float())
            assert ZERO_OFFSET[config.spec.packing_format] == config.spec.zero_offset
        params = dict(layer.named_parameters())
        assert set(params) == set(tensors), (layer_name, sorted(params), sorted(tensors))
        for key, tensor in tensors.items():
            loader = params[key].weight_loader
            if shard is None:
                loader(params[key], tensor)
            else:  # one part of a fused layer, placed by SGLang's loader
                loader(params[key], tensor, shard)
    layer.quant_method.process_weights_after_loading(layer)
    reference = torch.cat(dense)
    x = torch.randn(5, in_features)
    core = getattr(layer, "autoround_linear", None)
    # the torch backend computes in the input's dtype; the cpu backend and SGLang's unquantized
    # method (bf16 weights) in bf16
    dtype = torch.float32 if core is not None and core.backend == "torch" else torch.bfloat16
    with torch.no_grad():
        out = layer(x.to(dtype))[0].float()
    expected = x.to(dtype).float() @ reference.t()
    return {
        "method": method,
        "backend": None if core is None else core.backend,
        "input_dtype": str(dtype),
        "max_err": (out - expected).abs().max().item(),
        "ref_scale": expected.abs().max().item(),
        "ref_vs_core_qdq": (reference - torch.cat(core_qdq)).abs().max().item(),
        "shapes": {k: list(v.shape) for k, v in layer.named_parameters()},
    }


def main() -> None:
    (result,) = sys.argv[1:]
    from sglang.srt.runtime_context import get_parallel

    from autoround_vllm.sglang_plugin import register

    config_class = register()  # what SGLang's plugin loader does; layers pick the v2 loaders
    get_parallel().override_permanently(tp_group=None)  # one process, no group: row layers' forward
    report: dict[str, Any] = {}
    for backend in ("torch", "default"):
        if backend == "default":
            os.environ.pop("AUTOROUND_VLLM_BACKEND", None)
        else:
            os.environ["AUTOROUND_VLLM_BACKEND"] = backend
        for name, quant_cfg in cases().items():
            config = config_class.from_config(quant_cfg)
            report[f"{name}/{backend}"] = {
                layer: run_layer(config, layer, seed) for seed, layer in enumerate(LAYERS)
            }
    Path(result).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
