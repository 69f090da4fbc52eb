"""Opt-in run-time checks of the jaxtyping shapes on gpt2probe's functions.

Every public function is annotated with its tensors' shapes (``Float[Tensor, "batch pos d_model"]``,
with TransformerLens's axis names). The test suite checks them on every call; users can too,
at some cost in speed, by setting an environment variable *before* importing gpt2probe::

    GPT2PROBE_CHECK_SHAPES=1 python my_script.py

A call whose tensors do not fit the annotations then raises jaxtyping's ``TypeCheckError``
naming the argument, the expected shape and the one received. It needs beartype
(``pip install beartype``, or gpt2probe's ``shapes`` extra).
"""

from __future__ import annotations

import os

ENVIRONMENT_VARIABLE = "GPT2PROBE_CHECK_SHAPES"


def requested() -> bool:
    """Whether the environment asks for shape checks (any value but empty or ``0``)."""
    return os.environ.get(ENVIRONMENT_VARIABLE, "").strip() not in ("", "0")


def enable(package: str = "gpt2probe") -> None:
    """Instrument ``package``'s modules imported from now on with jaxtyping + beartype checks."""
    try:
        import beartype  # noqa: F401
    except ImportError:
        from .errors import MissingExtraError

        raise MissingExtraError(
            f"{ENVIRONMENT_VARIABLE} is set but beartype is not installed: pip install beartype "
            "(or pip install 'gpt2probe[shapes]'), or unset the variable"
        ) from None
    from jaxtyping import install_import_hook

    install_import_hook(package, "beartype.beartype")
