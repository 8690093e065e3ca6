"""The command line: bad input is refused with a message naming the value and what is allowed."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from autoround.cli.commands import build_parser, main, main_light, main_opt_rtn, main_rtn
from autoround.formats import checkpoint_spec
from autoround.hardware import native_bf16


def test_help_lists_every_option(capsys) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    out = capsys.readouterr().out
    for flag in (
        "--model",
        "--scheme",
        "--bits",
        "--group_size",
        "--sym",
        "--layer_config",
        "--format",
        "--output_dir",
        "--iters",
        "--device",
        "--seed",
        "--eval_ppl",
        "--overwrite",
    ):
        assert flag in out


def test_rtn_quantizes_a_local_model_with_overrides(tmp_path, tiny_model_dir) -> None:
    out = tmp_path / "out"
    code = main_rtn(
        [
            "--model",
            str(tiny_model_dir),
            "--scheme",
            "w4a16",
            "--group_size",
            "32",
            "--asym",
            "--layer_config",
            json.dumps({"down_proj": {"bits": 8}}),
            "--output_dir",
            str(out),
            "-q",
        ]
    )
    assert code == 0
    spec = checkpoint_spec(out)
    assert (spec.default.bits, spec.default.group_size, spec.default.sym) == (4, 32, False)
    assert spec.scheme_for("model.layers.1.mlp.down_proj").bits == 8


def test_dashed_spellings_of_flags_are_accepted() -> None:
    args = build_parser().parse_args(["--model", "m", "--eval-ppl", "--quant-lm-head", "--output-dir", "o"])
    assert args.eval_ppl and args.quant_lm_head and str(args.output_dir) == "o"


@pytest.mark.parametrize(
    ("flags", "algorithm"),
    [
        (["--dataset", "wikitext2:concat", "--nsamples", "4", "--seqlen", "32"], "opt_rtn"),
        (["--disable_opt_rtn"], "rtn"),
    ],
)
def test_iters_zero_is_optimized_rtn_unless_disabled_as_in_intels_cli(
    tmp_path, tiny_model_dir, capsys, flags, algorithm
) -> None:
    out = tmp_path / "o"
    args = ["--model", str(tiny_model_dir), "--iters", "0", "--group_size", "32", "--output_dir", str(out)]
    assert main([*args, *flags, "-q"]) == 0
    assert f"with {algorithm} and saved" in capsys.readouterr().out
    assert (out / "autoround_report.json").is_file() is (algorithm == "opt_rtn")


def test_opt_rtn_searches_scales_with_calibration(tmp_path, tiny_model_dir) -> None:
    out = tmp_path / "o"
    args = [
        "--model",
        str(tiny_model_dir),
        "--group_size",
        "32",
        "--dataset",
        "wikitext2:concat",
        "--nsamples",
        "4",
        "--seqlen",
        "32",
        "--output_dir",
        str(out),
        "-q",
    ]
    assert main_opt_rtn(args) == 0
    config = json.loads((out / "config.json").read_text())["quantization_config"]
    # the importance forward of a float32 model autocasts to bf16 only where bf16 is native
    assert config["amp"] is native_bf16("cpu")
    assert config["enable_quanted_input"] is False and "iters" not in config
    report = json.loads((out / "autoround_report.json").read_text())
    assert report["algorithm"] == "opt_rtn" and report["blocks"] == []
    assert report["settings"] == {"exact_search": False, "refine_steps": 2, "imatrix_dtype": "auto"}


def test_the_default_hub_dataset_fails_offline_with_advice(
    tmp_path, tiny_model_dir, capsys, monkeypatch
) -> None:
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    assert main(["--model", str(tiny_model_dir), "--output_dir", str(tmp_path / "o")]) == 2
    assert "NeelNanda/pile-10k" in capsys.readouterr().err


def test_light_recipe_tunes_with_the_shipped_calibration_text(tmp_path, tiny_model_dir) -> None:
    out = tmp_path / "o"
    args = [
        "--model",
        str(tiny_model_dir),
        "--group_size",
        "32",
        "--dataset",
        "wikitext2:concat",
        "--iters",
        "2",
        "--nsamples",
        "4",
        "--seqlen",
        "32",
        "--batch_size",
        "2",
        "--output_dir",
        str(out),
        "-q",
    ]
    assert main_light(args) == 0
    config = json.loads((out / "config.json").read_text())["quantization_config"]
    assert (config["iters"], config["lr"], config["nsamples"], config["seqlen"]) == (2, 5e-3, 4, 32)
    report = json.loads((out / "autoround_report.json").read_text())
    assert [r["name"] for r in report["blocks"]] == ["model.layers.0", "model.layers.1"]
    assert report["algorithm"] == "signround"
    assert (report["settings"]["iters"], report["settings"]["enable_alg_ext"]) == (2, True)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scheme", "W9A16"], "unknown scheme 'W9A16'"),
        (["--bits", "9"], "bits=9 is not allowed"),
        (["--group_size", "-3"], "group_size=-3 is invalid"),
        (
            ["--scheme", "MXFP4", "--act_bits", "16", "--bits", "3"],
            "bits=3 is not allowed for data_type 'mx_fp'",
        ),
        (
            ["--scheme", "NVFP4", "--act_bits", "16", "--group_size", "32"],
            "group_size=32 is not allowed for data_type 'nv_fp'",
        ),
        (["--data_type", "float4"], "data_type"),
        (["--format", "onnx"], "unknown format 'onnx'; allowed: ['auto_round', 'auto_round:auto_gptq'"),
        (["--format", "auto_awq", "--scheme", "W2A16"], "formats that can store it: ['auto_round'"),
        (["--layer_config", "{not json"], "--layer_config is neither a JSON object"),
        (["--layer_config", json.dumps({"mlp.(": {"bits": 8}})], "not a valid regular expression"),
        (["--iters", "-1"], "iters must be an integer >= 0, got -1"),
        (["--enable_alg_ext", "--disable_alg_ext"], "--enable_alg_ext and --disable_alg_ext contradict"),
    ],
)
def test_bad_arguments_are_named(args, message, tmp_path, tiny_model_dir, capsys) -> None:
    code = main_rtn(["--model", str(tiny_model_dir), "--output_dir", str(tmp_path / "o"), *args])
    assert code == 2
    assert message in capsys.readouterr().err


def test_a_model_path_that_does_not_exist_is_named(tmp_path, capsys) -> None:
    missing = tmp_path / "no" / "model"
    assert main_rtn(["--model", str(missing), "--output_dir", str(tmp_path / "o")]) == 2
    assert str(missing) in capsys.readouterr().err


def test_a_non_empty_output_dir_is_refused_before_any_work(tmp_path, tiny_model_dir, capsys) -> None:
    out = tmp_path / "o"
    out.mkdir()
    (out / "x").write_text("keep")
    assert main_rtn(["--model", str(tiny_model_dir), "--output_dir", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "x").read_text() == "keep"


def test_tokenizer_is_saved_with_the_checkpoint(tmp_path, tiny_model_dir, tiny_tokenizer) -> None:
    out = tmp_path / "o"
    assert (
        main_rtn(["--model", str(tiny_model_dir), "--group_size", "32", "--output_dir", str(out), "-q"]) == 0
    )
    assert AutoTokenizer.from_pretrained(out).vocab_size == tiny_tokenizer.vocab_size


@pytest.mark.parametrize(
    ("argument", "flags", "expected"),
    [
        ("enable_alg_ext", [], True),
        ("enable_alg_ext", ["--disable_alg_ext"], False),
        ("enable_alg_ext", ["--enable-alg-ext"], True),
        ("amp", [], True),
        ("amp", ["--disable_amp"], False),
        ("amp", ["--disable-amp"], False),
    ],
)
def test_searched_scale_and_amp_are_on_by_default_and_flags_turn_them_off(argument, flags, expected) -> None:
    from autoround.cli.commands import intel_arguments

    args = build_parser().parse_args(["--model", "m", *flags])
    assert getattr(intel_arguments(args), argument) is expected


def test_opt_rtn_intel_asks_for_intels_exact_search_and_the_default_refines() -> None:
    from autoround.algorithms.opt_rtn import OptRtnSettings
    from autoround.cli.commands import intel_arguments

    intel = intel_arguments(build_parser("opt-rtn").parse_args(["--model", "m", "--opt_rtn_intel"]))
    assert intel.opt_rtn_settings == OptRtnSettings.intel()
    assert intel_arguments(build_parser("opt-rtn").parse_args(["--model", "m"])).opt_rtn_settings is None
    assert OptRtnSettings().refine_steps > 0 and OptRtnSettings.intel().refine_steps == 0


def test_amp_off_makes_optimized_rtns_importance_forward_float32(tiny_llama) -> None:
    from autoround import AutoRound

    assert AutoRound(tiny_llama, iters=0, amp=False).opt_rtn.imatrix_dtype == "float32"
    assert AutoRound(tiny_llama, iters=0).opt_rtn.imatrix_dtype == "auto"
    assert AutoRound(tiny_llama, iters=2, amp=False).tuning.amp is False


@pytest.mark.parametrize(
    ("flags", "expected"), [([], False), (["--low_gpu_mem_usage"], True), (["--low-gpu-mem-usage"], True)]
)
def test_low_gpu_mem_usage_reaches_the_run(flags, expected) -> None:
    from autoround.cli.commands import intel_arguments
    from autoround.run import run_from_intel

    args = build_parser().parse_args(["--model", "m", *flags])
    assert run_from_intel(intel_arguments(args), formats=("auto_round",)).low_gpu_mem_usage is expected
