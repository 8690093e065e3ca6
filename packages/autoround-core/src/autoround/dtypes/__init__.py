"""Data types: the tensor math that maps weights to codes and back, one module per type.

``DTYPES`` maps a scheme's ``data_type`` name to its implementation, which owns every
quantize-dequantize variant of the type (plain RTN, SignRound's tuning step, optimized RTN's
searched scale); algorithms ask it what it supports. Adding a type (mxfp, nvfp, fp8, gguf) means
adding a module and one registry entry here. One layer's quantized weight is
:class:`autoround.layer_quant.LayerQuant` (not imported here: it holds a ``Scheme``,
which imports this registry).
"""

from __future__ import annotations

from autoround.dtypes.base import DataType, QParams, RtnOnly, compose_qdq
from autoround.dtypes.fp8 import FpDataType
from autoround.dtypes.gguf import GgufDataType
from autoround.dtypes.grouping import GroupLayout, from_groups, to_groups
from autoround.dtypes.int import IntDataType
from autoround.dtypes.mx_elements import E3M2, E5M2
from autoround.dtypes.mx_fp import MxFpDataType
from autoround.dtypes.mx_int import mx_int_type
from autoround.dtypes.nv_fp import NvFpDataType

DTYPES: dict[str, DataType] = {
    "int": IntDataType(),
    "mx_fp": MxFpDataType(search=True),
    "mx_fp_rceil": MxFpDataType(name="mx_fp_rceil", scale_rounding="rceil"),
    "mx_fp6e3m2": MxFpDataType(name="mx_fp6e3m2", elements=((6, E3M2),)),
    "mx_fp8e5m2": MxFpDataType(name="mx_fp8e5m2", elements=((8, E5M2),)),
    "mx_int": mx_int_type(),
    "nv_fp": NvFpDataType(),
    "fp": FpDataType(),
    "gguf": GgufDataType("gguf"),
    "gguf_k": GgufDataType("gguf_k"),
}

__all__ = [
    "DTYPES",
    "DataType",
    "GroupLayout",
    "QParams",
    "RtnOnly",
    "compose_qdq",
    "from_groups",
    "to_groups",
]
