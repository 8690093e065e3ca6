"""Demo models materialized for offline use, and loading by alias, local path or Hub id."""

from autoround.model_sources.demo import DEMO_MODELS, materialize_smollm2, resolve_model_path
from autoround.model_sources.loading import load_model_and_tokenizer

__all__ = ["DEMO_MODELS", "load_model_and_tokenizer", "materialize_smollm2", "resolve_model_path"]
