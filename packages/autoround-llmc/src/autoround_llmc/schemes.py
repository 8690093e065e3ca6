"""compressed-tensors quantization schemes -> autoround :class:`~autoround.schemes.Scheme`.

llm-compressor describes a layer's quantization with compressed-tensors' ``QuantizationScheme``
(``weights`` / ``input_activations`` / ``output_activations``, each a ``QuantizationArgs``).
SignRound tunes integer weights, weight-only, per group or per output channel; everything else is
refused here with the value that is not supported and what is.
"""

from __future__ import annotations

from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme, QuantizationStrategy

from autoround.errors import SchemeError
from autoround.schemes import PER_CHANNEL, Scheme

_STRATEGIES = (QuantizationStrategy.GROUP, QuantizationStrategy.CHANNEL)


def scheme_of(quant: QuantizationScheme, layer: str) -> Scheme:
    """The autoround scheme SignRound tunes ``layer`` with, from its compressed-tensors scheme.

    Raises ValueError naming the layer and the unsupported setting (activation quantization,
    a non-integer type, a strategy other than group/channel, activation ordering, dynamic weights).
    """
    for field in ("input_activations", "output_activations"):
        if getattr(quant, field) is not None:
            raise ValueError(
                f"{layer}: SignRoundModifier quantizes weights only, but the scheme sets {field}="
                f"{getattr(quant, field)!r}; use a weight-only scheme such as W4A16 (or quantize "
                f"activations with another modifier)"
            )
    if quant.weights is None:
        raise ValueError(f"{layer}: the scheme quantizes no weights (weights=None); nothing to tune")
    return _weight_scheme(quant.weights, layer)


def _weight_scheme(args: QuantizationArgs, layer: str) -> Scheme:
    kind = getattr(args.type, "value", args.type)
    if kind != "int":
        raise ValueError(
            f"{layer}: weights type {kind!r} is not supported by SignRoundModifier; allowed: 'int'"
        )
    if args.strategy not in _STRATEGIES:
        raise ValueError(
            f"{layer}: weights strategy {getattr(args.strategy, 'value', args.strategy)!r} is not supported "
            f"by SignRoundModifier; allowed: {[s.value for s in _STRATEGIES]}"
        )
    if args.actorder is not None:
        raise ValueError(
            f"{layer}: actorder={getattr(args.actorder, 'value', args.actorder)!r} is not supported; "
            f"SignRound keeps the column order (set actorder to None)"
        )
    if args.dynamic:
        raise ValueError(f"{layer}: dynamic={args.dynamic!r} weights cannot be tuned; use static weights")
    group = args.group_size if args.strategy == QuantizationStrategy.GROUP else PER_CHANNEL
    try:
        return Scheme(bits=args.num_bits, group_size=group, sym=args.symmetric, data_type="int")
    except SchemeError as exc:
        raise ValueError(f"{layer}: {exc}") from exc
