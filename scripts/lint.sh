#!/usr/bin/env bash
# The lint gate (.ci/run runs it before the tests): ruff with pyproject.toml's rules, then
# pyright's type check of gpt2probe/ at standard strictness ([tool.pyright] in pyproject.toml).
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
# pyright resolves imports (torch, transformers...) in the interpreter that runs the package.
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}"
PYRIGHT="${PYRIGHT:-$( [ -x .venv/bin/pyright ] && echo .venv/bin/pyright || echo pyright )}"
"$PYRIGHT" --version
"$PYRIGHT" --pythonpath "$PYTHON"
