"""The installed package's version (``0.0.0+unknown`` when run from an uninstalled tree)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("autoround-core")
except PackageNotFoundError:
    __version__ = "0.0.0+unknown"
