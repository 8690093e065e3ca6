"""What the quantize command refuses before loading anything: each bad argument is named with
what is allowed, and nothing is written or deleted."""

from __future__ import annotations

import argparse
from pathlib import Path

from autoround.errors import SchemeError, UsageError
from autoround.formats import FORMATS, checkpoint_dirs
from autoround.formats.preflight import check_schemes
from autoround.output_guard import check_output_dir, run_inputs
from autoround.run import Run


def check_quantize_args(args: argparse.Namespace, run: Run, output_dir: Path) -> None:
    """Refuse the run before any work: a scheme with nothing to quantize or that a format cannot
    store (naming the formats that can), ``--eval_ppl`` with no format autoround reads back, the
    output location.

    The format names, the device and every setting were checked when ``run`` was built."""
    scheme = run.scheme
    if not scheme.is_quantized and not args.layer_config and not args.quant_lm_head:
        raise SchemeError(
            f"--bits {scheme.bits} keeps every layer in 16 bits: there is nothing to quantize. "
            f"Pass --bits 2, 3, 4 or 8, or a --layer_config that quantizes some layers"
        )
    check_schemes(scheme, run.layer_config, run.formats)
    if getattr(args, "eval_ppl", False) and not any(FORMATS[name].readable for name in run.formats):
        readable = [name for name, entry in FORMATS.items() if entry.writable and entry.readable]
        raise UsageError(
            f"--eval_ppl reloads the saved checkpoint, but autoround does not read {list(run.formats)}; "
            f"add one it reads to --format (e.g. {readable[0]}), or leave --eval_ppl out"
        )
    check_output_dir(output_dir, run_inputs(_local(args.model), run.calibration.dataset))
    _refuse_nonempty(output_dir, bool(args.overwrite))


def evaluated_checkpoint(run: Run, output_dir: Path) -> Path:
    """The checkpoint the quantize command evaluates after saving: the first of the run's formats
    that autoround reads back (else the first), in its subdirectory when there are several."""
    dirs = checkpoint_dirs(output_dir, run.formats)
    readable = [name for name in dirs if FORMATS[name].readable]
    return dirs[(readable or list(dirs))[0]]


def _local(model: str) -> str | None:
    """The model argument when it names an existing local path (not a Hub id or demo alias)."""
    return model if Path(model).expanduser().exists() else None


def _refuse_nonempty(output_dir: Path, overwrite: bool) -> None:
    if output_dir.exists() and not output_dir.is_dir():
        raise UsageError(
            f"output path {output_dir} exists and is not a directory; choose another --output_dir"
        )
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        raise UsageError(
            f"output directory {output_dir} exists and is not empty; pass --overwrite to replace it"
        )
