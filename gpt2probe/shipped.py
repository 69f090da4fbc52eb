"""Models that ship inside the package, so that experiments run where GPT-2's weights cannot be had.

``tiny-english`` is a 4-layer GPT-2 with GPT-2's tokenizer, trained for minutes on the
documentation that ships with Python: enough to show layer-by-layer structure in a logit
lens, nothing like GPT-2's knowledge. ``toy-induction`` has hand-built weights with a
known previous-token head and induction head (vocabulary of 64 ids, no text tokenizer).
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import WeightsUnavailableError

if TYPE_CHECKING:
    from .probe import GPT2Probe

OFFLINE_MODEL = "tiny-english"

NOTES = {
    "tiny-english": (
        "This report was made with gpt2probe's small offline model 'tiny-english' (4 layers, d_model 64), "
        "trained for a few minutes on Python's documentation, because GPT-2's weights were not available. "
        "It shows how the tools read a real trained model; its predictions, heads and circuits say nothing "
        "about GPT-2 itself."
    ),
    "toy-induction": (
        "This report was made with gpt2probe's hand-built toy model 'toy-induction' (2 layers, vocabulary of 64 ids), "
        "whose weights were constructed so that L0H0 is a previous-token head and L1H0 an induction head."
    ),
}


def shipped_model(name: str) -> Path:
    """The directory of a model shipped with gpt2probe (pass it to :func:`gpt2probe.load`)."""
    if name not in NOTES:
        raise WeightsUnavailableError(f"no shipped model {name!r}; shipped models: {', '.join(NOTES)}")
    path = Path(str(resources.files("gpt2probe") / "assets" / name))
    if not (path / "config.json").is_file():
        raise WeightsUnavailableError(f"the shipped model {name!r} is missing from {path} (a broken install?)")
    return path


def load_with_fallback(
    model: str, *, device: str | None = None, allow_fallback: bool = True
) -> tuple[GPT2Probe, str | None]:
    """Load ``model``, or the shipped offline model when a hub id's weights cannot be had.

    If ``model`` is a hub id (not a path) whose weights cannot be had, say why on stderr and load
    the shipped offline model instead. Returns the probe and, after a fallback, a note for reports.
    """
    from .loading import load, looks_like_path

    try:
        return load(model, device=device), None
    except WeightsUnavailableError as error:
        if not allow_fallback or looks_like_path(model) or Path(model).expanduser().exists():
            raise
        print(f"Cannot load {model!r}: {error}", file=sys.stderr)
        print(f"Falling back to gpt2probe's shipped offline model {OFFLINE_MODEL!r}.", file=sys.stderr)
        return load(shipped_model(OFFLINE_MODEL), device=device), NOTES[OFFLINE_MODEL]
