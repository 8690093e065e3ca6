"""transformers' own compressed-tensors integration (no autoround-hf) loads our ``llm_compressor``
float checkpoints (FP8, NVFP4, MXFP4, MXFP8, mixed with integers) and computes the quantized
model's logits and greedy text.

compressed-tensors decompresses FP4 and MX layers to bfloat16 (a float32 model then fails in its
matmul), so those cases quantize a bfloat16 model; FP8 ones a float32 model, since transformers
loads FP8 scales in the model's dtype (our float32 scales rounded in a bfloat16 model).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM

import autoround

IDS = torch.tensor([[1, 5, 9, 3, 7, 2, 11, 4, 40, 90]])
NEW_TOKENS = 8
BF16, FP32 = torch.bfloat16, torch.float32
CASES: dict[str, tuple[torch.dtype, str, dict[str, Any]]] = {
    "fp per tensor": (FP32, "FPW8A16", {}),
    "fp per channel": (FP32, "FPW8A16", {"group_size": -1}),
    "fp group 32": (FP32, "FPW8A16", {"group_size": 32}),
    "nv_fp": (BF16, "NVFP4", {"act_bits": 16}),
    "mx_fp 4-bit": (BF16, "MXFP4", {"act_bits": 16}),
    "mx_fp 8-bit": (BF16, "MXFP8", {"act_bits": 16}),
    "int + nv_fp + mx_fp": (
        BF16,
        "W4A16G32",
        {
            "layer_config": {
                "self_attn.o_proj": {"data_type": "nv_fp", "bits": 4, "group_size": 16},
                "mlp.up_proj": {"data_type": "mx_fp", "bits": 4, "group_size": 32},
            }
        },
    ),
    "int + fp": (
        FP32,
        "W4A16G32",
        {"layer_config": {"mlp.down_proj": {"data_type": "fp", "group_size": -1}}},
    ),
}

pytestmark = pytest.mark.filterwarnings("ignore")


def _run(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of IDS and NEW_TOKENS greedy tokens after them."""
    with torch.no_grad():
        logits = model(IDS).logits.float()
        tokens = model.generate(IDS, max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=0)
    return logits, tokens[:, IDS.shape[1] :]


@pytest.mark.parametrize("case", list(CASES))
def test_transformers_loads_our_float_checkpoint_to_the_quantized_model(tmp_path, case) -> None:
    from tiny_models import TINY_LLAMA, build_model
    from transformers import LlamaConfig

    dtype, scheme, kwargs = CASES[case]
    if "layer_config" in kwargs:  # a layer's fields over the default: an FP8 layer needs 8 bits
        kwargs = {
            "layer_config": {
                k: ({"bits": 8} | v) if v.get("data_type") == "fp" else v
                for k, v in kwargs["layer_config"].items()
            }
        }
    qm = autoround.quantize(
        build_model(LlamaConfig(**TINY_LLAMA), dtype=dtype), scheme, progress=False, **kwargs
    )
    path: Path = autoround.save(qm, tmp_path / "ckpt", format="llm_compressor")

    loaded = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    assert type(loaded.hf_quantizer).__name__ == "CompressedTensorsHfQuantizer"
    logits, tokens = _run(loaded)  # the first forward decompresses the layers (compressed-tensors' hook)
    for name in qm.layers:
        assert torch.equal(loaded.get_submodule(name).weight, qm.model.get_submodule(name).weight), name
    ref_logits, ref_tokens = _run(qm.model)
    torch.testing.assert_close(logits, ref_logits, atol=0, rtol=0)
    assert torch.equal(tokens, ref_tokens)
