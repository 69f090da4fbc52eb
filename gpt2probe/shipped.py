"""Models that ship inside the package, so that experiments run where GPT-2's weights cannot be had.

``tiny-english`` is a 4-layer GPT-2 with GPT-2's tokenizer, trained for minutes on the
documentation, docstrings and source code that ship with Python: enough to show
layer-by-layer structure in a logit lens and a copying circuit (a previous-token head and
induction heads) that training formed, nothing like GPT-2's knowledge. ``toy-induction`` has hand-built weights with a
known previous-token head and induction head (vocabulary of 64 ids, no text tokenizer).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .errors import WeightsUnavailableError

OFFLINE_MODEL = "tiny-english"

NOTES = {
    "tiny-english": (
        "This report was made with gpt2probe's small offline model 'tiny-english' (4 layers, d_model 128), "
        "trained for minutes on Python's documentation, docstrings and standard-library source code, "
        "because GPT-2's weights were not available. "
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
