"""The quantize command's model-free path: the flags, when it is taken (Intel's rule), and a run
that writes the model-based checkpoint without building the model.

Until ``cli/commands.py`` calls :mod:`autoround.cli.model_free`, the flags are added to its parser
here and the run is started the way the hook starts it; the end-to-end test through
``autoround-rtn`` runs once the hook is in."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

from autoround.cli.commands import build_parser, intel_arguments, main_rtn
from autoround.cli.model_free import add_model_free_args, model_free_chosen, run_model_free
from autoround.errors import UsageError
from autoround.io import load_safetensors_dir
from autoround.run import run_from_intel

HOOKED = any("--model_free" in action.option_strings for action in build_parser("rtn")._actions)
pytestmark = pytest.mark.usefixtures("one_thread")


def parse(recipe: str, argv: list[str]):
    """The arguments and the Run the quantize command builds from ``argv``."""
    parser = build_parser(recipe)
    if not HOOKED:
        add_model_free_args(parser)
    args = parser.parse_args(["--model", "m", *argv])
    return args, run_from_intel(intel_arguments(args), formats=(args.format,))


@pytest.fixture
def forbid_model_building(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a transformers model was built")

    def forbid() -> None:
        monkeypatch.setattr(transformers.PreTrainedModel, "__init__", refuse)
        monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)

    return forbid


def same_tensors(expected, actual) -> bool:
    want, got = load_safetensors_dir(expected), load_safetensors_dir(actual)
    return sorted(want) == sorted(got) and all(torch.equal(want[k], got[k]) for k in want)


def test_the_two_flags_exclude_each_other(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse("rtn", ["--model_free", "--disable_model_free"])
    assert exit_info.value.code == 2
    assert "not allowed with argument --model_free" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("recipe", "argv", "chosen"),
    [
        ("rtn", [], True),
        ("rtn", ["--scheme", "W2A16G64", "--asym"], True),
        ("rtn", ["--disable-model-free"], False),
        ("rtn", ["--scheme", "W3A16"], False),  # Intel routes 2, 4 and 8 bits only
        ("rtn", ["--format", "auto_gptq"], False),
        ("rtn", ["--model_dtype", "bfloat16"], False),
        ("opt-rtn", [], False),
        ("default", [], False),
        ("default", ["--model_free"], True),  # RTN whatever the recipe, as Intel's flag
        ("rtn", ["--scheme", "W3A16", "--model-free"], True),
    ],
)
def test_when_the_model_free_path_is_taken(recipe, argv, chosen) -> None:
    args, run = parse(recipe, argv)
    assert model_free_chosen(args, run) is chosen


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--iters", "10"], "--model_free quantizes with RTN .* but --iters 10 asks for SignRound"),
        (["--model_dtype", "float16"], "--model_free keeps the checkpoint's dtype .* --model_dtype float16"),
    ],
)
def test_flags_that_need_the_model_are_refused_with_model_free(argv, message) -> None:
    args, run = parse("default", ["--model_free", *argv])
    with pytest.raises(UsageError, match=message):
        model_free_chosen(args, run)


def test_a_model_free_run_writes_the_model_based_checkpoint(
    tmp_path, tiny_model_dir, forbid_model_building, capsys
) -> None:
    flags = ["--group_size", "32", "--asym", "--layer_config", json.dumps({"down_proj": {"bits": 8}}), "-q"]
    reference = tmp_path / "reference"
    argv = ["--model", str(tiny_model_dir), *flags, "--output_dir", str(reference)]
    assert main_rtn([*argv, "--disable_model_free"] if HOOKED else argv) == 0
    args, run = parse("rtn", [*flags, "--output_dir", str(tmp_path / "out")])
    args.model = str(tiny_model_dir)
    forbid_model_building()
    assert model_free_chosen(args, run)
    assert run_model_free(args, run, args.output_dir) == 0
    assert "quantized 14 layers to W4A16 with rtn and saved" in (out := capsys.readouterr().out)
    assert "(model-free: the model was not loaded)" in out
    assert same_tensors(reference, tmp_path / "out")


def test_eval_ppl_loads_the_16_bit_model_only_to_evaluate_it(tmp_path, tiny_model_dir, capsys) -> None:
    args, run = parse("rtn", ["--eval_ppl", "--eval_windows", "1", "--eval_seqlen", "16", "-q"])
    args.model = str(tiny_model_dir)
    assert run_model_free(args, run, tmp_path / "out") == 0
    assert "perplexity: 16-bit" in capsys.readouterr().out


@pytest.mark.skipif(not HOOKED, reason="cli/commands.py does not call autoround.cli.model_free yet")
def test_autoround_rtn_takes_the_model_free_path_by_default(
    tmp_path, tiny_model_dir, forbid_model_building, capsys
) -> None:
    reference = tmp_path / "reference"
    base = ["--model", str(tiny_model_dir), "-q", "--output_dir"]
    assert main_rtn([*base, str(reference), "--disable_model_free"]) == 0
    forbid_model_building()
    assert main_rtn([*base, str(tmp_path / "out")]) == 0
    assert same_tensors(reference, tmp_path / "out")
    assert main_rtn([*base, str(tmp_path / "gptq"), "--model_free", "--format", "auto_gptq"]) == 2
    assert "format 'auto_gptq': model-free RTN writes only 'auto_round'" in capsys.readouterr().err
