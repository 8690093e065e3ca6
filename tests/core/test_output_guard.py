"""check_output_dir: an output that would overwrite, delete or pollute what the run reads is
refused before any work, naming both paths; an output beside the inputs is fine."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoround.errors import UsageError
from autoround.output_guard import check_output_dir, dataset_paths, model_source, run_inputs


@pytest.fixture
def layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp/models/tiny (a model dir), tmp/data/calib.txt, tmp/work (the cwd)."""
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    (tmp_path / "models" / "tiny" / "config.json").write_text("{}")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "calib.txt").write_text("some text\n")
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    return tmp_path


def _inputs(root: Path) -> dict[str, Path]:
    return {"model": root / "models" / "tiny", "dataset": root / "data"}


@pytest.mark.parametrize(
    ("output", "relation", "label"),
    [
        ("models/tiny", "is", "model"),
        ("models", "contains", "model"),
        ("models/tiny/q", "lies inside", "model"),
        ("models/tiny/a/b", "lies inside", "model"),
        ("data", "is", "dataset"),
        ("data/q", "lies inside", "dataset"),
    ],
)
def test_output_that_is_contains_or_lies_inside_an_input_is_refused(
    layout: Path, output: str, relation: str, label: str
) -> None:
    with pytest.raises(UsageError, match=f"{relation} the {label}") as info:
        check_output_dir(layout / output, _inputs(layout))
    assert str(_inputs(layout)[label]) in str(info.value)
    assert "\n" not in str(info.value)


def test_output_equal_to_a_dataset_file_is_refused(layout: Path) -> None:
    calib = layout / "data" / "calib.txt"
    with pytest.raises(UsageError, match="is the dataset"):
        check_output_dir(calib, {"model": None, "dataset": calib})


def test_a_sibling_of_the_inputs_is_accepted(layout: Path) -> None:
    check_output_dir(layout / "models" / "tiny-w4a16", _inputs(layout))
    check_output_dir(layout / "out" / "q", _inputs(layout))


def test_a_name_sharing_a_prefix_with_the_model_is_not_inside_it(layout: Path) -> None:
    check_output_dir(layout / "models" / "tiny2", _inputs(layout))  # "tiny2" does not start in "tiny/"


def test_relative_and_dotted_paths_are_resolved(layout: Path) -> None:
    with pytest.raises(UsageError, match="is the model"):
        check_output_dir("../models/./tiny/", _inputs(layout))


def test_a_symlink_to_the_model_is_the_model(layout: Path) -> None:
    (layout / "link").symlink_to(layout / "models" / "tiny")
    with pytest.raises(UsageError, match="is the model"):
        check_output_dir(layout / "link", _inputs(layout))


def test_dot_with_the_model_dir_as_cwd_is_refused(layout: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(layout / "models" / "tiny")
    with pytest.raises(UsageError, match="is the working directory"):
        check_output_dir(".", {"model": "."})


def test_the_working_directory_and_its_parents_are_refused(layout: Path) -> None:
    with pytest.raises(UsageError, match="is the working directory"):
        check_output_dir(".", {})
    with pytest.raises(UsageError, match="a parent of the working directory"):
        check_output_dir("..", {})


def test_inputs_that_are_not_on_disk_are_skipped(layout: Path) -> None:
    # A Hub id or a shipped dataset name is not a path: nothing of it can be overwritten.
    check_output_dir(layout / "Qwen" / "Qwen3-8B", {"model": "Qwen/Qwen3-8B", "dataset": "wikitext2"})
    check_output_dir(layout / "out", {"model": None})


def test_dataset_specs_name_their_local_paths(layout: Path) -> None:
    calib = layout / "data" / "calib.txt"
    assert dataset_paths(f"{calib}:num=10,wikitext2:concat") == [str(calib)]
    assert dataset_paths(calib) == [str(calib)]
    assert dataset_paths(["a list of texts"]) == []


def test_run_inputs_of_a_loaded_model_is_its_source_dir(layout: Path, tiny_llama) -> None:
    tiny_llama.name_or_path = str(layout / "models" / "tiny")
    assert model_source(tiny_llama) == str(layout / "models" / "tiny")
    inputs = run_inputs(tiny_llama, str(layout / "data" / "calib.txt"))
    assert inputs == {"model": str(layout / "models" / "tiny"), "dataset": str(layout / "data" / "calib.txt")}
    with pytest.raises(UsageError, match="lies inside the model"):
        check_output_dir(layout / "models" / "tiny" / "q", inputs)


def test_a_model_built_in_memory_has_no_source(tiny_llama) -> None:
    assert model_source(tiny_llama) is None
