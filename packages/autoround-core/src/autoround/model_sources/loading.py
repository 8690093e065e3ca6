"""Load a causal LM and its tokenizer from a demo alias, a local directory or a Hub id.

Loading is strict: a local checkpoint whose config.json is not JSON, whose weight files are
unreadable, which holds packed (quantized) tensors, or which leaves any parameter to random
initialisation is refused, naming the file or tensors, instead of yielding a model with random
weights.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

from autoround.errors import CheckpointError
from autoround.io import tensor_names
from autoround.model_sources.demo import DEMO_MODELS, resolve_model_path

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)
#: Tensor-name endings of packed quantized layers (GPTQ / AWQ / auto_round layouts).
PACKED_SUFFIXES = (".qweight", ".qzeros", ".scales")


def load_model_and_tokenizer(
    name_or_path: str,
    dtype: torch.dtype | None = torch.float32,
    device: str | torch.device = "cpu",
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load ``name_or_path`` (see :func:`resolve_model_path`) as an eval-mode causal LM and tokenizer.

    Args:
        name_or_path: a :data:`DEMO_MODELS` alias (``"smollm2"``), a local checkpoint
            directory, or a Hugging Face Hub id.
        dtype: dtype of the loaded weights; fp32 by default because fp32 matmul is the fast
            path on CPUs without AVX512/AMX. None keeps the checkpoint's own dtype.
        device: where the model is placed.

    Raises:
        FileNotFoundError: a local-looking path does not exist.
        CheckpointError: a local checkpoint is malformed, quantized, or incomplete (named).
        OSError: a Hub id could not be loaded (e.g. offline); the message says what to pass instead.
    """
    from transformers import AutoModelForCausalLM  # read_config and the checks need no transformers

    if dtype is not None and (not isinstance(dtype, torch.dtype) or not dtype.is_floating_point):
        raise ValueError(f"dtype must be a floating-point torch.dtype or None, got {dtype!r}")
    path = resolve_model_path(name_or_path)
    local = Path(path).is_dir()
    if local:
        check_dense_checkpoint(Path(path))
    logger.info("Loading %s from %s (%s, %s)", name_or_path, path, dtype, device)
    try:
        tokenizer = _load_tokenizer(path, local)
        # transformers annotates from_pretrained as returning the model alone, also when
        # output_loading_info=True makes it return (model, loading_info).
        model, info = cast(
            "tuple[PreTrainedModel, dict[str, Any]]",
            AutoModelForCausalLM.from_pretrained(path, dtype=dtype or "auto", output_loading_info=True),
        )
    except OSError as exc:
        if local:
            raise CheckpointError(f"could not load the local checkpoint {path}: {exc}") from exc
        raise OSError(
            f"could not load {name_or_path!r} as a Hugging Face Hub id ({_first_line(exc)}). If the "
            f"Hub is not reachable, pass a local checkpoint directory or a demo alias: {sorted(DEMO_MODELS)}"
        ) from exc
    _refuse_incomplete(path, info)
    # PreTrainedModel.to is @wraps(nn.Module.to)-decorated, which loses mypy's self binding.
    return model.to(device).eval(), tokenizer  # type: ignore[arg-type]


def _load_tokenizer(path: str, local: bool) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        if not local:
            raise
        raise CheckpointError(f"{path} has no loadable tokenizer: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def read_config(directory: Path) -> dict[str, Any]:
    """A checkpoint directory's config.json as a dict; CheckpointError naming the file otherwise."""
    path = directory / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist: {directory} is not a model checkpoint directory")
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not a valid JSON file: {exc}") from exc
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} must hold a JSON object, got {type(config).__name__}")
    return config


def check_dense_checkpoint(directory: Path) -> None:
    """Refuse, before transformers reads it, a local checkpoint that cannot load as a dense model."""
    config = read_config(directory)
    if "quantization_config" in config:
        raise CheckpointError(
            f"{directory} is a quantized checkpoint ({directory / 'config.json'} has a "
            f"quantization_config); load it with autoround.load_quantized or `autoround eval`"
        )
    packed = [n for n in tensor_names(directory) if n.endswith(PACKED_SUFFIXES)]
    if packed:
        raise CheckpointError(
            f"{directory} holds packed quantized tensors ({packed[0]}, ...) but its config.json has no "
            f"quantization_config: it can be loaded neither as a dense nor as a quantized model"
        )


def _refuse_incomplete(path: str, info: dict[str, Any]) -> None:
    """transformers initialises missing weights randomly; a run on those would be silently wrong."""
    missing = sorted(info.get("missing_keys") or ())
    mismatched = sorted(str(k) for k in info.get("mismatched_keys") or ())
    if missing or mismatched:
        raise CheckpointError(
            f"{path}: the checkpoint lacks weights the model needs (missing {missing[:5]}, "
            f"shape-mismatched {mismatched[:5]}); transformers would initialise them randomly"
        )
