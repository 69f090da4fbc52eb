"""Results in a notebook: a short ``repr`` and a compact ``_repr_html_`` table with every string escaped."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
import torch

import gpt2probe
from gpt2probe.generation import generate, next_token
from gpt2probe.interventions import patching

HOSTILE = "a <script>alert(1)</script> &amp; $x$ b"  # markup, an entity and MathJax in one prompt
ALLOWED_TAGS = {"style", "div", "table", "caption", "thead", "tbody", "tr", "th", "td", "code"}


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        self._in_style = False

    def handle_data(self, data):
        if not self._in_style:
            self.text.append(data)


def parse(page: str) -> _Collect:
    parser = _Collect()
    parser.feed(page)
    parser.close()
    return parser


def check_html(page: str) -> str:
    """The table's visible text, after checking that it has table markup only."""
    parsed = parse(page)
    assert set(parsed.tags) <= ALLOWED_TAGS, set(parsed.tags) - ALLOWED_TAGS
    assert "table" in parsed.tags
    return "".join(parsed.text)


@pytest.fixture(scope="module")
def results(vocab_probe):
    probe = vocab_probe
    lens = gpt2probe.logit_lens(probe, [HOSTILE, "The cat sat on the"], targets=" mat")
    cache = probe.run_with_cache(HOSTILE, names=["blocks.*.attn.hook_pattern", "hook_embed"])[1]
    return {
        "LensResult": lens,
        "PromptLens": lens[0],
        "NextTokens": next_token(probe, [HOSTILE, "x"], 4),
        "Generation": generate(probe, [HOSTILE, "x"], 3, greedy=True),
        "Attribution": gpt2probe.direct_logit_attribution(probe, HOSTILE, " mat", baseline=" <"),
        "PatchingResult": patching.patch(probe, HOSTILE, "a <style>alert(2)</style> &amp; $y$ b", answer=" mat", wrong=" <"),
        "ActivationCache": cache,
        "PromptTest": probe.test_prompt(HOSTILE, "<b>", print_details=False),
    }


NAMES = ["LensResult", "PromptLens", "NextTokens", "Generation", "Attribution", "PatchingResult", "ActivationCache", "PromptTest"]


@pytest.mark.parametrize("name", NAMES)
def test_repr_fits_in_a_few_lines(results, name):
    text = repr(results[name])
    assert type(results[name]).__name__ in text
    assert len(text.splitlines()) <= 6, text
    assert "tensor(" not in text


@pytest.mark.parametrize("name", NAMES)
def test_html_is_a_table_with_everything_escaped(results, name):
    page = results[name]._repr_html_()
    check_html(page)
    assert "<script" not in page and "<style>alert" not in page and "<b>" not in page
    assert "$x$" not in page  # MathJax in a notebook would typeset it
    assert len(page) < 60_000


def test_lens_tables_show_the_numbers(results):
    lens = results["PromptLens"]
    visible = check_html(lens._repr_html_())
    for label in lens.stream_labels:
        assert label in visible
    token, prob = lens.top1()
    assert f"{prob:.4g}" in visible
    assert "target rank" in visible


def test_cache_table_lists_names_and_shapes(results, vocab_probe):
    cache = results["ActivationCache"]
    visible = check_html(cache._repr_html_())
    for name, tensor in cache.items():
        assert name in visible and str(list(tensor.shape)) in visible


def test_tokens_show_literally(results):
    """A token ``" <"`` reads as ␣&lt; in the markup, so the browser shows ␣<, never a tag."""
    visible = check_html(results["NextTokens"]._repr_html_())
    for token in results["NextTokens"].tokens[0]:
        shown = token.replace(" ", "␣").replace("\n", "↵")
        assert shown in visible, (token, visible)


def test_patching_and_attribution_tables(results):
    result = results["PatchingResult"]
    visible = check_html(result._repr_html_())
    (cell, value), = result.largest(1)
    flat = result.values.flatten()
    assert value == float(flat.max())
    assert f"{value:.4g}" in visible
    attribution = results["Attribution"]
    label, value = attribution.largest(1)[0]
    assert abs(value) == float(attribution.values.abs().max())
    assert label in check_html(attribution._repr_html_())


def test_long_inputs_stay_short(vocab_probe):
    ids = torch.randint(0, 1000, (1, 20))
    lens = gpt2probe.logit_lens(vocab_probe, ids)
    assert len(repr(lens).splitlines()) == 1 and len(repr(lens[0]).splitlines()) == 1


SHOW_WITHOUT_PLOTLY = """
import sys
import gpt2probe
from gpt2probe.generation import generate, next_token
from gpt2probe.interventions import patching

probe = gpt2probe.load(sys.argv[1], device="cpu")
lens = gpt2probe.logit_lens(probe, ["a <b> c", "The cat sat on the"], targets=" mat")
shown = [
    lens, lens[0], probe.run_with_cache("a <b> c", names=["hook_embed"])[1],
    next_token(probe, ["a <b> c"], 3), generate(probe, ["a"], 2, greedy=True),
    gpt2probe.direct_logit_attribution(probe, "a <b> c", " mat", baseline=" <"),
    patching.patch(probe, "a <b> c", "a <i> c", answer=" mat", wrong=" <"),
    probe.test_prompt("a <b> c", " d", print_details=False),
]
pages = [result._repr_html_() for result in shown]
assert all("<table" in page for page in pages)
loaded = sorted(m for m in sys.modules if m.split(".")[0] == "plotly" or m.startswith("gpt2probe.report"))
print("LOADED", loaded)
"""


def test_showing_results_loads_no_plotly_and_no_report(vocab_dir):
    """A notebook showing a LensResult (or any result) imports neither Plotly nor the report's figure modules."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", SHOW_WITHOUT_PLOTLY, str(vocab_dir)], capture_output=True, text=True,
                          timeout=300)  # offline: conftest set HF_HUB_OFFLINE in the environment it inherits
    assert done.returncode == 0, done.stderr[-3000:]
    assert "LOADED []" in done.stdout, done.stdout
