"""Crash-safe progress: each finished block is persisted, and a restarted run resumes after it.

Progress lives beside the output directory, in ``.<name>.autoround-resume/``: a manifest with
the run's fingerprint (every argument that changes the result, and digests of the model's
weights, the tokenizer and the calibration ids) and, per finished block, one
``block-NNNN.safetensors`` holding its quantized weights, per-group parameters and, in its
metadata, its loss report. That file is written under a temp name and renamed: the rename commits
the whole block, so a kill at any moment leaves the block either complete or absent.

A run started again with the same inputs replays the finished blocks and tunes the rest; a run
that differs, a folder that cannot be read, or a folder locked by a live run is refused with a
:class:`~autoround.errors.ResumeError` naming the folder and the command that clears it. The
folder is removed once the checkpoint is saved.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shlex
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from autoround.algorithms.signround_blocks import BlockReport
from autoround.errors import ResumeError
from autoround.io import is_no_space, write_error
from autoround.layer_quant import LayerQuant
from autoround.model_sources.blockwise import resident_parts
from autoround.modeling.blocks import linear_weight
from autoround.schemes import Scheme

try:
    import fcntl
except ImportError:  # Windows: no flock; runs there are not protected from each other
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)
#: Bumped whenever the folder's layout changes, so a folder of another version is refused.
FORMAT = 2
_BLOCK = re.compile(r"block-(\d{4})\.safetensors")
_CHUNK = 64 << 20  # large tensors are hashed in pieces, so one embedding doesn't serialize it
#: How a differing fingerprint key is named to the user; other keys are argument names.
_LABELS = {
    "weights_sha256": "model weights",
    "tokenizer_sha256": "tokenizer",
    "calibration_sha256": "calibration data",
    "config": "model config",
    "model": "model class",
}


def fingerprint(
    calibration: torch.Tensor, model: nn.Module | None = None, tokenizer: Any = None, /, **arguments: Any
) -> dict[str, Any]:
    """What must match for a run to resume another: the arguments, and digests of the
    calibration ids, the model's weights and the tokenizer.

    ``model`` and ``tokenizer`` are positional-only, so ``arguments`` may hold keys of those names.
    """
    return {
        **json.loads(json.dumps(arguments, default=str)),
        "calibration_sha256": _sha256(calibration.to(torch.int64).contiguous().numpy()),
        "weights_sha256": weights_digest(model) if model is not None else None,
        "tokenizer_sha256": tokenizer_digest(tokenizer),
    }


def weights_digest(model: nn.Module) -> str:
    """sha256 over every tensor of the model's state dict: its name, dtype, shape and bytes.

    The weights in memory are what is tuned, so they are hashed rather than the files they came
    from (a safetensors header and size stay the same when a value is edited). Pieces are hashed
    in threads (hashlib releases the GIL): a few seconds for an 8B model on a many-core host. A
    block-wise model (``low_cpu_mem_usage``) is hashed block by block, to the same digest.
    """
    by_name: dict[str, list[str]] = {}
    for _ in resident_parts(model):
        by_name.update(_chunk_digests(model.state_dict(), done=by_name))
    outer = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        outer.update(f"{name} {tensor.dtype} {tuple(tensor.shape)} {by_name.get(name)}\n".encode())
    return outer.hexdigest()


def _chunk_digests(state: dict[str, torch.Tensor], done: dict[str, list[str]]) -> dict[str, list[str]]:
    """Digests of the pieces of each tensor in memory not in ``done``; a tied alias gets its
    first name's."""
    pieces: list[tuple[str, torch.Tensor]] = []
    seen: dict[tuple[Any, ...], str] = {}
    aliases: dict[str, str] = {}
    for name, tensor in state.items():
        if tensor.is_meta or name in done:  # offloaded: no bytes here; its name, dtype and shape still count
            continue
        key = (tensor.device, tensor.data_ptr(), tensor.dtype, tensor.shape, tensor.stride())
        if key in seen:  # a tied weight (lm_head = embeddings): hash its bytes once
            aliases[name] = seen[key]
            continue
        seen[key] = name
        flat = tensor.detach().contiguous().reshape(-1).view(torch.uint8)
        pieces += [(name, flat[start : start + _CHUNK]) for start in range(0, flat.numel(), _CHUNK)]
    with ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
        digests = list(pool.map(lambda piece: _sha256(piece[1].cpu().numpy()), pieces))
    by_name: dict[str, list[str]] = {}
    for (name, _), digest in zip(pieces, digests, strict=True):
        by_name.setdefault(name, []).append(digest)
    by_name.update({alias: by_name[first] for alias, first in aliases.items() if first in by_name})
    return by_name


def tokenizer_digest(tokenizer: Any) -> str | None:
    """sha256 of what the tokenizer maps text to and saves: its vocabulary, special tokens and,
    for a fast tokenizer, its whole pipeline (normalizer, merges, added tokens)."""
    if tokenizer is None:
        return None
    parts: dict[str, Any] = {
        "class": type(tokenizer).__name__,
        "vocab": sorted(tokenizer.get_vocab().items()),
        "special": getattr(tokenizer, "special_tokens_map", None),
    }
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        pipeline = json.loads(backend.to_str())
        # Calls with padding/truncation leave these set on the backend; they are call options.
        for option in ("padding", "truncation"):
            pipeline.pop(option, None)
        parts["pipeline"] = pipeline
    return _sha256(json.dumps(parts, sort_keys=True, default=str).encode())


class ResumeStore:
    """Per-block progress of one tuning run, keyed by its output directory.

    Holds an exclusive lock on the folder from creation until :meth:`close` or :meth:`clear`
    (the kernel drops it if the process dies), so two runs never write into one folder.
    """

    def __init__(self, output_dir: str | Path, run: dict[str, Any]) -> None:
        output_dir = Path(output_dir)
        self.path = output_dir.parent / f".{output_dir.name}.autoround-resume"
        self.run = run
        self._reports: dict[int, BlockReport] = {}
        folder_existed, lock_existed = self.path.exists(), (self.path / "lock").exists()
        self._lock: IO[str] | None = _acquire(self.path)
        try:
            self._open()
        except BaseException:
            # A refused run leaves the folder as it found it: no lock file, no new folder.
            # (Unlinking under the flock is safe: _acquire re-checks the inode it locked.)
            if not folder_existed:
                shutil.rmtree(self.path, ignore_errors=True)
            elif not lock_existed:
                (self.path / "lock").unlink(missing_ok=True)
            self.close()
            raise

    def __enter__(self) -> ResumeStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self) -> None:
        """Check the manifest against this run and load the committed blocks' reports."""
        # The lock is held: whatever temp file is here belongs to a dead run.
        for stray in self.path.glob("*.tmp"):
            stray.unlink()
        manifest = self.path / "manifest.json"
        if not manifest.is_file():
            # Blocks without a manifest cannot be trusted to belong to this run.
            for block in self.path.glob("block-*"):
                block.unlink()
            _write_atomic(manifest, json.dumps({"format": FORMAT, "run": self.run}, indent=2).encode())
            return
        stored = self._read_manifest(manifest)
        differing = sorted(k for k in {*stored, *self.run} if stored.get(k) != self.run.get(k))
        if differing:
            named = ", ".join(_LABELS.get(k, k) for k in differing)
            raise ResumeError(
                f"{self.path} holds progress of another run; these differ from this run's: {named}. "
                f"Run again with the same inputs and arguments to resume, or clear it: "
                f"{self.clear_command}"
            )
        for path in sorted(self.path.glob("block-*.safetensors")):
            match = _BLOCK.fullmatch(path.name)
            if match is not None:
                self._reports[int(match[1])] = self._read_report(path)
        logger.info("resuming from %s (%d blocks done)", self.path, len(self._reports))

    @property
    def clear_command(self) -> str:
        """The shell command that deletes this progress folder."""
        return f"rm -rf {shlex.quote(str(self.path))}"

    def _unreadable(self, path: Path, why: object) -> ResumeError:
        # One line: a KeyError prints as its bare key, a SafetensorError may span lines.
        text = f"missing {why}" if isinstance(why, KeyError) else (str(why).splitlines() or [""])[0]
        return ResumeError(
            f"{path} cannot be read ({text or type(why).__name__}); the resume folder is damaged: "
            f"clear it to start over: {self.clear_command}"
        )

    def _read_manifest(self, manifest: Path) -> dict[str, Any]:
        try:
            stored = json.loads(manifest.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise self._unreadable(manifest, e) from e
        if not isinstance(stored, dict) or not isinstance(stored.get("run"), dict):
            raise self._unreadable(manifest, "no 'run' object")
        if stored.get("format") != FORMAT:
            raise ResumeError(
                f"{self.path} was written by another version of autoround (format "
                f"{stored.get('format')}, this one reads {FORMAT}); clear it: {self.clear_command}"
            )
        return stored["run"]

    def _read_report(self, path: Path) -> BlockReport:
        """A committed block's report, checking its header is whole (a truncated file fails)."""
        try:
            with safe_open(str(path), "pt") as handle:
                metadata = handle.metadata() or {}
                json.loads(metadata["schemes"])
                return BlockReport(**json.loads(metadata["report"]))
        except (OSError, SafetensorError, ValueError, KeyError, TypeError) as e:
            raise self._unreadable(path, e) from e

    def finished(self) -> list[int]:
        """Indices of the blocks whose progress is committed."""
        return sorted(self._reports)

    def save_block(
        self,
        index: int,
        block: nn.Module,
        block_name: str,
        quants: dict[str, LayerQuant],
        report: BlockReport,
    ) -> None:
        """Persist a tuned block: its layers' quantized weights, scales and zero points, and its
        report, committed together by one rename."""
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
            if quant.global_scale is not None:  # NVFP4's, which its checkpoint layout stores
                tensors[f"{name}.global_scale"] = quant.global_scale.reshape(1).contiguous()
            if quant.input_absmax is not None:  # a calibrated activation range (FP8_STATIC, NVFP4 W4A4)
                tensors[f"{name}.input_absmax"] = quant.input_absmax.reshape(1).contiguous()
            schemes[name] = quant.scheme.to_dict()
        target = self.path / f"block-{index:04d}.safetensors"
        tmp = target.with_name(target.name + ".tmp")
        metadata = {"schemes": json.dumps(schemes), "report": json.dumps(dataclasses.asdict(report))}
        try:
            save_file(tensors, str(tmp), metadata=metadata)
            _commit(tmp, target)
        except (OSError, SafetensorError) as err:
            tmp.unlink(missing_ok=True)
            if isinstance(err, SafetensorError) and not is_no_space(err):
                raise
            raise write_error(target, err) from err
        self._reports[index] = report

    def restore(self, index: int, block: nn.Module, block_name: str) -> dict[str, LayerQuant] | None:
        """Put a finished block's quantized weights back into ``block``; None if not finished."""
        if index not in self._reports:
            return None
        path = self.path / f"block-{index:04d}.safetensors"
        try:
            with safe_open(str(path), "pt") as handle:
                schemes = json.loads(handle.metadata()["schemes"])
            tensors = load_file(str(path))
            quants = {}
            for name, fields in schemes.items():
                weight = linear_weight(block.get_submodule(name[len(block_name) + 1 :]))
                with torch.no_grad():
                    weight.copy_(tensors[f"{name}.weight"])
                gs = tensors.get(f"{name}.global_scale")
                absmax = tensors.get(f"{name}.input_absmax")
                quants[name] = LayerQuant(
                    Scheme.from_dict(fields),
                    tensors[f"{name}.scale"],
                    tensors[f"{name}.zero"],
                    None if gs is None else gs.reshape(()),
                    None if absmax is None else absmax.reshape(()),
                )
        except (OSError, SafetensorError, ValueError, KeyError, TypeError) as e:
            raise self._unreadable(path, e) from e
        return quants

    def reports(self) -> list[BlockReport]:
        """Reports of every committed block, in order."""
        return [self._reports[i] for i in self.finished()]

    def clear(self) -> None:
        """Remove the progress folder (after the checkpoint is saved) and release the lock."""
        shutil.rmtree(self.path, ignore_errors=True)
        self.close()

    def close(self) -> None:
        """Release the lock, keeping the progress (a failed run resumes from it). Idempotent."""
        if self._lock is not None:
            self._lock.close()  # closing the file drops its flock
            self._lock = None


def _acquire(folder: Path) -> IO[str] | None:
    """Lock ``folder`` (created if missing) for this process, or refuse naming the holder."""
    if fcntl is None:
        folder.mkdir(parents=True, exist_ok=True)
        return None
    lock_path = folder / "lock"
    for _ in range(10):
        folder.mkdir(parents=True, exist_ok=True)
        try:
            handle = open(lock_path, "a+")  # noqa: SIM115 - held open for the store's life
        except FileNotFoundError:  # a finishing run removed the folder between the two calls
            continue
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise ResumeError(
                f"{lock_path} is locked by another run (pid {holder}) writing into this output; "
                f"wait for it to finish or stop it, or choose another output directory"
            ) from None
        # The holder may have removed the folder, lock file included, just before we locked.
        if _same_file(handle, lock_path):
            handle.truncate(0)
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            return handle
        handle.close()
    raise ResumeError(f"could not lock {lock_path}: it keeps being removed by another run")


def _same_file(handle: IO[str], path: Path) -> bool:
    try:
        return os.fstat(handle.fileno()).st_ino == path.stat().st_ino
    except FileNotFoundError:
        return False


def _commit(tmp: Path, target: Path) -> None:
    """Make ``tmp`` durable, then rename it to ``target``: the one step that commits it."""
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())  # else a power loss may leave a renamed but empty file
    os.replace(tmp, target)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(data)
        _commit(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise write_error(path, err) from err


def _sha256(data: Any) -> str:
    return hashlib.sha256(data).hexdigest()
