"""Runnable entry point of ``gpt2probe patching``: ``python experiments/activation_patching.py [options]``.

The experiment lives in :mod:`gpt2probe.experiments.patching`; see ``--help`` for its options.
"""

import sys

from gpt2probe.experiments.patching import main

if __name__ == "__main__":
    sys.exit(main())
