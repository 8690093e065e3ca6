"""Model-free RTN: an ``auto_round`` checkpoint from a checkpoint's safetensors, tensor by tensor,
without building the model (docs/model_free.md).

:func:`quantize_model_free` does it; :func:`model_free_supported` is Intel's rule for when a run
takes this path without being asked, :func:`model_free_problem` what an explicit request cannot do.
"""

from autoround.model_free.plan import CheckpointPlan, plan_checkpoint
from autoround.model_free.quantize import ModelFreeResult, quantize_model_free
from autoround.model_free.routing import ModelFreeChoice, model_free_problem, model_free_supported

__all__ = [
    "CheckpointPlan",
    "ModelFreeChoice",
    "ModelFreeResult",
    "model_free_problem",
    "model_free_supported",
    "plan_checkpoint",
    "quantize_model_free",
]
