"""Hugging Face transformers integration for autoround checkpoints.

Not built yet: the ``AutoRoundConfig`` / ``HfQuantizer`` registration lands with the
quantized-layers issue. Importing this package works; it registers nothing yet.
"""

__all__: list[str] = []
