"""The quantize command's tuning flags and their translation to Intel's arguments (:class:`IntelArgs`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from autoround.algorithms import CLIP_INITS, OptRtnSettings
from autoround.intel_defaults import IntelArgs, intel_args, recipe


def bool_flag(parser: argparse._ActionsContainer, name: str, help: str) -> None:
    """A ``--name`` / ``--name-with-dashes`` switch that is None unless given."""
    spellings = dict.fromkeys([f"--{name}", f"--{name.replace('_', '-')}"])
    parser.add_argument(*spellings, dest=name, action="store_true", default=None, help=help)


def add_tuning_args(parser: argparse.ArgumentParser) -> None:
    """The SignRound / RTN flags of the quantize commands."""
    tuning = parser.add_argument_group("tuning (SignRound; defaults come from the recipe)")
    tuning.add_argument(
        "--iters",
        type=int,
        default=None,
        help="SignRound iterations; 0 = optimized RTN (plain RTN with --disable_opt_rtn)",
    )
    tuning.add_argument(
        "--dataset",
        default=None,
        help="calibration data: Intel spec string (name[:split=..][:num=N][:concat], ','-joined), "
        "a local .txt/.json/.jsonl, or 'wikitext2' (shipped; default NeelNanda/pile-10k)",
    )
    tuning.add_argument("--nsamples", type=int, default=None, help="calibration samples")
    tuning.add_argument("--seqlen", type=int, default=None, help="tokens per calibration sample")
    tuning.add_argument("--batch_size", "--batch-size", type=int, default=None, help="samples per step")
    tuning.add_argument("--gradient_accumulate_steps", type=int, default=None, help="batches per step")
    tuning.add_argument("--lr", type=float, default=None, help="rounding learning rate (default 1/iters)")
    tuning.add_argument(
        "--minmax_lr",
        type=float,
        default=None,
        help="clipping learning rate (default lr; lr/4 for the factor on a searched scale)",
    )
    bool_flag(tuning, "disable_minmax_tuning", "tune rounding only, not the clipping ranges")
    bool_flag(tuning, "not_use_best_mse", "keep the last iteration instead of the best one")
    tuning.add_argument(
        "--init_clipping",
        choices=CLIP_INITS,
        default=None,
        help="where the clipping factors start: 'minmax' (1.0, Intel's start; the default) or 'mse' "
        "(the factor per group with the least round-to-nearest weight error)",
    )
    bool_flag(tuning, "disable_quanted_input", "tune each block on full-precision inputs")
    bool_flag(
        tuning,
        "enable_alg_ext",
        "symmetric int layers start from the importance-searched scale and tune a factor in [0, 2]; "
        "below 4 bits the loss leaves out the largest 0.1%% of errors (the default here; Intel's opt-in)",
    )
    bool_flag(tuning, "disable_alg_ext", "Intel's classic SignRound: clipping factors on the min-max range")
    bool_flag(
        tuning,
        "low_gpu_mem_usage",
        "keep SignRound's cached block activations in host memory and move each batch to the device "
        "(less GPU memory, slower; no effect on the CPU)",
    )
    bool_flag(tuning, "disable_opt_rtn", "with --iters 0: plain RTN instead of optimized RTN")
    bool_flag(
        tuning,
        "disable_amp",
        "compute in float32 throughout (default: bf16 matrix products where the device has native bf16)",
    )
    bool_flag(
        tuning,
        "opt_rtn_intel",
        "optimized RTN exactly as Intel's amp=False: no least-squares refinement of the searched "
        "scales, float32 importance forward",
    )


def _layer_config(value: str | None) -> dict[str, Any] | None:
    if value is None:
        return None
    path = Path(value)
    text = path.read_text() if path.is_file() else value
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"--layer_config is neither a JSON object nor a JSON file: {value!r} ({exc})"
        ) from exc
    if not isinstance(parsed, dict):
        raise ValueError(f"--layer_config must be a JSON object, got {type(parsed).__name__}")
    return parsed


#: Flags that set an Intel argument to a value when given: flag -> (argument, value).
_SWITCHES = {
    "disable_opt_rtn": ("disable_opt_rtn", True),
    "disable_minmax_tuning": ("enable_minmax_tuning", False),
    "not_use_best_mse": ("not_use_best_mse", True),
    "disable_quanted_input": ("enable_quanted_input", False),
    "enable_alg_ext": ("enable_alg_ext", True),
    "disable_alg_ext": ("enable_alg_ext", False),
    "disable_amp": ("amp", False),
    "low_gpu_mem_usage": ("low_gpu_mem_usage", True),
}
#: Flags that carry an Intel argument's value as given.
_VALUES = (
    "iters",
    "dataset",
    "nsamples",
    "seqlen",
    "batch_size",
    "gradient_accumulate_steps",
    "lr",
    "minmax_lr",
    "init_clipping",
)


def intel_arguments(args: argparse.Namespace) -> IntelArgs:
    """The recipe's arguments with the flags that were given on top, by Intel's names."""
    if args.enable_alg_ext and args.disable_alg_ext:
        raise ValueError("--enable_alg_ext and --disable_alg_ext contradict each other; pass one")
    chosen: dict[str, Any] = dict(recipe(args.recipe))
    chosen.update({key: getattr(args, key) for key in _VALUES if getattr(args, key) is not None})
    chosen.update({key: value for flag, (key, value) in _SWITCHES.items() if getattr(args, flag)})
    if args.opt_rtn_intel:
        chosen["opt_rtn_settings"] = OptRtnSettings.intel()
    return intel_args(
        scheme=args.scheme,
        bits=args.bits,
        group_size=args.group_size,
        sym=args.sym,
        layer_config=_layer_config(args.layer_config),
        quant_lm_head=bool(args.quant_lm_head),
        device_map=args.device,
        seed=args.seed,
        **chosen,
    )
