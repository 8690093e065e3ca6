"""``AutoRoundConfig``: the ``quantization_config`` of an auto-round checkpoint, plus ``backend``.

It subclasses transformers' own ``AutoRoundConfig`` on purpose: ``merge_quantization_configs``
(transformers/quantizers/auto.py) converts a checkpoint's ``gptq`` / ``awq`` config into an
auto-round one only when the passed config is an instance of that class, and then checks that
both configs have the same class name.
"""

from __future__ import annotations

from typing import Any

from transformers.utils.quantization_config import AutoRoundConfig as _HfAutoRoundConfig
from transformers.utils.quantization_config import QuantizationMethod

from autoround.backends import BACKENDS
from autoround.formats import (
    GPTQ_PACKING,
    PLAIN_PACKING,
    QUANT_METHOD,
    CheckpointSpec,
    spec_for,
    to_auto_round_config,
)

AUTO = "auto"
FIELDS = (
    "bits",
    "group_size",
    "sym",
    "data_type",
    "packing_format",
    "block_name_to_quantize",
    "extra_config",
)


class AutoRoundConfig(_HfAutoRoundConfig):
    """Config of an auto-round checkpoint (or of a GPTQ / AWQ one converted on load).

    Args:
        bits / group_size / sym / data_type / packing_format / block_name_to_quantize /
        extra_config: the checkpoint's keys (see :mod:`autoround.formats.auto_round`).
        backend: a name in :data:`autoround.backends.BACKENDS`, or ``"auto"``. A loading
            attribute: it overrides the checkpoint's when passed to ``from_pretrained`` and is
            not written by ``to_dict``.
        **kwargs: other checkpoint keys, kept (``autoround_version``, GPTQ's ``desc_act``, ...).
    """

    def __init__(
        self,
        bits: int = 4,
        group_size: int = 128,
        sym: bool = True,
        backend: str = AUTO,
        data_type: str = "int",
        packing_format: str | None = None,
        block_name_to_quantize: str | list[str] | None = None,
        extra_config: dict[str, dict[str, Any]] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.pop("quant_method", None)
        self.bits, self.group_size, self.sym, self.data_type = bits, group_size, sym, data_type
        self.packing_format = packing_format or (GPTQ_PACKING if sym else PLAIN_PACKING)
        self.block_name_to_quantize = block_name_to_quantize
        self.extra_config = extra_config
        for key, value in kwargs.items():
            setattr(self, key, value)
        self.backend = backend
        self.quant_method = QuantizationMethod.AUTOROUND
        self.post_init()

    def post_init(self) -> None:
        if self.backend != AUTO and self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; known: {[AUTO, *BACKENDS]}")

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], return_unused_kwargs: bool = False, **kwargs: Any):
        """From a checkpoint's ``quantization_config``: auto-round, or GPTQ / AWQ (converted by
        core's format registry, which refuses what it cannot read)."""
        config = cls(**{**to_auto_round_config(config_dict), **kwargs})
        return (config, {}) if return_unused_kwargs else config

    @classmethod
    def from_hf(cls, config: Any) -> AutoRoundConfig:
        """Ours from whatever config transformers handed the quantizer (kept if already ours)."""
        if isinstance(config, cls):
            return config
        data = config if isinstance(config, dict) else {**config.__dict__}
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint's ``quantization_config`` (``backend`` left out: it is a loading choice)."""
        out = {k: v for k, v in self.__dict__.items() if k != "backend" and not k.startswith("_")}
        out["quant_method"] = QUANT_METHOD
        return {k: v for k, v in out.items() if v is not None}

    def get_loading_attributes(self) -> dict[str, Any]:
        return {"backend": self.backend}

    def spec(self, block_names: list[str]) -> CheckpointSpec:
        """Core's spec of the checkpoint (:func:`autoround.formats.spec_for`, as core's loaders).

        ``block_names`` fill in ``block_name_to_quantize`` when the checkpoint gives none (GPTQ).
        """
        return spec_for(self.to_dict(), block_names)

    def saved(self, block_names: list[str]) -> AutoRoundConfig:
        """The config ``save_pretrained`` writes: our format, describing the repacked layers."""
        data = self.to_dict()
        data["packing_format"] = self.spec(block_names).packing_format
        data["block_name_to_quantize"] = self.block_name_to_quantize or ",".join(block_names)
        data.pop("checkpoint_format", None)
        return type(self).from_dict({**data, "backend": self.backend})
