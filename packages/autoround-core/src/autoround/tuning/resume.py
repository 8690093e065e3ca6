"""Crash-safe progress: each finished block is persisted, and a restarted run resumes after it.

Progress lives beside the output directory, in ``.<name>.autoround-resume/``: a manifest with
the run's fingerprint (every argument that changes the result) and, per finished block, its
quantized weights and per-group parameters (``block-NNNN.safetensors``, written to a temp name
and renamed) plus its loss report. A run started again with the same arguments replays the
finished blocks and tunes the rest; with different arguments it is refused, naming them. The
folder is removed once the checkpoint is saved.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from autoround.modeling.blocks import linear_weight
from autoround.quantizer import LayerQuant
from autoround.schemes import Scheme
from autoround.tuning.driver import BlockReport

logger = logging.getLogger(__name__)


def fingerprint(calibration: torch.Tensor, **arguments: Any) -> dict[str, Any]:
    """What must match for a run to resume another: the arguments and the calibration ids."""
    digest = hashlib.sha256(calibration.to(torch.int64).contiguous().numpy().tobytes()).hexdigest()
    return {**json.loads(json.dumps(arguments, default=str)), "calibration_sha256": digest}


class ResumeStore:
    """Per-block progress of one tuning run, keyed by its output directory."""

    def __init__(self, output_dir: str | Path, run: dict[str, Any]) -> None:
        output_dir = Path(output_dir)
        self.path = output_dir.parent / f".{output_dir.name}.autoround-resume"
        self.run = run
        manifest = self.path / "manifest.json"
        if manifest.is_file():
            stored = json.loads(manifest.read_text())["run"]
            differing = sorted(k for k in {*stored, *run} if stored.get(k) != run.get(k))
            if differing:
                raise ValueError(
                    f"{self.path} holds progress of a run with different arguments: {differing}. "
                    f"Start again with the same arguments to resume, or delete that folder."
                )
            logger.info("resuming from %s (%d blocks done)", self.path, len(self.finished()))
        else:
            self.path.mkdir(parents=True, exist_ok=True)
            _write_atomic(manifest, json.dumps({"run": run}, indent=2).encode())

    def finished(self) -> list[int]:
        """Indices of the blocks whose progress is stored."""
        return sorted(int(p.stem.split("-")[1]) for p in self.path.glob("block-*.safetensors"))

    def save_block(
        self,
        index: int,
        block: nn.Module,
        block_name: str,
        quants: dict[str, LayerQuant],
        report: BlockReport,
    ) -> None:
        """Persist a tuned block: its layers' quantized weights, scales and zero points."""
        tensors: dict[str, torch.Tensor] = {}
        schemes = {}
        for name, quant in quants.items():
            relative = name[len(block_name) + 1 :]
            tensors[f"{name}.weight"] = (
                linear_weight(block.get_submodule(relative)).detach().cpu().contiguous()
            )
            tensors[f"{name}.scale"], tensors[f"{name}.zero"] = (
                quant.scale.contiguous(),
                quant.zero.contiguous(),
            )
            schemes[name] = quant.scheme.to_dict()
        target = self.path / f"block-{index:04d}.safetensors"
        tmp = target.with_suffix(".tmp")
        save_file(tensors, str(tmp), metadata={"schemes": json.dumps(schemes)})
        os.replace(tmp, target)
        _write_atomic(self.path / f"block-{index:04d}.json", json.dumps(dataclasses.asdict(report)).encode())

    def restore(self, index: int, block: nn.Module, block_name: str) -> dict[str, LayerQuant] | None:
        """Put a finished block's quantized weights back into ``block``; None if not finished."""
        path = self.path / f"block-{index:04d}.safetensors"
        if not path.is_file():
            return None
        from safetensors import safe_open

        with safe_open(str(path), "pt") as handle:
            schemes = json.loads(handle.metadata()["schemes"])
        tensors = load_file(str(path))
        quants = {}
        for name, fields in schemes.items():
            weight = linear_weight(block.get_submodule(name[len(block_name) + 1 :]))
            with torch.no_grad():
                weight.copy_(tensors[f"{name}.weight"])
            quants[name] = LayerQuant(
                Scheme.from_dict(fields), tensors[f"{name}.scale"], tensors[f"{name}.zero"]
            )
        return quants

    def reports(self) -> list[BlockReport]:
        """Reports of every stored block, in order."""
        return [
            BlockReport(**json.loads((self.path / f"block-{i:04d}.json").read_text()))
            for i in self.finished()
        ]

    def clear(self) -> None:
        """Remove the progress folder (after the checkpoint is saved)."""
        shutil.rmtree(self.path, ignore_errors=True)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
