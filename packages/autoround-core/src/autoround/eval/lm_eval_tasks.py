"""lm-eval tasks, resolved and built before any model loads: a missing task or a task file that
does not parse is refused by name, with no traceback from inside lm-eval.

lm-eval indexes every task YAML it ships (about 15,000 names, some 20 s on two cores) and then
those under ``--include_path``, which take precedence. When every requested task is found under
``--include_path`` alone, only that folder is indexed: the same entries lm-eval's own index
would resolve them to, without the 20 s. Otherwise the full index is built, as lm-eval does.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from autoround.errors import UsageError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResolvedTasks:
    """The lm-eval ``TaskManager`` the tasks came from and, per requested name, the built
    top-level objects (a Task, a Group, or a tag's Tasks) that ``simple_evaluate`` takes."""

    manager: Any
    by_name: dict[str, list[Any]]

    def objects(self, names: Sequence[str] | None = None) -> list[Any]:
        """The built objects of ``names`` (all requested names by default), in order."""
        return [obj for name in (names or list(self.by_name)) for obj in self.by_name[name]]


def resolve_tasks(
    names: Sequence[str], include_paths: Sequence[Path], metadata: dict[str, Any]
) -> ResolvedTasks:
    """Find and build every task in ``names`` (each may be a glob such as ``arc_*``).

    Raises:
        UsageError: a name that matches no task (close names and task files of the include
            paths that do not parse are named), or a task whose files fail to build.
    """
    for path in include_paths:
        if not path.is_dir():
            raise UsageError(f"--include_path {path} is not a directory of lm-eval task YAML files")
    unparsable = _unparsable_task_files(include_paths)
    for path, why in unparsable.items():
        logger.warning("lm-eval task file %s does not parse (%s); its tasks are not available", path, why)
    manager = None
    if include_paths:
        manager = _task_manager(include_paths, metadata, include_defaults=False)
        if not all(manager.match_tasks([name]) for name in names):
            manager = None
    if manager is None:
        manager = _task_manager(include_paths, metadata, include_defaults=True)
    matched = {name: manager.match_tasks([name]) for name in names}
    for name, found in matched.items():
        if not found:
            raise UsageError(_not_found(name, manager.all_tasks, include_paths, unparsable))
    return ResolvedTasks(manager, {name: _build(manager, name, found) for name, found in matched.items()})


def _task_manager(include_paths: Sequence[Path], metadata: dict[str, Any], include_defaults: bool) -> Any:
    from lm_eval.tasks import TaskManager

    include = [str(path) for path in include_paths] or None
    return TaskManager(include_path=include, include_defaults=include_defaults, metadata=metadata)


def _build(manager: Any, name: str, task_names: list[str]) -> list[Any]:
    """The top-level objects of the tasks ``name`` matched: groups whole, tasks outside them."""
    try:
        loaded = manager.load(task_names)
    except Exception as exc:  # lm-eval raises anything from a task's files (YAML, !function, data)
        source = ", ".join(_yaml_path(manager, task) for task in task_names)
        raise UsageError(f"lm-eval task {name!r} ({source}) could not be built: {_first_line(exc)}") from exc
    children = {child for kids in loaded.get("group_map", {}).values() for child in kids}
    groups = [group for group_name, group in loaded.get("groups", {}).items() if group_name not in children]
    tasks = [task for task_name, task in loaded["tasks"].items() if task_name not in children]
    return [*groups, *tasks]


def _yaml_path(manager: Any, task: str) -> str:
    entry = manager.task_index.get(task)
    return str(getattr(entry, "yaml_path", None) or task)


def _not_found(
    name: str, known: Sequence[str], include_paths: Sequence[Path], unparsable: dict[Path, str]
) -> str:
    message = f"lm-eval task {name!r} not found"
    where = f" in lm-eval's tasks or under --include_path {', '.join(map(str, include_paths))}"
    message += where if include_paths else " (a task of your own: pass its folder with --include_path)"
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.7)
    if close:
        message += f"; close names: {', '.join(close)}"
    if unparsable:
        files = "; ".join(f"{path} ({why})" for path, why in unparsable.items())
        message += f"; task files that do not parse: {files}"
    return message


class _AnyTagLoader(yaml.SafeLoader):
    """YAML with lm-eval's tags (``!function module.name``) read as plain values."""


_AnyTagLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def _unparsable_task_files(include_paths: Sequence[Path]) -> dict[Path, str]:
    """The YAML files under ``include_paths`` that are not YAML mappings, with why."""
    bad: dict[Path, str] = {}
    for path in sorted(p for root in include_paths for p in root.rglob("*.yaml")):
        try:
            parsed = yaml.load(path.read_text(encoding="utf-8"), Loader=_AnyTagLoader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            bad[path] = f"line {mark.line + 1}: {exc.problem or exc.context}" if mark else _first_line(exc)
            continue
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            bad[path] = _first_line(exc)
            continue
        if not isinstance(parsed, dict):
            bad[path] = f"a YAML {type(parsed).__name__}, not a mapping of task settings"
    return bad


def _first_line(exc: BaseException) -> str:
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
