"""Load a causal LM and its tokenizer from a demo alias, a local directory or a Hub id."""

from __future__ import annotations

import logging

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from autoround.models.demo import DEMO_MODELS, resolve_model_path

logger = logging.getLogger(__name__)


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
        OSError: a Hub id could not be loaded (e.g. offline); the message says what to pass instead.
    """
    if dtype is not None and (not isinstance(dtype, torch.dtype) or not dtype.is_floating_point):
        raise ValueError(f"dtype must be a floating-point torch.dtype or None, got {dtype!r}")
    path = resolve_model_path(name_or_path)
    logger.info("Loading %s from %s (%s, %s)", name_or_path, path, dtype, device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or "auto")
    except OSError as exc:
        if path != name_or_path:  # a local directory: transformers' own message is the clearest
            raise
        raise OSError(
            f"could not load {name_or_path!r} as a Hugging Face Hub id ({exc}). If the Hub is not "
            f"reachable, pass a local checkpoint directory or a demo alias: {sorted(DEMO_MODELS)}"
        ) from exc
    return model.to(device).eval(), tokenizer
