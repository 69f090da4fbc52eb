"""TransformerLens, the reference implementation, when installed (the ``test`` extra brings it)."""

from __future__ import annotations

import pytest

NOT_INSTALLED = (
    "TransformerLens (the reference) is not installed: pip install -e '.[test]' "
    "(the minimum-versions run has none: transformer-lens 4.3 needs transformers>=5.9)"
)


def transformer_lens(module: str = "transformer_lens"):
    """A TransformerLens module; skips the calling test when TransformerLens is not installed."""
    return pytest.importorskip(module, reason=NOT_INSTALLED)


def transformer_lens_bridge():
    """TransformerLens's ``TransformerBridge`` class; skips the calling test when it is not installed."""
    return transformer_lens("transformer_lens.model_bridge").TransformerBridge
