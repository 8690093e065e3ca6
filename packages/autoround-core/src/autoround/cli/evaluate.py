"""``autoround eval``, and the evaluations of the quantize command: perplexity, and lm-eval tasks.

Task evaluation (``--tasks``) goes through :mod:`autoround.eval.lm_eval_runner`; everything it
can refuse (lm-eval missing, a task not found, bad flags) is refused before any model loads.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from autoround.errors import UsageError
from autoround.eval.lm_eval_runner import (
    EVAL_BACKENDS,
    LmEvalSettings,
    PreparedEval,
    evaluate,
    parse_vllm_args,
    prepare,
    require_lm_eval,
    results_table,
    write_results,
)

#: Torch dtype names the ``--model_dtype`` and ``--eval_dtype`` flags accept.
TORCH_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}
#: ``--eval_dtype`` of perplexity when none is given: bf16 matmul is ~9x slower on AVX2 CPUs.
PPL_DTYPE = "float32"
#: lm-eval flags, by ``args`` name, that mean something only with ``--tasks``: name -> unset value.
_TASK_ONLY_FLAGS: dict[str, object] = {
    "eval_bs": None,
    "limit": None,
    "eval_task_by_task": False,
    "eval_backend": None,
    "vllm_args": None,
    "include_path": [],
    "eval_baseline": False,
    "eval": False,
}


def add_task_eval_args(parser: argparse.ArgumentParser, quantize: bool) -> None:
    """The lm-eval flags; the quantize command's ``--eval`` / ``--eval_baseline`` when ``quantize``."""
    group = parser.add_argument_group("lm-eval tasks (needs autoround-core[eval]; docs/eval.md)")
    if quantize:
        group.add_argument(
            "--eval", action="store_true", help="after quantizing, evaluate the saved checkpoint on --tasks"
        )
        group.add_argument(
            "--eval_baseline",
            "--eval-baseline",
            action="store_true",
            help="also evaluate the 16-bit --model on --tasks, for comparison",
        )
    else:
        group.add_argument(
            "--eval_ppl",
            "--eval-ppl",
            action="store_true",
            help="also report perplexity with --tasks (without --tasks perplexity is what is reported)",
        )
    group.add_argument("--tasks", default=None, help="lm-eval task, group or tag names, ','-joined")
    group.add_argument(
        "--eval_bs", "--eval-bs", default=None, help="lm-eval batch size: N, 'auto' or 'auto:N' (default 1)"
    )
    group.add_argument(
        "--limit",
        type=float,
        default=None,
        help="examples per task: a count, or a fraction below 1 (testing)",
    )
    group.add_argument(
        "--eval_task_by_task",
        "--eval-task-by-task",
        action="store_true",
        help="load the model once and evaluate each task on its own",
    )
    group.add_argument(
        "--eval_backend",
        "--eval-backend",
        choices=list(EVAL_BACKENDS),
        default=None,
        help="hf (default): transformers with autoround-hf; vllm: lm-eval's vLLM model (run from an "
        "environment with vLLM and autoround-vllm)",
    )
    group.add_argument(
        "--vllm_args",
        "--vllm-args",
        default=None,
        help="vLLM engine arguments k=v,... (e.g. max_model_len=2048)",
    )
    group.add_argument(
        "--include_path",
        "--include-path",
        type=Path,
        action="append",
        default=[],
        help="a folder of lm-eval task YAMLs of your own (repeatable)",
    )


def task_settings(args: argparse.Namespace, quantize: bool) -> LmEvalSettings | None:
    """The lm-eval settings the flags ask for; None when no task evaluation is asked for."""
    if not args.tasks:
        given = [
            f"--{name}" for name, unset in _TASK_ONLY_FLAGS.items() if getattr(args, name, unset) != unset
        ]
        if given:
            verb = "needs" if len(given) == 1 else "need"
            raise UsageError(f"{', '.join(given)} {verb} --tasks (lm-eval task names, ','-joined)")
        return None
    if quantize and not args.eval:
        raise UsageError("--tasks evaluates the quantized checkpoint only with --eval: pass --eval as well")
    require_lm_eval()
    return LmEvalSettings(
        tasks=tuple(task.strip() for task in args.tasks.split(",") if task.strip()),
        backend=args.eval_backend or "hf",
        batch_size=_batch_size(args.eval_bs),
        limit=args.limit,
        task_by_task=args.eval_task_by_task,
        include_paths=tuple(args.include_path),
        device=args.device,
        dtype=str(TORCH_DTYPES[args.eval_dtype]).removeprefix("torch.") if args.eval_dtype else None,
        vllm_args=parse_vllm_args(args.vllm_args),
    )


def _batch_size(value: str | None) -> int | str:
    if value is None:
        return 1
    return int(value) if value.isdigit() else value


@dataclass(frozen=True)
class TaskRun:
    """One model's lm-eval evaluation, prepared: what it is, and where its results go."""

    label: str
    prepared: PreparedEval
    output: Path


def results_file(directory: Path, settings: LmEvalSettings, baseline: bool = False) -> Path:
    """Where a model's lm-eval results go: ``lm_eval_results_<backend>[_16bit].json`` in ``directory``."""
    return directory / f"lm_eval_results_{settings.backend}{'_16bit' if baseline else ''}.json"


def plan_quantize_evals(args: argparse.Namespace, output_dir: Path) -> list[TaskRun]:
    """The quantize command's task evaluations, checked and with their tasks built (before any
    quantizing): the checkpoint about to be saved and, with ``--eval_baseline``, the 16-bit model;
    both results files go in the checkpoint."""
    settings = task_settings(args, quantize=True)
    if settings is None:
        return []
    from autoround.model_sources import resolve_model_path

    runs = [
        TaskRun("quantized checkpoint", prepare(settings, output_dir), results_file(output_dir, settings))
    ]
    if args.eval_baseline:
        baseline = prepare(settings, resolve_model_path(args.model))
        runs.append(TaskRun("16-bit model", baseline, results_file(output_dir, settings, baseline=True)))
    return runs


def run_task_evals(runs: list[TaskRun]) -> None:
    """Evaluate each prepared model; print lm-eval's table and write its results JSON."""
    for run in runs:
        settings = run.prepared.settings
        print(
            f"lm-eval ({settings.backend} backend) on the {run.label} {run.prepared.model}: "
            f"{', '.join(settings.tasks)} (limit {settings.limit}, batch size {settings.batch_size})"
        )
        start = time.perf_counter()
        results = evaluate(run.prepared)
        print(results_table(results))
        write_results(results, run.output)
        print(f"lm-eval results written to {run.output} ({time.perf_counter() - start:.0f} s)")


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
    dtype = args.eval_dtype or PPL_DTYPE
    start = time.perf_counter()
    result = perplexity_of_file(
        model,
        tokenizer,
        path,
        seqlen=args.eval_seqlen,
        max_windows=windows,
        compute_dtype=TORCH_DTYPES[dtype],
    )
    print(
        f"{label}: perplexity {result.ppl:.3f} over {result.windows} windows "
        f"({result.predicted_tokens} tokens, {dtype}) in {time.perf_counter() - start:.0f} s"
    )
    return result.ppl


def run_eval(args: argparse.Namespace) -> int:
    """Perplexity and/or lm-eval tasks of a dense model or an autoround checkpoint.

    A checkpoint whose config.json claims quantization is loaded only as quantized (never
    falling back to a dense load, which would run on random weights); the output says which.
    Without ``--tasks`` perplexity is reported; with them, lm-eval's (and perplexity with
    ``--eval_ppl``). The results JSON goes in the model's directory (the working directory for a
    Hub id).
    """
    from autoround.hardware import check_device
    from autoround.model_sources.demo import resolve_model_path
    from autoround.model_sources.loading import check_dense_checkpoint, read_config

    check_device(args.device)
    settings = task_settings(args, quantize=False)
    path = Path(resolve_model_path(args.model))
    quantized = path.is_dir() and "quantization_config" in read_config(path)
    if path.is_dir() and not quantized:
        check_dense_checkpoint(path)
    runs = []
    if settings is not None:
        where = path if path.is_dir() else Path.cwd()
        runs.append(TaskRun("model", prepare(settings, path), results_file(where, settings)))
    kind = (
        f"quantized {read_config(path)['quantization_config'].get('quant_method')} checkpoint"
        if quantized
        else "dense model"
    )
    print(f"evaluating {args.model} as a {kind}")
    if settings is None or args.eval_ppl:
        _report_perplexity(args, path, quantized)
    run_task_evals(runs)
    return 0


def _report_perplexity(args: argparse.Namespace, path: Path, quantized: bool) -> None:
    if quantized:
        from transformers import AutoTokenizer

        from autoround.loading import load_dense

        model, tokenizer = load_dense(path), AutoTokenizer.from_pretrained(path)
    else:
        model, tokenizer = load_model(args)
    perplexity(model, tokenizer, args, str(args.model))
