"""Probe: every bad input the CLI must refuse, run through the real command on a tiny model.

Each case runs ``python -m autoround ...`` in a subprocess and asserts what a user is owed: exit
code 2, a one-line message on stderr (no traceback), nothing left at the output location
(no output directory, no temp or resume folders beside it; a resume folder that was there before
is left byte for byte as it was) and the inputs untouched (the sha256 of every file of the model
directory and the dataset is the same after the run).

"One line" is the error message itself: stderr may also hold what runs before the refusal
prints (tqdm progress bars, log records such as ``WARNING autoround...: ...``, transformers'
LOAD REPORT table), but everything else must be exactly one ``autoround: error: ...`` line, and
no ``Traceback`` anywhere.

    uv run python scripts/probe_bad_inputs.py            # all cases; exit 1 if any fails
    uv run python scripts/probe_bad_inputs.py -k device  # the cases whose name contains "device"
    uv run python scripts/probe_bad_inputs.py --show     # also print each case's error line

The whole probe takes about four minutes on a 2-core machine (each case starts python, torch
and transformers), so it is a script, not part of the pytest suite.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from conftest import TINY_LLAMA, build_model  # noqa: E402  (the suite's tiny-model builders)

#: The error line every refusal ends with (``autoround``, ``autoround eval``, the recipe commands).
ERROR_LINE = re.compile(r"^autoround(-[\w-]+| eval)?: error: ")
#: What may run before a refusal and print to stderr: a tqdm bar ("50%|#####  | 1/2 [..]"), a
#: log record in the CLI's format ("WARNING name: message"), a Python warning and its source line.
NOISE = (
    re.compile(r"\d+%\|.*\|"),
    re.compile(r"^(DEBUG|INFO|WARNING) [\w.]+: "),
    re.compile(r"^\S+:\d+: \w*Warning: "),
)


@dataclass
class Case:
    """One bad input: the CLI arguments, how to break the inputs first, where output would go."""

    name: str
    args: Callable[[Path], list[str]]
    prepare: Callable[[Path], None] = lambda work: None
    output: Callable[[Path], Path] = lambda work: work / "out"
    cwd: Callable[[Path], Path] = lambda work: work
    expect: str | tuple[str, ...] = ""
    forbid: str | None = None
    file_limit: int | None = None
    extra_inputs: list[str] = field(default_factory=list)


def make_inputs(work: Path) -> None:
    """A tiny llama with tokenizer in work/model, a calibration text in work/data.txt."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, PreTrainedTokenizerFast

    model = build_model(LlamaConfig(**TINY_LLAMA))
    model.save_pretrained(work / "model")
    vocab = {w: i for i, w in enumerate(["<unk>", "<s>", "</s>", *[f"w{i}" for i in range(125)]])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    tokenizer.save_pretrained(work / "model")
    # One sample per line: 40 lines of 100 words, enough for --nsamples 2 --seqlen 16.
    lines = (" ".join(f"w{(i * 100 + j) % 125}" for j in range(100)) for i in range(40))
    (work / "data.txt").write_text("\n".join(lines) + "\n")
    (work / "scratch").mkdir()
    (work / "scratch" / "keep.txt").write_text("the user's file\n")


def _quantize(*extra: str) -> Callable[[Path], list[str]]:
    return lambda work: ["--model", str(work / "model"), "--iters", "0", "--disable_opt_rtn", *extra]


def _tune(*extra: str) -> Callable[[Path], list[str]]:
    calib = ("--dataset", "{work}/data.txt", "--nsamples", "2", "--seqlen", "16", "--iters", "1")
    return lambda work: [
        "--model",
        str(work / "model"),
        *(a.format(work=work) for a in calib),
        *extra,
    ]


def _out(*extra: str) -> Callable[[Path], list[str]]:
    return lambda work: [*_quantize(*extra)(work), "--output_dir", str(work / "out")]


def _truncate_weights(work: Path) -> None:
    path = work / "model" / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _packed_without_config(work: Path) -> None:
    """A checkpoint holding qweight tensors whose config.json lacks quantization_config."""
    ckpt = work / "ckpt"
    shutil.copytree(work / "model", ckpt)
    tensors = load_file(ckpt / "model.safetensors")
    weight = tensors.pop("model.layers.0.mlp.down_proj.weight")
    tensors["model.layers.0.mlp.down_proj.qweight"] = torch.zeros(
        weight.shape[1] // 8, weight.shape[0], dtype=torch.int32
    )
    save_file(tensors, ckpt / "model.safetensors", metadata={"format": "pt"})


def _corrupt_resume(work: Path) -> None:
    folder = work / ".out.autoround-resume"
    folder.mkdir()
    (folder / "manifest.json").write_text("{not json")


def _crashed_run(args: list[str]) -> Callable[[Path], None]:
    """Run the CLI with ``args`` but die (os._exit, like a kill) where it would save: this leaves
    the resume folder of a real run, every block committed, with its manifest."""

    def prepare(work: Path) -> None:
        code = (
            "import os, sys, autoround.runner as a\n"
            "a.save = lambda *args, **kwargs: os._exit(9)\n"
            "from autoround.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n"
        )
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
        subprocess.run(
            [sys.executable, "-c", code, *args, "-q"], cwd=work, env=env, capture_output=True, timeout=300
        )

    return prepare


def _corrupt_resume_block(work: Path) -> None:
    _crashed_run([*_tune()(work), "--output_dir", str(work / "out")])(work)
    block = work / ".out.autoround-resume" / "block-0000.safetensors"
    if not block.is_file():
        raise RuntimeError(f"the crashed run left no {block}: cannot build this case")
    data = block.read_bytes()
    block.write_bytes(data[: len(data) // 2])


def _dataset_dir(work: Path) -> None:
    (work / "corpus").mkdir()
    shutil.copy(work / "data.txt", work / "corpus" / "a.txt")


def _intel(flag: str, *value: str) -> Case:
    return Case(
        f"Intel's {flag}",
        _out(flag, *value),
        expect=(f"unrecognized arguments: {flag}", f"{flag}: Intel's, with no effect"),
    )


CASES = [
    Case("overwrite the model itself",
         lambda w: [*_quantize("--overwrite")(w), "--output_dir", str(w / "model")],
         output=lambda w: w / "model", expect="is the model"),
    Case("overwrite the working directory, the model's parent",
         lambda w: [*_quantize("--overwrite")(w), "--output_dir", str(w)],
         output=lambda w: w, expect="working directory"),
    Case("overwrite the model's parent", lambda w: [*_quantize("--overwrite")(w), "--output_dir", str(w)],
         output=lambda w: w, cwd=lambda w: w.parent, expect="contains the model"),
    Case("write inside the model", lambda w: [*_quantize()(w), "--output_dir", str(w / "model" / "q")],
         output=lambda w: w / "model" / "q", expect="lies inside the model"),
    Case("overwrite the dataset", lambda w: [*_tune("--overwrite")(w), "--output_dir", str(w / "data.txt")],
         output=lambda w: w / "data.txt", expect="is the dataset"),
    Case("write inside the dataset directory",
         lambda w: [*_tune()(w), "--dataset", str(w / "corpus"), "--output_dir", str(w / "corpus" / "q")],
         prepare=_dataset_dir, output=lambda w: w / "corpus" / "q", extra_inputs=["corpus"],
         expect="lies inside the dataset"),
    Case("output . with overwrite", lambda w: [*_quantize("--overwrite")(w), "--output_dir", "."],
         output=lambda w: w / "scratch", cwd=lambda w: w / "scratch", expect="working directory"),
    Case("output . with overwrite in the model dir",
         lambda w: [*_quantize("--overwrite")(w), "--output_dir", "."],
         output=lambda w: w / "model", cwd=lambda w: w / "model", expect="working directory"),
    Case("unknown format", _out("--format", "onnx"), expect="unknown format 'onnx'"),
    Case("unknown format on a tuning run",
         lambda w: [*_tune("--format", "onnx")(w), "--output_dir", str(w / "out")],
         expect="unknown format 'onnx'"),
    Case("truncated weights", _out(), prepare=_truncate_weights, expect="truncated", forbid="Hub id"),
    Case("missing weights", _out(), prepare=lambda w: (w / "model" / "model.safetensors").unlink(),
         expect="model.safetensors", forbid="Hub id"),
    Case("invalid config.json", _out(), prepare=lambda w: (w / "model" / "config.json").write_text("{bad"),
         expect="config.json is not a valid JSON file"),
    Case("cuda on a cpu-only torch", _out("--device", "cuda"), expect="device 'cuda'"),
    Case("tpu", _out("--device", "tpu"), expect="device 'tpu'"),
    Case("bits 16", _out("--bits", "16"), expect="nothing to quantize"),
    Case("negative iters", lambda w: [*_out()(w), "--iters", "-1"], expect="iters must be an integer >= 0"),
    _intel("--nblocks", "2"),
    _intel("--to_quant_block_names", "model.layers"),
    _intel("--enable_norm_bias_tuning"),
    _intel("--momentum", "0.9"),
    Case("model path that does not exist",
         lambda w: ["--model", str(w / "nope"), "--output_dir", str(w / "out")], expect="does not exist"),
    Case("full disk", _out(), file_limit=64 * 1024,
         expect=("out/model.safetensors: ", "File too large", "free space or choose another --output_dir")),
    Case("corrupt resume manifest", lambda w: [*_tune()(w), "--output_dir", str(w / "out")],
         prepare=_corrupt_resume, expect=("manifest.json cannot be read", "rm -rf", ".out.autoround-resume")),
    Case("corrupt resume block", lambda w: [*_tune()(w), "--output_dir", str(w / "out")],
         prepare=_corrupt_resume_block,
         expect=("block-0000.safetensors cannot be read", "rm -rf", ".out.autoround-resume")),
    Case("eval of packed tensors without quantization_config",
         lambda w: ["eval", "--model", str(w / "ckpt"), "--eval_windows", "1"],
         prepare=_packed_without_config, output=lambda w: w / "ckpt", expect="no quantization_config"),
]  # fmt: skip


def _digest(root: Path) -> dict[str, str]:
    if root.is_file():
        return {root.name: hashlib.sha256(root.read_bytes()).hexdigest()}
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _sibling_digest(root: Path) -> dict[str, str]:
    """:func:`_digest` of a folder beside the output; a resume folder's ``lock`` file counts by
    its presence only: it holds the pid of whichever run last locked the folder, not progress."""
    digest = _digest(root)
    if "autoround-resume" in root.name and "lock" in digest:
        digest["lock"] = "present"
    return digest


def _limit_file_size(limit: int) -> Callable[[], None]:
    def apply() -> None:
        # An over-large write then fails with EFBIG instead of killing the process: the
        # closest a test gets to a full disk without mounting one.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def error_lines(stderr: str) -> list[str]:
    """The lines of ``stderr`` that are not progress bars, log records or warnings."""
    return [ln for ln in stderr.splitlines() if ln.strip() and not any(n.search(ln) for n in NOISE)]


def _strip_load_report(stderr: str) -> str:
    """stderr without transformers' LOAD REPORT warning: its header line, then a table up to
    the first blank line (logged before a strict load refuses)."""
    out, in_report = [], False
    for line in stderr.splitlines():
        if "LOAD REPORT" in line:
            in_report = True
        elif in_report and not line.strip():
            in_report = False
        elif not in_report:
            out.append(line)
    return "\n".join(out)


def run_case(case: Case, work: Path, show: bool = False) -> list[str]:
    """Run one case in a fresh copy of the inputs; the list of broken promises (empty: passed)."""
    case.prepare(work)
    protected = {p: _digest(work / p) for p in ("model", "data.txt", "scratch", *case.extra_inputs)}
    output = case.output(work)
    before_output = _digest(output) if output.exists() else None
    siblings = {p.name: _sibling_digest(p) for p in output.parent.glob(f".{output.name}.*")}
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, "-m", "autoround", *case.args(work), "-q"],
        cwd=case.cwd(work),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_limit_file_size(case.file_limit) if case.file_limit else None,
    )
    lines = error_lines(_strip_load_report(proc.stderr))
    problems = []
    if proc.returncode != 2:
        problems.append(f"exit code {proc.returncode}, expected 2")
    if len(lines) != 1 or "Traceback" in proc.stderr or not ERROR_LINE.match(lines[0]):
        problems.append(f"stderr is not one error line: {proc.stderr[-1500:]!r}")
    else:
        if show:
            print(f"     {lines[0]}")
        expected = (case.expect,) if isinstance(case.expect, str) else case.expect
        problems += [f"message {lines[0]!r} lacks {want!r}" for want in expected if want not in lines[0]]
        if case.forbid and case.forbid in lines[0]:
            problems.append(f"message {lines[0]!r} says {case.forbid!r}")
    problems += _check_untouched(work, protected, output, before_output, siblings)
    return problems


def _check_untouched(
    work: Path,
    protected: dict[str, dict[str, str]],
    output: Path,
    before_output: dict[str, str] | None,
    siblings: dict[str, dict[str, str]],
) -> list[str]:
    problems = [f"{name} changed" for name, digest in protected.items() if _digest(work / name) != digest]
    after = _digest(output) if output.exists() else None
    if after != before_output:
        problems.append(f"output location {output} changed")
    now = {p.name: p for p in output.parent.glob(f".{output.name}.*")}
    leftovers = sorted(set(now) - set(siblings))
    if leftovers:
        problems.append(f"left behind {leftovers}")
    changed = sorted(
        name for name in set(now) & set(siblings) if _sibling_digest(now[name]) != siblings[name]
    )
    if changed:
        problems.append(f"changed {changed}, which was there before")
    return problems


def main(argv: list[str] | None = None) -> int:
    """Run the cases (``-k`` filters by name); print one line per case; 1 if any failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", default="", help="only cases whose name contains this")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--show", action="store_true", help="print each case's error line")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        pristine = Path(tmp) / "pristine"
        pristine.mkdir()
        make_inputs(pristine)
        results = {}
        for case in (c for c in CASES if args.k in c.name):
            work = Path(tmp) / re.sub(r"[^\w.-]+", "-", case.name)
            shutil.copytree(pristine, work)
            results[case.name] = run_case(case, work, show=args.show)
            print(
                f"{'ok  ' if not results[case.name] else 'FAIL'} {case.name}: {'; '.join(results[case.name])}"
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    failed = [name for name, problems in results.items() if problems]
    print(f"{len(results) - len(failed)}/{len(results)} cases refused as promised")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
