"""SignRound as an llm-compressor ``Modifier``: :class:`SignRoundModifier`.

Importing this package registers the modifier with llm-compressor's ``ModifierFactory`` under the
name ``"SignRoundModifier"``, so YAML recipes can name it (llm-compressor discovers only the
modifiers of its own package by itself). The name is distinct from llm-compressor's own
``AutoRoundModifier`` (which calls Intel's ``auto_round``), which it therefore never shadows.
"""

from llmcompressor.modifiers import ModifierFactory

from autoround_llmc.modifier import SignRoundModifier

__all__ = ["SignRoundModifier", "register"]


def register() -> None:
    """Make ``SignRoundModifier`` resolvable by name in recipes (idempotent; done on import)."""
    ModifierFactory.register("SignRoundModifier", SignRoundModifier)


register()
