"""The ``gpt2probe`` command: ``gpt2probe logit-lens [options]``."""

from __future__ import annotations

import sys
from collections.abc import Sequence

COMMANDS = {
    "logit-lens": "gpt2probe.experiments.logit_lens",
    "finetune": "gpt2probe.experiments.finetune",
    "diff": "gpt2probe.experiments.diff",
}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help") or args[0] not in COMMANDS:
        print("usage: gpt2probe {" + ",".join(COMMANDS) + "} [options]   (gpt2probe COMMAND --help for options)")
        if args and args[0] not in ("-h", "--help"):
            print(f"error: unknown command {args[0]!r}; valid: {', '.join(COMMANDS)}", file=sys.stderr)
            return 2
        return 0
    from importlib import import_module

    return import_module(COMMANDS[args[0]]).main(args[1:])


if __name__ == "__main__":
    sys.exit(main())
