"""Model-free RTN of a random Llama-3-8B-shape checkpoint on this CPU (issue 21): ours vs Intel
auto-round 0.16.1's model-free mode, side by side in one run, W4A16.

    .venv/bin/python bench/model_free_cpu.py                    # make (once) + both tools
    .venv/bin/python bench/model_free_cpu.py --make-only        # only write the checkpoint
    .venv/bin/python bench/model_free_cpu.py --tools ours --repeat 2

* The checkpoint (``~/.cache/autoround-dev/llama8b-random-bf16``, reused once complete): the
  Llama-3-8B shape (hidden 4096, intermediate 14336, 32 layers, 32 heads, 8 KV heads, vocab
  128256, untied ``lm_head``), bf16, written shard by shard and tensor by tensor (never more than
  one row chunk of one tensor in memory): weights ``N(0, 0.02)`` from a ``torch.Generator``
  seeded per tensor (crc32 of its name), norms 1. Shards of at most 5 GB (``5e9`` bytes, as
  ``save_pretrained``'s ``"5GB"``) in Hugging Face's layout with ``model.safetensors.index.json``,
  ``config.json`` of Llama-3-8B, and SmolLM2's tokenizer files (no tool checks them against the
  vocabulary; none is run on text). About 16 GB.
* ours: ``autoround-rtn --model DIR --model_free --scheme W4A16 --format auto_round`` (our venv);
  Intel: ``auto-round --model DIR --model_free --scheme W4A16 --format auto_round`` (Intel's venv,
  ``~/.cache/autoround-dev/intel-venv``). Each under ``/usr/bin/time -v`` (peak RSS of the
  largest single process: VmHWM, exact) while this script polls the whole process tree with
  psutil every 50 ms (sum of RSS over the processes: Intel quantizes in spawned worker
  processes). Wall time from start to exit, imports included. 2 threads each (OMP/MKL).
* Each output is measured (files, bytes) and deleted before the next run; ``--check N`` first
  compares N of our quantized layers with the model-based RTN functions on the same weights, bit
  for bit (outside the timing).

Writes bench/out/model_free_cpu.json (rewritten after every run) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import psutil
import torch

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
DEV = Path.home() / ".cache/autoround-dev"
INTEL_VENV = Path(os.environ.get("AUTOROUND_INTEL_VENV", DEV / "intel-venv"))
OURS_VENV = REPO / ".venv"
OUT = BENCH / "out"
THREADS = 2
SHARD_LIMIT = 5_000_000_000
ROW_CHUNK_ELEMENTS = 32 * 2**20  # rows generated at a time: 128 MiB of fp32
CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "head_dim": 128,
    "hidden_act": "silu",
    "hidden_size": 4096,
    "initializer_range": 0.02,
    "intermediate_size": 14336,
    "max_position_embeddings": 8192,
    "mlp_bias": False,
    "model_type": "llama",
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": None,
    "rope_theta": 500000.0,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "vocab_size": 128256,
}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


# --------------------------------------------------------------------------- the checkpoint
def tensor_specs(config: dict) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every tensor of a Llama checkpoint, in the order it is written."""
    hidden, inter, vocab = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    kv = config["num_key_value_heads"] * config["head_dim"]
    specs: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (vocab, hidden))]
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}"
        specs += [
            (f"{p}.input_layernorm.weight", (hidden,)),
            (f"{p}.self_attn.q_proj.weight", (hidden, hidden)),
            (f"{p}.self_attn.k_proj.weight", (kv, hidden)),
            (f"{p}.self_attn.v_proj.weight", (kv, hidden)),
            (f"{p}.self_attn.o_proj.weight", (hidden, hidden)),
            (f"{p}.post_attention_layernorm.weight", (hidden,)),
            (f"{p}.mlp.gate_proj.weight", (inter, hidden)),
            (f"{p}.mlp.up_proj.weight", (inter, hidden)),
            (f"{p}.mlp.down_proj.weight", (hidden, inter)),
        ]
    specs += [("model.norm.weight", (hidden,)), ("lm_head.weight", (vocab, hidden))]
    return specs


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def plan_shards(specs: list[tuple[str, tuple[int, ...]]]) -> list[list[tuple[str, tuple[int, ...]]]]:
    """Greedy shards of at most SHARD_LIMIT bytes of bf16 data, in order."""
    shards: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    size = 0
    for name, shape in specs:
        nbytes = 2 * _numel(shape)
        if shards[-1] and size + nbytes > SHARD_LIMIT:
            shards.append([])
            size = 0
        shards[-1].append((name, shape))
        size += nbytes
    return shards


def _write_tensor(f, name: str, shape: tuple[int, ...]) -> None:
    """Generate one tensor in row chunks from its own seeded generator and write its bf16 bytes."""
    if len(shape) == 1:  # a norm
        f.write(torch.ones(shape, dtype=torch.bfloat16).view(torch.uint8).numpy().tobytes())
        return
    gen = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    rows, cols = shape
    step = max(1, ROW_CHUNK_ELEMENTS // cols)
    for start in range(0, rows, step):
        n = min(step, rows - start)
        chunk = torch.randn((n, cols), generator=gen, dtype=torch.float32).mul_(0.02).to(torch.bfloat16)
        f.write(chunk.view(torch.uint8).numpy().data)


def write_shard(path: Path, tensors: list[tuple[str, tuple[int, ...]]]) -> None:
    """A safetensors file written tensor by tensor: header first (shapes are known), then data."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in tensors:
        nbytes = 2 * _numel(shape)
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    tmp = path.with_suffix(".partial")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for name, shape in tensors:
            _write_tensor(f, name, shape)
    os.replace(tmp, path)


def make_checkpoint(directory: Path) -> Path:
    """Write the checkpoint into ``directory`` unless a complete one with the same spec is there."""
    specs = tensor_specs(CONFIG)
    spec_hash = zlib.crc32(json.dumps([CONFIG, specs, SHARD_LIMIT, "randn*0.02/crc32"]).encode())
    marker = directory / ".complete.json"
    if marker.is_file() and json.loads(marker.read_text()).get("spec") == spec_hash:
        print(f"checkpoint {directory}: complete, reused", flush=True)
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    shards = plan_shards(specs)
    names = [f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)]
    start = time.perf_counter()
    for file_name, tensors in zip(names, shards, strict=True):
        write_shard(directory / file_name, tensors)
        print(
            f"  wrote {file_name} ({len(tensors)} tensors) at {time.perf_counter() - start:.0f} s", flush=True
        )
    weight_map = {
        name: file_name for file_name, tensors in zip(names, shards, strict=True) for name, _ in tensors
    }
    total = sum(2 * _numel(shape) for _, shape in specs)
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    (directory / "config.json").write_text(json.dumps(CONFIG, indent=2) + "\n")
    (directory / "generation_config.json").write_text(
        json.dumps({"bos_token_id": 1, "eos_token_id": 2, "do_sample": False}, indent=2) + "\n"
    )
    from autoround.model_sources import materialize_smollm2

    smollm2 = Path(materialize_smollm2())
    for name in TOKENIZER_FILES:
        if (smollm2 / name).is_file():
            shutil.copyfile(smollm2 / name, directory / name)
    marker.write_text(json.dumps({"spec": spec_hash, "bytes": total, "seconds": time.perf_counter() - start}))
    print(f"checkpoint {directory}: {total / 1e9:.2f} GB in {time.perf_counter() - start:.0f} s", flush=True)
    return directory


# --------------------------------------------------------------------------- measuring a tool
class TreeSampler(threading.Thread):
    """Polls a process and its descendants: peak of the summed RSS, and each process's peak."""

    def __init__(self, root: int, skip_root: bool, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.root, self.skip_root, self.interval = root, skip_root, interval
        self.peak_sum = 0
        self.per_process: dict[int, tuple[str, int]] = {}
        self.processes_seen = 0
        self._done = threading.Event()

    def run(self) -> None:
        try:
            root = psutil.Process(self.root)
        except psutil.NoSuchProcess:
            return
        while not self._done.is_set():
            try:
                procs = ([] if self.skip_root else [root]) + root.children(recursive=True)
            except psutil.NoSuchProcess:
                return
            total = 0
            for proc in procs:
                try:
                    rss = proc.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                total += rss
                name, best = self.per_process.get(proc.pid, ("", 0))
                if rss > best:
                    with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                        name = name or " ".join(proc.cmdline()[:3])[-80:]
                    self.per_process[proc.pid] = (name, rss)
            self.processes_seen = max(self.processes_seen, len(self.per_process))
            self.peak_sum = max(self.peak_sum, total)
            self._done.wait(self.interval)

    def stop(self) -> None:
        self._done.set()
        self.join()


def tool_command(tool: str, model: Path, output: Path) -> list[str]:
    args = ["--model", str(model), "--model_free", "--scheme", "W4A16", "--format", "auto_round"]
    args += ["--output_dir", str(output)]
    if tool == "ours":
        return [str(OURS_VENV / "bin/autoround-rtn"), *args]
    return [str(INTEL_VENV / "bin/auto-round"), *args]


def _parse_time_v(text: str) -> dict:
    found = {}
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    if match:
        found["max_single_process_rss_mib"] = int(match.group(1)) / 1024
    match = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", text)
    if match:
        parts = [float(p) for p in match.group(1).split(":")]
        found["time_v_wall_s"] = sum(p * 60**i for i, p in enumerate(reversed(parts)))
    for key, label in (("user_s", "User time (seconds)"), ("sys_s", "System time (seconds)")):
        match = re.search(re.escape(label) + r": (\S+)", text)
        if match:
            found[key] = float(match.group(1))
    match = re.search(r"Percent of CPU this job got: (\d+)%", text)
    if match:
        found["cpu_percent"] = int(match.group(1))
    return found


def _dir_size(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def run_tool(tool: str, model: Path, work: Path, run: int, check: int = 0) -> dict:
    output = work / f"{tool}-w4a16"
    shutil.rmtree(output, ignore_errors=True)
    timefile = work / f"{tool}-{run}.time"
    log = work / f"{tool}-{run}.log"
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS=str(THREADS),
        MKL_NUM_THREADS=str(THREADS),
    )
    if tool != "ours":
        env.pop("PYTHONPATH", None)
        env.pop("VIRTUAL_ENV", None)
    cmd = tool_command(tool, model, output)
    load_before = os.getloadavg()
    print(f"[{tool} #{run}] {' '.join(cmd)}", flush=True)
    start = time.perf_counter()
    with open(log, "w") as logf:
        proc = subprocess.Popen(
            ["/usr/bin/time", "-v", "-o", str(timefile), *cmd], stdout=logf, stderr=subprocess.STDOUT, env=env
        )
        sampler = TreeSampler(proc.pid, skip_root=True)
        sampler.start()
        rc = proc.wait()
        wall = time.perf_counter() - start
        sampler.stop()
    result: dict = {
        "tool": tool,
        "run": run,
        "command": " ".join(cmd),
        "rc": rc,
        "wall_s": wall,
        "peak_tree_rss_mib": sampler.peak_sum / 2**20,
        "processes": len(sampler.per_process),
        "per_process_peak_rss_mib": {
            f"{pid} {name}": rss / 2**20 for pid, (name, rss) in sorted(sampler.per_process.items())
        },
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
    }
    if timefile.is_file():
        result.update(_parse_time_v(timefile.read_text()))
    written = [p for p in work.iterdir() if p.is_dir() and p.name.startswith(output.name)]
    if rc == 0 and written:
        # Intel writes into output_dir itself for --model_free (checked below); take what is there.
        files, nbytes = _dir_size(output if output.exists() else written[0])
        result.update(output_files=files, output_bytes=nbytes)
        result["output_listing"] = sorted(str(p.relative_to(work)) for p in output.rglob("*.json"))[:20]
        if tool == "ours" and check:
            result["check"] = check_against_model_based(model, output, check)
    else:
        result["log_tail"] = log.read_text()[-3000:]
    for path in written:
        shutil.rmtree(path, ignore_errors=True)
    print(
        f"[{tool} #{run}] rc {rc}, {wall:.1f} s, peak tree RSS {result['peak_tree_rss_mib']:.0f} MiB, "
        f"largest process {result.get('max_single_process_rss_mib', float('nan')):.0f} MiB",
        flush=True,
    )
    return result


def check_against_model_based(model: Path, output: Path, count: int) -> dict:
    """Our output's tensors of ``count`` quantized layers (spread over the checkpoint) against the
    model-based RTN on the same weight, bit for bit: ``autoround.quantize`` of a one-Linear model
    holding it, packed by ``autoround.formats.pack_layer`` (auto_round:auto_gptq, W4A16's
    packing); and every output file's header read by safetensors. One weight at a time."""
    from safetensors import safe_open
    from torch import nn

    import autoround
    from autoround import formats

    files = sorted(output.glob("*.safetensors"))
    where = {}
    for path in files:
        with safe_open(str(path), framework="pt") as handle:
            where.update(dict.fromkeys(handle.keys(), path))
    source_map = json.loads((model / "model.safetensors.index.json").read_text())["weight_map"]
    layers = sorted({k[: -len(".qweight")] for k in where if k.endswith(".qweight")})
    picked = [layers[round(i * (len(layers) - 1) / max(count - 1, 1))] for i in range(count)]
    differing = []
    for layer in picked:
        with safe_open(str(model / source_map[f"{layer}.weight"]), framework="pt") as handle:
            weight = handle.get_tensor(f"{layer}.weight")
        block = nn.Module()
        block.proj = nn.Linear(weight.shape[1], weight.shape[0], bias=False, device="meta")
        block.proj.weight = nn.Parameter(weight, requires_grad=False)
        holder = nn.Module()
        holder.layers = nn.ModuleList([block])
        quantized = autoround.quantize(holder, "W4A16", progress=False)
        expected = formats.pack_layer(block.proj.weight.data, quantized.layers["layers.0.proj"], 1)
        for key, tensor in expected.items():
            with safe_open(str(where[f"{layer}.{key}"]), framework="pt") as handle:
                if not torch.equal(handle.get_tensor(f"{layer}.{key}"), tensor):
                    differing.append(f"{layer}.{key}")
        del weight, block, holder, quantized, expected
    return {"files_read": len(files), "tensors": len(where), "layers_checked": picked, "differing": differing}


# --------------------------------------------------------------------------- report
def machine_info() -> dict:
    def sh(cmd: str) -> str:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()

    flags = sh("grep -m1 flags /proc/cpuinfo").split()
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": sh("lscpu | sed -n 's/^Model name: *//p'"),
        "cpu_flags": sorted(f for f in flags if f.startswith(("avx512", "amx")) or f in ("avx2", "avx_vnni")),
        "nproc": sh("nproc"),
        "mem": sh("free -g | awk '/Mem:/{print $2\" GiB\"}'"),
        "disk_free_gb": shutil.disk_usage(DEV).free / 1e9,
        "torch": torch.__version__,
        "intel": sh(f"{INTEL_VENV / 'bin/python'} -c 'import auto_round; print(auto_round.__version__)'"),
        "intel_torch": sh(f"{INTEL_VENV / 'bin/python'} -c 'import torch; print(torch.__version__)'"),
        "git": sh(f"git -C {REPO} rev-parse --short HEAD")
        + (" (dirty)" if sh(f"git -C {REPO} status --porcelain") else ""),
        "loadavg_start": os.getloadavg(),
    }


def table(results: list[dict]) -> str:
    lines = [
        "| tool | run | wall (s) | peak RSS, process tree (MiB) | largest process (MiB) | processes | output (GB) | load avg before |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        out = f"{r['output_bytes'] / 1e9:.2f}" if "output_bytes" in r else f"rc {r['rc']}"
        lines.append(
            f"| {r['tool']} | {r['run']} | {r['wall_s']:.1f} | {r['peak_tree_rss_mib']:.0f} | "
            f"{r.get('max_single_process_rss_mib', float('nan')):.0f} | {r['processes']} | {out} | "
            f"{r['loadavg_before'][0]:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", type=Path, default=DEV / "llama8b-random-bf16")
    parser.add_argument("--work", type=Path, default=DEV / "model-free-bench")
    parser.add_argument("--tools", default="ours,intel")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each tool, alternating")
    parser.add_argument("--make-only", action="store_true")
    parser.add_argument(
        "--check", type=int, default=0, help="compare N of our quantized layers with the model-based RTN"
    )
    args = parser.parse_args()
    model = make_checkpoint(args.checkpoint)
    if args.make_only:
        return
    args.work.mkdir(parents=True, exist_ok=True)
    OUT.mkdir(exist_ok=True)
    report = {"machine": machine_info(), "checkpoint": str(model), "command": " ".join(sys.argv), "runs": []}
    for run in range(1, args.repeat + 1):
        for tool in args.tools.split(","):
            report["runs"].append(run_tool(tool, model, args.work, run, args.check))
            (OUT / "model_free_cpu.json").write_text(json.dumps(report, indent=2) + "\n")
    report["machine"]["loadavg_end"] = os.getloadavg()
    (OUT / "model_free_cpu.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["machine"], indent=2))
    print(table(report["runs"]))


if __name__ == "__main__":
    main()
