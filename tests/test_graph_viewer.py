"""The offline graph page: escaped tokens, no network, and it draws and answers clicks in Chromium."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
from graph_helpers import random_transcoders

from gpt2probe.graphs import attribution_graph
from gpt2probe.graphs.viewer import write_graph_html

from models import SMALL, random_ids

NASTY = ["</script><b>x", " &amp;", "$x$", "\u200b", "\n", "<!--", "ok", "\"q\""]


@pytest.fixture(scope="module")
def page(small_probe, tmp_path_factory):
    tcs = random_transcoders(SMALL.n_layer, SMALL.n_embd, 37, seed=5, skip=True)
    graph = attribution_graph(small_probe, random_ids(SMALL, 1, len(NASTY), seed=9)[0], transcoders=tcs)
    graph = dataclasses.replace(graph, str_tokens=list(NASTY))
    return write_graph_html(graph, tmp_path_factory.mktemp("viewer") / "graph.html"), graph


def test_page_embeds_the_graph_safely(page):
    path, graph = page
    html = path.read_text()
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "") and "https://" not in html
    block = re.search(r'<script type="application/json" id="graph-data">(.*?)</script>', html, re.S).group(1)
    assert "<" not in block and ">" not in block
    document = json.loads(block)
    assert document["metadata"]["prompt_tokens"] == NASTY
    assert html.count("</script>") == 2


def test_page_draws_in_chromium(page):
    browser = pytest.importorskip("browser")
    if not browser.chromium_available():
        pytest.skip("chromium is not installed")
    path, graph = page
    ready = "document.body && document.body.dataset.ready === '1'"
    with browser.open_page(path, offline=True, wait_for=ready, timeout=60) as opened:
        assert opened.errors == []
        n_nodes = opened.evaluate("document.querySelectorAll('circle').length")
        assert n_nodes == opened.evaluate("graphViewer.nodes.length") > graph.n_pos
        labels = opened.evaluate("Array.from(document.querySelectorAll('text.tok')).map(t => t.textContent)")
        assert labels == [json.dumps(t, ensure_ascii=False) for t in NASTY]
        logit_id = opened.evaluate("graphViewer.nodes.find(n => n.feature_type === 'logit').node_id")
        opened.evaluate(f"graphViewer.show({json.dumps(logit_id)})")
        rows = opened.evaluate("document.querySelectorAll('#panel tr').length")
        assert rows > 0
        assert opened.errors == []
