#!/usr/bin/env bash
# Set up gpt2probe from scratch in this checkout: a .venv with torch, gpt2probe and its
# test and docs tools. With --browser, also Debian's chromium for the real-browser report tests.
#
# torch is installed first, and only if .venv has none: on this project's machines
# `torch==2.13.0` is the CPU wheel on local disk, while a bare `torch` requirement would
# pull a CUDA build of several GB. To use your own build (CUDA, ROCm), install it into
# .venv before running this script; the project's requirement is a range that keeps it.
set -euo pipefail

TORCH_REQUIREMENT="${TORCH_REQUIREMENT:-torch==2.13.0}"
PYTHON="${PYTHON:-python3}"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
step() { printf '==> %s\n' "$*" >&2; }
export PIP_PROGRESS_BAR=off PIP_DISABLE_PIP_VERSION_CHECK=1

if [ ! -x .venv/bin/python ]; then
    step "Creating the virtual environment .venv ($("$PYTHON" --version 2>&1))"
    "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c 'import torch' 2>/dev/null; then
    step "Installing $TORCH_REQUIREMENT first (CPU build)"
    .venv/bin/python -m pip install -q "$TORCH_REQUIREMENT"
fi
if ! .venv/bin/python -c 'import gpt2probe, pytest, mkdocs' 2>/dev/null \
    || [ pyproject.toml -nt .venv/.gpt2probe-installed ]; then
    step "Installing gpt2probe with its dev and docs extras (pip install -e '.[dev,docs]')"
    .venv/bin/python -m pip install -q -e '.[dev,docs]'
    touch .venv/.gpt2probe-installed
fi

if [ "${1:-}" = "--browser" ] && [ ! -x /usr/bin/chromium ]; then
    step "Installing Debian's chromium (real-browser tests of the HTML reports)"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
fi
step "Ready: $(.venv/bin/python -c 'import torch, gpt2probe; print("gpt2probe", gpt2probe.__version__, "with torch", torch.__version__)')"
