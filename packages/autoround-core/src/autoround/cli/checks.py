"""What the quantize command refuses before loading anything: each bad argument is named with
what is allowed, and nothing is written or deleted."""

from __future__ import annotations

import argparse
from pathlib import Path

from autoround.errors import SchemeError, UsageError
from autoround.output_guard import check_output_dir, run_inputs
from autoround.run import Run


def check_quantize_args(args: argparse.Namespace, run: Run, output_dir: Path) -> None:
    """Refuse the run before any work: a scheme with nothing to quantize, the output location.

    The format, the device and every setting were checked when ``run`` was built."""
    scheme = run.scheme
    if not scheme.is_quantized and not args.layer_config and not args.quant_lm_head:
        raise SchemeError(
            f"--bits {scheme.bits} keeps every layer in 16 bits: there is nothing to quantize. "
            f"Pass --bits 2, 3, 4 or 8, or a --layer_config that quantizes some layers"
        )
    check_output_dir(output_dir, run_inputs(_local(args.model), run.calibration.dataset))
    _refuse_nonempty(output_dir, bool(args.overwrite))


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
