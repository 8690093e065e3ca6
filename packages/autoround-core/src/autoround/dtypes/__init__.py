"""Data types: the tensor math that maps weights to codes and back, one module per type.

``DTYPES`` maps a scheme's ``data_type`` name to its implementation. Adding a type (mxfp, nvfp,
fp8, gguf) means adding a module and one registry entry.
"""

from __future__ import annotations

from autoround.dtypes.base import DataType, QParams
from autoround.dtypes.grouping import GroupLayout, from_groups, to_groups
from autoround.dtypes.int import IntDataType

DTYPES: dict[str, DataType] = {
    "int": IntDataType(),
}

__all__ = ["DTYPES", "DataType", "GroupLayout", "QParams", "from_groups", "to_groups"]
