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
    parse_config,
)

AUTO = "auto"
#: ``packing_format`` values naming the AWQ gemm layout (Intel's converted and exported names).
AWQ_PACKINGS = ("auto_round:awq", "auto_round:auto_awq")
#: transformers' name for a converted GPTQ v1 config; its checkpoint_format may say v2.
GPTQ_PACKINGS = ("auto_round:gptq", GPTQ_PACKING)
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
        """From a checkpoint's ``quantization_config``: auto-round, or GPTQ / AWQ (converted)."""
        config = cls(**{**_convert(dict(config_dict)), **kwargs})
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

    @property
    def is_awq(self) -> bool:
        """The checkpoint stores the AWQ gemm layout (repacked once at load)."""
        return self.packing_format in AWQ_PACKINGS

    def spec(self, block_names: list[str]) -> CheckpointSpec:
        """The core spec of the layers as they are after loading (AWQ already repacked).

        ``block_names`` fill in ``block_name_to_quantize`` when the checkpoint gives none (GPTQ).
        """
        data = {**self.to_dict(), "quant_method": QUANT_METHOD}
        if self.is_awq or self.packing_format not in GPTQ_PACKINGS:
            data["packing_format"] = PLAIN_PACKING
        elif getattr(self, "checkpoint_format", "gptq") == "gptq_v2":
            data["packing_format"] = PLAIN_PACKING  # v2 stores zero points without the offset
        else:
            data["packing_format"] = GPTQ_PACKING
        data["block_name_to_quantize"] = self.block_name_to_quantize or ",".join(block_names)
        return parse_config(data)

    def saved(self, block_names: list[str]) -> AutoRoundConfig:
        """The config ``save_pretrained`` writes: our format, describing the repacked layers."""
        data = self.to_dict()
        data["packing_format"] = self.spec(block_names).packing_format
        data["block_name_to_quantize"] = self.block_name_to_quantize or ",".join(block_names)
        data.pop("checkpoint_format", None)
        return type(self).from_dict({**data, "backend": self.backend})


def _convert(config: dict[str, Any]) -> dict[str, Any]:
    """A GPTQ / AWQ ``quantization_config`` as auto-round keys (Intel's conversion); errors say why."""
    method = config.get("quant_method", QUANT_METHOD)
    method = str(getattr(method, "value", method))
    fmt = str(config.get("packing_format", ""))
    if method == "gptq" or fmt == "auto_round:gptq":
        if config.get("desc_act"):
            raise ValueError(
                "GPTQ checkpoints with desc_act=True (act-order) are not supported; need desc_act=False"
            )
        if config.get("dynamic"):
            raise ValueError("GPTQ checkpoints with per-module 'dynamic' overrides are not supported")
        fmt = str(config.get("checkpoint_format", "gptq"))
        if fmt not in ("gptq", "gptq_v2"):
            raise ValueError(f"GPTQ checkpoint_format {fmt!r} is not supported; allowed: ['gptq', 'gptq_v2']")
        config["packing_format"] = "auto_round:gptq"
    elif method == "awq" or fmt in AWQ_PACKINGS:
        if str(config.get("version", "gemm")).lower() != "gemm":
            raise ValueError(f"AWQ version {config.get('version')!r} is not supported; allowed: ['gemm']")
        if method == "awq":
            if not config.get("zero_point", True):
                raise ValueError("AWQ checkpoints without zero points are not supported")
            config["sym"] = False
            config.setdefault("block_name_to_quantize", config.pop("to_quant_block_names", None))
            skipped = config.pop("modules_to_not_convert", None) or []
            config["extra_config"] = {
                **{name: {"bits": 16, "data_type": "fp"} for name in skipped},
                **(config.get("extra_config") or {}),
            }
        config["packing_format"] = fmt if fmt in AWQ_PACKINGS else "auto_round:awq"
    elif method != QUANT_METHOD:
        raise ValueError(
            f"quant_method {method!r} cannot be loaded as auto-round; allowed: auto-round, gptq, awq"
        )
    if "w_bit" in config:
        config.setdefault("bits", config.pop("w_bit"))
    if "q_group_size" in config:
        config.setdefault("group_size", config.pop("q_group_size"))
    config["quant_method"] = QUANT_METHOD
    return config
