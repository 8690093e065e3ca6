"""The ``auto_round`` format's fake packing (``auto_round:fake``): integer weights with integer
dynamic activations, as Intel auto-round 0.16.1 writes them.

Intel's ``auto_round`` export has no packed layout for activation quantization of integer
weights: its ``check_and_reset_format`` (``export/formats/base.py``) sends every scheme whose
activations are not static FP8 to its ``fake`` format (``export/formats/backends/fake.py``,
``FakeFormat.save_quantized``). That is ``INT8_W8A8`` / ``INT8`` (int 8-bit symmetric per-channel
weights, int8 per-token dynamic activations) and ``INT4`` (the same at 4 bits, W4A4), the
integer kinds of :data:`ACT_KINDS`. What it writes:

* each quantized Linear's ``weight`` is its quantize-dequantized weight in the model's dtype (the
  in-memory model, saved by ``model.save_pretrained``), its bias as it is; every other tensor as
  the model holds it. No scale or zero point, no activation tensor (the activations are dynamic).
* every weight file is then rewritten by ``safetensors.torch.save_file`` without header metadata
  (Intel renames its wrappers' ``orig_layer`` keys so): tensors in safetensors' own order (dtype,
  then name) and no ``__metadata__``.
* ``config.json``'s ``quantization_config``: the scheme keys and the act_* keys, Intel's recorded
  settings, ``block_name_to_quantize``, ``quant_method: auto-round``, ``packing_format:
  auto_round:fake`` and ``regex_config: {}`` (the user's regex layer_config, empty for a preset);
  no ``quantization_config.json``.

Our files are Intel's header for header and value for value; their bytes differ only in the sign
of zero weights, which core's integer qdq gives the scale's sign (``s * (codes - zero)``) and
Intel's the weight's (``round(w / s) * s``).

Intel's fake export writes no ``extra_config``; ours lists the layers that differ from the
default as the integer packings do (Intel's loader reads ``extra_config``), so a plan with
overrides stays readable. Loaders (:class:`FakeActSpec`) keep these layers dense (plain Linear)
with the activation hook of their kind (:mod:`autoround.nn.act_hooks`), as Intel's
``FakeActQuantLinear`` runs them.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from autoround.dtypes.activations import activation_kind, activation_problem
from autoround.errors import CheckpointError
from autoround.formats import auto_round_float
from autoround.formats.base import ACT_KEYS, QUANT_METHOD, SCHEME_KEYS, CheckpointSpec, blocks_and_extra
from autoround.formats.checkpoint import write_checkpoint
from autoround.io import is_no_space, weight_file_paths, write_error
from autoround.layer_quant import LayerQuant
from autoround.quantized_model import QuantizedModel
from autoround.schemes import UNQUANTIZED_BITS, Scheme

logger = logging.getLogger(__name__)

#: Intel's packing name for quantize-dequantized weights stored dense.
FAKE_PACKING = "auto_round:fake"
#: The activation kinds written in the fake packing: int per token at 8 and 4 bits (beside int
#: per-channel symmetric weights of the same width, the kinds' own weight rule).
ACT_KINDS = ("int8", "int4")
#: What the fake packing stores, in words (the ``auto_round`` format's capabilities note).
NOTE = (
    "int 8/4-bit per-token dynamic activations with int symmetric per-channel weights of their "
    f"width (INT8_W8A8, INT4: packing {FAKE_PACKING}, quantize-dequantized weights stored dense)"
)
#: Intel's key for its regex layer_config, always written by its fake export (empty here: the
#: overrides of a plan are exact names in ``extra_config``).
REGEX_KEY = "regex_config"
_ALLOWED = (
    "int weights with int 8-bit or 4-bit per-token dynamic activations (act_data_type='int', "
    "act_group_size=-1, act_sym=True, act_dynamic=True; INT8_W8A8 / INT4)"
)


def is_fake_scheme(scheme: Scheme | None) -> bool:
    """Whether a layer's scheme is written in the fake packing (integer weights, integer per-token
    dynamic activations); None (an unquantized layer) is not."""
    if scheme is None or scheme.is_weight_only or scheme.data_type != "int":
        return False
    return activation_problem(scheme) is None and activation_kind(scheme) in ACT_KINDS


def is_fake_model(qm: QuantizedModel) -> bool:
    """Whether ``qm`` is written in the fake packing (its default scheme decides, as Intel's)."""
    return is_fake_scheme(qm.scheme)


def fake_problems(default: Scheme, layers: Mapping[str, Scheme]) -> list[str]:
    """Layers (name -> scheme) with integer activations beside a ``default`` scheme that packs
    weights only (the GPTQ packing stores no activations; the default scheme chooses the
    packing)."""
    if is_fake_scheme(default):
        return []
    return [
        f"{name}: int {scheme.bits}-bit with {activation_kind(scheme)} activations beside a "
        f"{default.data_type} {default.bits}-bit weight-only default scheme cannot be stored "
        "in format 'auto_round' (packing auto_round:fake holds them when they are the default "
        "scheme)"
        for name, scheme in layers.items()
        if is_fake_scheme(scheme)
    ]


def mixing_problems(default: Scheme, layers: Mapping[str, Scheme]) -> list[str]:
    """Layers the ``auto_round`` default scheme's packing cannot hold: float beside integer layers
    (or FP8 beside MX / NV: :func:`~autoround.formats.auto_round_float.mixing_problems`), integer
    activations beside a weight-only integer default (:func:`fake_problems`)."""
    return auto_round_float.mixing_problems(default, layers) or fake_problems(default, layers)


def fake_config(base: Mapping[str, Any], qm: QuantizedModel) -> dict[str, Any]:
    """Intel's fake ``quantization_config`` from the integer path's (scheme keys, settings,
    blocks, ``extra_config``): the activation fields, the packing name, an empty regex config.
    An ``extra_config`` entry of a layer outside the blocks (listed with every weight field)
    gets its activation fields too: a reader takes the default's where an entry names none."""
    config = dict(base)
    config.update(_act_fields(qm.scheme))
    config.update(packing_format=FAKE_PACKING, **{REGEX_KEY: {}})
    quantized = qm.plan.quantized()
    extra = {name: dict(entry) for name, entry in config.get("extra_config", {}).items()}
    for name, entry in extra.items():
        if name in quantized and all(k in entry for k in SCHEME_KEYS):
            entry.update(_act_fields(quantized[name]))
    if extra:
        config["extra_config"] = extra
    return config


def _act_fields(scheme: Scheme) -> dict[str, Any]:
    """A scheme's activation fields as a config states them (``act_bits`` 16 when weight-only)."""
    if scheme.is_weight_only:
        return {"act_bits": UNQUANTIZED_BITS}
    fields = scheme.to_dict()
    return {k: fields[k] for k in ACT_KEYS if fields.get(k) is not None}


def _dense_weight(name: str, weight: torch.Tensor, quant: LayerQuant) -> dict[str, torch.Tensor]:
    """A fake layer's one tensor: its quantize-dequantized weight as the model holds it."""
    return {"weight": weight.contiguous()}


def write_fake(qm: QuantizedModel, directory: Path, base_config: Mapping[str, Any]) -> None:
    """Intel's fake checkpoint of ``qm`` into the existing, empty ``directory``; ``base_config``
    is the integer path's ``quantization_config`` (:func:`autoround.formats.auto_round.to_config`)."""
    config = fake_config(base_config, qm)
    write_checkpoint(qm, directory, config, _dense_weight, bias_dtype=None)
    (directory / "quantization_config.json").unlink()  # Intel's fake export writes none
    for path in weight_file_paths(directory):
        _drop_metadata(path)
    logger.info("wrote %d quantize-dequantized layers (%s) to %s", len(qm.layers), FAKE_PACKING, directory)


def _drop_metadata(path: Path) -> None:
    """Rewrite a weight file without header metadata, as Intel's fake export rewrites its shards
    (one shard in memory at a time)."""
    tensors = load_file(path)
    try:
        save_file(tensors, path)  # metadata None: no __metadata__ at all ({} would write one)
    except (SafetensorError, OSError) as err:
        if isinstance(err, SafetensorError) and not is_no_space(err):
            raise
        raise write_error(path, err) from err


@dataclasses.dataclass(frozen=True)
class FakeActSpec(CheckpointSpec):
    """The spec of a fake checkpoint: its quantized layers keep their stored dense weights
    (``dense_weights``: loaders replace none) and quantize their inputs dynamically with an
    integer per-token kind (:data:`ACT_KINDS`), which :class:`CheckpointSpec` refuses."""

    dense_weights: ClassVar[bool] = True

    @property
    def zero_offset(self) -> int:
        """No zero points are stored (the weights are dense)."""
        return 0

    def scheme_for(self, layer_name: str) -> Scheme | None:
        """The layer's scheme with its activation fields (an ``extra_config`` entry's own, else
        the default's); None for a layer left in 16 bits.

        Raises:
            NotImplementedError: activations other than :data:`ACT_KINDS`, naming the layer.
        """
        # the weight fields as the integer packings read them; the activation fields below
        weight_entries = {
            n: {k: v for k, v in e.items() if k not in ACT_KEYS} for n, e in self.extra_config.items()
        }
        weights = CheckpointSpec(
            self.default.replace(act_bits=UNQUANTIZED_BITS), PLAIN, self.block_names, weight_entries
        )
        scheme = weights.scheme_for(layer_name)
        if scheme is None:
            return None
        entry = self._entry(layer_name)
        acts = {k: getattr(self.default, k) for k in ACT_KEYS}
        acts.update({k: v for k, v in entry.items() if k in ACT_KEYS and v is not None})
        scheme = scheme.replace(**acts)
        if scheme.is_weight_only or is_fake_scheme(scheme):
            return scheme
        why = activation_problem(scheme) or f"activation kind {activation_kind(scheme)!r}"
        raise NotImplementedError(
            f"layer {layer_name}: {why} is not read from {FAKE_PACKING!r}; allowed: {_ALLOWED}"
        )

    def _entry(self, layer_name: str) -> dict[str, Any]:
        """The ``extra_config`` entry of a layer: its exact name, else the first pattern found."""
        if layer_name in self.extra_config:
            return self.extra_config[layer_name]
        return next((e for p, e in self.extra_config.items() if re.search(p, layer_name)), {})


#: The integer packing a fake spec's weight fields are read through (zero points as stored).
PLAIN = "auto_round"


def parse_fake_config(config: Mapping[str, Any]) -> FakeActSpec:
    """Validate an ``auto_round:fake`` ``quantization_config``; errors name the key at fault and
    what is allowed.

    Raises:
        CheckpointError: a missing key, another ``quant_method``, a weight type other than int,
            activations other than int 8/4-bit per token, a bad ``extra_config``.
    """
    required = ("quant_method", *SCHEME_KEYS, "act_bits")
    missing = [k for k in required if k not in config]
    if missing:
        raise CheckpointError(f"quantization_config ({FAKE_PACKING}) is missing key(s) {missing}")
    if config["quant_method"] != QUANT_METHOD:
        raise CheckpointError(
            f"quantization_config.quant_method is {config['quant_method']!r}; "
            f"this format reads {QUANT_METHOD!r}"
        )
    try:
        default = Scheme.from_dict(
            {k: config[k] for k in (*SCHEME_KEYS, *ACT_KEYS) if config.get(k) is not None}
        )
    except (ValueError, NotImplementedError) as exc:
        raise CheckpointError(f"quantization_config: {exc}") from exc
    if not is_fake_scheme(default):
        why = activation_problem(default) if not default.is_weight_only else None
        raise CheckpointError(
            f"quantization_config: packing_format {FAKE_PACKING!r} with data_type={default.data_type!r}, "
            f"bits={default.bits}, act_bits={default.act_bits}, act_data_type={default.act_data_type!r}"
            f"{f' ({why})' if why else ''} is not read; allowed: {_ALLOWED}"
        )
    spec = FakeActSpec(default, FAKE_PACKING, *blocks_and_extra(config))
    for name in spec.extra_config:
        try:
            spec.scheme_for(name)
        except (ValueError, NotImplementedError) as exc:
            raise CheckpointError(f"quantization_config.extra_config[{name!r}]: {exc}") from exc
    return spec
