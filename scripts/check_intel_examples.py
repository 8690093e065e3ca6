"""Intel auto-round's README examples, run with only the import changed, on a tiny model.

    AUTOROUND_DEFAULT_DATASET=wikitext2:concat uv run python scripts/check_intel_examples.py [NAMES]

NAMES (comma-separated, default all): AutoRound, AutoRoundBest, AutoRoundLight, OptRTN, RTN. The
default recipe tunes 128 x 2048 tokens for 200 iterations and Best 512 x 2048 for 1000: even on a
tiny model the 2048-token attention makes those two take many minutes on a 2-core CPU.

Each example is Intel's text (README of auto-round 0.16.1, "API Usage" and the recipe list)
with ``from auto_round import AutoRound`` replaced by ``from autoround import AutoRound``. The
tiny model (a seeded 2-block llama with a character-level tokenizer, so the shipped calibration
text yields 512 windows of 2048 tokens) stands in for ``Qwen/Qwen3-0.6B``; the Hub is
unreachable here, so ``AUTOROUND_DEFAULT_DATASET`` points the default dataset at shipped text.
"""

from __future__ import annotations

import sys
import tempfile
import textwrap
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast

EXAMPLES = {
    "AutoRound (default recipe)": 'ar = AutoRound(model_name_or_path, scheme="W4A16")',
    "AutoRoundBest": "ar = AutoRound(model_name_or_path, nsamples=512, iters=1000, low_gpu_mem_usage=True)",
    "AutoRoundLight": "ar = AutoRound(model_name_or_path, nsamples=128, iters=50, lr=5e-3)",
    "OptRTN": 'ar = AutoRound(model_name_or_path, scheme="W4A16", iters=0)',
    "RTN": 'ar = AutoRound(model_name_or_path, scheme="W4A16", iters=0, disable_opt_rtn=True)',
}
TEMPLATE = """
from autoround import AutoRound  # the only change: was `from auto_round import AutoRound`

model_name_or_path = {model!r}
{construct}
ar.quantize_and_save(output_dir={out!r}, format="auto_round")
"""


def tiny_model(directory: Path) -> Path:
    """A seeded 2-block llama with a character-level tokenizer, saved to ``directory``."""
    chars = [chr(c) for c in range(32, 127)] + ["\n", "<unk>"]
    vocab = {c: i for i, c in enumerate(chars)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>")
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        vocab_size=len(vocab),
        max_position_embeddings=2048,
    )
    AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def main() -> int:
    only = set(sys.argv[1].split(",")) if len(sys.argv) > 1 else set(EXAMPLES)
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        model = str(tiny_model(Path(tmp) / "tiny"))
        for index, (name, construct) in enumerate(EXAMPLES.items()):
            if name.split(" ")[0] not in only:
                continue
            code = textwrap.dedent(TEMPLATE.format(model=model, construct=construct, out=f"{tmp}/q{index}"))
            start = time.perf_counter()
            try:
                exec(compile(code, name, "exec"), {})
                outcome = f"ok ({time.perf_counter() - start:.0f} s)"
            except NotImplementedError as exc:
                outcome = f"not built: {exc}"
            except Exception as exc:  # report every example, then fail
                failures += 1
                outcome = f"FAILED: {type(exc).__name__}: {exc}"
            print(f"{name:28s} {outcome}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
