"""``autoround list format`` / ``autoround list scheme``: what can be written, and who loads it.

Generated from the registries alone: every writable entry of :data:`autoround.formats.FORMATS`
(its capabilities and ``runtimes``) against every quantizing preset of
:data:`autoround.schemes.PRESETS`; a format or preset registered later shows up by itself.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn

from autoround.dtypes.activations import activation_entry
from autoround.formats import FORMATS, writable_formats
from autoround.schemes import PRESETS, UNQUANTIZED_BITS, Scheme

TOPICS = ("format", "scheme")


@dataclass(frozen=True)
class Pair:
    """One cell of the matrix: whether ``format`` writes ``scheme``, and who loads the result."""

    format: str
    scheme: str
    written: bool
    runtimes: tuple[str, ...]


def quantizing_presets() -> dict[str, Scheme]:
    """The presets that quantize (``BF16`` / ``W16A16`` write nothing quantized)."""
    return {name: scheme for name, scheme in PRESETS.items() if scheme.is_quantized}


def matrix() -> list[Pair]:
    """Every writable format x every quantizing preset."""
    return [
        Pair(name, preset, written, FORMATS[name].runtimes if written else ())
        for name in writable_formats()
        for preset, scheme in quantizing_presets().items()
        for written in (FORMATS[name].stores(scheme),)
    ]


def _group(group_size: int, per_row: str = "per channel") -> str:
    return {-1: per_row, 0: "per tensor"}.get(group_size, f"group {group_size}")


def _describe(scheme: Scheme) -> str:
    """Weights, their 2-D blocks if any, and activations: ``mx_fp 4-bit, group 32, sym; activations
    mx_fp 4-bit dynamic, group 32``."""
    symmetry = "sym" if scheme.sym else "asym"
    words = f"{scheme.data_type} {scheme.bits}-bit, {_group(scheme.group_size)}, {symmetry}"
    if scheme.block_shape is not None:
        words += f", {scheme.block_shape[0]}x{scheme.block_shape[1]} blocks"
    if scheme.is_weight_only:
        return words
    act = f"activations {scheme.act_data_type or scheme.data_type} {scheme.act_bits}-bit {_act_range(scheme)}"
    if scheme.act_group_size is not None:
        act += f", {_group(scheme.act_group_size, 'per token')}"
    return f"{words}; {act}"


def _act_range(scheme: Scheme) -> str:
    """How a scheme's activation range is found: from each input (dynamic) or on the calibration
    set (calibrated: NVFP4's global scale too, though Intel's preset says act_dynamic)."""
    try:
        entry = activation_entry(scheme)
    except NotImplementedError:  # not built: say what the fields say
        entry = None
    if entry is not None and entry.calibrated is not None:
        return "calibrated"
    return "dynamic" if scheme.act_dynamic else "static"


def _writer_lines(scheme: Scheme, indent: str = "  ") -> list[str]:
    writers = [name for name in writable_formats() if FORMATS[name].stores(scheme)]
    if not writers:
        return [f"{indent}written by no format yet"]
    return [
        f"{indent}{name}: {', '.join(FORMATS[name].runtimes) or '(no runtime recorded)'}" for name in writers
    ]


def format_lines() -> list[str]:
    """One paragraph per writable format: what it stores, which presets, who loads it."""
    lines = []
    presets = quantizing_presets()
    for name in writable_formats():
        entry = FORMATS[name]
        written = [p for p, s in presets.items() if entry.stores(s)]
        read = "yes" if entry.readable else "no"
        lines += [
            f"{name}  (quant_method {entry.quant_method!r}; read back by autoround: {read})",
            f"  stores:   {entry.capabilities.describe()}",
            f"  presets:  {', '.join(written) or '(none)'}",
            f"  runtimes: {', '.join(entry.runtimes) or '(none recorded)'}",
            "",
        ]
    return lines


def scheme_lines() -> list[str]:
    """One paragraph per quantizing preset: the formats that write it, and who loads each."""
    lines = []
    for preset, scheme in quantizing_presets().items():
        lines += [f"{preset}  ({_describe(scheme)})", *_writer_lines(scheme)]
        if not scheme.is_weight_only:  # what the act_bits=16 override gives, where more formats store it
            weight_only = scheme.replace(act_bits=UNQUANTIZED_BITS)
            lines += [
                f"  weight-only form (act_bits={UNQUANTIZED_BITS}):",
                *_writer_lines(weight_only, "    "),
            ]
        lines.append("")
    return lines


def grid_lines() -> list[str]:
    """The matrix at a glance: a row per preset, a column per format (x: written)."""
    names = writable_formats()
    width = max(len(p) for p in quantizing_presets()) + 2
    header = " " * width + "  ".join(f"[{i}]" for i in range(len(names)))
    rows = [
        preset.ljust(width)
        + "  ".join(("x" if FORMATS[n].stores(s) else ".").center(len(f"[{i}]")) for i, n in enumerate(names))
        for preset, s in quantizing_presets().items()
    ]
    legend = [f"[{i}] {name}" for i, name in enumerate(names)]
    return [header, *rows, "", *legend]


class _Parser(argparse.ArgumentParser):
    """A usage error on one line (the full usage is in ``--help``), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_list_parser() -> argparse.ArgumentParser:
    """``autoround list``'s parser."""
    parser = _Parser(
        prog="autoround list",
        description="The formats x schemes matrix: which format writes which preset, and which "
        "runtimes load it (generated from the format and scheme registries).",
    )
    parser.add_argument("topic", choices=TOPICS, help="format: one entry per format; scheme: one per preset")
    parser.add_argument("--json", action="store_true", help="the whole matrix as JSON, one object per pair")
    return parser


def run_list(argv: Sequence[str]) -> int:
    """``autoround list format|scheme [--json]``; exit code 2 (one line) on a bad topic."""
    args = build_list_parser().parse_args(list(argv))
    if args.json:
        print(json.dumps([pair.__dict__ for pair in matrix()], indent=1))
        return 0
    lines = format_lines() if args.topic == "format" else scheme_lines()
    sys.stdout.write("\n".join([*lines, *grid_lines()]) + "\n")
    return 0
