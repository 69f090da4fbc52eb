"""MkDocs hook: draw each tutorial's figures at build time, offline.

A generated tutorial page holds a placeholder where a cell shows a figure (see
``generate.py``). At build time this hook runs every tutorial script once (one
subprocess, offline, CPU), gets each figure as an HTML fragment, and puts it in place
of its placeholder in the built page. plotly.js is served from the site itself
(``assets/javascripts/plotly.min.js``, copied from the installed plotly package, never a
CDN) and linked by a relative URL, so the pages also work when opened from disk.

The figures are never committed: they are the scripts' output at the time of the build.
A script that fails, a figure that is not a Plotly figure, or a placeholder without its
figure fails the build.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import sys
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files
from mkdocs.utils import get_relative_url

HERE = Path(__file__).resolve().parent
PLOTLY_JS = "assets/javascripts/plotly.min.js"


def _load_generator():
    name = "docs_tutorials_generate"
    if name not in sys.modules:  # the docs test may have loaded it already
        spec = importlib.util.spec_from_file_location(name, HERE / "generate.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses resolve annotations through sys.modules
        spec.loader.exec_module(module)
    return sys.modules[name]


generate = _load_generator()
_PLACEHOLDER = re.compile(
    r'<div class="' + re.escape(generate.FIGURE_CLASS) + r'" data-figure="(?P<key>[\w.-]+)">.*?</div>', re.S
)
# Figures of the last build, keyed by a hash of the scripts: ``mkdocs serve`` reruns them
# when a script changes (restart it after changing the library).
_drawn: dict[str, dict[str, str]] = {}
_current: dict[str, str] = {}


def _plotly_js() -> Path:
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise PluginError(f"plotly.min.js is not in the installed plotly package ({path}); reinstall plotly")
    return path


def on_config(config):
    """Keep the site offline: drop the polyfill Material's offline plugin would load from a CDN."""
    polyfills = config.extra.get("polyfills") or []
    config.extra["polyfills"] = [url for url in polyfills if not str(url).startswith(("https://", "http://", "//"))]
    return config


def on_pre_build(config) -> None:
    """Run every tutorial script once and keep the figures they show."""
    tutorials = [generate.parse(path) for path in generate.scripts()]
    digest = hashlib.sha256(b"".join(t.path.read_bytes() for t in tutorials)).hexdigest()
    if digest not in _drawn:
        try:
            _drawn.clear()
            _drawn[digest] = generate.figures(tutorials)
        except (RuntimeError, ValueError) as error:
            raise PluginError(f"drawing the tutorials' figures failed: {error}") from None
    _current.clear()
    _current.update(_drawn[digest])


def on_files(files: Files, config) -> Files:
    """Serve plotly.js from the site."""
    files.append(File.generated(config, PLOTLY_JS, abs_src_path=str(_plotly_js())))
    return files


def on_post_page(output: str, page, config) -> str:
    """Replace each figure placeholder of a page with its figure (after the search index has read the page)."""
    keys = _PLACEHOLDER.findall(output)
    if not keys:
        return output
    missing = [key for key in keys if key not in _current]
    if missing:
        raise PluginError(f"{page.file.src_uri}: no figure was drawn for {missing}; regenerate the page with "
                          "python docs/tutorials/generate.py")
    plotly_url = get_relative_url(PLOTLY_JS, page.url)  # relative: works from disk, without a server
    first = True

    def figure(match: re.Match) -> str:
        nonlocal first
        script = f'<script src="{plotly_url}"></script>\n' if first else ""
        first = False
        return f'{script}<figure class="{generate.FIGURE_CLASS}">\n{_current[match["key"]]}\n</figure>'

    return _PLACEHOLDER.sub(figure, output)
