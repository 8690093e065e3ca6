"""The quantize command's tuning flags and their translation to Intel's arguments (:class:`IntelArgs`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from autoround.algorithms import CLIP_INITS, OptRtnSettings
from autoround.auto_scheme import AutoScheme, check_options
from autoround.errors import UsageError
from autoround.intel_defaults import SCHEME_OVERRIDES, IntelArgs, intel_args, recipe
from autoround.run import Run


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
    bool_flag(
        tuning,
        "low_cpu_mem_usage",
        "load the model block by block from its safetensors, tune and save it block by block (the "
        "default where it changes nothing: a local checkpoint tuned by SignRound; docs/low_memory.md)",
    )
    bool_flag(tuning, "disable_low_cpu_mem_usage", "load the whole model before tuning")
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
    add_auto_scheme_args(parser)


def add_auto_scheme_args(parser: argparse.ArgumentParser) -> None:
    """``--avg_bits`` / ``--options``: a mixed-precision plan searched under a bit budget."""
    group = parser.add_argument_group("AutoScheme (mixed precision searched per layer; docs/auto_scheme.md)")
    group.add_argument(
        "--avg_bits",
        "--avg-bits",
        type=float,
        default=None,
        help="bits per weight the plan may average (scales and zero points counted, as Intel counts); "
        "needs --options",
    )
    group.add_argument(
        "--options",
        "--schemes",
        nargs="+",
        default=None,
        help="candidate schemes, comma- or space-separated, e.g. W2A16G64,W4A16,W8A16; needs --avg_bits",
    )
    bool_flag(
        group, "ignore_scale_zp_bits", "count weight bits only in --avg_bits, not scales and zero points"
    )
    group.add_argument(
        "--shared_layers",
        nargs="+",
        action="append",
        default=None,
        help="layers (names or patterns) that take one scheme together; 'a b' is one group, 'a,b c,d' "
        "two; repeat the flag for more (q/k/v, gate/up and MoE experts are always grouped)",
    )


def auto_scheme_of(args: argparse.Namespace) -> AutoScheme | None:
    """The AutoScheme the flags ask for (None: no ``--avg_bits`` / ``--options``); a flag missing
    its partner, or a scheme flag beside them, is refused naming both."""
    avg_bits, options = getattr(args, "avg_bits", None), getattr(args, "options", None)
    if avg_bits is None and options is None:
        if getattr(args, "ignore_scale_zp_bits", None) or getattr(args, "shared_layers", None):
            raise UsageError(
                "--ignore_scale_zp_bits and --shared_layers belong to AutoScheme: add --avg_bits and "
                "--options, or leave them out"
            )
        return None
    if avg_bits is None or options is None:
        given, missing = ("--avg_bits", "--options") if options is None else ("--options", "--avg_bits")
        raise UsageError(
            f"{given} needs {missing}: AutoScheme picks among --options within --avg_bits "
            f"(e.g. --avg_bits 3 --options W2A16G64,W4A16,W8A16)"
        )
    clashing = [
        f"--{name}" for name in ("scheme", *SCHEME_OVERRIDES) if getattr(args, name, None) is not None
    ]
    if clashing:
        raise UsageError(
            f"{', '.join(clashing)} set one scheme, but --avg_bits/--options search among several: "
            f"leave {'them' if len(clashing) > 1 else 'it'} out and name the schemes in --options"
        )
    if getattr(args, "model_free", False):
        raise UsageError(
            "--model_free never loads the model, which the AutoScheme search (--avg_bits) runs on"
        )
    auto = AutoScheme(
        avg_bits,
        ",".join(options),
        _shared_groups(args.shared_layers),
        ignore_scale_zp_bits=bool(args.ignore_scale_zp_bits),
    )
    check_options(auto, args.format)
    return auto


def auto_scheme_label(run: Run) -> str | None:
    """``AUTO3BITS`` for an AutoScheme run of 3 bits (the default output name and messages)."""
    return f"AUTO{run.auto_scheme.avg_bits:g}BITS" if run.auto_scheme is not None else None


def _shared_groups(flags: list[list[str]] | None) -> list[list[str]] | None:
    """Intel's reading of ``--shared_layers``: per flag, bare names are one group; tokens with
    commas are a group each."""
    groups = []
    for tokens in flags or ():
        if any("," in token for token in tokens):
            groups += [[p.strip() for p in token.split(",") if p.strip()] for token in tokens]
        else:
            groups.append([token.strip() for token in tokens if token.strip()])
    return [group for group in groups if group] or None


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


def low_cpu_mem_usage(args: argparse.Namespace) -> bool | None:
    """``--low_cpu_mem_usage`` True, ``--disable_low_cpu_mem_usage`` False, neither None (decided
    by :func:`autoround.runner.use_low_cpu_mem`); both are refused."""
    on, off = getattr(args, "low_cpu_mem_usage", None), getattr(args, "disable_low_cpu_mem_usage", None)
    if on and off:
        raise UsageError(
            "--low_cpu_mem_usage and --disable_low_cpu_mem_usage contradict each other; pass one"
        )
    return True if on else False if off else None


def intel_arguments(args: argparse.Namespace) -> IntelArgs:
    """The recipe's arguments with the flags that were given on top, by Intel's names."""
    if args.enable_alg_ext and args.disable_alg_ext:
        raise ValueError("--enable_alg_ext and --disable_alg_ext contradict each other; pass one")
    chosen: dict[str, Any] = dict(recipe(args.recipe))
    chosen.update({key: getattr(args, key) for key in _VALUES if getattr(args, key) is not None})
    chosen.update({key: value for flag, (key, value) in _SWITCHES.items() if getattr(args, flag)})
    if args.opt_rtn_intel:
        chosen["opt_rtn_settings"] = OptRtnSettings.intel()
    auto = auto_scheme_of(args)
    return intel_args(
        scheme=auto if auto is not None else args.scheme,
        **{name: getattr(args, name, None) for name in SCHEME_OVERRIDES},
        layer_config=_layer_config(args.layer_config),
        quant_lm_head=bool(args.quant_lm_head),
        device_map=args.device,
        seed=args.seed,
        **chosen,
    )
