"""``python -m gpt2probe``: the same commands as the ``gpt2probe`` script (and what ``torchrun -m`` runs)."""

from .cli import main

raise SystemExit(main())
