"""``gpt2probe harvest-report DIR --out FILE``: the offline HTML dashboard of a finished harvest."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from . import options
from .common import Parser, UsageError, check_device, check_out, examples_to_show, run_command, select_hooks


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="gpt2probe harvest-report",
               description="Write a self-contained offline HTML dashboard of a finished harvest.")
    p.add_argument("dir", type=Path, help="the harvest's output directory")
    options.add(p, "--out", "an HTML file (default: DIR/dashboard.html)")
    options.add(p, "--model", "for the logit effects (default: the one the harvest used)")
    options.add(p, "--hooks", "only these, or globs (default: all)")
    options.add(p, "--examples", "shown per unit (default: 8, or as many as the harvest kept)")
    options.add(p, "--no-logits", "(the direct effects)")
    options.add(p, "--device", "for the logit effects")
    return p


def run(args: argparse.Namespace) -> Path:
    from ..harvest import Harvest
    from ..report.harvest_dashboard import write_dashboard
    from .harvest import load_model

    check_device(args.device)
    out = args.out or args.dir / "dashboard.html"
    check_out(out)
    try:
        h = Harvest.load(args.dir)
    except (FileNotFoundError, ValueError) as error:
        raise UsageError(str(error)) from None
    hooks = select_hooks(args.hooks, h.hooks, "harvested hooks")
    examples = examples_to_show(args.examples, 8, int(h.manifest["options"]["top_k"]), str(args.dir))
    probe = None
    if not args.no_logits:
        probe = load_model(args.model or h.manifest["model"].get("source") or h.manifest["model"]["name"], args.device)
    path = write_dashboard(h, out, probe=probe, hooks=hooks, examples=examples)
    print(f"Dashboard written to {path}")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``gpt2probe harvest-report``; 0 on success, 2 with one ``error:`` line on a mistake."""
    return run_command(build_parser(), run, argv, check=None)
