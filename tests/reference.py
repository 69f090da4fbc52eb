"""TransformerLens, the reference implementation, when installed (the ``test`` extra brings it)."""

from __future__ import annotations

import pytest


def transformer_lens_bridge():
    """TransformerLens's ``TransformerBridge`` class; skips the calling test when it is not installed."""
    module = pytest.importorskip(
        "transformer_lens.model_bridge",
        reason="TransformerLens (the reference) is not installed: pip install -e '.[test]' "
        "(the minimum-versions run has none: transformer-lens 4.3 needs transformers>=5.9)",
    )
    return module.TransformerBridge
