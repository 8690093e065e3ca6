"""``SignRoundModifier``: autoround's SignRound as an llm-compressor ``Modifier``.

Lifecycle (llm-compressor 0.14, sequential pipeline; one subgraph per decoder block):

- ``on_initialize``: attach the compressed-tensors schemes (``scheme`` / ``config_groups``,
  ``targets``, ``ignore``) to the model, translate each target layer's scheme to autoround's and
  check that every target lies inside a decoder block (SignRound tunes blocks).
- ``on_calibration_start``: a forward pre-hook on every decoder block records what it receives.
- ``on_sequential_epoch_end`` (a block has seen every calibration batch): autoround's
  :func:`~autoround.algorithms.quantize_block` tunes the block, exactly as autoround's own
  ``AutoRound`` does (targets are the full-precision block's outputs on full-precision inputs, kept
  here from block to block; inputs are the tuned predecessor's outputs as autoround computes them,
  also kept here), under the model's own attention implementation (the pipeline forces eager
  attention, whose last bits differ from SDPA's on some CPUs); then each layer gets
  ``weight_scale`` / ``weight_zero_point`` and its quantize-dequantized weight
  (:mod:`autoround_llmc.qparams`).
- ``on_calibration_end``: compressed-tensors' calibration state is frozen; every target layer
  must have been tuned.

``model.save_pretrained(dir, save_compressed=True)`` then writes compressed-tensors'
``pack-quantized`` format through its own compressors.
"""

from __future__ import annotations

from typing import Any

import torch
from compressed_tensors.utils import match_named_modules, patch_attr
from llmcompressor.core import Event, State
from llmcompressor.modifiers import Modifier
from llmcompressor.modifiers.quantization.quantization import QuantizationMixin
from pydantic import PrivateAttr, model_validator
from torch import nn

from autoround.algorithms import (
    BlockActivations,
    BlockReport,
    SignRoundSettings,
    cache_dtype,
    quantize_block,
    reference_autocast,
)
from autoround.intel_defaults import INTEL, intel_args
from autoround.modeling import find_block_names
from autoround.run import signround_settings
from autoround.schemes import Scheme
from autoround_llmc.inputs import RecordedInputs
from autoround_llmc.qparams import write_qparams
from autoround_llmc.schemes import scheme_of

#: The modifier's fields that are Intel's arguments (same names, defaults from autoround's table).
_INTEL_FIELDS = (
    "iters",
    "lr",
    "minmax_lr",
    "batch_size",
    "gradient_accumulate_steps",
    "enable_minmax_tuning",
    "enable_quanted_input",
    "not_use_best_mse",
    "seed",
    "enable_alg_ext",
    "amp",
)


class SignRoundModifier(Modifier, QuantizationMixin):
    """SignRound (Intel auto-round's algorithm, autoround's implementation) for ``oneshot``.

    Quantization is described in llm-compressor's vocabulary: ``scheme`` (a preset name such as
    ``"W4A16"``, or a dict), or ``config_groups``; ``targets`` (default ``["Linear"]``) and
    ``ignore`` (e.g. ``["lm_head"]``). Integer weight-only schemes, per group or per channel.

    SignRound's knobs, with Intel's names and defaults:

    :param iters: sign-SGD iterations per decoder block (200).
    :param lr: learning rate of the rounding offsets; None: ``1 / iters``.
    :param minmax_lr: learning rate of the clipping factors; None: ``lr`` (``lr / 4`` for the
        factor on a searched scale of ``enable_alg_ext``).
    :param batch_size: calibration samples per tuning step (8).
    :param gradient_accumulate_steps: batches per step (1).
    :param enable_minmax_tuning: also tune the per-group clipping factors (True).
    :param enable_quanted_input: tune each block on its quantized predecessors' outputs (True).
    :param not_use_best_mse: keep the last iteration's parameters, not the best ones (False).
    :param seed: seed of the batch order (42).
    :param amp: bf16 autocast of the tuned block's matrix products where the device multiplies
        bf16 natively (True); float32 throughout with False.
    :param enable_alg_ext: tune symmetric integer layers from optimized RTN's searched scale
        (True: autoround's default; Intel's is False).
    :param device: where blocks are tuned (fp32 copy); None: where the block lives.

    Sample YAML (``import autoround_llmc`` first, which registers the name)::

        quant_stage:
          quant_modifiers:
            SignRoundModifier:
              iters: 200
              scheme: W4A16
              ignore: ["lm_head"]
    """

    requires_calibration_data: bool = True

    iters: int = INTEL.iters
    lr: float | None = INTEL.lr
    minmax_lr: float | None = INTEL.minmax_lr
    batch_size: int = INTEL.batch_size
    gradient_accumulate_steps: int = INTEL.gradient_accumulate_steps
    enable_minmax_tuning: bool = INTEL.enable_minmax_tuning
    enable_quanted_input: bool = INTEL.enable_quanted_input
    not_use_best_mse: bool = INTEL.not_use_best_mse
    seed: int = INTEL.seed
    enable_alg_ext: bool = INTEL.enable_alg_ext
    amp: bool = INTEL.amp
    device: str | None = None

    _blocks: list[tuple[str, nn.Module]] = PrivateAttr(default_factory=list)
    _layers: dict[str, dict[str, Scheme]] = PrivateAttr(default_factory=dict)
    _recorded: dict[str, RecordedInputs] = PrivateAttr(default_factory=dict)
    _attention: str | None = PrivateAttr(default=None)
    _activations: BlockActivations | None = PrivateAttr(default=None)
    _pending: set[str] = PrivateAttr(default_factory=set)
    _reports: list[BlockReport] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _check_settings(self) -> SignRoundModifier:
        self.settings  # noqa: B018 -- validates the knobs, naming the bad one
        return self

    @property
    def settings(self) -> SignRoundSettings:
        """The knobs as autoround's validated :class:`SignRoundSettings`."""
        return signround_settings(intel_args(**{name: getattr(self, name) for name in _INTEL_FIELDS}))

    @property
    def block_reports(self) -> list[BlockReport]:
        """Per tuned decoder block: RTN's and SignRound's loss on the calibration data, time."""
        return list(self._reports)

    # ------------------------------------------------------------------ lifecycle
    def on_initialize(self, state: State, **kwargs: Any) -> bool:
        """Attach the schemes and plan which layers of which decoder block get tuned."""
        if not QuantizationMixin.has_config(self):
            raise ValueError(
                "SignRoundModifier needs a quantization scheme: pass scheme='W4A16' (or another "
                "preset), or config_groups"
            )
        model = state.model
        self._attention = getattr(model.config, "_attn_implementation", None)
        QuantizationMixin.initialize_quantization(self, model)
        self._blocks = [
            (f"{prefix}.{i}", block)
            for prefix in find_block_names(model)
            for i, block in enumerate(model.get_submodule(prefix))
        ]
        self._layers = {name: {} for name, _ in self._blocks}
        outside = []
        for name, module in match_named_modules(model, self.resolved_targets, self.ignore):
            quant = getattr(module, "quantization_scheme", None)
            if quant is None or quant.weights is None:
                continue
            block = next((b for b, _ in self._blocks if name.startswith(b + ".")), None)
            if block is None:
                outside.append(name)
                continue
            self._layers[block][name[len(block) + 1 :]] = scheme_of(quant, name)
        if outside:
            raise ValueError(
                f"SignRoundModifier tunes layers inside the decoder blocks only; these targets lie "
                f"outside them: {outside}. Add them to ignore (e.g. ignore=['lm_head'])"
            )
        self._pending = {f"{b}.{rel}" for b, layers in self._layers.items() for rel in layers}
        if not self._pending:
            raise ValueError(
                f"SignRoundModifier found no layer to quantize for targets={sorted(self.resolved_targets)} "
                f"and ignore={self.ignore}"
            )
        for _, param in model.named_parameters():
            param.requires_grad_(False)
        return True

    def on_calibration_start(self, state: State, event: Event, **kwargs: Any) -> None:
        """Record every decoder block's inputs as the pipeline runs it."""
        QuantizationMixin.start_calibration(self, state.model)
        for name, block in self._blocks:
            recorded = self._recorded.setdefault(name, RecordedInputs(sdpa=self._attention == "sdpa"))

            def hook(module: nn.Module, args: tuple, kwargs: dict, rec=recorded, own=(name, block)) -> None:
                if module is own[1]:  # not the tuner's copy of the block, which inherits the hook
                    rec.add(own[0], args, kwargs)

            # llm-compressor annotates hook as one-argument; it passes on every argument it gets.
            self.register_hook(block, hook, "forward_pre", with_kwargs=True)  # type: ignore[arg-type]

    def on_sequential_epoch_end(
        self, state: State, event: Event, modules: list[nn.Module] | None = None, **kwargs: Any
    ) -> None:
        """Tune the decoder blocks of the subgraph that just saw every calibration batch."""
        in_subgraph = {id(m) for m in modules or []}
        for index, (name, block) in enumerate(self._blocks):
            recorded = self._recorded.get(name)
            if id(block) not in in_subgraph or recorded is None or not recorded.hidden:
                continue
            device = torch.device(self.device) if self.device else next(block.parameters()).device
            if self._activations is None:
                captured = recorded.stacked()
                dtype = cache_dtype(captured.dtype, device)
                autocast = reference_autocast(self.settings.autocast_dtype(device), device)
                self._activations = BlockActivations.start(
                    captured, self.settings.enable_quanted_input, dtype, captured.device, autocast
                )
            # the pipeline calibrates under no_grad and eager attention; tuning needs gradients, and
            # runs the block as autoround's quantize does
            with torch.enable_grad(), patch_attr(state.model.config, "_attn_implementation", self._attention):
                step = quantize_block(
                    block,
                    name,
                    self._layers[name],
                    self._activations,
                    recorded.kwargs,
                    self.settings,
                    index,
                    device,
                )
            for rel, quant in step.quants.items():
                write_qparams(block.get_submodule(rel), quant)
                self._pending.discard(f"{name}.{rel}")
            self._reports.append(step.report)
            del self._recorded[name]

    def on_calibration_end(self, state: State, event: Event | None, **kwargs: Any) -> None:
        """Freeze compressed-tensors' calibration state; every target layer must be tuned."""
        QuantizationMixin.end_calibration(self, state.model)
        self.remove_hooks()
        self._recorded.clear()
        self._activations = None
        if self._pending:
            raise RuntimeError(
                f"SignRoundModifier: {len(self._pending)} target layer(s) were never tuned, e.g. "
                f"{sorted(self._pending)[:5]}; it needs llm-compressor's sequential pipeline with the "
                f"decoder layers as sequential targets"
            )

    def on_finalize(self, state: State, **kwargs: Any) -> bool:
        """End calibration if the pipeline did not (nothing else to release)."""
        if not self.ended_:
            self.on_calibration_end(state, None)
        return True
