"""The clean/corrupted prompt pairs ``patching`` and ``circuit`` run by default, per model, and the small-gap warning.

A default pair is only worth patching on a model that tells its two prompts apart. GPT-2
is known to identify indirect objects, so on GPT-2 (and any model not listed in
:data:`PAIRS`) the default is the indirect-object pair (:data:`IOI`). The shipped offline
model ``tiny-english`` never learned that task (its logit differences on the IOI pair are
-3.51 clean and -3.54 corrupted, so every normalised value would divide by noise) but it copies in
context, through a previous-token head and induction heads (its model card): its default
is :data:`COPYING`, a sentence whose ending repeats an earlier span, against the same
sentence with that span's last word replaced, so the model copies the other word.

The options keep ``None`` as their default until the model is loaded (which model runs is
known only then, after a possible fallback); :func:`fill_pair` then fills each option the
user left out from that model's pair and says so.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .common import announce_model, check_single_token, check_text_model

if TYPE_CHECKING:
    from ..probe import GPT2Probe

OPTIONS = ("clean", "corrupted", "answer", "wrong")


@dataclass(frozen=True)
class PromptPair:
    """A clean prompt, a corrupted prompt of the same token length, and the answer each one favours."""

    clean: str
    corrupted: str
    answer: str
    wrong: str
    behaviour: str
    """What the model must do to tell the prompts apart, in a few words (printed with the pair)."""


IOI = PromptPair(
    clean="When Mary and John went to the store, John gave a drink to",
    corrupted="When Mary and John went to the store, Mary gave a drink to",
    answer=" Mary", wrong=" John",
    behaviour="indirect-object identification (the name that did not give is the answer)",
)
COPYING = PromptPair(
    clean="Each thread holds a lock on the queue while it reads. When the thread is done it releases the lock on the",
    corrupted="Each thread holds a lock on the file while it reads. When the thread is done it releases the lock on the",
    answer=" queue", wrong=" file",
    behaviour="in-context copying (the ending repeats 'lock on the', and the model copies the word that followed it)",
)
PAIRS = {"tiny-english": COPYING}
"""Models whose default pair is not :data:`IOI`, by ``probe.cfg.model_name``."""


def pair_for(model_name: str) -> PromptPair:
    """The default pair for a model: :data:`COPYING` on tiny-english, :data:`IOI` on GPT-2 and any other."""
    return PAIRS.get(model_name, IOI)


def add_pair_arguments(parser: argparse.ArgumentParser) -> None:
    """``--clean``, ``--corrupted``, ``--answer``, ``--wrong``: each left out is filled from the model's default pair."""
    per_model = (f"on GPT-2 the indirect-object pair {IOI.clean!r}; on tiny-english (GPT-2's weights unavailable) "
                 f"in-context copying, {COPYING.clean!r}")
    parser.add_argument("--clean", default=None, help=f"the clean prompt (default: {per_model})")
    parser.add_argument("--corrupted", default=None, help="the corrupted prompt, same number of tokens (default: the "
                                                          f"model's pair: {IOI.corrupted!r} / {COPYING.corrupted!r})")
    parser.add_argument("--answer", default=None, help="the clean prompt's answer, one token (default: the model's "
                                                       f"pair: {IOI.answer!r} / {COPYING.answer!r})")
    parser.add_argument("--wrong", default=None, help="the corrupted prompt's answer, one token (default: the "
                                                      f"model's pair: {IOI.wrong!r} / {COPYING.wrong!r})")


def fill_pair(args: argparse.Namespace, model_name: str) -> str | None:
    """Fill the pair options left out (``None``) from ``model_name``'s default pair; a line saying which, or ``None``."""
    pair = pair_for(model_name)
    filled = [name for name in OPTIONS if getattr(args, name) is None]
    for name in filled:
        setattr(args, name, getattr(pair, name))
    if not filled:
        return None
    which = "the prompts and answers" if len(filled) == len(OPTIONS) else ", ".join(f"--{n}" for n in filled)
    return f"Default pair for {model_name} ({which}): {pair.behaviour}"


def gap_warning(clean: float, corrupted: float, scale: float, consequence: str) -> str | None:
    """A warning when ``|clean - corrupted|`` is below ``SMALL_GAP`` of ``scale`` (the metric's largest size), else ``None``.

    ``consequence`` says what divides by the gap (e.g. "Normalised values divide by that gap"). The
    test is :func:`gpt2probe.report.style.small_gap`, the one every normalised heatmap flags with.
    """
    from ..report.style import SMALL_GAP, small_gap

    if not small_gap(clean, corrupted, scale):
        return None
    return (f"The clean and corrupted runs barely differ on the metric: clean {clean:+.4f}, corrupted {corrupted:+.4f}, "
            f"a gap of {abs(clean - corrupted):.4f} against values up to {scale:.4f} (less than {SMALL_GAP:.0%}). "
            f"{consequence}, so they mostly show noise: choose a prompt pair the model tells apart.")


SMALL_GAP_FLAG = "small clean - corrupted gap: normalised values mostly show noise (see the warning)"


def flag_small_gap(fig) -> None:
    """Add :data:`SMALL_GAP_FLAG` in red under ``fig``'s title, unless the figure flags the gap itself already."""
    from ..report.style import NEGATIVE

    title = fig.layout.title.text or ""
    if "small gap" in title or SMALL_GAP_FLAG in title:
        return
    fig.update_layout(title_text=f'{title}<br><span style="color:{NEGATIVE}"><b>{SMALL_GAP_FLAG}</b></span>')


def load_for_pair(args: argparse.Namespace, command: str, caveat: str,
                  load: Callable[[argparse.Namespace], tuple[GPT2Probe, bool]]) -> tuple[GPT2Probe, list[str]]:
    """Load ``command``'s model with ``load`` and settle its prompt pair: the probe and the notes for its report.

    ``load`` is the command module's ``load_model`` (:func:`.common.load_model`), passed in so
    that it stays the one name a test replaces to check that mistakes end before loading.

    Refuses a model that does not read text before and after loading, says which model runs
    (with ``caveat`` for the shipped offline one), fills the options left out from that
    model's default pair (printed, and kept in the notes), and checks that ``--answer`` and
    ``--wrong`` are single tokens.
    """
    check_text_model(args, command)
    probe, fell_back = load(args)
    check_text_model(args, command, probe)
    cfg = probe.cfg
    notes = announce_model(probe, fell_back, caveat, f"{cfg.n_layers} layers, {cfg.n_heads} heads per layer")
    default = fill_pair(args, cfg.model_name)
    if default:
        print(default)
        notes.append(default)
    for option in ("answer", "wrong"):
        check_single_token(probe, getattr(args, option), f"--{option}")
    return probe, notes
