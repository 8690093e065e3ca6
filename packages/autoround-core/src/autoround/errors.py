"""Exceptions raised by autoround. Each also derives from the builtin a caller would expect."""


class AutoRoundError(Exception):
    """Base class of every error autoround raises on purpose."""


class SchemeError(AutoRoundError, ValueError):
    """A quantization scheme, preset name or layer configuration is invalid."""


class FormatError(AutoRoundError, ValueError):
    """A checkpoint format is unknown, or cannot do what was asked of it (e.g. written)."""


class CheckpointError(AutoRoundError, ValueError):
    """A checkpoint on disk is malformed, incomplete or disagrees with its config."""


class UnsupportedLayerError(AutoRoundError, ValueError):
    """A layer cannot be quantized or served with the requested scheme or backend."""


class ResumeError(AutoRoundError, ValueError):
    """A resume folder is unreadable, belongs to another run, or is in use by a running one."""


class UsageError(AutoRoundError, ValueError):
    """An argument is invalid or unsafe (e.g. an output path inside the input model)."""


class OutputWriteError(AutoRoundError, OSError):
    """Writing the output failed (disk full, file too large, read-only): nothing partial is kept."""
