"""Evaluation of (quantized) models: perplexity by the project's benchmark protocol."""

from autoround.eval.perplexity import (
    DEFAULT_SEQLEN,
    PerplexityResult,
    perplexity_of_file,
    perplexity_of_ids,
    perplexity_of_text,
)

__all__ = [
    "DEFAULT_SEQLEN",
    "PerplexityResult",
    "perplexity_of_file",
    "perplexity_of_ids",
    "perplexity_of_text",
]
