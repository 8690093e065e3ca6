"""GGUF export: numerics against the ``gguf`` package (an independent reader and llama.cpp's
reference quantizer for the 32-weight types), what each recipe writes, and the bad inputs.

llama.cpp itself (loading, generating, its own quantizer) is checked in tests/gguf/.
"""

from __future__ import annotations

import logging

import gguf
import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, GGUFReader
from tiny_gguf import NARROW, bpe_tokenizer, gguf_model

from autoround import formats, runner
from autoround.algorithms import OptRtnSettings, SignRoundSettings
from autoround.dtypes import DTYPES, to_groups
from autoround.dtypes.gguf_blocks import BLOCK_TYPES
from autoround.errors import FormatError, SchemeError
from autoround.formats import export_gguf, gguf_file
from autoround.run import Run
from autoround.schemes import Scheme, parse_scheme

pytestmark = pytest.mark.usefixtures("one_thread")
LEGACY = ["q4_0", "q4_1", "q5_0", "q5_1", "q8_0"]


def _weight(rows: int = 8, cols: int = 512, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    weight = torch.randn(rows, cols) * 0.05
    weight[:, 3] *= 10  # an outlier column
    weight[1, :32] = 0.0  # an all-zero block
    return weight


@pytest.mark.parametrize("name", LEGACY)
def test_legacy_round_to_nearest_is_llama_cpps_reference(name: str) -> None:
    # gguf's numpy quantize is bit-exact with ggml-quants.c's quantize_row_*_ref
    block = BLOCK_TYPES[name]
    weight = _weight()
    qtype = GGMLQuantizationType[name.upper()]
    reference = gguf.quants.dequantize(gguf.quants.quantize(weight.numpy(), qtype), qtype)
    values, _ = DTYPES[block.data_type].qdq(weight.reshape(-1, block.group), block.bits, block.sym)
    np.testing.assert_array_equal(values.reshape(weight.shape).numpy(), reference)


def _write(model, fmt: str, algorithm: str = "rtn", settings=None, tmp_path=None, scheme="GGUF:Q4_K_M"):
    run = Run(scheme=parse_scheme(scheme), algorithm=algorithm, settings=settings, formats=(fmt,))
    calibration = torch.randint(0, 300, (2, 32)) if algorithm != "rtn" else None
    qm = runner.execute(model, run, calibration=calibration, tokenizer=bpe_tokenizer(), progress=False)
    path = formats.save(qm, tmp_path / fmt.replace(":", "-"), format=fmt)
    return qm, GGUFReader(gguf_file(path))


def _by_name(reader: GGUFReader) -> dict[str, gguf.ReaderTensor]:
    return {tensor.name: tensor for tensor in reader.tensors}


def _unpermute(rows: np.ndarray, heads: int) -> np.ndarray:
    count = rows.shape[0]
    order = np.arange(count).reshape(heads, 2, count // heads // 2).swapaxes(1, 2).reshape(count)
    out = np.empty_like(rows)
    out[order] = rows
    return out


@pytest.mark.parametrize(
    ("fmt", "algorithm", "settings"),
    [
        ("gguf:q4_k_m", "rtn", None),
        ("gguf:q2_k", "rtn", None),
        ("gguf:q3_k_l", "rtn", None),
        ("gguf:q5_k_s", "rtn", None),
        ("gguf:q6_k", "rtn", None),
        ("gguf:q4_0", "rtn", None),
        ("gguf:q4_1", "rtn", None),
        ("gguf:q5_0", "rtn", None),
        ("gguf:q5_1", "rtn", None),
        ("gguf:q8_0", "rtn", None),
        ("gguf:q4_k_m", "opt_rtn", OptRtnSettings()),
        ("gguf:q3_k_m", "signround", SignRoundSettings(iters=2, batch_size=2)),
        ("gguf:q4_1", "signround", SignRoundSettings(iters=2, batch_size=2, enable_alg_ext=False)),
    ],
)
def test_gguf_dequantize_gives_back_our_weights_exactly(tmp_path, fmt, algorithm, settings) -> None:
    model = gguf_model()
    qm, reader = _write(model, fmt, algorithm, settings, tmp_path)
    tensors = _by_name(reader)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 2)
    heads = {"attn_q": 4, "attn_k": 2}
    checked = set()
    for layer in qm.layers:
        name = names.get_name(layer + ".weight", try_suffixes=(".weight",))
        tensor = tensors[name]
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        part = name.split(".")[2]
        if part in heads:
            values = _unpermute(values, heads[part])
        weight = model.get_submodule(layer).weight.detach().numpy()
        np.testing.assert_array_equal(values, weight, err_msg=name)
        checked.add(tensor.tensor_type.name.lower())
    assert checked <= set(BLOCK_TYPES)


def _types(reader: GGUFReader) -> dict[str, str]:
    return {t.name: t.tensor_type.name.lower() for t in reader.tensors}


def test_q4_k_m_recipe_makes_llama_cpps_choices(tmp_path) -> None:
    model = gguf_model(num_hidden_layers=8)
    _, reader = _write(model, "gguf:q4_k_m", tmp_path=tmp_path)
    types = _types(reader)
    # use_more_bits over 8 layers: 0 (first eighth), 7 (last eighth), 3 and 6 ((i - 1) % 3 == 2)
    more = {0, 3, 6, 7}
    for i in range(8):
        wanted = "q6_k" if i in more else "q4_k"
        assert types[f"blk.{i}.attn_v.weight"] == wanted
        assert types[f"blk.{i}.ffn_down.weight"] == wanted
        assert types[f"blk.{i}.attn_q.weight"] == "q4_k"
    assert types["output.weight"] == "q6_k"
    assert types["token_embd.weight"] == "q4_k"  # untied: the default type
    assert types["output_norm.weight"] == "f32"
    assert reader.fields["general.file_type"].contents() == gguf.LlamaFileType.MOSTLY_Q4_K_M


def test_q2_k_and_tied_embeddings(tmp_path) -> None:
    model = gguf_model(tie_word_embeddings=True)
    _, reader = _write(model, "gguf:q2_k", tmp_path=tmp_path)
    types = _types(reader)
    assert "output.weight" not in types  # llama.cpp reads the tied output from token_embd
    assert types["token_embd.weight"] == "q6_k"  # the tied embedding takes the output's type
    assert types["blk.0.attn_v.weight"] == "q3_k"  # n_gqa 2 < 4
    assert types["blk.0.ffn_down.weight"] == "q3_k"
    assert types["blk.0.attn_output.weight"] == "q3_k"
    assert types["blk.0.attn_q.weight"] == "q2_k"


def test_fallback_for_rows_no_block_type_holds_is_applied_and_reported(tmp_path, caplog) -> None:
    model = gguf_model(
        **{k: v for k, v in NARROW.items() if k in ("hidden_size", "intermediate_size", "head_dim")}
    )
    with caplog.at_level(logging.WARNING):
        qm, reader = _write(model, "gguf:q4_k_m", tmp_path=tmp_path)
    types = _types(reader)
    assert types["blk.0.attn_q.weight"] == "q5_0"  # 288 inputs: q4_k -> q5_0 (llama.cpp)
    assert types["blk.0.ffn_down.weight"] == "q5_0"  # 320 inputs: q4_k -> q5_0
    assert types["blk.1.ffn_down.weight"] == "q8_0"  # last layer: q6_k -> q8_0
    assert types["output.weight"] == "q8_0"  # 288 % 256: llama.cpp's output rule
    reason = qm.plan.layers["model.layers.0.self_attn.q_proj"].reason
    assert "fallback" in reason and "q5_0" in reason
    assert "fall back to another GGUF type" in caplog.text


def test_layer_config_names_a_gguf_type(tmp_path) -> None:
    model = gguf_model()
    run = Run(
        scheme=parse_scheme("GGUF:Q4_K_M"),
        layer_config={"mlp.up_proj": "GGUF:Q8_0", "mlp.gate_proj": {"bits": 16}},
        formats=("gguf:q4_k_m",),
    )
    qm = runner.execute(model, run, tokenizer=bpe_tokenizer(), progress=False)
    path = formats.save(qm, tmp_path / "out", format="gguf:q4_k_m")
    types = _types(GGUFReader(gguf_file(path)))
    assert types["blk.0.ffn_up.weight"] == "q8_0"
    assert types["blk.0.ffn_gate.weight"] == "f16"


def test_metadata_and_tokenizer(tmp_path) -> None:
    model = gguf_model(arch="qwen3")
    _, reader = _write(model, "gguf:q8_0", tmp_path=tmp_path)
    fields = {name: field for name, field in reader.fields.items()}
    assert fields["general.architecture"].contents() == "qwen3"
    assert fields["qwen3.block_count"].contents() == 2
    assert fields["qwen3.attention.head_count_kv"].contents() == 2
    assert fields["qwen3.attention.key_length"].contents() == 64
    assert fields["tokenizer.ggml.model"].contents() == "gpt2"
    assert len(fields["tokenizer.ggml.tokens"].contents()) == 320
    assert len(fields["tokenizer.ggml.merges"].contents()) > 0
    assert fields["tokenizer.ggml.eos_token_id"].contents() == 1
    assert "blk.0.attn_q_norm.weight" in _types(reader)


def test_float_export(tmp_path) -> None:
    model = gguf_model()
    path = export_gguf(model, bpe_tokenizer(), tmp_path / "f16", "bf16")
    types = _types(GGUFReader(path))
    assert types["blk.0.attn_v.weight"] == "bf16" and types["output_norm.weight"] == "f32"
    with pytest.raises(FormatError, match="unknown GGUF float type 'f8'"):
        export_gguf(model, bpe_tokenizer(), tmp_path / "f8", "f8")


def test_unknown_gguf_type_name_lists_the_alternatives() -> None:
    with pytest.raises(SchemeError, match=r"unknown scheme 'GGUF:Q4_K_X'.*GGUF:Q4_K_M"):
        parse_scheme("GGUF:Q4_K_X")
    with pytest.raises(FormatError, match=r"unknown format 'gguf:q4_k_x'.*gguf:q4_k_m"):
        formats.check_format("gguf:q4_k_x")
    with pytest.raises(SchemeError, match=r"no block type with bits=4, asym, group_size=64.*q4_k"):
        Scheme(bits=4, group_size=64, sym=False, data_type="gguf_k")


def test_unknown_architecture_is_refused_before_any_work() -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_embd=64, n_layer=1, n_head=2, vocab_size=64))
    run = Run(scheme=parse_scheme("GGUF:Q4_0"), formats=("gguf:q4_0",))
    with pytest.raises(FormatError, match=r"does not know architecture 'gpt2'.*llama"):
        runner.preflight(model, run)


def test_a_failure_half_way_leaves_nothing(tmp_path, monkeypatch) -> None:
    from autoround.formats import gguf as gguf_format

    model = gguf_model()
    run = Run(scheme=parse_scheme("GGUF:Q4_K_M"), formats=("gguf:q4_k_m",))
    qm = runner.execute(model, run, tokenizer=bpe_tokenizer(), progress=False)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(gguf_format, "quantize_tensor", broken)
    with pytest.raises(OSError, match="disk full"):
        formats.save(qm, tmp_path / "out", format="gguf:q4_k_m")
    assert list(tmp_path.iterdir()) == []


def test_a_weight_its_fields_do_not_encode_is_refused(tmp_path) -> None:
    model = gguf_model()
    run = Run(scheme=parse_scheme("GGUF:Q4_0"), formats=("gguf:q4_0",))
    qm = runner.execute(model, run, tokenizer=bpe_tokenizer(), progress=False)
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight[0, 0] += 1e-3
    with pytest.raises(FormatError, match=r"up_proj.*not what its q4_0 fields encode"):
        formats.save(qm, tmp_path / "out", format="gguf:q4_0")
    assert not (tmp_path / "out").exists()


def test_no_tokenizer_is_refused_before_writing(tmp_path) -> None:
    model = gguf_model()
    run = Run(scheme=parse_scheme("GGUF:Q8_0"), formats=("gguf:q8_0",))
    qm = runner.execute(model, run, progress=False)
    with pytest.raises(FormatError, match="holds the tokenizer"):
        formats.save(qm, tmp_path / "out", format="gguf:q8_0")


@pytest.mark.parametrize("name", sorted(BLOCK_TYPES))
def test_every_type_encodes_its_own_values_exactly(name: str) -> None:
    block = BLOCK_TYPES[name]
    dtype = DTYPES[block.data_type]
    grouped, _ = to_groups(_weight(4, 512), block.group)
    values, qp = dtype.qdq(grouped, block.bits, block.sym)
    levels = dtype.quantize(values, qp, block.bits)
    assert torch.equal(dtype.dequantize(levels, qp), values)
