"""Quantization algorithms, by name: each turns planned layers into quantized weights.

``ALGORITHMS`` maps a :class:`~autoround.run.Run`'s ``algorithm`` to its entry (the
:class:`~autoround.algorithms.base.Algorithm` interface: what calibration it needs, whether it
works per layer or per block, how it quantizes). Adding one (AWQ-style, GPTQ-style) means one
module with its entry, and one line here.
"""

from autoround.algorithms.act_calibration import calibrate_model, calibrated_layers
from autoround.algorithms.base import (
    Algorithm,
    AlgorithmJob,
    AlgorithmResult,
    BlockDone,
    BlockRestore,
)
from autoround.algorithms.block_activations import BlockActivations, cache_dtype, reference_autocast
from autoround.algorithms.clip_init import CLIP_INITS
from autoround.algorithms.opt_rtn import OptRtn, OptRtnSettings
from autoround.algorithms.rtn import Rtn, quantize_rtn
from autoround.algorithms.signround import tune_block
from autoround.algorithms.signround_blocks import BlockReport, SignRound, quantize_block
from autoround.algorithms.signround_settings import SignRoundSettings

ALGORITHMS: dict[str, Algorithm] = {entry.name: entry for entry in (Rtn(), OptRtn(), SignRound())}

__all__ = [
    "ALGORITHMS",
    "CLIP_INITS",
    "Algorithm",
    "AlgorithmJob",
    "AlgorithmResult",
    "BlockActivations",
    "BlockDone",
    "BlockReport",
    "BlockRestore",
    "OptRtnSettings",
    "SignRoundSettings",
    "cache_dtype",
    "calibrate_model",
    "calibrated_layers",
    "quantize_block",
    "quantize_rtn",
    "reference_autocast",
    "tune_block",
]
