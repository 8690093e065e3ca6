"""``autoround list format|scheme`` (the matrix from the registries) and ``--format`` with several
formats, refused before the model loads when one cannot store the scheme."""

from __future__ import annotations

import dataclasses
import json

import pytest

from autoround.cli import commands
from autoround.cli.commands import main, main_rtn
from autoround.formats import FORMATS, Capabilities
from autoround.schemes import PRESETS


def test_list_format_names_each_format_its_presets_and_runtimes(capsys) -> None:
    assert main(["list", "format"]) == 0
    out = capsys.readouterr().out
    assert "auto_gptq  (quant_method 'gptq'; read back by autoround: yes)" in out
    assert "llm_compressor  (quant_method 'compressed-tensors'; read back by autoround: no)" in out
    awq = out[out.index("\nauto_awq  (") + 1 :]
    assert awq.splitlines()[2] == "  presets:  W4A16, W4A16G64, W4A16G32"
    assert "vLLM awq (stock)" in awq.splitlines()[3]


def test_list_scheme_names_the_formats_that_write_each_preset(capsys) -> None:
    assert main(["list", "scheme"]) == 0
    out = capsys.readouterr().out
    w2 = out[out.index("W2A16  (") :].split("\n\n")[0]
    assert "auto_gptq: autoround" in w2 and "auto_awq" not in w2
    assert "W5A16  (int 5-bit, group 128, sym)\n  written by no format yet" in out


def test_the_json_matrix_covers_every_writable_format_and_quantizing_preset(capsys) -> None:
    assert main(["list", "scheme", "--json"]) == 0
    pairs = json.loads(capsys.readouterr().out)
    writable = [name for name, entry in FORMATS.items() if entry.writable]
    quantizing = [name for name, scheme in PRESETS.items() if scheme.is_quantized]
    assert len(pairs) == len(writable) * len(quantizing)
    cell = next(p for p in pairs if (p["format"], p["scheme"]) == ("auto_awq", "W4A16G32"))
    assert cell["written"] and "AutoAWQ" in cell["runtimes"]
    cell = next(p for p in pairs if (p["format"], p["scheme"]) == ("auto_awq", "W8A16"))
    assert (cell["written"], cell["runtimes"]) == (False, [])


def test_a_format_registered_later_joins_the_matrix(capsys, monkeypatch) -> None:
    extra = dataclasses.replace(
        FORMATS["auto_round"], name="toy", capabilities=Capabilities(("int",), (8,)), runtimes=("toy-rt",)
    )
    monkeypatch.setitem(FORMATS, "toy", extra)
    assert main(["list", "format"]) == 0
    out = capsys.readouterr().out
    assert "toy  (quant_method 'auto-round'" in out and "presets:  W8A16, W8A16G64, W8A16G32" in out


def test_a_bad_topic_is_one_line_with_exit_code_2(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["list", "formats"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid choice: 'formats'" in err


def test_two_formats_from_the_cli_each_in_its_subdirectory(tmp_path, tiny_model_dir, capsys) -> None:
    out = tmp_path / "o"
    args = ["--model", str(tiny_model_dir), "--group_size", "32", "--output_dir", str(out), "-q"]
    assert main_rtn([*args, "--format", "auto_round,auto_awq", "--asym"]) == 0
    assert "saved the auto_round, auto_awq checkpoints to" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["auto-awq", "auto-round"]
    config = json.loads((out / "auto-awq" / "config.json").read_text())["quantization_config"]
    assert (config["quant_method"], config["zero_point"]) == ("awq", True)


def test_eval_ppl_reads_the_first_format_autoround_reads(
    tmp_path, tiny_model_dir, monkeypatch, capsys
) -> None:
    seen = []
    monkeypatch.setattr(commands, "perplexity", lambda model, tok, args, label: seen.append(model) or 10.0)
    monkeypatch.setattr(commands, "load_dense", lambda path: str(path))
    out = tmp_path / "o"
    args = [
        "--model",
        str(tiny_model_dir),
        "--group_size",
        "32",
        "--output_dir",
        str(out),
        "-q",
        "--eval_ppl",
    ]
    assert main_rtn([*args, "--format", "llm_compressor,auto_gptq"]) == 0
    assert seen[1] == str(out / "auto-gptq")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--format", "auto_awq", "--scheme", "W8A16"],
            "scheme (int 8-bit) cannot be stored in format 'auto_awq'",
        ),
        (
            ["--format", "auto_round,auto_awq", "--layer_config", '{"down_proj": {"bits": 2}}'],
            "layer_config['down_proj'] (int 2-bit) cannot be stored in format 'auto_awq'",
        ),
        (["--format", "llm_compressor", "--eval_ppl"], "--eval_ppl reloads the saved checkpoint"),
        (["--format", "auto_gptq,"], "format list 'auto_gptq,' has an empty entry"),
    ],
)
def test_refused_before_the_model_loads(
    flags, message, tmp_path, tiny_model_dir, monkeypatch, capsys
) -> None:
    monkeypatch.setattr(commands, "load_model", lambda args: pytest.fail("the model must not load"))
    args = ["--model", str(tiny_model_dir), "--output_dir", str(tmp_path / "o"), *flags]
    assert main_rtn(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_preset_that_quantizes_activations_lists_them_and_its_weight_only_writers(capsys) -> None:
    assert main(["list", "scheme"]) == 0
    out = capsys.readouterr().out
    paragraph = out[out.index("INT8_W8A8  (") :].split("\n\n")[0]
    lines = paragraph.splitlines()
    assert lines[0] == "INT8_W8A8  (int 8-bit, per channel, sym; activations int 8-bit dynamic, per token)"
    # W8A8 as given: Intel's fake auto_round packing and compressed-tensors; its weight-only
    # form: every integer format
    assert [line.split(":")[0] for line in lines[1 : lines.index("  weight-only form (act_bits=16):")]] == [
        "  auto_round",
        "  llm_compressor",
    ]
    assert "\n  weight-only form (act_bits=16):\n    auto_round: " in paragraph
    fp8_block = out[out.index("FP8_BLOCK  (") :].split("\n\n")[0]
    assert "128x128 blocks" in fp8_block and fp8_block.splitlines()[1].startswith("  auto_round: ")
    assert "\n  weight-only form (act_bits=16):\n    auto_round: " in fp8_block
