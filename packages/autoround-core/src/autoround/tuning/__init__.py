"""Block-wise tuning: the driver that walks decoder blocks, and crash-safe progress."""

from autoround.tuning.driver import BlockReport, quantize_block

__all__ = ["BlockReport", "quantize_block"]
