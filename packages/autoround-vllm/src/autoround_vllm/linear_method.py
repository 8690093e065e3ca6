"""The engine-neutral part of our linear method: create the checkpoint's tensors, then compute.

vLLM and SGLang share one layer API (``create_weights`` / ``process_weights_after_loading`` /
``apply``) and the same parameter classes (SGLang copied vLLM's ``parameter.py``), so the work
lives here and each engine's method class is a thin subclass that names its parameter classes.

* ``create_weights`` registers ``qweight`` / ``qzeros`` / ``scales`` on the engine's layer with the
  shapes :func:`~autoround_vllm.sharding.plan_partition` computes (a partial last group
  included), as the engine's GPTQ parameters, so its loaders shard and fuse them (q/k/v, gate/up).
  Scales stay fp16 as stored: converting them to the model's bf16 would change them.
* ``process_weights_after_loading`` hands the loaded tensors (no copy) to an autoround-core
  :class:`~autoround.nn.QuantLinear`, whose backend repacks them once (``cpu``: torch's int4
  op with bf16 activations; ``triton`` on CUDA; ``torch`` as the portable fallback).
* ``apply`` runs that layer and adds the engine's bias.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from autoround.nn import QuantLinear
from autoround.schemes import Scheme
from autoround_vllm.sharding import PartitionPlan, local_scheme, plan_partition

#: Environment variable forcing an autoround-core backend by name (``cpu``, ``torch``, ``triton``).
BACKEND_ENV = "AUTOROUND_VLLM_BACKEND"
#: The attribute holding the prepared core layer on the engine's layer.
CORE_LAYER = "autoround_linear"


@dataclass(frozen=True)
class ParameterKinds:
    """The engine's parameter classes (``vllm.model_executor.parameter`` or SGLang's copy)."""

    packed: type  # PackedvLLMParameter: input_dim, output_dim, packed_dim, packed_factor
    packed_column: type  # PackedColumnParameter: output_dim, packed_dim, packed_factor
    group_scale: type  # GroupQuantScaleParameter: input_dim, output_dim
    channel_scale: type  # ChannelQuantScaleParameter: output_dim


class PackedLinearLogic:
    """Weights and product of one quantized engine layer; mixed into each engine's method class.

    Args:
        scheme: the layer's scheme (all parts of a fused layer share it).
        zero_offset: what the packing subtracted from stored zero points.
        layer_name: the engine's prefix, for error messages.
        backend: an autoround-core backend name, or None to select (or ``$AUTOROUND_VLLM_BACKEND``).
    """

    kinds: ParameterKinds

    def __init__(self, scheme: Scheme, zero_offset: int, layer_name: str, backend: str | None = None):
        self.scheme, self.zero_offset, self.layer_name = scheme, zero_offset, layer_name
        self.backend = backend or os.environ.get(BACKEND_ENV) or None
        self.plan: PartitionPlan | None = None
        self.input_size = 0

    def create_weights(
        self,
        layer: nn.Module,
        input_size_per_partition: int,
        output_partition_sizes: list[int],
        input_size: int,
        output_size: int,
        params_dtype: torch.dtype,
        **extra_weight_attrs: Any,
    ) -> None:
        """Register this rank's empty packed tensors on ``layer`` (shapes checked for sharding)."""
        plan = plan_partition(
            self.scheme, input_size, input_size_per_partition, output_partition_sizes, self.layer_name
        )
        self.plan, self.input_size = plan, input_size
        loader = extra_weight_attrs.get("weight_loader")
        kinds, factor = self.kinds, plan.pack_factor
        whole_groups = plan.shard_groups or input_size_per_partition == input_size
        qweight = kinds.packed(
            data=torch.empty(plan.qweight, dtype=torch.int32),
            input_dim=0, output_dim=1, packed_dim=0, packed_factor=factor, weight_loader=loader,
        )  # fmt: skip
        if whole_groups:
            qzeros = kinds.packed(
                data=torch.empty(plan.qzeros, dtype=torch.int32),
                input_dim=0, output_dim=1, packed_dim=1, packed_factor=factor, weight_loader=loader,
            )  # fmt: skip
            scales = kinds.group_scale(
                data=torch.empty(plan.scales, dtype=torch.float16), input_dim=0, output_dim=1,
                weight_loader=loader,
            )  # fmt: skip
        else:  # one group per row, rows split over ranks: every rank keeps all scales
            qzeros = kinds.packed_column(
                data=torch.empty(plan.qzeros, dtype=torch.int32),
                output_dim=1, packed_dim=1, packed_factor=factor, weight_loader=loader,
            )  # fmt: skip
            scales = kinds.channel_scale(
                data=torch.empty(plan.scales, dtype=torch.float16), output_dim=1, weight_loader=loader
            )
        layer.register_parameter("qweight", qweight)
        layer.register_parameter("qzeros", qzeros)
        layer.register_parameter("scales", scales)

    def process_weights_after_loading(self, layer: nn.Module) -> None:
        """Wrap the loaded tensors in a core QuantLinear and let its backend repack them once."""
        assert self.plan is not None, "create_weights() runs first"
        plan = self.plan
        device = cast(torch.Tensor, layer.qweight).device  # registered by create_weights()
        core = QuantLinear(
            plan.in_features,
            plan.out_features,
            local_scheme(self.scheme, plan, self.input_size),
            self.zero_offset,
            backend=self.backend,
            device=device,
        )
        tensors = {k: getattr(layer, k).data for k in ("qweight", "qzeros", "scales")}
        core.load_state_dict(tensors, assign=True)
        core.prepare()
        setattr(layer, CORE_LAYER, core)

    def apply(self, layer: nn.Module, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """``x @ W^T (+ bias)`` in ``x``'s dtype."""
        out = getattr(layer, CORE_LAYER)(x)
        return out if bias is None else out + bias.to(out.dtype)
