"""Runnable entry point of ``gpt2probe logit-lens``: ``python experiments/logit_lens.py [options]``.

The experiment lives in :mod:`gpt2probe.experiments.logit_lens`; see ``--help`` for its options.
"""

import sys

from gpt2probe.experiments.logit_lens import main

if __name__ == "__main__":
    sys.exit(main())
