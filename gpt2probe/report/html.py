"""Write figures into one HTML report that opens offline.

By default the report embeds plotly.js once, inline (one self-contained file, about 5 MB).
With ``plotlyjs="shared"`` it loads plotly.js from one file beside it instead
(``plotly-<version>.min.js``, written once per output folder and shared by every report
there), so a folder of reports holds the library once. Either way the page references
nothing on the network: its Content-Security-Policy forbids every network request, so a
stray URL cannot fetch anything either. A header states what produced it (model,
prompts, date, versions). The file is written atomically: an interrupted write leaves
the previous report (or none) in place, never half a report.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import plotly
import plotly.graph_objects as go
import plotly.io as pio

from ..atomic import atomic_path
from ..display.escape import escape_html
from ..display.tables import text_table
from ..errors import InvalidArgumentError, InvalidTypeError, ShapeError
from ..versions import versions

# Inline scripts and styles only; no request to any server (images and fonts from data: URLs).
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                           "img-src data: blob:; font-src data:")
# With a shared plotly.js the page may also load scripts from local files (never from a server).
SHARED_CONTENT_SECURITY_POLICY = CONTENT_SECURITY_POLICY.replace("script-src 'unsafe-inline'",
                                                                 "script-src 'unsafe-inline' 'self' file:")

# typesetMath off: a token like "$x$" must never become LaTeX, even where MathJax is loaded.
# displayModeBar "hover": the toolbar appears only while the pointer is over a figure, so it
# never covers a title or a score in a figure being read.
PLOTLY_CONFIG = {"typesetMath": False, "displaylogo": False, "responsive": True, "displayModeBar": "hover"}

PLOTLYJS_CHOICES = ("inline", "shared")


def shared_plotlyjs_name() -> str:
    """The file name of the shared plotly.js written beside reports (versioned, so reports of two versions can share a folder)."""
    return f"plotly-{plotly.__version__}.min.js"


def write_shared_plotlyjs(folder: Path) -> Path:
    """Write plotly.js into ``folder`` once (atomically; an existing identical copy is kept). Returns its path."""
    from plotly.offline import get_plotlyjs

    target = folder / shared_plotlyjs_name()
    source = get_plotlyjs()
    if target.is_file() and target.stat().st_size == len(source.encode("utf-8")):
        return target
    with atomic_path(target) as tmp:
        tmp.write_text(source, encoding="utf-8")
    return target


def page_layout(fig: go.Figure) -> go.Figure:
    """A copy of ``fig`` laid out at the page's width (responsive), keeping its height.

    Figures set a width that suits a notebook; on a report page every figure fills the
    page's column instead, so that no figure is a narrow strip beside empty space.
    """
    fig = go.Figure(fig)
    fig.update_layout(width=None, autosize=True)
    return fig

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem auto; max-width: 1400px; padding: 0 1rem; color: #222; }
header dl { display: grid; grid-template-columns: max-content 1fr; gap: .3rem 1rem; }
header dt { font-weight: 600; }
header dd { margin: 0; }
pre.prompt { white-space: pre-wrap; margin: 0 0 .3rem; padding: .2rem .4rem; background: #f4f4f4; }
.note { border-left: 4px solid #d9a400; background: #fff8e1; padding: .5rem 1rem; margin: 1rem 0; }
section.figure { margin: 2rem 0; }
nav.contents ol { columns: 2; margin: .3rem 0; }
table.text-table { border-collapse: collapse; width: 100%; table-layout: fixed; }
table.text-table caption { text-align: left; font-weight: 600; padding: .3rem 0; }
table.text-table th, table.text-table td { border: 1px solid #ccc; padding: .3rem .5rem; text-align: left;
  vertical-align: top; overflow-wrap: anywhere; }
table.text-table td.literal { white-space: pre-wrap; font-family: ui-monospace, monospace; }
"""


@dataclass(frozen=True)
class Table:
    """A report's table of plain-text cells, wrapped and never cut. ``literal`` columns keep whitespace and line breaks."""

    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: str = ""
    literal: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for i, row in enumerate(self.rows):
            if len(row) != len(self.columns):
                raise ShapeError(f"row {i} has {len(row)} cells but the table has {len(self.columns)} columns")

    @classmethod
    def of(cls, columns: Sequence[str], rows: Sequence[Sequence[object]], caption: str = "",
           literal: Sequence[int] = ()) -> Table:
        """Build from any sequences; cells are converted with ``str``."""
        return cls(tuple(columns), tuple(tuple(str(c) for c in row) for row in rows), caption, tuple(literal))

    def to_html(self) -> str:
        """The table as an HTML fragment (styles come with the report page)."""
        return text_table(self.columns, self.rows, caption=self.caption, literal=self.literal)


def _esc(value: object) -> str:
    return escape_html(value)


def _as_list(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def _header(title: str, model_name: str, prompts: list[str], notes: list[str],
            metadata: Mapping[str, object]) -> str:
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    tools = {**versions(), "plotly": plotly.__version__}
    rows = [
        ("Model", f"<code>{_esc(model_name)}</code>"),
        ("Prompt" if len(prompts) == 1 else f"Prompts ({len(prompts)})",
         "".join(f'<pre class="prompt">{escape_html(p, multiline=True)}</pre>' for p in prompts) or "<em>none</em>"),
        ("Created", f"<time>{_esc(created)}</time>"),
        ("Versions", ", ".join(f"{_esc(name)} {_esc(version)}" for name, version in tools.items())),
        *((_esc(key), _esc(value)) for key, value in metadata.items()),
    ]
    items = "\n".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in rows)
    notes_html = "\n".join(f'<div class="note" role="note">{_esc(note)}</div>' for note in notes)
    return f"<header>\n<h1>{_esc(title)}</h1>\n<dl>\n{items}\n</dl>\n{notes_html}\n</header>\n"


def _contents(sections: Sequence[tuple[str | None, object]]) -> str:
    headed = [(i, heading) for i, (heading, _) in enumerate(sections) if heading is not None]
    if len(headed) <= 3:
        return ""
    items = "\n".join(f'<li><a href="#section-{i}">{_esc(heading)}</a></li>' for i, heading in headed)
    return f'<nav class="contents" aria-label="Contents"><strong>Contents</strong>\n<ol>\n{items}\n</ol>\n</nav>\n'


def write_html(
    path: str | os.PathLike,
    figures: Sequence[go.Figure | Table] | Mapping[str, go.Figure | Table],
    *,
    title: str,
    model_name: str,
    prompts: str | Sequence[str],
    notes: str | Sequence[str] | None = None,
    metadata: Mapping[str, object] | None = None,
    plotlyjs: str = "inline",
) -> Path:
    """Write ``figures`` (a list, or a dict of section heading -> figure) to one HTML file.

    A figure is a Plotly figure or a :class:`~gpt2probe.report.Table` of text.
    ``notes`` (a string or several) are shown under the header, e.g. a warning that the
    model is a small offline one. With more than three headed sections the page opens
    with a contents list. Every figure is laid out at the page's width. ``plotlyjs`` is
    ``"inline"`` (one self-contained file) or ``"shared"`` (plotly.js written once beside the
    report and loaded from there; copy the two files together). Returns the path written.
    """
    if plotlyjs not in PLOTLYJS_CHOICES:
        raise InvalidArgumentError(f"plotlyjs={plotlyjs!r}; valid: {', '.join(map(repr, PLOTLYJS_CHOICES))}")
    sections: list[tuple[str | None, go.Figure | Table]] = (
        list(figures.items()) if isinstance(figures, Mapping) else [(None, fig) for fig in figures])
    for heading, fig in sections:
        if not isinstance(fig, (go.Figure, Table)):
            where = f"figure {heading!r}" if heading is not None else "a figure"
            raise InvalidTypeError(f"{where} is a {type(fig).__name__}; expected a plotly.graph_objects.Figure "
                                   "or a gpt2probe.report.Table")
    target = Path(path)
    shared = plotlyjs == "shared"
    if shared:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_shared_plotlyjs(target.parent)
    policy = SHARED_CONTENT_SECURITY_POLICY if shared else CONTENT_SECURITY_POLICY
    with atomic_path(target) as tmp, open(tmp, "w", encoding="utf-8") as out:
        out.write(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f'<meta http-equiv="Content-Security-Policy" content="{policy}">\n'
            f"<title>{_esc(title)}</title>\n<style>{STYLE}</style>\n"
        )
        if shared:
            out.write(f'<script src="{_esc(shared_plotlyjs_name())}"></script>\n')
        out.write("</head>\n<body>\n")
        out.write(_header(title, model_name, _as_list(prompts), _as_list(notes), metadata or {}))
        out.write(_contents(sections))
        out.write("<main>\n")
        plotly_included = False
        for i, (heading, fig) in enumerate(sections):
            out.write(f'<section class="figure" id="section-{i}">\n')
            if heading is not None:
                out.write(f"<h2>{_esc(heading)}</h2>\n")
            if isinstance(fig, Table):
                out.write(fig.to_html())
            else:  # plotly.js goes inline with the first figure only; the others reuse it.
                out.write(pio.to_html(page_layout(fig), full_html=False,
                                      include_plotlyjs=not (plotly_included or shared),
                                      include_mathjax=False, config=PLOTLY_CONFIG, div_id=f"figure-{i}"))
                plotly_included = True
            out.write("\n</section>\n")
        out.write("</main>\n</body>\n</html>\n")
    return target
