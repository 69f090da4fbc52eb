"""The logit-lens experiment: ``python experiments/logit_lens.py --prompt "..." --out reports/logit_lens.html``.

Reads every layer of GPT-2 through the final layer norm and the tied unembedding, prints the
top-1 prediction per layer at the last position, and writes a self-contained HTML report.
Same as ``gpt2probe logit-lens``; see ``--help``.
"""

from __future__ import annotations

import sys

from gpt2probe.experiments.logit_lens import main

if __name__ == "__main__":
    sys.exit(main())
