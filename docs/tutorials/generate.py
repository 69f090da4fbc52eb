"""Turn the tutorial scripts into Markdown pages whose outputs come from running them.

Each ``scripts/NN_name.py`` is a plain Python script a reader can run. Its module
docstring gives the page title (first line) and introduction; lines ``# %%`` split it
into cells, and the comment lines right after a ``# %%`` are that cell's prose (Markdown;
an empty ``#`` line separates paragraphs, a blank line ends the prose).
This script runs every tutorial in its own subprocess (CPU only, offline, one thread,
fixed hash seed), captures each cell's printed output, and writes ``NN_name.md``:
prose, the cell's code, and its exact output in a fenced block.

A cell whose last line is a bare name (``figure``) shows that Plotly figure, as a notebook
would; a plain run of the script ignores the line. The page gets a placeholder there, and
the site build (``mkdocs_hook.py``) runs the scripts again and draws each figure in its
place, with plotly.js served from the site itself: the figures are always the code's
current output, and the site needs no network.

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

FIGURE_CLASS = "tutorial-figure"
# The placeholder a page holds where a figure goes; the site build replaces it (and a
# reader of the raw Markdown sees the sentence).
FIGURE_PLACEHOLDER = (
    '<div class="' + FIGURE_CLASS + '" data-figure="{key}">The figure is drawn here when the site is built '
    "(<code>mkdocs build</code>).</div>"
)
FIGURE_HEIGHT_PX = 450  # Plotly's default, for figures that set no height

# Runs in the subprocess: execute the cells of each script in its own namespace, as a
# plain run would, and report each cell's stdout, and each figure a cell shows as an HTML
# fragment (a div and the script that draws it; plotly.js itself is not included), as
# JSON on the real stdout.
_CELL_RUNNER = r"""
import contextlib, io, json, sys
jobs, draw = json.loads(sys.stdin.read())
results = []
for path, cells in jobs:
    namespace = {"__name__": "__main__", "__file__": path}
    outputs, figures = [], []
    for first_line, code, shows, key in cells:
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            exec(compile("\n" * (first_line - 1) + code, path, "exec"), namespace)
        outputs.append(buffer.getvalue())
        if shows and draw:
            import plotly.graph_objects as go
            import plotly.io as pio
            from gpt2probe.report.html import PLOTLY_CONFIG
            figure = namespace[shows]
            if not isinstance(figure, go.Figure):
                raise TypeError(f"{path}, line {first_line}: the cell ends with {shows!r}, which is a "
                                f"{type(figure).__name__}; a cell that ends with a bare name must show a plotly Figure")
            height = figure.layout.height or draw["height"]
            figure = go.Figure(figure).update_layout(width=None, autosize=True)  # the page's column sets the width
            figures.append(pio.to_html(figure, full_html=False, include_plotlyjs=False, include_mathjax=False,
                                       config=PLOTLY_CONFIG, div_id=key, default_height=f"{height}px"))
    results.append({"outputs": outputs, "figures": figures})
sys.__stdout__.write(json.dumps(results))
"""


@dataclass(frozen=True)
class Cell:
    """One step of a tutorial: Markdown prose, then code (either may be empty)."""

    prose: str
    code: str
    first_line: int  # 1-based line of ``code`` in the script, for tracebacks
    shows: str | None = None  # the bare name the cell ends with: the figure it shows


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

    def figure_keys(self) -> list[str | None]:
        """Per cell, the key of the figure it shows (``NN_name-figure-1``, ...) or None."""
        keys, count = [], 0
        for cell in self.cells:
            if cell.shows:
                count += 1
            keys.append(f"{self.name}-figure-{count}" if cell.shows else None)
        return keys


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
            cells.append(Cell(prose=prose, code=code, first_line=start + i + lead + 1, shows=shown_name(code)))
    return Tutorial(path=path, title=title.strip(), intro=intro.strip(), cells=cells)


def shown_name(code: str) -> str | None:
    """The bare name a cell's code ends with (the figure the cell shows), or None."""
    body = ast.parse(code).body if code else []
    last = body[-1] if body else None
    if isinstance(last, ast.Expr) and isinstance(last.value, ast.Name):
        return last.value.id
    return None


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


def _run_cells(tutorials: list[Tutorial], *, draw: bool, python: str = sys.executable) -> list[dict]:
    """Run the tutorials' cells in one subprocess; per tutorial its outputs (and figures)."""
    jobs = [
        (str(t.path), [(c.first_line, c.code, c.shows, key) for c, key in zip(t.cells, t.figure_keys())])
        for t in tutorials
    ]
    done = subprocess.run(
        [python, "-c", _CELL_RUNNER],
        input=json.dumps([jobs, {"height": FIGURE_HEIGHT_PX} if draw else None]),
        capture_output=True, text=True, encoding="utf-8", env=subprocess_env(), cwd=REPO, timeout=TIMEOUT_S,
    )
    if done.returncode != 0:
        names = ", ".join(t.path.name for t in tutorials)
        raise RuntimeError(f"{names}: failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout)


def run(tutorial: Tutorial, python: str = sys.executable) -> list[str]:
    """Each cell's printed output, from one subprocess running the whole script."""
    outputs = _run_cells([tutorial], draw=False, python=python)[0]["outputs"]
    for cell, output in zip(tutorial.cells, outputs):
        if output and not output.endswith("\n"):
            raise ValueError(f"{tutorial.path.name}: the cell at line {cell.first_line} prints no final newline")
    return outputs


def figures(tutorials: list[Tutorial], python: str = sys.executable) -> dict[str, str]:
    """Every figure the tutorials show, by key, as an HTML fragment; one subprocess runs them all."""
    drawn = {}
    for tutorial, result in zip(tutorials, _run_cells(tutorials, draw=True, python=python)):
        keys = [key for key in tutorial.figure_keys() if key]
        drawn.update(zip(keys, result["figures"], strict=True))
    return drawn


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
    parts = [  # the title first: MkDocs takes a page's title from a leading heading
        f"# {tutorial.title}",
        f"<!-- Generated by docs/tutorials/generate.py from {script}: edit the script, then regenerate. -->",
    ]
    if tutorial.intro:
        parts.append(tutorial.intro)
    parts.append(
        f"The whole script is [`{script}`]({script}); every output below was printed by running it "
        "(CPU, float32, fixed seeds)."
    )
    for cell, output, key in zip(tutorial.cells, outputs, tutorial.figure_keys()):
        if cell.prose:
            parts.append(cell.prose)
        if cell.code:
            parts.append(fence(cell.code, "python"))
        if output:
            parts.append(fence(output, OUTPUT_INFO))
        if key:
            parts.append(FIGURE_PLACEHOLDER.format(key=key))
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
        "# Tutorials\n\n"
        "<!-- Generated by docs/tutorials/generate.py. -->\n\n"
        "Each tutorial is a runnable script in `docs/tutorials/scripts/`; its page shows the code, the "
        "output it printed when the page was generated, and its figure, drawn by running the script when "
        "the site is built. Most use the small offline model `tiny-english` (GPT-2's tokenizer and "
        "architecture, 4 layers, trained for minutes on Python's documentation, docstrings and source code); "
        "tutorials 9 to 11 use the hand-built `toy-induction` model, whose circuit was set by hand and is known "
        "in advance, and [tutorial 15](15_induction_circuit.md) follows the copying circuit that "
        "`tiny-english` learned in training, and [tutorial 16](16_features.md) one feature of the sparse "
        "autoencoders that ship with it. Neither model needs a download.\n\n"
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
