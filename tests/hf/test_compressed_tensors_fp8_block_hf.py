"""transformers' own compressed-tensors integration (no autoround-hf) loads our ``llm_compressor``
FP8_BLOCK checkpoints (one scale per 128 x 128 tile, weight-only: act_bits=16) and computes the
quantized model's weights, logits and greedy tokens.

Round-to-nearest in float32 and bfloat16 (block_fp8's scales of a bfloat16 weight are bfloat16,
so transformers' loading of the scales in the model's dtype is exact), SignRound in float32 (its
scales are float32, as Intel's); and the full scheme (dynamic FP8 activations per group of 128)
on a llama whose widths are multiples of 128.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

import autoround
from autoround.algorithms.signround import SignRoundSettings
from autoround.schemes import PRESETS

IDS = torch.tensor([[1, 5, 9, 3, 7, 2, 11, 4, 40, 90]])
NEW_TOKENS = 8
FP8_BLOCK = PRESETS["FP8_BLOCK"].replace(act_bits=16)
#: case -> (model dtype, SignRound iterations or 0 for RTN, scheme)
CASES = {
    "rtn float32": (torch.float32, 0, FP8_BLOCK),
    "rtn bfloat16": (torch.bfloat16, 0, FP8_BLOCK),
    "signround float32": (torch.float32, 5, FP8_BLOCK),
    "full scheme rtn float32": (torch.float32, 0, PRESETS["FP8_BLOCK"]),
}
#: The tiny llama's widths made multiples of 128, for the scheme's activation groups.
WIDE = {"hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 4}

pytestmark = pytest.mark.filterwarnings("ignore")


def _run(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of IDS and NEW_TOKENS greedy tokens after them."""
    with torch.no_grad():
        logits = model(IDS).logits.float()
        tokens = model.generate(IDS, max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=0)
    return logits, tokens[:, IDS.shape[1] :]


@pytest.mark.parametrize("case", list(CASES))
def test_transformers_loads_our_fp8_block_checkpoint_to_the_quantized_model(tmp_path, case) -> None:
    from tiny_models import TINY_LLAMA, build_model
    from transformers import LlamaConfig

    dtype, iters, scheme = CASES[case]
    config = LlamaConfig(**{**TINY_LLAMA, **({} if scheme.is_weight_only else WIDE)})
    kwargs = {}
    if iters:
        torch.manual_seed(1)
        kwargs = {
            "tuning": SignRoundSettings(iters=iters, batch_size=4),
            "calibration": torch.randint(0, 128, (4, 16)),
        }
    qm = autoround.quantize(build_model(config, dtype=dtype), scheme, progress=False, **kwargs)
    path: Path = autoround.save(qm, tmp_path / "ckpt", format="llm_compressor")

    loaded = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    assert type(loaded.hf_quantizer).__name__ == "CompressedTensorsHfQuantizer"
    logits, tokens = _run(loaded)  # the first forward decompresses the layers (compressed-tensors' hook)
    for name in qm.layers:
        assert torch.equal(loaded.get_submodule(name).weight, qm.model.get_submodule(name).weight), name
    ref_logits, ref_tokens = _run(qm.model)
    torch.testing.assert_close(logits, ref_logits, atol=0, rtol=0)
    assert torch.equal(tokens, ref_tokens)
