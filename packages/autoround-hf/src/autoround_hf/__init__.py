"""Hugging Face transformers integration for autoround checkpoints.

Importing this package calls :func:`install`, which points transformers' ``auto-round`` entries
at :class:`AutoRoundConfig` / :class:`AutoRoundHfQuantizer` (the one override we make; see
:mod:`autoround_hf.install`). :func:`uninstall` restores transformers' originals.
"""

from autoround_hf.config import AutoRoundConfig
from autoround_hf.install import install, installed, uninstall
from autoround_hf.quantizer import AutoRoundHfQuantizer

install()

__all__ = ["AutoRoundConfig", "AutoRoundHfQuantizer", "install", "installed", "uninstall"]
