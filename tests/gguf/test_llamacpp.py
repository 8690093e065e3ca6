"""llama.cpp itself on our GGUF work: its quantizer against our numerics, and every file we write
loaded and run by it (llama-cpp-python, built from source into the cached venv of
tests/gguf/setup_venv.sh). Without that venv these tests skip, unless
``AUTOROUND_REQUIRE_LLAMACPP_VENV=1`` (CI) makes that a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType
from tiny_gguf import bpe_tokenizer, gguf_model

from autoround import formats, runner
from autoround.dtypes import DTYPES, to_groups
from autoround.dtypes.gguf_blocks import BLOCK_TYPES
from autoround.formats.gguf import gguf_file
from autoround.run import Run
from autoround.schemes import parse_scheme

HERE = Path(__file__).resolve().parent
VENV = Path(os.environ.get("AUTOROUND_LLAMACPP_VENV", Path.home() / ".cache/autoround-dev/llamacpp-venv"))


def llama_python() -> Path:
    python = VENV / "bin/python"
    if not python.is_file():
        why = f"no llama.cpp venv at {VENV} (run tests/gguf/setup_venv.sh)"
        if os.environ.get("AUTOROUND_REQUIRE_LLAMACPP_VENV") == "1":
            pytest.fail(why)
        pytest.skip(why)
    return python


def harness(*args: str) -> dict:
    proc = subprocess.run(
        [str(llama_python()), str(HERE / "llamacpp_harness.py"), *args], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _weight() -> torch.Tensor:
    torch.manual_seed(0)
    weight = torch.randn(48, 512) * 0.05
    weight[:, 7] *= 8
    weight[3, :32] = 0.0
    return weight


@pytest.mark.parametrize("with_imatrix", [False, True])
@pytest.mark.parametrize("name", sorted(BLOCK_TYPES))
def test_numerics_match_llama_cpps_quantizer(tmp_path, name: str, with_imatrix: bool) -> None:
    """ggml_quantize_chunk (llama-quantize's code) against our round-to-nearest (no imatrix) and
    importance-weighted search (imatrix): the same blocks up to accumulation-order near-ties."""
    block = BLOCK_TYPES[name]
    weight = _weight()
    imatrix = (torch.rand(512, generator=torch.Generator().manual_seed(1)) + 0.1) ** 3
    np.save(tmp_path / "w.npy", weight.numpy())
    np.save(tmp_path / "im.npy", imatrix.numpy())
    qtype = GGMLQuantizationType[name.upper()]
    extra = [str(tmp_path / "im.npy")] if with_imatrix else []
    harness("quantize", str(int(qtype)), str(tmp_path / "w.npy"), str(tmp_path / "q.npy"), *extra)
    theirs = gguf.quants.dequantize(np.load(tmp_path / "q.npy"), qtype)
    grouped, _ = to_groups(weight, block.group)
    dtype = DTYPES[block.data_type]
    if with_imatrix:
        ours, _ = dtype.opt_rtn_qdq(
            grouped, block.bits, block.sym, block.group, imatrix, False, 0, torch.float32
        )
    else:
        ours, _ = dtype.qdq(grouped, block.bits, block.sym)
    ours_np = ours.reshape(weight.shape).numpy()
    same = (ours_np.reshape(-1, block.block) == theirs.reshape(-1, block.block)).all(-1).mean()
    exact = block.data_type == "gguf" and not with_imatrix  # llama.cpp's reference, no sums
    assert same == 1.0 if exact else same >= 0.95, same
    ours_err = float(((ours_np - weight.numpy()) ** 2).mean())
    their_err = float(((theirs - weight.numpy()) ** 2).mean())
    assert abs(ours_err - their_err) <= 0.01 * their_err


def _write(tmp_path: Path, fmt: str, arch: str = "llama") -> Path:
    # transformers' GGUF reader takes Qwen3's head_dim from its default (128), not the file
    model = gguf_model(arch=arch, **({"head_dim": 128} if arch == "qwen3" else {}))
    model.config._name_or_path = (
        f"tiny-{arch}"  # transformers' reader takes "mistral" in the name as its own arch
    )
    run = Run(scheme=parse_scheme("GGUF:Q4_K_M"), formats=(fmt,))
    qm = runner.execute(model, run, tokenizer=bpe_tokenizer(), progress=False)
    return gguf_file(formats.save(qm, tmp_path / fmt.replace(":", "-"), format=fmt))


def _transformers_logits(path: Path, ids: list[int]) -> np.ndarray:
    """The file loaded (dequantized) by transformers' own GGUF reader."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


@pytest.mark.parametrize(
    ("fmt", "arch"),
    [
        (f"gguf:{name}", "llama")
        for name in ("q2_k", "q3_k_m", "q4_k_m", "q5_k_s", "q6_k", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0")
    ]
    + [("gguf:q4_k_m", "mistral"), ("gguf:q4_k_m", "qwen2"), ("gguf:q4_k_m", "qwen3")],
)
def test_llama_cpp_loads_and_runs_what_we_write(tmp_path, fmt: str, arch: str) -> None:
    path = _write(tmp_path, fmt, arch)
    out = harness("generate", str(path), "1,5,9,12", "4")
    assert out["n_vocab"] == 320 and len(out["ids"]) == 4
    ids = list(range(2, 34))
    harness("logits", str(path), ",".join(map(str, ids)), str(tmp_path / "logits.npy"))
    theirs = np.load(tmp_path / "logits.npy")
    reference = _transformers_logits(path, ids)
    # llama.cpp multiplies quantized weights by 8-bit-quantized activations: close, not equal
    corr = np.corrcoef(theirs.reshape(-1), reference.reshape(-1))[0, 1]
    assert corr > 0.99, corr


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["gguf:q8_0", "gguf:q4_k_m"])
def test_smollm2_greedy_text_matches_transformers(tmp_path, fmt: str) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from autoround.model_sources import materialize_smollm2

    source = materialize_smollm2()
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).eval()
    run = Run(scheme=parse_scheme("GGUF:Q4_K_M"), formats=(fmt,))
    qm = runner.execute(model, run, tokenizer=tokenizer, progress=False)
    path = gguf_file(formats.save(qm, tmp_path / "out", format=fmt))
    prompt = tokenizer("The capital of France is").input_ids
    ours = harness("generate", str(path), ",".join(map(str, prompt)), "8")["ids"]
    reference = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    ).eval()
    with torch.no_grad():
        expected = reference.generate(torch.tensor([prompt]), max_new_tokens=8, do_sample=False)[
            0, len(prompt) :
        ]
    assert ours == expected.tolist(), (tokenizer.decode(ours), tokenizer.decode(expected))
    perplexity = harness("perplexity", str(path), _eval_ids(tmp_path, tokenizer), "512")["ppl"]
    assert perplexity < 40


def _eval_ids(tmp_path: Path, tokenizer) -> str:
    from importlib.resources import files

    text = files("autoround.data").joinpath("wikitext2_test_head.txt")
    ids = tokenizer(text.read_text(encoding="utf-8")).input_ids[: 2 * 512]
    np.save(tmp_path / "ids.npy", np.asarray(ids))
    return str(tmp_path / "ids.npy")


def test_llama_cpp_runs_the_gguf_written_beside_integer_formats(tmp_path) -> None:
    """``auto_round,auto_gptq,gguf:q4_k_m`` from one run: llama.cpp loads the GGUF (each layer
    re-quantized from the W4A16 weights to the recipe's types) and computes what transformers'
    reading of the same file computes, and what the W4A16 model itself computes, within the
    re-quantization."""
    model = gguf_model()
    model.config._name_or_path = "tiny-llama"
    run = Run(scheme=parse_scheme("W4A16"), formats=("auto_round", "auto_gptq", "gguf:q4_k_m"))
    qm = runner.execute(model, run, tokenizer=bpe_tokenizer(), progress=False)
    out = formats.save(qm, tmp_path / "out", format=run.formats)
    path = gguf_file(out / "gguf-q4-k-m")
    ids = list(range(2, 34))
    harness("logits", str(path), ",".join(map(str, ids)), str(tmp_path / "logits.npy"))
    theirs = np.load(tmp_path / "logits.npy")
    reference = _transformers_logits(path, ids)
    assert np.corrcoef(theirs.reshape(-1), reference.reshape(-1))[0, 1] > 0.99
    with torch.no_grad():
        w4a16 = model(torch.tensor([ids])).logits[0].numpy()
    assert np.corrcoef(theirs.reshape(-1), w4a16.reshape(-1))[0, 1] > 0.95
