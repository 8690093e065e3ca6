"""SignRound as an llm-compressor ``Modifier``.

Not built yet: the modifier lands with the llm-compressor issue, after the SignRound tuner.
"""

__all__: list[str] = []
