"""``autoround eval`` and the perplexity reports of the quantize command."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

#: Torch dtype names the ``--model_dtype`` and ``--eval_dtype`` flags accept.
TORCH_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def load_model(args: argparse.Namespace) -> tuple[Any, Any]:
    """The dense model and tokenizer ``--model`` names, strictly loaded, in ``--model_dtype``."""
    from autoround.model_sources.loading import load_model_and_tokenizer

    dtype = TORCH_DTYPES[args.model_dtype] if args.model_dtype else None
    return load_model_and_tokenizer(args.model, dtype=dtype)


def perplexity(model: Any, tokenizer: Any, args: argparse.Namespace, label: str) -> float:
    """Perplexity by the ``--eval_*`` flags, printed with ``label`` and returned."""
    from autoround.data import default_eval_text_path
    from autoround.eval.perplexity import perplexity_of_file

    path = args.eval_text or default_eval_text_path()
    windows = None if args.eval_windows == 0 else args.eval_windows
    start = time.perf_counter()
    result = perplexity_of_file(
        model,
        tokenizer,
        path,
        seqlen=args.eval_seqlen,
        max_windows=windows,
        compute_dtype=TORCH_DTYPES[args.eval_dtype],
    )
    print(
        f"{label}: perplexity {result.ppl:.3f} over {result.windows} windows "
        f"({result.predicted_tokens} tokens, {args.eval_dtype}) in {time.perf_counter() - start:.0f} s"
    )
    return result.ppl


def run_eval(args: argparse.Namespace) -> int:
    """Perplexity of a dense model, or of an autoround checkpoint unpacked to dense weights.

    A checkpoint whose config.json claims quantization is loaded only as quantized (never
    falling back to a dense load, which would run on random weights); the output says which.
    """
    from autoround.hardware import check_device
    from autoround.loading import load_dense
    from autoround.model_sources.demo import resolve_model_path
    from autoround.model_sources.loading import read_config

    check_device(args.device)
    path = Path(resolve_model_path(args.model))
    if path.is_dir() and "quantization_config" in read_config(path):
        from transformers import AutoTokenizer

        model, tokenizer = load_dense(path), AutoTokenizer.from_pretrained(path)
        kind = f"quantized {read_config(path)['quantization_config'].get('quant_method')} checkpoint"
    else:
        model, tokenizer = load_model(args)
        kind = "dense model"
    print(f"evaluating {args.model} as a {kind}")
    perplexity(model, tokenizer, args, str(args.model))
    return 0
