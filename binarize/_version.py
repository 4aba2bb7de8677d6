"""The installed package's version: what checkpoints record as their producer and
``binarize --version`` prints."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("binarize")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "unknown"
