"""The harvest's settings, declared once in :class:`HarvestConfig`.

:func:`gpt2probe.harvest`'s keyword arguments, ``gpt2probe harvest``'s flags and the
manifest's ``options`` entry all come from it.

These are the settings that change the result, so a resumed run must match them (the
manifest's fingerprint compares them). Where the output goes, which device runs and whether a
bar is shown do not change the result and are the command's or the call's own arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import no_type_check

from ..errors import HarvestConfigError
from .base import non_negative_int, positive_int, setting

DEFAULT_BLOCK_CHARS = 1 << 16
MAX_DEFAULT_SEQ_LEN = 128


@no_type_check  # values are checked by the code that runs them, raising gpt2probe's own errors
@dataclass(frozen=True)
class HarvestConfig:
    """Everything that changes a harvest's result (and so must match on ``resume``).

    Attributes:
        top_k: max-activating examples kept per unit.
        window: context tokens kept either side of an example.
        seq_len: tokens per packed window; ``None``: the model's context, at most 128.
        batch_size: windows per forward pass.
        threshold: a unit is "active" above it (``stats()["frequency"]``).
        n_bins: histogram bins between each unit's edges (fixed from the corpus's first windows).
        block_chars: characters per unit of work (a block is tokenised and packed on its own).
        seed: shuffles documents within each block (``None``: corpus order).
        calibration_windows: windows of the corpus's start that fix the histograms' ranges.
        save_raw: hooks whose raw activations are also written as Parquet shards.
    """

    top_k: int = setting(20, "max-activating examples per unit", flag="--examples")
    window: int = setting(8, "context tokens kept either side of an example", type=non_negative_int)
    seq_len: int | None = setting(None, "tokens per window: documents packed end to end", type=positive_int,
                                  default_text=f"the model's context, at most {MAX_DEFAULT_SEQ_LEN}")
    batch_size: int = setting(8, "windows per forward pass")
    threshold: float = setting(0.0, "'active' means above this")
    n_bins: int = setting(64, "histogram bins per unit", flag="--bins")
    block_chars: int = setting(DEFAULT_BLOCK_CHARS, "characters per unit of work")
    seed: int | None = setting(None, "shuffles the documents within each block", type=int,
                               default_text="none, corpus order")
    calibration_windows: int = setting(8, "windows that fix the histograms' ranges", cli=False)
    save_raw: tuple[str, ...] = setting((), "also write these hooks' raw activations", nargs="+", metavar="HOOK")

    def resolved(self, n_ctx: int) -> HarvestConfig:
        """The config with ``seq_len`` chosen for a model of ``n_ctx`` positions, every value checked."""
        config = self if self.seq_len is not None else replace(self, seq_len=min(n_ctx, MAX_DEFAULT_SEQ_LEN))
        if isinstance(config.threshold, int) and not isinstance(config.threshold, bool):
            config = replace(config, threshold=float(config.threshold))  # saved as a float, compared on resume
        config.check(n_ctx)
        return config

    def check(self, n_ctx: int) -> None:
        """Refuse a value the harvest cannot run with, naming the setting."""
        for name in ("top_k", "seq_len", "batch_size", "n_bins", "block_chars", "calibration_windows"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise HarvestConfigError(f"{name} must be a whole number, got {value!r}")
            if value < 1:
                raise HarvestConfigError(f"{name} must be at least 1, got {value}")
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 0:
            raise HarvestConfigError(f"window must be 0 or more, got {self.window!r}")
        if self.seq_len > n_ctx:  # type: ignore[operator]  (checked above to be an int)
            raise HarvestConfigError(f"seq_len {self.seq_len} is longer than the model's context ({n_ctx} tokens)")
