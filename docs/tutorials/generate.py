"""Turn the tutorial scripts into Markdown pages whose outputs come from running them.

Each ``scripts/NN_name.py`` is a plain Python script a reader can run. Its module
docstring gives the page title (first line) and introduction; lines ``# %%`` split it
into cells, and the comment lines right after a ``# %%`` are that cell's prose (Markdown;
an empty ``#`` line separates paragraphs, a blank line ends the prose).
This script runs every tutorial in its own subprocess (CPU only, offline, one thread,
fixed hash seed), captures each cell's printed output, and writes ``NN_name.md``:
prose, the cell's code, and its exact output in a fenced block.

    python docs/tutorials/generate.py            # regenerate every page
    python docs/tutorials/generate.py 08 09      # only tutorials whose names start so
    python docs/tutorials/generate.py --check    # exit 1 if a page is out of date

``tests/test_docs.py`` runs the scripts and checks that their output equals the blocks
recorded here, so the pages cannot drift from the code.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = HERE / "scripts"
REPO = HERE.parents[1]
CELL_MARK = re.compile(r"^# %%.*$")
OUTPUT_INFO = 'text title="Output"'
TIMEOUT_S = 600

# Runs in the subprocess: execute the cells of one script in one namespace, as a plain
# run would, and report each cell's stdout as JSON on the real stdout.
_CELL_RUNNER = r"""
import contextlib, io, json, sys
path, cells = json.loads(sys.stdin.read())
namespace = {"__name__": "__main__", "__file__": path}
outputs = []
for first_line, code in cells:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        exec(compile("\n" * (first_line - 1) + code, path, "exec"), namespace)
    outputs.append(buffer.getvalue())
sys.__stdout__.write(json.dumps(outputs))
"""


@dataclass(frozen=True)
class Cell:
    """One step of a tutorial: Markdown prose, then code (either may be empty)."""

    prose: str
    code: str
    first_line: int  # 1-based line of ``code`` in the script, for tracebacks


@dataclass(frozen=True)
class Tutorial:
    path: Path
    title: str
    intro: str
    cells: list[Cell]

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def page(self) -> Path:
        return HERE / f"{self.name}.md"


def scripts() -> list[Path]:
    """Every tutorial script, in order."""
    return sorted(SCRIPTS.glob("[0-9][0-9]_*.py"))


def parse(path: Path) -> Tutorial:
    """Split a script into its title, introduction and cells."""
    source = path.read_text(encoding="utf-8")
    module = ast.parse(source)
    doc = ast.get_docstring(module, clean=True)
    if not doc or not isinstance(module.body[0], ast.Expr):
        raise ValueError(f"{path.name} must open with a docstring: its first line is the page title")
    title, _, intro = doc.partition("\n")
    lines = source.splitlines()
    body_start = module.body[0].end_lineno  # lines after the docstring (0-based index)

    chunks: list[tuple[int, list[str]]] = [(body_start, [])]
    for index in range(body_start, len(lines)):
        if CELL_MARK.match(lines[index]):
            chunks.append((index + 1, []))
        else:
            chunks[-1][1].append(lines[index])

    cells = []
    for start, chunk in chunks:
        prose_lines: list[str] = []
        i = 0
        while i < len(chunk) and chunk[i].startswith("#"):  # the comment lines right after "# %%"
            prose_lines.append(chunk[i][2:] if chunk[i].startswith("# ") else chunk[i][1:])
            i += 1
        code_lines = chunk[i:]
        lead = next((j for j, line in enumerate(code_lines) if line.strip()), len(code_lines))
        code = "\n".join(code_lines[lead:]).rstrip()
        prose = "\n".join(prose_lines).strip()
        if prose or code:
            cells.append(Cell(prose=prose, code=code, first_line=start + i + lead + 1))
    return Tutorial(path=path, title=title.strip(), intro=intro.strip(), cells=cells)


def subprocess_env() -> dict[str, str]:
    """Offline, CPU only, one thread, fixed hash seed: the same output on every run."""
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        CUDA_VISIBLE_DEVICES="",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        PYTHONHASHSEED="0",
        PYTHONIOENCODING="utf-8",
        TOKENIZERS_PARALLELISM="false",
    )
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def run(tutorial: Tutorial, python: str = sys.executable) -> list[str]:
    """Each cell's printed output, from one subprocess running the whole script."""
    cells = [(cell.first_line, cell.code) for cell in tutorial.cells]
    done = subprocess.run(
        [python, "-c", _CELL_RUNNER],
        input=json.dumps([str(tutorial.path), cells]),
        capture_output=True, text=True, encoding="utf-8", env=subprocess_env(), cwd=REPO, timeout=TIMEOUT_S,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{tutorial.path.name} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    outputs = json.loads(done.stdout)
    for cell, output in zip(tutorial.cells, outputs):
        if output and not output.endswith("\n"):
            raise ValueError(f"{tutorial.path.name}: the cell at line {cell.first_line} prints no final newline")
    return outputs


def fence(text: str, info: str) -> str:
    """A fenced block longer than any run of backticks inside ``text``."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    ticks = "`" * max(3, longest + 1)
    body = text if text.endswith("\n") else text + "\n"
    return f"{ticks}{info}\n{body}{ticks}"


def render(tutorial: Tutorial, outputs: list[str]) -> str:
    """The Markdown page of a tutorial, given each cell's output."""
    if len(outputs) != len(tutorial.cells):
        raise ValueError(f"{len(outputs)} outputs for {len(tutorial.cells)} cells of {tutorial.path.name}")
    script = tutorial.path.relative_to(HERE).as_posix()
    parts = [
        f"<!-- Generated by docs/tutorials/generate.py from {script}: edit the script, then regenerate. -->",
        f"# {tutorial.title}",
    ]
    if tutorial.intro:
        parts.append(tutorial.intro)
    parts.append(
        f"The whole script is [`{script}`]({script}); every output below was printed by running it "
        "(CPU, float32, fixed seeds)."
    )
    for cell, output in zip(tutorial.cells, outputs):
        if cell.prose:
            parts.append(cell.prose)
        if cell.code:
            parts.append(fence(cell.code, "python"))
        if output:
            parts.append(fence(output, OUTPUT_INFO))
    return "\n\n".join(parts) + "\n"


_OUTPUT_BLOCK = re.compile(r"^(?P<fence>`{3,})" + re.escape(OUTPUT_INFO) + r"\n(?P<body>.*?)^(?P=fence)$", re.M | re.S)


def recorded_outputs(page: str) -> list[str]:
    """The output blocks of a generated page, in order."""
    return [m.group("body") for m in _OUTPUT_BLOCK.finditer(page)]


def strip_outputs(page: str) -> str:
    """A generated page without its output blocks (what ``render`` gives for empty outputs)."""
    return re.sub(r"\n\n(`{3,})" + re.escape(OUTPUT_INFO) + r"\n.*?^\1$", "", page, flags=re.M | re.S)


def index_page(tutorials: list[Tutorial]) -> str:
    rows = "\n".join(f"{i + 1}. [{t.title}]({t.name}.md)" for i, t in enumerate(tutorials))
    return (
        "<!-- Generated by docs/tutorials/generate.py. -->\n"
        "# Tutorials\n\n"
        "Each tutorial is a runnable script in `docs/tutorials/scripts/`; its page shows the code and the "
        "output it printed when the page was generated. The first ones use the small offline model "
        "`tiny-english` (GPT-2's tokenizer and architecture, 4 layers, trained for minutes on Python's "
        "documentation); the attention and intervention tutorials use the hand-built `toy-induction` model, "
        "whose circuit is known. Neither needs a download.\n\n"
        f"{rows}\n\n"
        "Regenerate the pages after editing a script:\n\n"
        "```bash\npython docs/tutorials/generate.py          # all\n"
        "python docs/tutorials/generate.py 08       # one\n"
        "python docs/tutorials/generate.py --check  # fail if a page is out of date\n```\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("only", nargs="*", help="prefixes of the tutorials to regenerate (default: all)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a page would change")
    parser.add_argument("--python", default=sys.executable, help="the interpreter that runs the scripts")
    args = parser.parse_args(argv)

    tutorials = [parse(path) for path in scripts()]
    chosen = [t for t in tutorials if not args.only or any(t.name.startswith(p) for p in args.only)]
    if args.only and not chosen:
        parser.error(f"no tutorial starts with {args.only}; tutorials: {', '.join(t.name for t in tutorials)}")
    stale = []
    pages = [(t.page, lambda t=t: render(t, run(t, args.python))) for t in chosen]
    pages.append((HERE / "index.md", lambda: index_page(tutorials)))
    for page, make in pages:
        text = make()
        old = page.read_text(encoding="utf-8") if page.exists() else None
        if text == old:
            continue
        stale.append(page.name)
        if not args.check:
            page.write_text(text, encoding="utf-8")
        print(f"{'stale' if args.check else 'wrote'} {page.relative_to(REPO)}", flush=True)
    if args.check and stale:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
