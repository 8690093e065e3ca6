"""SGLang classes of the ``autoround`` method (imported by :func:`autoround_vllm.sglang_plugin.register`).

SGLang 0.5 copied vLLM's layer API (``LinearMethodBase``, ``parameter.py``'s loaders), so the
methods are the engine-neutral logic with SGLang's parameter classes, exactly as for vLLM:
:class:`~autoround_vllm.linear_method.PackedLinearLogic` for integer layers and
:class:`~autoround_vllm.float_method.FloatLinearLogic` for the float weight-only ones (MXFP4 /
MXFP8 / NVFP4 / FP8, dequantized once at load, each fused part with its own scales).

Importing this module lets SGLang's linear layers load both methods' tensors with their v2
loaders (``WEIGHT_LOADER_V2_SUPPORTED``, by class name), as vLLM's
``register_weight_loader_v2_supported_method`` decorator does there.
"""

from __future__ import annotations

from typing import Any

import torch
from sglang.srt.layers import linear as sglang_linear
from sglang.srt.layers import parameter as sglang_parameter
from sglang.srt.layers.linear import LinearBase
from sglang.srt.layers.quantization.base_config import LinearMethodBase, QuantizationConfig
from sglang.srt.layers.quantization.unquant import UnquantizedLinearMethod
from sglang.srt.layers.vocab_parallel_embedding import ParallelLMHead
from sglang.srt.utils import is_cuda

from autoround.errors import CheckpointError
from autoround.formats import CheckpointSpec, parse_config
from autoround.nn import FloatQuantLinear
from autoround_vllm.float_method import FloatLinearLogic, FloatParameterKinds
from autoround_vllm.layers import describe, scheme_for_layer
from autoround_vllm.linear_method import PackedLinearLogic, ParameterKinds
from autoround_vllm.selection import METHOD_NAME, choose_method

SGLANG_KINDS = ParameterKinds(
    sglang_parameter.PackedvLLMParameter,
    sglang_parameter.PackedColumnParameter,
    sglang_parameter.GroupQuantScaleParameter,
    sglang_parameter.ChannelQuantScaleParameter,
)

SGLANG_FLOAT_KINDS = FloatParameterKinds(
    sglang_parameter.ModelWeightParameter,
    sglang_parameter.PackedvLLMParameter,
    sglang_parameter.GroupQuantScaleParameter,
    sglang_parameter.ChannelQuantScaleParameter,
    sglang_parameter.PerTensorScaleParameter,
)


class AutoRoundSglangLinearMethod(PackedLinearLogic, LinearMethodBase):
    """SGLang linear method over autoround-core's :class:`~autoround.nn.QuantLinear`."""

    kinds = SGLANG_KINDS


class AutoRoundSglangFloatLinearMethod(FloatLinearLogic, LinearMethodBase):
    """SGLang linear method of float layers (MXFP4 / MXFP8 / NVFP4 / FP8 weight-only), dequantized
    once at load by autoround-core's :class:`~autoround.nn.FloatQuantLinear`."""

    float_kinds = SGLANG_FLOAT_KINDS


def _use_v2_loaders(*methods: type) -> None:
    """Let SGLang's linear layers load these methods' parameters with their v2 loaders (the
    per-part ``PerTensorScaleParameter`` and the packed parameters need them)."""
    for method in methods:
        if method.__name__ not in sglang_linear.WEIGHT_LOADER_V2_SUPPORTED:
            sglang_linear.WEIGHT_LOADER_V2_SUPPORTED.append(method.__name__)


_use_v2_loaders(AutoRoundSglangLinearMethod, AutoRoundSglangFloatLinearMethod)


class AutoRoundSglangConfig(QuantizationConfig):
    """An ``auto-round`` checkpoint's ``quantization_config``, served by autoround-core in SGLang."""

    def __init__(self, spec: CheckpointSpec) -> None:
        super().__init__()
        self.spec = spec

    def __repr__(self) -> str:
        return f"AutoRoundSglangConfig({describe(self.spec.default)})"

    @classmethod
    def get_name(cls) -> str:
        return METHOD_NAME

    @classmethod
    def get_supported_act_dtypes(cls) -> list[torch.dtype]:
        return [torch.bfloat16, torch.float16, torch.float32]

    @classmethod
    def get_min_capability(cls) -> int:
        return 60

    @classmethod
    def get_config_filenames(cls) -> list[str]:
        return ["quantization_config.json"]

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> AutoRoundSglangConfig:
        try:
            return cls(parse_config(config))
        except CheckpointError as exc:
            raise ValueError(f"autoround (SGLang) cannot serve this checkpoint: {exc}") from exc

    @classmethod
    def override_quantization_method(cls, hf_quant_cfg: dict[str, Any], user_quant: str | None) -> str | None:
        return choose_method(hf_quant_cfg, user_quant, "cuda" if is_cuda() else "cpu")

    def get_scaled_act_names(self) -> list[str]:
        return []

    def get_quant_method(self, layer: torch.nn.Module, prefix: str) -> Any:
        if isinstance(layer, LinearBase):
            scheme = scheme_for_layer(self.spec, prefix, self.packed_modules_mapping)
            if scheme is None:
                return UnquantizedLinearMethod()
            if FloatQuantLinear.holds(scheme):
                return AutoRoundSglangFloatLinearMethod(scheme, prefix)
            return AutoRoundSglangLinearMethod(scheme, self.spec.zero_offset, prefix)
        if isinstance(layer, ParallelLMHead) and self.spec.scheme_for(prefix) is not None:
            raise NotImplementedError(
                f"{prefix}: a quantized lm_head ({describe(self.spec.scheme_for(prefix))}) is not served "
                "by autoround in SGLang yet; keep lm_head in 16 bits"
            )
        if "experts" in type(layer).__name__.lower() or "moe" in type(layer).__name__.lower():
            quantized = spec_experts_quantized(self.spec, prefix)
            if quantized:
                raise NotImplementedError(
                    f"{prefix}: quantized MoE experts ({quantized}) are not served by autoround in SGLang yet"
                )
        return None


def spec_experts_quantized(spec: CheckpointSpec, prefix: str) -> str | None:
    """The first quantized expert layer under ``prefix`` described, or None."""
    for part in ("gate_proj", "up_proj", "down_proj", "w1", "w2", "w3"):
        scheme = spec.scheme_for(f"{prefix}.0.{part}")
        if scheme is not None:
            return f"{prefix}.0.{part}: {describe(scheme)}"
    return None
