"""What every experiment command shares: options, argument checks, loading, and the ``main`` wrapper.

A command is a module with ``build_parser()`` (a :class:`Parser`) and ``run(args)``;
its ``main(argv=None) -> int`` is ``run_command(build_parser(), run, argv)``. The
contract with the person typing:

* every mistake ends with one ``error: ...`` line on stderr and exit status 2, no
  traceback and no report written;
* arguments are checked before the model is loaded (:func:`check_common`, the
  command's own checks through :class:`UsageError`), so a typo costs no waiting;
* an explicit ``--model`` is loaded exactly as named, or the command fails; only the
  default (``gpt2``) falls back to the shipped offline model, and says so on stderr
  and in the report.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from ..errors import GPT2ProbeError, UsageError
from . import options
from .options import DEVICE_HELP, check_required
from .options import finite_float as finite_float  # argument types, re-exported for the commands
from .options import non_negative_int as non_negative_int
from .options import positive_int as positive_int

if TYPE_CHECKING:
    from ..probe import GPT2Probe

DEFAULT_MODEL = "gpt2"


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose mistakes raise :class:`UsageError` instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")

    def format_help(self) -> str:
        """The help text, with the docstrings' reStructuredText ````literal```` markers removed for the terminal."""
        return super().format_help().replace("``", "")

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        namespace, extras = super().parse_known_args(args, namespace)
        check_required(self, namespace)
        return namespace, extras


def doc_help(doc: str | None) -> tuple[str | None, str | None]:
    """A command module's docstring as its ``--help`` description (the first paragraph) and epilog (the rest).

    ``python -OO`` strips docstrings (``__doc__`` is None): the help then has neither, and the command still runs.
    """
    if doc is None:
        return None, None
    description, _, epilog = doc.partition("\n\n")
    return description, epilog


OWN_VOCABULARY_MODELS = ("toy-induction",)
"""Shipped models with their own small vocabulary: text cannot be tokenized for them, only token ids."""


def add_common_arguments(parser: argparse.ArgumentParser, default_out: str, *, text_only: bool = False) -> None:
    """``--model``, ``--device``, ``--out`` and ``--no-fallback``, the same for every command.

    ``text_only``: the command reads text prompts only, so its help names no shipped model of
    :data:`OWN_VOCABULARY_MODELS` (and :func:`check_text_model` refuses one).
    """
    shipped = "tiny-english" if text_only else "tiny-english, toy-induction"
    options.add(parser, "--model", f"({shipped}); default: {DEFAULT_MODEL}, or tiny-english when GPT-2's weights "
                "cannot be had (said in the terminal and the report)", default=None)
    parser.add_argument("--device", help=DEVICE_HELP)
    options.add(parser, "--out", f"a report file (default: {default_out})", default=Path(default_out))
    parser.add_argument("--no-fallback", action="store_true",
                        help=f"fail instead of falling back to the shipped offline model when {DEFAULT_MODEL}'s "
                             "weights are unavailable")


def add_plotly_argument(parser: argparse.ArgumentParser) -> None:
    """``--plotly inline|shared``, for commands whose report holds Plotly figures."""
    parser.add_argument("--plotly", choices=("inline", "shared"), default="inline",
                        help="inline: the report embeds plotly.js (one self-contained file, ~5 MB; the default); "
                             "shared: plotly.js is written once beside the reports in the --out folder and "
                             "loaded from there (still offline; copy the two files together)")


# -- checks made before anything is loaded ---------------------------------------------------

def check_device(device: str | None) -> None:
    """Refuse a device string torch does not know, or one this machine does not have (before loading).

    The check is :func:`gpt2probe.validate.device`, the one every ``device=`` goes through, with
    its message turned into a usage error (one ``error:`` line, exit status 2).
    """
    if device is None:
        return
    from ..errors import InvalidArgumentError
    from ..validate import device as valid_device

    try:
        target = valid_device("--device", device, unavailable=UsageError)
    except InvalidArgumentError as error:
        raise UsageError(str(error)) from None
    if target is not None and target.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"--device {device!r} is not supported; valid: cpu, cuda, cuda:N, mps")


def check_out(path: Path, option: str = "--out") -> None:
    """Refuse an output file (``--out``, ``--json``...) that is a directory, lies under a file, or cannot be written."""
    if str(path) == "" or path.name == "":
        raise UsageError(f"{option} {str(path)!r} names no file")
    if path.is_dir():
        example = path / ("report.html" if option == "--out" else "out.json")
        raise UsageError(f"{option} {str(path)!r} is a directory; give a file name such as {str(example)!r}")
    if path.exists() and not os.access(path, os.W_OK):
        raise UsageError(f"{option} {str(path)!r} is not writable (permission denied)")
    parent = path.parent
    while not parent.exists():  # the report's folders are created; the first existing one must be writable
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"{option} {str(path)!r}: {str(parent)!r} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {str(path)!r}: cannot write in {str(parent)!r} (permission denied)")


def read_prompts_file(path: Path) -> list[str]:
    """One prompt per line of a UTF-8 file; blank lines skipped.

    Lines end at ``\\n`` only (a ``\\r`` before it is dropped): Unicode line separators
    such as U+2028 are part of a prompt, as the person wrote it.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"--prompts-file {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise UsageError(f"--prompts-file {str(path)!r} is a directory, not a text file") from None
    except OSError as error:
        raise UsageError(f"--prompts-file {str(path)!r} cannot be read: {error.strerror or error}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise UsageError(f"--prompts-file {str(path)!r} is not UTF-8 text (invalid byte at line {line}); "
                         "save it as UTF-8") from None
    text = text.removeprefix("\ufeff")
    prompts = [line.removesuffix("\r") for line in text.split("\n")]
    prompts = [p for p in prompts if p.strip()]
    if not prompts:
        raise UsageError(f"--prompts-file {str(path)!r} has no prompts (every line is empty)")
    return prompts


def check_out_dir(path: Path, option: str = "--out") -> None:
    """Refuse an output directory that cannot be created or written, before any work starts."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option} {str(path)!r} is a file; give a directory")
    existing = path
    while not existing.exists():  # the directory's folders are created; the first existing one must be writable
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{option} {str(path)!r}: {str(existing)!r} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {str(path)!r}: cannot write in {str(existing)!r} (permission denied or read-only)")


def examples_to_show(requested: int | None, default: int, kept: int, where: str) -> int:
    """How many top contexts a report shows per unit: ``--examples``, at most what the harvest kept.

    A harvest keeps ``kept`` contexts per unit (its own ``--examples``). Asking a report for
    more is refused rather than silently cut; the report's default is capped without a word,
    since it only ever promised "up to".
    """
    if requested is None:
        return min(default, kept)
    if requested > kept:
        raise UsageError(f"--examples {requested}: the harvest in {where!r} kept {kept} contexts per unit; pass "
                         f"--examples {kept} or fewer, or harvest again with --examples {requested}")
    return requested


def select_hooks(patterns: Sequence[str] | None, valid: Sequence[str], what: str) -> list[str] | None:
    """``--hooks`` of a report: exact names or globs (as ``gpt2probe harvest --hooks`` takes), among ``valid``.

    ``None`` (every hook) stays ``None``; an exact name is passed on as given, so the report
    names it if it was not harvested; a glob that matches none of ``valid`` is refused here.
    """
    if patterns is None:
        return None
    import fnmatch

    chosen: list[str] = []
    for pattern in patterns:
        if not any(c in pattern for c in "*?["):
            chosen.append(pattern)
            continue
        matched = fnmatch.filter(valid, pattern)
        if not matched:
            raise UsageError(f"--hooks {pattern!r} matches none of the {what}: {', '.join(valid)}")
        chosen += matched
    order = {name: i for i, name in enumerate(valid)}
    unique = list(dict.fromkeys(chosen))
    return sorted(unique, key=lambda name: order.get(name, len(order)))


def check_common(args: argparse.Namespace) -> None:
    """The checks every command makes on the shared options."""
    check_device(args.device)
    check_out(args.out)
    if args.model is not None and args.model.strip() == "":
        raise UsageError("--model is empty; give a hub id, a directory or a shipped model name")


def check_single_token(probe: GPT2Probe, text: str, option: str) -> int:
    """The id of ``text`` if it is exactly one token of the probe's tokenizer, else a :class:`UsageError`."""
    ids = probe.tokenizer(text, add_special_tokens=False).input_ids
    if len(ids) != 1:
        pieces = [probe.tokenizer.decode([i]) for i in ids]
        raise UsageError(f"{option} {text!r} is {len(ids)} tokens {pieces!r}; it must be exactly one token "
                         "(note GPT-2 tokens usually start with a space, e.g. ' Paris')")
    return int(ids[0])


def uses_gpt2_vocab(probe: GPT2Probe) -> bool:
    """Whether the probe's tokenizer fits the model's vocabulary (text prompts make sense)."""
    return probe.cfg.d_vocab >= len(probe.tokenizer)


def check_text_model(args: argparse.Namespace, command: str, probe: GPT2Probe | None = None, *,
                     reads: str = "text prompts") -> None:
    """Refuse a model that cannot read text, for a command that takes text prompts only.

    ``reads`` says what the command reads (``"text prompts"``, ``"a text corpus"``).
    Without ``probe`` (before loading) a shipped model of :data:`OWN_VOCABULARY_MODELS` named
    by ``--model`` is refused at once; with it, any model whose vocabulary is smaller than
    its tokenizer's (a directory holding such a model).
    """
    name = args.model
    if probe is None:
        if name not in OWN_VOCABULARY_MODELS or Path(name).exists():
            return
        size = "its own"
    elif uses_gpt2_vocab(probe):
        return
    else:
        name, size = probe.cfg.model_name, f"its own {probe.cfg.d_vocab}-token"
    raise UsageError(f"--model {name!r} has {size} vocabulary, so text cannot be tokenized for it, and "
                     f"gpt2probe {command} reads {reads} only: use a model with GPT-2's vocabulary (gpt2, "
                     "tiny-english), or look at this one with gpt2probe attention --tokens (token ids) or from "
                     "Python with token ids")


GPT2_VOCAB_MODELS = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "tiny-english")
"""Models known, before loading, to read text with GPT-2's own tokenizer (which gpt2probe ships)."""


def check_same_length(args: argparse.Namespace) -> None:
    """Refuse ``--clean`` and ``--corrupted`` of different token lengths before the model is loaded.

    Patching matches positions one to one. The check needs only a tokenizer: for the default
    model and the others of :data:`GPT2_VOCAB_MODELS` it is GPT-2's, shipped with gpt2probe,
    so a mistake costs no model loading (and no fallback message first). Other models are
    checked by the library once loaded, and so is a pair one of whose prompts is left to the
    model's default (known only once the model is; see :mod:`.pairs`).
    """
    if args.clean is None or args.corrupted is None:
        return
    if args.model is not None and args.model not in GPT2_VOCAB_MODELS:
        return
    if args.model is not None and Path(args.model).exists():  # a directory that happens to bear the name
        return
    from ..tokenizer import gpt2_tokenizer

    tokenizer = gpt2_tokenizer()
    lengths = [len(tokenizer(text, add_special_tokens=False).input_ids) for text in (args.clean, args.corrupted)]
    if lengths[0] != lengths[1]:
        raise UsageError(f"--clean has {lengths[0]} tokens but --corrupted has {lengths[1]}: patching matches "
                         "positions one to one, so both need the same number of tokens")


# -- loading -----------------------------------------------------------------------------------

def fallback_note(probe: GPT2Probe, caveat: str) -> str:
    """The note a report carries when the default model fell back to the shipped one."""
    cfg = probe.cfg
    return (f"GPT-2's weights ({DEFAULT_MODEL!r}) were not available, so this report uses gpt2probe's small "
            f"offline model {cfg.model_name!r} ({cfg.n_layers} layers, d_model {cfg.d_model}). {caveat}")


def announce_model(probe: GPT2Probe, fell_back: bool, caveat: str, shape: str) -> list[str]:
    """Print which model runs (``shape`` describes its size) and, after a fallback, the note; returns the report notes."""
    notes = [fallback_note(probe, caveat)] if fell_back else []
    print(f"Model: {probe.cfg.model_name} ({shape})")
    for note in notes:
        print(f"NOTE: {note}")
    return notes


def load_model(args: argparse.Namespace) -> tuple[GPT2Probe, bool]:
    """Load ``args.model`` exactly; only the default may fall back. Returns ``(probe, fell_back)``.

    A shipped model is loaded by name (``--model tiny-english``). Any failure to load an
    explicit model is a :class:`GPT2ProbeError` naming it.
    """
    from ..loading import load, load_with_fallback
    from ..shipped import NOTES, shipped_model

    if args.model is None:
        probe, note = load_with_fallback(DEFAULT_MODEL, device=args.device, allow_fallback=not args.no_fallback)
        return probe, note is not None
    name = args.model
    try:
        if name in NOTES and not Path(name).exists():
            return load(shipped_model(name), device=args.device), False
        return load(name, device=args.device), False
    except GPT2ProbeError:
        raise
    except (OSError, ValueError, KeyError) as error:  # transformers' own complaints about a broken checkpoint
        raise UsageError(f"cannot load --model {name!r}: {type(error).__name__}: {error}") from None


# -- main ------------------------------------------------------------------------------------

def run_command(parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], object],
                argv: Sequence[str] | None = None, *,
                check: Callable[[argparse.Namespace], None] | None = check_common,
                interrupted: str = "interrupted") -> int:
    """Parse ``argv``, run, and turn every expected failure into one ``error:`` line and status 2.

    ``check`` makes the shared option checks first (``None`` for commands whose options differ,
    e.g. an output directory rather than a report file); ``interrupted`` is what Ctrl-C prints
    (status 130), e.g. how to resume.
    """
    try:
        args = parser.parse_args(argv)
        if check is not None:
            check(args)
        run(args)
    except GPT2ProbeError as error:
        message = " ".join(str(error).split("\n"))
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"error: {interrupted}", file=sys.stderr)
        return 130
    return 0
