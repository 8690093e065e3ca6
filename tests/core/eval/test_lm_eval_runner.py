"""lm-eval as core's task evaluator: settings checked when built, tasks built before any model
loads (a task that is missing, does not parse or does not build is named), and task-by-task
evaluation giving the numbers of one joint run."""

from __future__ import annotations

import dataclasses
import sys

import pytest

from autoround.errors import UsageError
from autoround.eval.lm_eval_runner import (
    EVAL_BACKENDS,
    LmEvalSettings,
    evaluate,
    parse_vllm_args,
    prepare,
    require_lm_eval,
    results_table,
)

BAD_SETTINGS = {
    "no task": ({"tasks": ()}, "--tasks"),
    "blank task": ({"tasks": (" ",)}, "--tasks"),
    "backend": ({"backend": "onnx"}, "'onnx' is not one of hf, vllm"),
    "batch size 0": ({"batch_size": 0}, "--eval_bs must be"),
    "batch size word": ({"batch_size": "big"}, "'big'"),
    "limit 0": ({"limit": 0.0}, "--limit must be"),
    "limit 2.5": ({"limit": 2.5}, "2.5"),
    "vllm args on hf": ({"vllm_args": {"enforce_eager": True}}, "--vllm_args is for --eval_backend vllm"),
    "vllm args model": ({"backend": "vllm", "vllm_args": {"pretrained": "x"}}, "may not set pretrained"),
}


@pytest.mark.parametrize("changes, named", BAD_SETTINGS.values(), ids=BAD_SETTINGS)
def test_bad_settings_are_refused_naming_the_value(changes, named) -> None:
    with pytest.raises(UsageError, match=named.replace("(", r"\(").replace(")", r"\)")):
        LmEvalSettings(**{"tasks": ("cloze_local",), **changes})


def test_good_settings_are_taken() -> None:
    for batch_size in (1, 8, "auto", "auto:4"):
        assert LmEvalSettings(("a",), batch_size=batch_size).batch_size == batch_size
    assert LmEvalSettings(("a",), limit=0.5).limit == 0.5
    assert set(EVAL_BACKENDS) == {"hf", "vllm"}


def test_vllm_args_are_typed_as_lm_eval_types_its_model_args() -> None:
    parsed = parse_vllm_args("enforce_eager=True,max_model_len=2048,gpu_memory_utilization=0.5,kv=auto")
    assert parsed == {
        "enforce_eager": True,
        "max_model_len": 2048,
        "gpu_memory_utilization": 0.5,
        "kv": "auto",
    }
    with pytest.raises(UsageError, match=r"key=value pairs.*'enforce_eager'"):
        parse_vllm_args("enforce_eager,max_model_len=2048")


def test_missing_lm_eval_says_what_to_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import lm_eval now raises ImportError
    with pytest.raises(
        UsageError, match=r"lm-eval, which is not installed.*pip install 'autoround-core\[eval\]'"
    ):
        require_lm_eval()


def test_an_lm_eval_outside_0_4_is_refused(monkeypatch) -> None:
    import lm_eval

    monkeypatch.setattr(lm_eval, "__version__", "0.5.0")
    with pytest.raises(UsageError, match=r"lm-eval 0.5.0 is installed.*0.4.13"):
        require_lm_eval()


def test_the_vllm_backend_needs_vllm_here(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # as in the workspace env, where vLLM never is
    with pytest.raises(UsageError, match=r"--eval_backend vllm needs 'vllm'.*vLLM installed"):
        prepare(LmEvalSettings(("cloze_local",), backend="vllm"), tmp_path)


def _write_task(folder, name: str, text: str) -> None:
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.yaml").write_text(text)


def test_a_task_file_that_does_not_parse_is_named(tmp_path, no_builtin_tasks) -> None:
    tasks = tmp_path / "tasks"
    _write_task(tasks, "broken", "task: broken_task\noutput_type: [multiple_choice\n")
    with pytest.raises(UsageError) as caught:
        prepare(LmEvalSettings(("broken_task",), include_paths=(tasks,)), tmp_path / "model")
    message = str(caught.value)
    assert "lm-eval task 'broken_task' not found" in message
    assert f"task files that do not parse: {tasks / 'broken.yaml'}" in message


def test_a_task_that_does_not_build_is_named_with_its_file(tmp_path, no_builtin_tasks) -> None:
    tasks = tmp_path / "tasks"
    _write_task(
        tasks, "nofunc", "task: nofunc\noutput_type: multiple_choice\ndoc_to_text: !function nomod.fn\n"
    )
    with pytest.raises(UsageError, match=rf"'nofunc' \({tasks / 'nofunc.yaml'}\) could not be built.*nomod"):
        prepare(LmEvalSettings(("nofunc",), include_paths=(tasks,)), tmp_path / "model")


def test_an_include_path_that_is_not_a_folder_is_refused(tmp_path) -> None:
    with pytest.raises(UsageError, match=r"--include_path .*nowhere is not a directory"):
        prepare(LmEvalSettings(("cloze_local",), include_paths=(tmp_path / "nowhere",)), tmp_path)


def test_tasks_are_built_before_the_model_exists(tmp_path, lm_eval_tasks_dir) -> None:
    prepared = prepare(
        LmEvalSettings(("cloze_local", "wikitext_*"), include_paths=(lm_eval_tasks_dir,)), tmp_path
    )
    assert [task.task_name for task in prepared.tasks.objects()] == ["cloze_local", "wikitext_local"]
    assert prepared.model_args == {"pretrained": str(tmp_path), "dtype": "auto"}
    assert len(prepared.tasks.objects(["cloze_local"])[0].eval_docs) == 24


def test_task_by_task_gives_the_joint_runs_numbers(tiny_checkpoint, lm_eval_tasks_dir) -> None:
    settings = LmEvalSettings(("cloze_local", "wikitext_local"), include_paths=(lm_eval_tasks_dir,), limit=3)
    joint = evaluate(prepare(settings, tiny_checkpoint))
    one_by_one = evaluate(prepare(dataclasses.replace(settings, task_by_task=True), tiny_checkpoint))
    assert one_by_one["results"] == joint["results"]
    assert set(joint["results"]) == {"cloze_local", "wikitext_local"}
    assert results_table(one_by_one) == results_table(joint)
    assert joint["results"]["wikitext_local"]["word_perplexity,none"] > 1
