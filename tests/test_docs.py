"""The documentation cannot drift from the code.

Every tutorial script runs (offline, on the CPU, in one subprocess) and must print exactly
the output recorded in its generated page; each page's prose and code must be the
script's, and each tutorial shows a figure; the Python blocks of every other page run;
every code block of the README and the docs is either run by a test or marked as not run,
with the reason shown to the reader; and the site must build with ``mkdocs build --strict``,
with every tutorial's figures drawn, plotly.js served from the site and every link
resolving on disk. After editing a script, regenerate its page with
``python docs/tutorials/generate.py NN``.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from browser import chromium_available, open_page

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
TIMEOUT_S = 600


def _load_generator():
    spec = importlib.util.spec_from_file_location("docs_tutorials_generate", DOCS / "tutorials" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


generate = _load_generator()
SCRIPTS = generate.scripts()
GENERATED = {f"tutorials/{path.stem}.md" for path in SCRIPTS}  # their code is the scripts', run as scripts
# A fenced block: its info string (language, then options such as title="...") and body.
_FENCE = re.compile(r"^(?P<fence>`{3,})(?P<info>[^`\n]*)\n(?P<body>.*?)^(?P=fence)[ \t]*$", re.M | re.S)
# How a page says a Python block is not run (a title the reader sees above the block).
NOT_RUN = re.compile(r'^python title="Not run by the tests: [^"]{10,}"$')
# Blocks that are not Python: shell commands, and text (outputs, tables of numbers).
NOT_PYTHON = {"bash", "text"}


def python_blocks(page: str) -> str:
    """The ```python blocks of a Markdown page (not those marked as not run), joined into one program."""
    return "\n\n".join(m["body"] for m in _FENCE.finditer(page) if m["info"].strip() == "python")


def _doc_pages() -> list[str]:
    return sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))


# Every page with Python blocks, but the generated tutorials (their scripts run instead).
CODE_PAGES = [name for name in _doc_pages()
              if name not in GENERATED and python_blocks((DOCS / name).read_text(encoding="utf-8")).strip()]

# Runs in one subprocess (one import of torch for all): each tutorial as a reader would run
# it (``runpy``, as ``__main__``), then the code blocks of each page; reports stdout or the error.
_RUNNER = r"""
import contextlib, io, json, runpy, sys, traceback
results = {}
for key, kind, payload in json.loads(sys.stdin.read()):
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            if kind == "script":
                runpy.run_path(payload, run_name="__main__")
            else:
                exec(compile(payload, key, "exec"), {"__name__": "__main__"})
        results[key] = {"stdout": buffer.getvalue()}
    except BaseException:
        results[key] = {"stdout": buffer.getvalue(), "error": traceback.format_exc()}
sys.__stdout__.write(json.dumps(results))
"""


# A number as printed: optional sign, digits with an optional fraction, optional exponent.
_NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")
# Printed floats may differ in their last digits between CPUs (AVX-512, AVX2, the default
# kernels): a relative tolerance, or one unit in the last printed place, whichever is larger.
FLOAT_RTOL = 1e-3


def _same_number(recorded: str, printed: str) -> bool:
    if recorded == printed:
        return True
    if not any(c in recorded + printed for c in ".eE"):
        return False  # integers (ids, counts, ranks) must be equal
    a, b = float(recorded), float(printed)
    mantissa = re.split(r"[eE]", recorded)[0]
    places = len(mantissa.partition(".")[2])
    exponent = int(re.split(r"[eE]", recorded)[1]) if re.search(r"[eE]", recorded) else 0
    last_place = 10.0 ** (exponent - places)
    return abs(a - b) <= max(FLOAT_RTOL * max(abs(a), abs(b)), last_place * 1.000001)


def same_text_up_to_float_digits(recorded: str, printed: str) -> bool:
    """True when two outputs have the same text, and numbers equal up to their last digits."""
    if _NUMBER.sub("#", recorded) != _NUMBER.sub("#", printed):
        return False
    return all(_same_number(a, b) for a, b in zip(_NUMBER.findall(recorded), _NUMBER.findall(printed)))


@pytest.fixture(scope="module")
def runs() -> dict[str, dict[str, str]]:
    jobs = [(path.name, "script", str(path)) for path in SCRIPTS]
    jobs += [(name, "code", python_blocks((DOCS / name).read_text(encoding="utf-8"))) for name in CODE_PAGES]
    done = subprocess.run(
        [sys.executable, "-c", _RUNNER], input=json.dumps(jobs), capture_output=True, text=True,
        encoding="utf-8", env=generate.subprocess_env(), cwd=REPO, timeout=TIMEOUT_S,
    )
    assert done.returncode == 0, f"the runner failed:\n{done.stderr[-4000:]}"
    return json.loads(done.stdout)


def _check_ran(runs: dict, key: str) -> str:
    result = runs[key]
    if "error" in result:
        pytest.fail(f"{key} raised:\n{result['error']}")
    return result["stdout"]


def test_there_are_tutorials():
    assert len(SCRIPTS) >= 10, [p.name for p in SCRIPTS]
    assert [p.name[:2] for p in SCRIPTS] == [f"{i:02d}" for i in range(1, len(SCRIPTS) + 1)], "numbered 01, 02, ... without gaps"


@pytest.mark.parametrize(
    ("recorded", "printed", "same"),
    [
        ("p = 0.1189", "p = 0.1189", True),
        ("p = 0.1189", "p = 0.1188", True),  # last digit, another CPU
        ("loss 3.2041 nats", "loss 3.2049 nats", True),  # within 0.1 %
        ("1.5e-07", "1.6e-07", True),
        ("p = 0.1189", "p = 0.1289", False),
        ("id 198", "id 199", False),  # integers are exact
        ("rank 1: ' the'", "rank 1: ' a'", False),  # the text is exact
        ("p = 0.1189", "p = 0.1189 0.2", False),
    ],
)
def test_output_comparison_tolerates_only_last_digits(recorded, printed, same):
    assert same_text_up_to_float_digits(recorded, printed) is same


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_tutorial_output_is_the_scripts_output(script: Path, runs):
    printed = _check_ran(runs, script.name)
    page = script.parent.parent / f"{script.stem}.md"
    assert page.is_file(), f"{page.name} is missing: run python docs/tutorials/generate.py {script.stem[:2]}"
    recorded = "".join(generate.recorded_outputs(page.read_text(encoding="utf-8")))
    assert printed.strip(), f"{script.name} printed nothing"
    if not same_text_up_to_float_digits(recorded, printed):
        diff = "\n".join(difflib.unified_diff(recorded.splitlines(), printed.splitlines(), "recorded in the page",
                                              "printed now", lineterm="", n=1))
        pytest.fail(f"{page.name} is out of date; run python docs/tutorials/generate.py {script.stem[:2]}\n{diff}")


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_tutorial_page_shows_the_scripts_prose_and_code(script: Path):
    tutorial = generate.parse(script)
    page = tutorial.page.read_text(encoding="utf-8")
    without_outputs = generate.strip_outputs(page)
    expected = generate.render(tutorial, [""] * len(tutorial.cells))
    assert without_outputs == expected, (
        f"{tutorial.page.name} does not match {script.name}; run python docs/tutorials/generate.py {script.stem[:2]}"
    )


def test_every_tutorial_is_indexed_and_in_the_navigation():
    tutorials = [generate.parse(path) for path in SCRIPTS]
    index = (DOCS / "tutorials" / "index.md").read_text(encoding="utf-8")
    assert index == generate.index_page(tutorials), "run python docs/tutorials/generate.py to update the index"
    nav = (REPO / "mkdocs.yml").read_text(encoding="utf-8")
    for tutorial in tutorials:
        assert f"tutorials/{tutorial.name}.md" in nav, f"add tutorials/{tutorial.name}.md to the nav in mkdocs.yml"
    stray = sorted({p.stem for p in (DOCS / "tutorials").glob("[0-9][0-9]_*.md")} - {t.name for t in tutorials})
    assert not stray, f"pages without a script: {stray}"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_every_tutorial_shows_a_figure(script: Path):
    tutorial = generate.parse(script)
    assert any(cell.shows for cell in tutorial.cells), (
        f"{script.name} shows no figure: end a cell with a bare name bound to a plotly Figure (`figure`)"
    )
    page = tutorial.page.read_text(encoding="utf-8")
    for key in filter(None, tutorial.figure_keys()):
        assert generate.FIGURE_PLACEHOLDER.format(key=key) in page, f"run python docs/tutorials/generate.py {script.stem[:2]}"


def test_the_code_pages_include_the_front_page_and_getting_started():
    assert {"index.md", "getting-started.md", "tuned-lens.md", "attribution-patching.md"} <= set(CODE_PAGES), CODE_PAGES


@pytest.mark.parametrize("page", CODE_PAGES)
def test_code_on_the_page_runs(page: str, runs):
    _check_ran(runs, page)


PAGES_WITH_OUTPUT = ["attribution-patching.md"]
"""Pages whose ```text blocks show what their Python blocks print: every printed line must be shown."""


def printed_lines_not_shown(printed: str, page: str) -> list[str]:
    """The lines of ``printed`` that no ```text block of ``page`` shows (numbers compared up to their last digits)."""
    shown = [line for m in _FENCE.finditer(page) if m["info"].strip() == "text" for line in m["body"].splitlines()]
    return [line for line in printed.splitlines()
            if line.strip() and not any(same_text_up_to_float_digits(s, line) for s in shown)]


def test_printed_lines_are_found_on_a_page_up_to_float_digits():
    page = "```python\nprint(x)\n```\n\n```text\ngap +18.37\nL3H0 +0.54\n```\n"
    assert printed_lines_not_shown("gap +18.37\nL3H0 +0.54\n", page) == []
    assert printed_lines_not_shown("gap +18.38\n", page) == []  # the last digit, another CPU
    assert printed_lines_not_shown("gap +0.03\nL3H2 +0.54\n", page) == ["gap +0.03", "L3H2 +0.54"]


@pytest.mark.parametrize("page", PAGES_WITH_OUTPUT)
def test_what_the_code_prints_is_what_the_page_shows(page: str, runs):
    printed = _check_ran(runs, page)
    missing = printed_lines_not_shown(printed, (DOCS / page).read_text(encoding="utf-8"))
    assert printed.strip() and not missing, f"{page} does not show these printed lines (re-run its code):\n" + "\n".join(missing)


def test_every_code_block_is_run_or_marked_as_not_run():
    """A ```python block runs (here, or as a tutorial script, or in test_readme.py) unless its
    title tells the reader it is not run and why; other blocks must say they are shell or text."""
    unmarked = []
    for name in ["README.md", *(f"docs/{page}" for page in _doc_pages())]:
        text = (REPO / name).read_text(encoding="utf-8")
        for block in _FENCE.finditer(text):
            info = block["info"].strip()
            line = text[: block.start()].count("\n") + 1
            if info == "python" or NOT_RUN.match(info) or info.split(" ")[0] in NOT_PYTHON:
                continue
            unmarked.append(f"{name}:{line}: ```{info}")
    assert not unmarked, (
        "code blocks that are neither run nor marked; use ```python (run by tests/test_docs.py or "
        "tests/test_readme.py), ```python title=\"Not run by the tests: <why>\", ```bash or ```text:\n"
        + "\n".join(unmarked)
    )


def _install_block(text: str) -> str:
    blocks = [m["body"] for m in _FENCE.finditer(text[text.index("## Install"):]) if m["info"].strip() == "bash"]
    return blocks[0]


def test_the_docs_install_the_way_the_readme_does():
    readme = _install_block((REPO / "README.md").read_text(encoding="utf-8"))
    docs = _install_block((DOCS / "index.md").read_text(encoding="utf-8"))
    assert docs == readme, "docs/index.md's install commands differ from the README's"
    torch_first = readme.index("pip install torch==")
    assert torch_first < readme.index("pip install -e"), "torch (CPU build) must be installed before gpt2probe"
    setup = (REPO / "scripts" / "setup.sh").read_text(encoding="utf-8")
    pinned = re.search(r"pip install (torch==[\d.]+)", readme)[1]
    assert f'TORCH_REQUIREMENT:-{pinned}' in setup, "the README pins another torch than scripts/setup.sh installs"


def _missing_doc_tools() -> list[str]:
    needed = {"mkdocs": "mkdocs", "material": "mkdocs-material", "mkdocstrings": "mkdocstrings",
              "mkdocstrings_handlers.python": "mkdocstrings-python"}
    missing = []
    for module, package in needed.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            missing.append(package)
    return missing


def test_site_builds_strictly(tmp_path):
    missing = _missing_doc_tools()
    if missing:
        pytest.skip(f"the docs tools are not installed ({', '.join(missing)}): pip install -e '.[docs]'")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=TIMEOUT_S,
    )
    problems = [line for line in done.stderr.splitlines() if "WARNING" in line or "ERROR" in line]
    assert done.returncode == 0, "mkdocs build --strict failed:\n" + "\n".join(problems or [done.stderr[-4000:]])
    site = tmp_path / "site"
    for page in ("index.html", "concepts.html", "gpt2-traps.html", "api/probe.html", "tutorials/08_logit_lens.html"):
        assert (site / page).is_file(), page
    api = (site / "api" / "probe.html").read_text(encoding="utf-8")
    assert 'id="gpt2probe.GPT2Probe.run_with_cache"' in api, "mkdocstrings rendered no API reference"
    _check_figures(site)
    _check_links_resolve_on_disk(site)
    if chromium_available():  # opened from disk, offline, in a real browser
        for page in ("index.html", "tutorials/09_attention.html", "tutorials/14_attention_from_scratch.html"):
            has_figure = page.startswith("tutorials/")
            with open_page(site / page, offline=True, **({} if has_figure else {"wait_for": None})) as opened:
                assert not opened.errors, (page, opened.errors)
                outside = [url for url in opened.requests if not url.startswith(("file:", "data:"))]
                assert not outside, (page, outside)
                drawn = opened.evaluate("document.querySelectorAll('.js-plotly-plot .main-svg').length")
                assert (drawn > 0) == has_figure, (page, drawn)


def _check_figures(site: Path) -> None:
    """Each tutorial page holds its figures, drawn with the site's own plotly.js."""
    assert (site / "assets" / "javascripts" / "plotly.min.js").stat().st_size > 1_000_000, "plotly.js is not in the site"
    for script in SCRIPTS:
        tutorial = generate.parse(script)
        html = (site / "tutorials" / f"{tutorial.name}.html").read_text(encoding="utf-8")
        keys = [key for key in tutorial.figure_keys() if key]
        assert "The figure is drawn here when the site is built" not in html, f"{tutorial.name}: a placeholder is left"
        assert html.count(f'<figure class="{generate.FIGURE_CLASS}">') == len(keys), tutorial.name
        for key in keys:
            assert re.search(rf'<div id="{re.escape(key)}"', html) and "Plotly.newPlot" in html, (tutorial.name, key)
        assert html.count('<script src="../assets/javascripts/plotly.min.js"></script>') == 1, tutorial.name
    for page in site.rglob("*.html"):
        assert "cdn.plot.ly" not in page.read_text(encoding="utf-8"), f"{page.name} loads plotly.js from a CDN"


class _LinkParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.links += [value for name, value in attrs if name in ("href", "src") and value]


def _links(html: str) -> list[str]:
    """The href and src attributes of a page's tags, without their #fragment or ?query."""
    parser = _LinkParser()
    parser.feed(html)
    return [target for link in parser.links if (target := re.split(r"[#?]", link)[0])]


def _check_links_resolve_on_disk(site: Path) -> None:
    """Opened from disk (file://), every relative link and source of every page must be a file of the site."""
    broken = []
    for page in site.rglob("*.html"):
        if page.name == "404.html":
            continue  # served by a web server for a missing URL: its links are absolute by design
        for target in _links(page.read_text(encoding="utf-8")):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("//"):
                continue  # external (the site's own pages link nowhere else but the project's home)
            if not (page.parent / target).resolve().is_file():
                broken.append(f"{page.relative_to(site)} -> {target}")
    assert not broken, "links that do not resolve to a file on disk:\n" + "\n".join(broken[:20])
