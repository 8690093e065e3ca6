"""Quantization algorithms: round-to-nearest, optimized RTN, SignRound, and their settings."""

from autoround.algorithms.opt_rtn import OptRtnSettings
from autoround.algorithms.rtn import quantize_rtn
from autoround.algorithms.signround import SignRoundSettings, tune_block

__all__ = ["OptRtnSettings", "SignRoundSettings", "quantize_rtn", "tune_block"]
