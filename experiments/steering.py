"""Runnable entry point of ``gpt2probe steering``: ``python experiments/steering.py [options]``.

The experiment lives in :mod:`gpt2probe.experiments.steering`; see ``--help`` for its options.
"""

import sys

from gpt2probe.experiments.steering import main

if __name__ == "__main__":
    sys.exit(main())
