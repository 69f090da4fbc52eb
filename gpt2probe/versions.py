"""The versions that produced a result, recorded in saved caches, lens results and reports."""

from __future__ import annotations

import platform
from importlib import metadata

__version__ = "0.1.0"  # the package's version; gpt2probe.__version__ re-exports it


def versions() -> dict[str, str]:
    """The versions of gpt2probe and the libraries it runs on, as recorded in saved files and reports."""
    out = {"python": platform.python_version(), "gpt2probe": __version__}
    for package in ("torch", "transformers"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "not installed"
    return out
