"""The ``autoround`` command line: builds the same objects the Python API builds.

``autoround --model M ...`` quantizes (recipe ``default`` unless flags say otherwise);
``autoround eval --model M`` reports perplexity, or lm-eval's metrics with ``--tasks``;
``autoround list format|scheme`` shows which format writes which scheme. The recipe
commands ``autoround-rtn``, ``autoround-opt-rtn``, ``autoround-light`` and ``autoround-best``
preselect a recipe.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import random
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import torch

from autoround.cli.checks import check_quantize_args, evaluated_checkpoint
from autoround.cli.evaluate import (
    TORCH_DTYPES,
    add_task_eval_args,
    load_model,
    perplexity,
    plan_quantize_evals,
    run_eval,
    run_task_evals,
)
from autoround.cli.listing import run_list
from autoround.cli.model_free import add_model_free_args, model_free_chosen, run_model_free
from autoround.cli.tuning_args import (
    add_tuning_args,
    auto_scheme_label,
    bool_flag,
    intel_arguments,
    low_cpu_mem_usage,
)
from autoround.errors import AutoRoundError
from autoround.formats import default_scheme_name
from autoround.intel_defaults import INTEL, NO_EFFECT_ARGS, RECIPES
from autoround.loading import load_dense
from autoround.run import run_from_intel

logger = logging.getLogger("autoround")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the full usage is in ``--help``), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}{_no_effect_hint(message)} (see {self.prog} --help)\n")


def _no_effect_hint(message: str) -> str:
    """For Intel's flags that only tune its own runtime (``--nblocks``, ...): say so, since they
    are refused here rather than silently ignored."""
    if not message.startswith("unrecognized arguments:"):
        return ""
    flags = (word.split("=", 1)[0] for word in message.split(":", 1)[1].split() if word.startswith("--"))
    named = [flag for flag in flags if flag[2:].replace("-", "_") in NO_EFFECT_ARGS]
    if not named:
        return ""
    return f"; {', '.join(named)}: Intel's, with no effect on this implementation, so leave them out"


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", required=True, help="local checkpoint dir, hub id, or the offline demo alias 'smollm2'"
    )
    parser.add_argument("--device", default="cpu", help="device to compute on: cpu (default), cuda, cuda:1")
    parser.add_argument(
        "--model_dtype",
        "--model-dtype",
        default=None,
        choices=sorted(TORCH_DTYPES),
        help="dtype to load and quantize the model in (default: the checkpoint's own)",
    )


def _add_eval_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--eval_text",
        "--eval-text",
        type=Path,
        default=None,
        help="text file for perplexity (default: the wikitext-2 test head shipped with autoround)",
    )
    parser.add_argument(
        "--eval_windows",
        "--eval-windows",
        type=int,
        default=20,
        help="number of 2048-token windows to evaluate (default 20: the cpu-small protocol; "
        "0 = the whole file)",
    )
    parser.add_argument(
        "--eval_seqlen", "--eval-seqlen", type=int, default=2048, help="window length in tokens"
    )
    parser.add_argument(
        "--eval_dtype",
        "--eval-dtype",
        default=None,
        choices=sorted(TORCH_DTYPES),
        help="dtype to evaluate in (default: float32 for perplexity, as bf16 matmul is ~9x slower on "
        "AVX2 CPUs; the checkpoint's own for --tasks)",
    )


def _changes(changes: Any) -> str:
    return f" with {', '.join(f'{k}={v}' for k, v in changes.items())}" if changes else ""


def build_parser(default_recipe: str = "default") -> argparse.ArgumentParser:
    """The quantize command's parser; ``default_recipe`` is what the recipe commands change."""
    parser = _Parser(
        prog="autoround" if default_recipe == "default" else f"autoround-{default_recipe}",
        description=f"Quantize a causal LM's weights (recipe '{default_recipe}': "
        f"Intel's defaults{_changes(RECIPES[default_recipe])}). `autoround eval --help` to evaluate a model.",
    )
    _add_model_args(parser)
    parser.add_argument(
        "--scheme",
        default=None,
        help=f"preset name, e.g. W4A16, W2A16G64, GGUF:Q4_K_M (any case; default {INTEL.scheme}, or with "
        "a gguf format alone its recipe's scheme)",
    )
    parser.add_argument("--bits", type=int, default=None, help="override the scheme's weight bits (2-8)")
    parser.add_argument(
        "--group_size",
        "--group-size",
        type=int,
        default=None,
        help="override the group size (-1 per channel, 0 per tensor)",
    )
    sym = parser.add_mutually_exclusive_group()
    sym.add_argument("--sym", dest="sym", action="store_true", default=None, help="symmetric quantization")
    sym.add_argument("--asym", dest="sym", action="store_false", help="asymmetric quantization")
    parser.add_argument(
        "--data_type",
        "--data-type",
        default=None,
        help="override the weight data type (int, mx_fp, nv_fp, fp, ...; `autoround list scheme`)",
    )
    parser.add_argument(
        "--act_bits",
        "--act-bits",
        type=int,
        default=None,
        help="override the activation bits (16: the weight-only form of e.g. MXFP4 or NVFP4)",
    )
    parser.add_argument(
        "--layer_config",
        "--layer-config",
        default=None,
        help="JSON object or path to a JSON file: {layer name or pattern: scheme or fields}",
    )
    bool_flag(parser, "quant_lm_head", "also quantize lm_head with the default scheme")
    parser.add_argument(
        "--format",
        default="auto_round",
        help="checkpoint format (default auto_round), or several comma-separated, each then in its own "
        "subdirectory; `autoround list format` lists them, what each stores and who loads it",
    )
    parser.add_argument(
        "--output_dir",
        "--output-dir",
        type=Path,
        default=None,
        help="where to write the checkpoint (default: ./out/<model>-<scheme>)",
    )
    bool_flag(parser, "overwrite", "replace a non-empty output directory")
    add_model_free_args(parser)
    add_tuning_args(parser)
    parser.add_argument(
        "--seed", type=int, default=INTEL.seed, help="random seed (calibration sampling, tuning)"
    )
    bool_flag(parser, "eval_ppl", "report perplexity before and after quantization")
    _add_eval_args(parser)
    add_task_eval_args(parser, quantize=True)
    _add_output_args(parser)
    parser.set_defaults(recipe=default_recipe)
    return parser


def build_eval_parser() -> argparse.ArgumentParser:
    """``autoround eval``: perplexity or lm-eval tasks of a dense model or an autoround checkpoint."""
    parser = _Parser(
        prog="autoround eval",
        description="Perplexity of a model or checkpoint, or its lm-eval metrics on --tasks.",
    )
    _add_model_args(parser)
    _add_eval_args(parser)
    add_task_eval_args(parser, quantize=False)
    _add_output_args(parser)
    return parser


def _add_output_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and results")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="debug logs, and the traceback of an error"
    )


def _default_output_dir(model: str, scheme: str) -> Path:
    return Path("out") / f"{Path(model).name or model}-{scheme.lower()}"


def run_quantize(args: argparse.Namespace) -> int:
    """Load, optionally evaluate, quantize, save, optionally evaluate the saved checkpoint."""
    run = run_from_intel(intel_arguments(args), formats=(args.format,))
    run = dataclasses.replace(run, low_cpu_mem_usage=low_cpu_mem_usage(args))
    scheme = args.scheme or auto_scheme_label(run) or default_scheme_name(run.formats)
    output_dir = args.output_dir or _default_output_dir(args.model, scheme)
    check_quantize_args(args, run, output_dir)
    if run.auto_scheme is None and model_free_chosen(args, run):  # the search needs the model
        return run_model_free(args, run, output_dir)
    from autoround import runner  # the model-based stack (transformers), which model-free RTN never imports

    evaluated = evaluated_checkpoint(run, output_dir)  # of several formats, the first autoround reads
    task_runs = plan_quantize_evals(args, evaluated)  # lm-eval and its tasks checked before any work
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    model, tokenizer = _load_model(args, run)
    before = perplexity(model, tokenizer, args, "16-bit model") if args.eval_ppl else None
    start = time.perf_counter()
    result, path = runner.quantize_and_save(model, tokenizer, run, output_dir, bool(args.overwrite))
    print(
        f"quantized {len(result.layers)} layers to {scheme.upper()} with {run.algorithm} and saved "
        f"the {', '.join(run.formats)} checkpoint{'s' if len(run.formats) > 1 else ''} to {path} in "
        f"{time.perf_counter() - start:.1f} s"
    )
    del model, result
    if before is not None:  # --eval_ppl
        after = perplexity(load_dense(evaluated), tokenizer, args, "quantized checkpoint")
        print(f"perplexity: 16-bit {before:.3f} -> quantized {after:.3f} ({after / before:.3f}x)")
    run_task_evals(task_runs)  # --eval --tasks
    return 0


def _load_model(args: argparse.Namespace, run: Any) -> tuple[Any, Any]:
    """The model ``--model`` names: block by block where ``low_cpu_mem_usage`` applies."""
    from autoround import runner

    if args.eval_ppl:  # the 16-bit perplexity needs the whole model
        runner.use_low_cpu_mem(run.low_cpu_mem_usage, "--eval_ppl measures the whole 16-bit model first")
        return load_model(args)
    dtype = TORCH_DTYPES[args.model_dtype] if args.model_dtype else None
    return runner.load_model(args.model, run, dtype)


def _setup_logging(quiet: bool, verbose: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


#: Errors that mean bad input (exit code 2, one line); anything else is a bug and shows its traceback.
_INPUT_ERRORS = (AutoRoundError, ValueError, OSError, NotImplementedError, TypeError)


def _dispatch(argv: Sequence[str], default_recipe: str) -> int:
    argv = list(argv)
    if default_recipe == "default" and argv[:1] == ["list"]:
        return run_list(argv[1:])
    is_eval = default_recipe == "default" and argv[:1] == ["eval"]
    parser = build_eval_parser() if is_eval else build_parser(default_recipe)
    args = parser.parse_args(argv[1:] if is_eval else argv)
    _setup_logging(args.quiet, args.verbose)
    try:
        return run_eval(args) if is_eval else run_quantize(args)
    except _INPUT_ERRORS as exc:
        if args.verbose:
            traceback.print_exc()
        print(f"{parser.prog}: error: {_one_line(exc)}", file=sys.stderr)
        return 2


def _one_line(exc: BaseException) -> str:
    """The error's message on one line (a message from a library may span several)."""
    return " ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``autoround`` and ``python -m autoround``."""
    return _dispatch(sys.argv[1:] if argv is None else argv, "default")


def main_rtn(argv: Sequence[str] | None = None) -> int:
    """``autoround-rtn``: round-to-nearest."""
    return _dispatch(sys.argv[1:] if argv is None else argv, "rtn")


def main_opt_rtn(argv: Sequence[str] | None = None) -> int:
    """``autoround-opt-rtn``: optimized RTN (scale search, no gradients)."""
    return _dispatch(sys.argv[1:] if argv is None else argv, "opt-rtn")


def main_light(argv: Sequence[str] | None = None) -> int:
    """``autoround-light``: 50 SignRound iterations, lr 5e-3."""
    return _dispatch(sys.argv[1:] if argv is None else argv, "light")


def main_best(argv: Sequence[str] | None = None) -> int:
    """``autoround-best``: 1000 SignRound iterations on 512 samples."""
    return _dispatch(sys.argv[1:] if argv is None else argv, "best")
