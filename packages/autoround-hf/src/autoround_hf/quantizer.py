"""The ``HfQuantizer`` that loads auto-round (and GPTQ / AWQ) checkpoints into core QuantLinear layers.

The checkpoint's config becomes core's spec through core's format registry (the path core's own
loaders take); transformers builds the model on meta, we unfuse its MoE experts into the
per-expert Linears the checkpoint stores (dropping transformers' expert-merging converters),
swap its Linears for empty QuantLinears (core ``replace_linears``) and check every tensor of
the checkpoint files against
that empty model with core's one strict check (``check_checkpoint_tensors``: names, shapes,
packed dtypes), before anything is read: transformers' own MISSING / UNEXPECTED report only warns
and leaves random weights. Its weight loading then assigns the tensors to their buffers by
name; after loading we repack AWQ once and prepare each layer's backend. No dense weight of a
quantized layer is ever made.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from transformers.quantizers.base import HfQuantizer

from autoround.errors import CheckpointError
from autoround.formats import GPTQ_IGNORED_TENSORS, CheckpointSpec, convert_awq_layer, expect_awq
from autoround.io import PICKLE_SUFFIXES
from autoround.loading import check_checkpoint_tensors, read_headers
from autoround.modeling import find_block_names, unfuse_experts
from autoround.nn import FloatQuantLinear, QuantLinear, replace_linears
from autoround_hf.config import AUTO, AutoRoundConfig

#: GPTQ's act-order indices, trivial when desc_act is False (which the GPTQ reader requires); left
#: out of every checkpoint's check here, as transformers' loading always did.
IGNORED_CHECKPOINT_TENSORS = GPTQ_IGNORED_TENSORS


class AutoRoundHfQuantizer(HfQuantizer):
    """Loads pre-quantized checkpoints only (``requires_calibration``); inference, not training."""

    requires_calibration = True
    quantization_config: AutoRoundConfig  # always ours: __init__ and the after-loading step set it
    _spec: CheckpointSpec  # the checkpoint's, set before the weights are loaded

    def __init__(self, quantization_config: Any, **kwargs: Any) -> None:
        super().__init__(AutoRoundConfig.from_hf(quantization_config), **kwargs)
        self._layer_dtypes: dict[str, dict[str, torch.dtype]] = {}
        self._target: torch.device = torch.device("cpu")

    def validate_environment(self, *args: Any, device_map: Any = None, **kwargs: Any) -> None:
        self._target = _target_device(device_map)

    def update_dtype(self, dtype: torch.dtype) -> torch.dtype:
        return torch.float32 if dtype is None else dtype

    def _process_model_before_weight_loading(
        self, model: Any, checkpoint_files: Any = None, **kwargs: Any
    ) -> None:
        _check_files(checkpoint_files)
        config: AutoRoundConfig = self.quantization_config
        backend = None if config.backend == AUTO else config.backend
        unfuse_experts(model)  # checkpoints store MoE experts as per-expert Linear layers
        self._blocks = find_block_names(model)
        self._spec = spec = config.spec(self._blocks)
        names = replace_linears(model, spec, backend=backend, device="meta", target_device=self._target)
        strict = set(getattr(model, "_keep_in_fp32_modules_strict", None) or ())
        for name in names:
            layer = model.get_submodule(name)
            if spec.layout == "awq":
                expect_awq(layer)
            self._layer_dtypes[name] = {k: b.dtype for k, b in layer.named_buffers() if b is not None}
            # Float buffers (fp16 scales) are cast to the model dtype on load; loading them as fp32
            # (exact) and casting back below keeps them bit-identical under bf16.
            strict.update(
                re.escape(f"{name}.{k}") + "$"
                for k, d in self._layer_dtypes[name].items()
                if d.is_floating_point
            )
        model._keep_in_fp32_modules_strict = strict
        ignored = set(getattr(model, "_keys_to_ignore_on_load_unexpected", None) or ())
        model._keys_to_ignore_on_load_unexpected = ignored | set(IGNORED_CHECKPOINT_TENSORS)
        check_checkpoint_tensors(
            model,
            read_headers(map(Path, checkpoint_files or ())),
            sorted(model._keys_to_ignore_on_load_unexpected),
        )

    def update_weight_conversions(self, weight_conversions: list[Any]) -> list[Any]:
        """Keep transformers' renamings, drop its converters: they would fuse the per-expert keys
        our checkpoints store (``experts.{i}.up_proj.qweight``) into parameters unfusing removed."""
        from transformers.core_model_loading import WeightConverter

        return [c for c in weight_conversions if not isinstance(c, WeightConverter)]

    def _process_model_after_weight_loading(self, model: Any, **kwargs: Any) -> Any:
        config: AutoRoundConfig = self.quantization_config
        for name, module in model.named_modules():
            if not isinstance(module, QuantLinear | FloatQuantLinear):  # float: Intel's MX/NV/FP8
                continue
            if self._spec.layout == "awq" and isinstance(module, QuantLinear):
                convert_awq_layer(module, name)
            for key, dtype in self._layer_dtypes.get(name, {}).items():
                if isinstance(module, FloatQuantLinear) and key not in module.exact_dtype_leaves:
                    continue  # a float scale or bias of any dtype: kept as loaded (fp32, exact)
                buf = getattr(module, key)
                if buf is not None and buf.dtype != dtype:
                    module.register_buffer(key, buf.to(dtype))
            module.prepare()
        self.quantization_config = config.saved(self._blocks)
        model.config.quantization_config = self.quantization_config
        return model

    def is_serializable(self, **kwargs: Any) -> bool:
        return True

    @property
    def is_trainable(self) -> bool:
        return False

    @property
    def is_compileable(self) -> bool:
        """Every backend's forward traces into one graph (Triton's kernel as a custom op), so
        transformers may compile the decode step of ``cache_implementation="static"``."""
        return True


def _target_device(device_map: Any) -> torch.device:
    """Where the layers will run: the first non-CPU device of ``device_map``, else the CPU."""
    if isinstance(device_map, dict):
        values = [v for v in device_map.values() if v not in ("cpu", "disk")]
        device_map = values[0] if values else "cpu"
    if device_map in (None, "auto", "balanced", "balanced_low_0", "sequential"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device_map if not isinstance(device_map, int) else f"cuda:{device_map}")


def _check_files(checkpoint_files: Any) -> None:
    """Refuse pickle weights before anything reads them (transformers would ``torch.load`` them)."""
    for path in map(Path, checkpoint_files or ()):
        if path.suffix in PICKLE_SUFFIXES:
            raise CheckpointError(
                f"{path} is a pickle weight file; it is never loaded because unpickling can run "
                "arbitrary code. Convert the checkpoint to safetensors first"
            )
        _check_safetensors_header(path)


def _check_safetensors_header(path: Path) -> None:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu"):
            pass
    except (SafetensorError, OSError) as err:
        raise CheckpointError(
            f"{path} is not a readable safetensors file (corrupt or truncated?): {err}"
        ) from err
