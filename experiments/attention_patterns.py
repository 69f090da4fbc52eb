"""The attention experiment: ``python experiments/attention_patterns.py --prompt "..." --out reports/attention.html``.

Every head of every layer on one input, with previous-token, induction and first-token
scores, in one interactive offline page (thumbnails of all heads, one large, hover a token
to follow it). Same as ``gpt2probe attention``; see ``--help``.
"""

from __future__ import annotations

import sys

from gpt2probe.experiments.attention import main

if __name__ == "__main__":
    sys.exit(main())
