"""``python -m gpt2probe COMMAND [options]``: the same as the ``gpt2probe`` command."""

import sys

from .cli import main

sys.exit(main())
