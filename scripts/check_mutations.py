"""Check that the test suite can fail: break the code in known ways and watch the tests catch it.

Each mutation below is a bug an audit once slipped past a green suite. For each, this
script copies the tracked files to a temporary directory, applies the mutation there
(never to your checkout), runs the tests that guard that code, and expects them to FAIL.
Exit status 0 when every mutation is caught, 1 otherwise (or when a mutation no longer
applies because the code changed: update its ``old`` text then).

    python scripts/check_mutations.py            # every mutation
    python scripts/check_mutations.py dla_ln_f   # some, by name
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]
    why: str


MUTATIONS = [
    Mutation(
        name="dla_ln_f_bias",
        path="gpt2probe/lens/attribution.py",
        old="bias_term = float(ln_f.bias.float() @ direction.float())",
        new="bias_term = 0.0",
        tests=("tests/test_attribution.py",),
        why="direct logit attribution drops ln_f's bias term",
    ),
    Mutation(
        name="dla_b_O",
        path="gpt2probe/lens/attribution.py",
        old="values += [heads[l].sum() + attn_bias[l], mlps[l]]",
        new="values += [heads[l].sum(), mlps[l]]",
        tests=("tests/test_attribution.py",),
        why="a layer's attention contribution drops b_O",
    ),
    Mutation(
        name="lens_ln_f_bias",
        path="gpt2probe/lens/logit_lens.py",
        old="ln_f.weight, ln_f.bias, ln_f.eps",
        new="ln_f.weight, None, ln_f.eps",
        tests=("tests/test_logit_lens.py",),
        why="the logit lens drops ln_f's bias",
    ),
]


def tracked_files() -> list[str]:
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout
    return [name for name in listed.decode().split("\0") if name and (REPO / name).is_file()]


def check(mutation: Mutation, files: list[str]) -> bool:
    """True when the tests fail on the mutated copy (the mutation is caught)."""
    with tempfile.TemporaryDirectory(prefix=f"mutation-{mutation.name}-") as tmp:
        root = Path(tmp)
        for name in files:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / name)
        target = root / mutation.path
        source = target.read_text(encoding="utf-8")
        if source.count(mutation.old) != 1:
            print(f"  {mutation.name}: the text to mutate is not in {mutation.path} exactly once; update this script")
            return False
        target.write_text(source.replace(mutation.old, mutation.new), encoding="utf-8")
        env = {**os.environ, "PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1"}
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *mutation.tests],
                              cwd=root, env=env, capture_output=True, text=True)
        failed = [line for line in done.stdout.splitlines() if line.startswith("FAILED")]
        caught = done.returncode == 1 and bool(failed)
        verdict = "caught" if caught else "NOT CAUGHT" if done.returncode == 0 else f"error (exit {done.returncode})"
        print(f"  {mutation.name} ({mutation.why}): {verdict} in {time.monotonic() - started:.0f} s")
        for line in failed[:3]:
            print(f"      {line}")
        if not caught and done.returncode not in (0, 1):
            print(done.stdout[-2000:] + done.stderr[-2000:])
        return caught


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("only", nargs="*", help="names of mutations to check (default: all)")
    args = parser.parse_args(argv)
    known = {m.name for m in MUTATIONS}
    if unknown := set(args.only) - known:
        parser.error(f"unknown mutations {sorted(unknown)}; known: {', '.join(sorted(known))}")
    chosen = [m for m in MUTATIONS if not args.only or m.name in args.only]
    files = tracked_files()
    print(f"Applying {len(chosen)} mutation(s), each to a fresh copy of {len(files)} files:")
    results = [check(m, files) for m in chosen]
    missed = [m.name for m, ok in zip(chosen, results) if not ok]
    print("every mutation was caught" if not missed else f"NOT caught: {', '.join(missed)}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
