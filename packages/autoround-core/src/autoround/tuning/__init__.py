"""Block-wise tuning: the driver that walks decoder blocks, and crash-safe progress."""
