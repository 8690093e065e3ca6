"""vLLM classes of the ``autoround`` method (imported by :func:`autoround_vllm.vllm_plugin.register`).

Importing this module registers :class:`AutoRoundVllmConfig` under the name ``autoround``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from vllm.model_executor import parameter as vllm_parameter
from vllm.model_executor.layers.fused_moe import RoutedExperts, UnquantizedFusedMoEMethod
from vllm.model_executor.layers.linear import (
    LinearBase,
    LinearMethodBase,
    UnquantizedLinearMethod,
    register_weight_loader_v2_supported_method,
)
from vllm.model_executor.layers.quantization import register_quantization_config
from vllm.model_executor.layers.quantization.base_config import QuantizationConfig
from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead
from vllm.platforms import current_platform

from autoround.errors import CheckpointError
from autoround.formats import CheckpointSpec, parse_config
from autoround.nn import FloatQuantLinear
from autoround.schemes import Scheme
from autoround_vllm.fake_method import input_quantizer
from autoround_vllm.float_method import FloatLinearLogic, FloatParameterKinds
from autoround_vllm.layers import describe, scheme_for_layer
from autoround_vllm.linear_method import PackedLinearLogic, ParameterKinds
from autoround_vllm.selection import METHOD_NAME, choose_method, input_widths

VLLM_KINDS = ParameterKinds(
    vllm_parameter.PackedvLLMParameter,
    vllm_parameter.PackedColumnParameter,
    vllm_parameter.GroupQuantScaleParameter,
    vllm_parameter.ChannelQuantScaleParameter,
)

VLLM_FLOAT_KINDS = FloatParameterKinds(
    vllm_parameter.ModelWeightParameter,
    vllm_parameter.PackedvLLMParameter,
    vllm_parameter.GroupQuantScaleParameter,
    vllm_parameter.ChannelQuantScaleParameter,
    vllm_parameter.PerTensorScaleParameter,
)


@register_weight_loader_v2_supported_method
class AutoRoundLinearMethod(PackedLinearLogic, LinearMethodBase):
    """vLLM linear method over autoround-core's :class:`~autoround.nn.QuantLinear`."""

    kinds = VLLM_KINDS


@register_weight_loader_v2_supported_method
class AutoRoundFloatLinearMethod(FloatLinearLogic, LinearMethodBase):
    """vLLM linear method of float layers (MXFP4 / MXFP8 / NVFP4 / FP8 weight-only), dequantized
    once at load by autoround-core's :class:`~autoround.nn.FloatQuantLinear`."""

    float_kinds = VLLM_FLOAT_KINDS


@register_weight_loader_v2_supported_method  # its parent's ModelWeightParameter needs loader v2
class AutoRoundFakeLinearMethod(UnquantizedLinearMethod):
    """vLLM's unquantized method over dense quantize-dequantized weights (Intel's
    ``auto_round:fake``), each input quantized first by core's formula
    (:mod:`autoround_vllm.fake_method`)."""

    def __init__(self, scheme: Scheme) -> None:
        super().__init__()
        self.quantize_input = input_quantizer(scheme)

    def apply(
        self, layer: torch.nn.Module, x: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        return super().apply(layer, self.quantize_input(x), bias)


@register_quantization_config(METHOD_NAME)
class AutoRoundVllmConfig(QuantizationConfig):
    """An ``auto-round`` checkpoint's ``quantization_config``, served by autoround-core."""

    def __init__(self, spec: CheckpointSpec) -> None:
        super().__init__()
        self.spec = spec

    def __repr__(self) -> str:
        return f"AutoRoundVllmConfig({describe(self.spec.default)}, {len(self.spec.extra_config)} overrides)"

    @classmethod
    def get_name(cls) -> str:
        return METHOD_NAME

    @classmethod
    def get_supported_act_dtypes(cls) -> list[torch.dtype]:
        return [torch.bfloat16, torch.float16, torch.float32]

    @classmethod
    def get_min_capability(cls) -> int:
        return 60

    @staticmethod
    def get_config_filenames() -> list[str]:
        return ["quantization_config.json"]

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> AutoRoundVllmConfig:
        try:
            return cls(parse_config(config))
        except CheckpointError as exc:
            raise ValueError(f"autoround-vllm cannot serve this checkpoint: {exc}") from exc

    @classmethod
    def override_quantization_method(
        cls, hf_quant_cfg: dict[str, Any], user_quant: str | None, hf_config: Any = None
    ) -> str | None:
        return choose_method(hf_quant_cfg, user_quant, current_platform.device_type, input_widths(hf_config))

    def apply_vllm_mapper(self, hf_to_vllm_mapper: Any) -> None:
        spec = self.spec
        self.spec = dataclasses.replace(
            spec,
            block_names=tuple(hf_to_vllm_mapper.apply_list(list(spec.block_names))),
            extra_config=hf_to_vllm_mapper.apply_dict(dict(spec.extra_config)),
        )

    def get_quant_method(self, layer: torch.nn.Module, prefix: str) -> Any:
        if isinstance(layer, LinearBase):
            scheme = scheme_for_layer(self.spec, prefix, self.packed_modules_mapping)
            if scheme is None:
                return UnquantizedLinearMethod()
            if self.spec.dense_weights:  # auto_round:fake: weights stored dense
                return AutoRoundFakeLinearMethod(scheme)
            if FloatQuantLinear.holds(scheme):
                return AutoRoundFloatLinearMethod(scheme, prefix)
            return AutoRoundLinearMethod(scheme, self.spec.zero_offset, prefix)
        if isinstance(layer, ParallelLMHead):
            if self.spec.scheme_for(prefix) is not None:
                raise NotImplementedError(
                    f"{prefix}: a quantized lm_head ({describe(self.spec.scheme_for(prefix))}) is not "
                    "served by autoround-vllm yet; keep lm_head in 16 bits"
                )
            return None
        return _moe_method(self.spec, layer, prefix)


def _moe_method(spec: CheckpointSpec, layer: torch.nn.Module, prefix: str) -> Any:
    """Unquantized experts run stock; quantized ones are refused. vLLM 0.32's fused-MoE API would
    take a custom method (``FusedMoEMethodBase``: ``create_weights`` of the stacked w13/w2 tensors,
    ``get_fused_moe_quant_config``, ``apply`` with the top-k ids); autoround-vllm has not built one."""
    if not isinstance(layer, RoutedExperts):
        return None
    parts = [f"{prefix}.0.{p}" for p in ("gate_proj", "up_proj", "down_proj", "w1", "w2", "w3")]
    quantized = [(name, spec.scheme_for(name)) for name in parts if spec.scheme_for(name) is not None]
    if not quantized:
        return UnquantizedFusedMoEMethod(layer.moe_config)
    name, scheme = quantized[0]
    raise NotImplementedError(
        f"{prefix}: quantized MoE experts ({name}: {describe(scheme)}) are not served by autoround-vllm "
        "yet (no fused-MoE method built); serve this checkpoint with transformers (autoround-hf), "
        "or on CUDA with stock vLLM (quantization='inc') where its Marlin MoE path takes the scheme"
    )
