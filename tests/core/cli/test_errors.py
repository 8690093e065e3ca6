"""How the command line reports bad input: one line on stderr and exit code 2, the traceback only
with ``-v``; a bug (an error that is no bad input) keeps its traceback. Nothing is written."""

from __future__ import annotations

import errno
import re

import pytest

from autoround.cli import commands as cli
from autoround.cli.commands import main, main_rtn


def _error_lines(err: str) -> list[str]:
    """stderr's lines but progress bars (tqdm's "43%|####   | 6/14 [...]"), which may precede
    the error."""
    return [line for line in err.splitlines() if line.strip() and not re.search(r"\d+%\|.*\|", line)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--device", "tpu"], "device 'tpu' is not a device name; allowed: ['cpu', 'cuda', 'xpu', 'mps']"),
        (["--bits", "16"], "--bits 16 keeps every layer in 16 bits: there is nothing to quantize"),
        (["--format", "onnx"], "unknown format 'onnx'"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(args, message, tmp_path, tiny_model_dir, capsys) -> None:
    out = tmp_path / "o"
    assert main(["--model", str(tiny_model_dir), "--output_dir", str(out), *args]) == 2
    err = capsys.readouterr().err
    lines = _error_lines(err)
    assert len(lines) == 1 and lines[0].startswith("autoround: error: ")
    assert message in lines[0] and "Traceback" not in err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]


def test_cuda_on_a_torch_without_cuda_is_refused_before_loading(
    tmp_path, tiny_model_dir, capsys, monkeypatch
) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(cli, "load_model", lambda args: pytest.fail("loaded the model"))
    assert (
        main(["--model", str(tiny_model_dir), "--output_dir", str(tmp_path / "o"), "--device", "cuda"]) == 2
    )
    assert _error_lines(capsys.readouterr().err) == [
        f"autoround: error: device 'cuda' is not available: this torch ({torch.__version__}) sees no cuda "
        "device; use --device cpu or install a torch build for it"
    ]


def test_verbose_adds_the_traceback(tmp_path, tiny_model_dir, capsys) -> None:
    args = ["--model", str(tiny_model_dir), "--output_dir", str(tmp_path / "o"), "--device", "tpu"]
    assert main([*args, "-v"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "UsageError" in err
    assert err.rstrip().splitlines()[-1].startswith("autoround: error: device 'tpu'")


def test_a_multi_line_message_is_printed_on_one_line(monkeypatch, capsys) -> None:
    def fail(args):
        raise ValueError("first line\n\tsecond line\n")

    monkeypatch.setattr(cli, "run_quantize", fail)
    assert main(["--model", "m"]) == 2
    assert capsys.readouterr().err == "autoround: error: first line second line\n"


def test_an_os_error_is_bad_input(monkeypatch, capsys) -> None:
    def fail(args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cli, "run_eval", fail)
    assert main(["eval", "--model", "m"]) == 2
    assert _error_lines(capsys.readouterr().err) == [
        "autoround eval: error: [Errno 28] No space left on device"
    ]


def test_a_bug_is_not_dressed_up_as_bad_input(monkeypatch) -> None:
    def fail(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(cli, "run_quantize", fail)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["--model", "m"])


@pytest.mark.parametrize(
    "flag",
    [
        ["--nblocks", "2"],
        ["--to_quant_block_names", "model.layers"],
        ["--enable_norm_bias_tuning"],
        ["--momentum", "0.9"],
    ],
)
def test_intels_arguments_without_effect_are_refused_naming_them(
    flag, tmp_path, tiny_model_dir, capsys
) -> None:
    with pytest.raises(SystemExit) as info:
        main_rtn(["--model", str(tiny_model_dir), "--output_dir", str(tmp_path / "o"), *flag])
    assert info.value.code == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1
    assert f"unrecognized arguments: {' '.join(flag)}" in lines[0]
    assert f"{flag[0]}: Intel's, with no effect on this implementation" in lines[0]
    assert not (tmp_path / "o").exists()


def test_an_unknown_flag_that_is_not_intels_gets_no_intel_hint(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["--model", "m", "--no_such_flag"])
    err = capsys.readouterr().err
    assert "unrecognized arguments: --no_such_flag" in err and "Intel" not in err


def test_a_full_disk_is_one_line_naming_the_path_and_leaves_nothing(
    tmp_path, tiny_model_dir, capsys, monkeypatch
) -> None:
    from autoround import io

    def no_space(tensors, path, metadata=None):
        path.write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io, "save_file", no_space)
    out = tmp_path / "o"
    args = ["--model", str(tiny_model_dir), "--output_dir", str(out), "-q", "--disable_model_free"]
    assert main_rtn(args) == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith("autoround-rtn: error: could not write ")
    assert "No space left on device" in lines[0] and "free space or choose another --output_dir" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]  # no output, no temp dir


def test_a_full_disk_in_the_model_free_path_is_one_line_and_leaves_nothing(
    tmp_path, tiny_model_dir, capsys, monkeypatch
) -> None:
    from autoround.model_free import shards

    def no_space(path, mode):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shards, "open", no_space, raising=False)
    out = tmp_path / "o"
    assert main_rtn(["--model", str(tiny_model_dir), "--output_dir", str(out), "-q", "--model_free"]) == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith("autoround-rtn: error: could not write ")
    assert "No space left on device" in lines[0] and "free space or choose another --output_dir" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]
