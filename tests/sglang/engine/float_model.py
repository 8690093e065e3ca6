"""Run in the SGLang venv: a float ``auto_round`` checkpoint's model with every Linear layer SGLang's.

Usage: ``float_model.py REQUEST_JSON RESULT_JSON``. The request holds ``checkpoints`` (name ->
``{"path": checkpoint directory, "reference": safetensors file}``, the latter the in-memory
quantized model's decoder Linear weights, written by the test), ``prompt`` (token ids) and
``new_tokens``.

SGLang's engine does not start on this machine (docs/sglang.md), so per checkpoint this runs the
part of serving that is ours, inside SGLang's own code: SGLang's ``ModelConfig`` picks the method
from the checkpoint; every decoder layer's ``QKVParallelLinear``, ``RowParallelLinear`` (o_proj,
down_proj) and ``MergedColumnParallelLinear`` (gate/up) is built with our config and the
checkpoint's stored tensors go through SGLang's weight loaders (q/k/v and gate/up by shard id);
our method dequantizes them. transformers' Llama runs the rest (embeddings, norms, attention),
its q/k/v and gate/up reading their slice of SGLang's fused output. Recorded: the method of each
layer, the largest difference of each fused part's dense weight from the in-memory model's, the
greedy tokens (argmax over full forwards) and the prompt's logprobs, all in float32.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

#: SGLang layer -> its checkpoint parts as (name, shard id).
FUSED: dict[str, list[tuple[str, Any]]] = {
    "self_attn.qkv_proj": [("self_attn.q_proj", "q"), ("self_attn.k_proj", "k"), ("self_attn.v_proj", "v")],
    "self_attn.o_proj": [("self_attn.o_proj", None)],
    "mlp.gate_up_proj": [("mlp.gate_proj", 0), ("mlp.up_proj", 1)],
    "mlp.down_proj": [("mlp.down_proj", None)],
}


class Slice(nn.Module):
    """One checkpoint layer of an SGLang fused layer: its columns of the fused output."""

    def __init__(self, fused: nn.Module, start: int, stop: int) -> None:
        super().__init__()
        self.fused, self.start, self.stop = fused, start, stop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fused(x)[0][..., self.start : self.stop]


def build(name: str, config: Any, prefix: str, hf: Any) -> nn.Module:
    """SGLang's layer for ``name`` of the decoder layer ``prefix``, unsharded, float32."""
    from sglang.srt.layers.linear import MergedColumnParallelLinear, QKVParallelLinear, RowParallelLinear

    common = {
        "bias": False,
        "params_dtype": torch.float32,
        "quant_config": config,
        "prefix": f"{prefix}.{name}",
        "parallel_group": "replicated",
    }
    heads, kv_heads, head_dim = hf.num_attention_heads, hf.num_key_value_heads, hf.head_dim
    if name == "self_attn.qkv_proj":
        return QKVParallelLinear(hf.hidden_size, head_dim, heads, kv_heads, **common)
    if name == "mlp.gate_up_proj":
        return MergedColumnParallelLinear(hf.hidden_size, [hf.intermediate_size] * 2, **common)
    if name == "self_attn.o_proj":
        return RowParallelLinear(heads * head_dim, hf.hidden_size, **common)
    return RowParallelLinear(hf.intermediate_size, hf.hidden_size, **common)


def load(
    layer: nn.Module, parts: list[tuple[str, Any]], prefix: str, stored: dict[str, torch.Tensor]
) -> None:
    """Each part's stored tensors through the SGLang layer's own weight loaders."""
    for key, param in layer.named_parameters():
        for part, shard in parts:
            tensor = stored[f"{prefix}.{part}.{key}"]
            if shard is None:
                param.weight_loader(param, tensor)
            else:
                param.weight_loader(param, tensor, shard)


def swap_in(
    model: nn.Module, config: Any, stored: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]
) -> dict[str, Any]:
    """Replace every decoder Linear of ``model`` by its slice of an SGLang layer; per layer, the
    method and each part's largest weight difference from ``reference``."""
    from autoround_vllm.float_method import DENSE_WEIGHT

    seen: dict[str, Any] = {}
    for index, block in enumerate(model.model.layers):
        prefix = f"model.layers.{index}"
        for name, parts in FUSED.items():
            layer = build(name, config, prefix, model.config)
            load(layer, parts, prefix, stored)
            layer.quant_method.process_weights_after_loading(layer)
            dense, row, errors = getattr(layer, DENSE_WEIGHT, None), 0, {}
            for part, _ in parts:
                expected = reference[f"{prefix}.{part}.weight"]
                rows = expected.shape[0]
                got = dense[row : row + rows] if dense is not None else None
                errors[part] = None if got is None else (got - expected).abs().max().item()
                owner, _, leaf = part.rpartition(".")
                setattr(block.get_submodule(owner), leaf, Slice(layer, row, row + rows))
                row += rows
            seen[f"{prefix}.{name}"] = {"method": type(layer.quant_method).__name__, "max_weight_err": errors}
    return seen


def run(model: nn.Module, prompt: list[int], new_tokens: int) -> tuple[list[int], list[float]]:
    """Greedy tokens (full forwards, no cache) and the prompt's logprobs."""
    ids = torch.tensor([prompt])
    with torch.no_grad():
        logits = model(ids).logits[0]
        logprobs = torch.log_softmax(logits[:-1], dim=-1).gather(1, ids[0, 1:, None])[:, 0]
        tokens: list[int] = []
        for _ in range(new_tokens):
            step = model(ids).logits[0, -1].argmax().item()
            tokens.append(step)
            ids = torch.cat([ids, torch.tensor([[step]])], dim=1)
    return tokens, logprobs.tolist()


def serve(path: Path, reference_file: Path, prompt: list[int], new_tokens: int) -> dict[str, Any]:
    """SGLang picks the method, its layers load the checkpoint, the model generates."""
    from sglang.srt.configs.model_config import ModelConfig
    from sglang.srt.layers.quantization import get_quantization_config
    from transformers import AutoConfig, AutoModelForCausalLM

    method = ModelConfig(model_path=str(path)).quantization
    config = get_quantization_config(method).from_config(
        json.loads((path / "config.json").read_text())["quantization_config"]
    )
    stored = {k: v for f in sorted(path.glob("*.safetensors")) for k, v in load_file(f).items()}
    reference = load_file(reference_file)
    hf_config = AutoConfig.from_pretrained(path)
    hf_config.__dict__.pop("quantization_config", None)  # a dense model; SGLang's layers replace its Linears
    model = AutoModelForCausalLM.from_config(hf_config, dtype=torch.float32).eval()
    layers = swap_in(model, config, stored, reference)
    rest = {k: v for k, v in stored.items() if "_proj." not in k}  # embeddings and norms
    missing, unexpected = model.load_state_dict(rest, strict=False)
    left = [k for k in missing if "_proj." not in k and k != "lm_head.weight"]  # tied to the embeddings
    assert not left and not unexpected, (left, unexpected)
    model.tie_weights()
    tokens, logprobs = run(model, prompt, new_tokens)
    return {"quantization": method, "layers": layers, "tokens": tokens, "logprobs": logprobs}


def refusals(config_class: Any) -> dict[str, str]:
    """What stays refused: activation quantization (when the config is read), quantized MoE
    experts and a quantized lm_head (when SGLang asks for their method)."""
    from sglang.srt.layers.vocab_parallel_embedding import ParallelLMHead

    base = {
        "quant_method": "auto-round",
        "packing_format": "auto_round:llm_compressor",
        "bits": 4,
        "group_size": 32,
        "sym": True,
        "data_type": "mx_fp",
        "block_name_to_quantize": "model.layers",
    }
    seen = {}
    try:
        config_class.from_config({**base, "act_bits": 8, "act_data_type": "fp", "act_group_size": -1})
    except ValueError as exc:
        seen["act_bits"] = str(exc)

    class FusedMoEExperts(nn.Module):  # SGLang's experts are told apart by their class name
        pass

    try:
        config_class.from_config(base).get_quant_method(FusedMoEExperts(), "model.layers.0.mlp.experts")
    except NotImplementedError as exc:
        seen["experts"] = str(exc)
    head = {**base, "extra_config": {"lm_head": {"bits": 4, "group_size": 32, "data_type": "mx_fp"}}}
    try:  # an instance, not built: SGLang's constructor needs its parallel state
        config_class.from_config(head).get_quant_method(ParallelLMHead.__new__(ParallelLMHead), "lm_head")
    except NotImplementedError as exc:
        seen["lm_head"] = str(exc)
    return seen


def main() -> None:
    request_path, result = sys.argv[1:]
    from sglang.srt.runtime_context import get_parallel

    from autoround_vllm.sglang_plugin import register

    config_class = register()  # what SGLang's plugin loader does in each process
    get_parallel().override_permanently(tp_group=None)  # one process, no group: row layers' forward
    request = json.loads(Path(request_path).read_text())
    report: dict[str, Any] = {"refusals": refusals(config_class)}
    for name, files in request["checkpoints"].items():
        report[name] = serve(
            Path(files["path"]), Path(files["reference"]), request["prompt"], request["new_tokens"]
        )
    Path(result).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
