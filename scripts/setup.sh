#!/usr/bin/env bash
# Set up gpt2probe from scratch in this checkout.
#
#   scripts/setup.sh                  .venv: torch, gpt2probe with its dev (test, lint,
#                                     TransformerLens) and docs extras
#   scripts/setup.sh --browser        the same, plus Debian's chromium for the real-browser
#                                     report tests
#   scripts/setup.sh --min-versions   .venv-min: every runtime dependency at the LOWEST
#                                     version pyproject.toml allows (so the declared ranges
#                                     are tested), plus the test tools; no TransformerLens
#                                     (4.3 needs transformers>=5.9), so the reference
#                                     comparisons skip there
#   scripts/setup.sh --saelens        .venv-saelens: SAELens 6 (sae-lens==6.54.12), the
#                                     reference that tests/test_sae_saelens.py compares
#                                     gpt2probe's SAE files and numbers with. SAELens needs
#                                     TransformerLens < 4, which cannot be installed beside
#                                     .venv's TransformerLens 4, hence its own environment;
#                                     gpt2probe itself is not installed there
#
# torch is installed first, and only if the environment has none: on this project's
# machines `torch==2.13.0` is the CPU wheel on local disk, while a bare `torch` requirement
# would pull a CUDA build of several GB. To use your own build (CUDA, ROCm), install it into
# .venv before running this script; the project's requirement is a range that keeps it.
set -euo pipefail

PYTHON="${PYTHON:-python3}"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
step() { printf '==> %s\n' "$*" >&2; }
export PIP_PROGRESS_BAR=off PIP_DISABLE_PIP_VERSION_CHECK=1

BROWSER=0 MIN=0 SAELENS=0
for arg in "$@"; do
    case "$arg" in
        --browser) BROWSER=1 ;;
        --min-versions) MIN=1 ;;
        --saelens) SAELENS=1 ;;
        *) echo "usage: scripts/setup.sh [--browser] [--min-versions] [--saelens]" >&2; exit 2 ;;
    esac
done

# "name>=lower,..." for each runtime dependency in pyproject.toml -> "name==lower".
lowest_versions() {
    "$PYTHON" - <<'EOF'
import re, tomllib
with open("pyproject.toml", "rb") as f:
    requirements = tomllib.load(f)["project"]["dependencies"]
for requirement in requirements:
    match = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^]]*\])?\s*>=\s*([^,;\s]+).*", requirement.strip())
    if not match:
        raise SystemExit(f"pyproject.toml: {requirement!r} has no lower bound (name>=version)")
    print(f"{match[1]}=={match[2]}")
EOF
}

if [ "$MIN" = 1 ]; then
    VENV=.venv-min
    CONSTRAINTS="$VENV/lowest-versions.txt"
    if [ ! -x "$VENV/bin/python" ]; then
        step "Creating $VENV ($("$PYTHON" --version 2>&1)) for the minimum-versions run"
        "$PYTHON" -m venv "$VENV"
    fi
    lowest_versions > "$CONSTRAINTS.new"
    if ! cmp -s "$CONSTRAINTS.new" "$CONSTRAINTS" || [ ! -f "$VENV/.gpt2probe-installed" ]; then
        mv "$CONSTRAINTS.new" "$CONSTRAINTS"
        step "Installing the lowest allowed versions: $(tr '\n' ' ' < "$CONSTRAINTS")"
        "$VENV/bin/python" -m pip install -q "$(grep '^torch==' "$CONSTRAINTS")"
        # The test tools: gpt2probe[test] without TransformerLens (see above).
        "$PYTHON" -c 'import tomllib; extra = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["test"]; print("\n".join(r for r in extra if not r.startswith("gpt2probe")))' > "$VENV/test-tools.txt"
        "$VENV/bin/python" -m pip install -q -c "$CONSTRAINTS" -e . -r "$VENV/test-tools.txt"
        touch "$VENV/.gpt2probe-installed"
    else
        rm -f "$CONSTRAINTS.new"
    fi
    step "Ready: $("$VENV/bin/python" -c 'import importlib.metadata as m; print(", ".join(f"{d} {m.version(d)}" for d in ("torch", "transformers", "numpy", "einops", "plotly", "jaxtyping", "safetensors", "tqdm")))')"
    exit 0
fi

TORCH_REQUIREMENT="${TORCH_REQUIREMENT:-torch==2.13.0}"
SAELENS_REQUIREMENT="sae-lens==6.54.12"

if [ "$SAELENS" = 1 ]; then
    VENV=.venv-saelens
    if [ ! -x "$VENV/bin/python" ]; then
        step "Creating $VENV ($("$PYTHON" --version 2>&1)) for the SAELens reference"
        "$PYTHON" -m venv "$VENV"
    fi
    if [ ! -f "$VENV/.saelens-installed" ] || [ "$(cat "$VENV/.saelens-installed")" != "$SAELENS_REQUIREMENT" ]; then
        if ! "$VENV/bin/python" -c 'import torch' 2>/dev/null; then
            step "Installing $TORCH_REQUIREMENT first (CPU build)"
            "$VENV/bin/python" -m pip install -q "$TORCH_REQUIREMENT"
        fi
        step "Installing $SAELENS_REQUIREMENT (pip resolves its TransformerLens < 4 and transformers)"
        "$VENV/bin/python" -m pip install -q "$SAELENS_REQUIREMENT"
        echo "$SAELENS_REQUIREMENT" > "$VENV/.saelens-installed"
    fi
    step "Ready: $("$VENV/bin/python" -c 'import importlib.metadata as m; print(", ".join(f"{d} {m.version(d)}" for d in ("sae-lens", "torch", "transformer-lens", "transformers", "safetensors")))')"
    exit 0
fi
if [ ! -x .venv/bin/python ]; then
    step "Creating the virtual environment .venv ($("$PYTHON" --version 2>&1))"
    "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c 'import torch' 2>/dev/null; then
    step "Installing $TORCH_REQUIREMENT first (CPU build)"
    .venv/bin/python -m pip install -q "$TORCH_REQUIREMENT"
fi
if ! .venv/bin/python -c 'import gpt2probe, pytest, mkdocs, ruff' 2>/dev/null \
    || [ pyproject.toml -nt .venv/.gpt2probe-installed ]; then
    step "Installing gpt2probe with its dev and docs extras (pip install -e '.[dev,docs]')"
    .venv/bin/python -m pip install -q -e '.[dev,docs]'
    touch .venv/.gpt2probe-installed
fi

if [ "$BROWSER" = 1 ] && [ ! -x /usr/bin/chromium ]; then
    step "Installing Debian's chromium (real-browser tests of the HTML reports)"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
fi
step "Ready: $(.venv/bin/python -c 'import torch, gpt2probe; print("gpt2probe", gpt2probe.__version__, "with torch", torch.__version__)')"
