"""The quantize command's model-free path: ``--model_free`` / ``--disable_model_free`` and the run.

Without either flag a run takes model-free RTN when Intel's rule does
(:func:`autoround.model_free.model_free_supported`: plain RTN, i.e. ``autoround-rtn`` or
``--iters 0 --disable_opt_rtn``, writing ``auto_round`` with an integer scheme of 2, 4 or 8 bits)
and no flag needs the loaded model (``--model_dtype``); ``--model_free`` forces it (RTN whatever
the recipe, as Intel's flag does), ``--disable_model_free`` forbids it. docs/model_free.md.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from autoround.cli.evaluate import load_model, perplexity, plan_quantize_evals, run_task_evals
from autoround.errors import UsageError
from autoround.intel_defaults import INTEL
from autoround.loading import load_dense
from autoround.model_free import model_free_supported, quantize_model_free
from autoround.run import Run

logger = logging.getLogger(__name__)


def add_model_free_args(parser: argparse.ArgumentParser) -> None:
    """``--model_free`` and ``--disable_model_free`` (either spelling), mutually exclusive."""
    group = parser.add_argument_group("model-free RTN (no model is built; docs/model_free.md)")
    flags = group.add_mutually_exclusive_group()
    flags.add_argument(
        "--model_free",
        "--model-free",
        dest="model_free",
        action="store_true",
        default=False,
        help="quantize with RTN straight from the checkpoint's safetensors, tensor by tensor, without "
        "loading the model (auto_round format, integer schemes); taken by default for plain RTN with "
        "bits 2, 4 or 8",
    )
    flags.add_argument(
        "--disable_model_free",
        "--disable-model-free",
        dest="disable_model_free",
        action="store_true",
        default=False,
        help="always load the model, also where model-free RTN would be taken by default",
    )


def model_free_chosen(args: argparse.Namespace, run: Run) -> bool:
    """Whether this run goes model-free: asked for (refused, naming the flag, where a flag given
    needs the model), or by Intel's rule unless ``--disable_model_free``."""
    if getattr(args, "disable_model_free", False):
        return False
    if getattr(args, "model_free", False):
        _check_explicit(args, run)
        return True
    choice = model_free_supported(run.scheme, run.formats, run.algorithm, run.layer_config)
    if choice and getattr(args, "model_dtype", None) is None:
        logger.info("model-free RTN (%s); --disable_model_free loads the model instead", choice.reason)
        return True
    logger.debug("not model-free: %s", choice.reason if not choice else "--model_dtype needs the model")
    return False


def _check_explicit(args: argparse.Namespace, run: Run) -> None:
    if getattr(args, "iters", None):
        raise UsageError(
            f"--model_free quantizes with RTN (no tuning) but --iters {args.iters} asks for SignRound; "
            f"leave one of them out"
        )
    if getattr(args, "model_dtype", None) is not None:
        raise UsageError(
            f"--model_free keeps the checkpoint's dtype (it never loads the model), but --model_dtype "
            f"{args.model_dtype} was given; leave it out, or pass --disable_model_free"
        )
    if run.algorithm != "rtn":
        logger.info(
            "--model_free: plain RTN instead of the recipe's %s, as Intel's --model_free does", run.algorithm
        )


def run_model_free(args: argparse.Namespace, run: Run, output_dir: Path) -> int:
    """Optionally evaluate the 16-bit model, quantize model-free, optionally evaluate the saved
    checkpoint: what the quantize command does, without loading the model to quantize it."""
    task_runs = plan_quantize_evals(args, output_dir)  # lm-eval and its tasks checked before any work
    before, tokenizer = _perplexity_before(args)
    start = time.perf_counter()
    result = quantize_model_free(
        args.model,
        output_dir,
        run.scheme,
        layer_config=run.layer_config,
        quant_lm_head=run.quant_lm_head,
        format=",".join(run.formats),
        overwrite=bool(args.overwrite),
        device=run.device,
        progress=not args.quiet,
    )
    scheme = args.scheme or INTEL.scheme  # the only format, auto_round, takes Intel's default
    print(
        f"quantized {len(result.plan.layer_plan.quantized())} layers to {scheme.upper()} with rtn and saved "
        f"the auto_round checkpoint to {result.path} in {time.perf_counter() - start:.1f} s "
        f"(model-free: the model was not loaded)"
    )
    if before is not None:  # --eval_ppl
        after = perplexity(load_dense(result.path), tokenizer, args, "quantized checkpoint")
        print(f"perplexity: 16-bit {before:.3f} -> quantized {after:.3f} ({after / before:.3f}x)")
    run_task_evals(task_runs)  # --eval --tasks
    return 0


def _perplexity_before(args: argparse.Namespace) -> tuple[float | None, object]:
    """With ``--eval_ppl``: the 16-bit model's perplexity (the model is loaded for it and freed)."""
    if not getattr(args, "eval_ppl", False):
        return None, None
    model, tokenizer = load_model(args)
    before = perplexity(model, tokenizer, args, "16-bit model")
    del model
    return before, tokenizer
