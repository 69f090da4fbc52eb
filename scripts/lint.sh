#!/usr/bin/env bash
# The lint gate (.ci/run runs it before the tests): ruff with pyproject.toml's rules.
#   scripts/lint.sh          check, exit 1 on any finding
#   scripts/lint.sh --fix    apply ruff's safe fixes first (import order, ...), then check
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RUFF="${RUFF:-$( [ -x .venv/bin/ruff ] && echo .venv/bin/ruff || echo ruff )}"
if [ "${1:-}" = "--fix" ]; then
    "$RUFF" check --fix --quiet . || true
fi
"$RUFF" --version
"$RUFF" check .
