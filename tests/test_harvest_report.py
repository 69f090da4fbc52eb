"""The harvest dashboard and command line: the page in a real browser, logit effects, CLI errors."""

from __future__ import annotations

import html
import json
import re

import pytest
import torch
from harvest_helpers import assert_blue, assert_one_error_line

from gpt2probe.display.escape import visible_whitespace
from gpt2probe.harvest import Corpus, harvest
from gpt2probe.lens import top_logit_effects
from gpt2probe.report.harvest_dashboard import LOGIT_NOTE, output_directions, write_dashboard

from browser import chromium_available, open_page

HOSTILE = "<script>window.__pwned = 1</script> x &amp; y $x$ " * 3
HOOKS = ["blocks.0.mlp.hook_post", "blocks.3.hook_resid_post", "blocks.0.attn.hook_pattern"]


@pytest.fixture(scope="module")
def harvested(tiny_english, tmp_path_factory):
    from harvest_helpers import topic_texts

    texts = [HOSTILE, *topic_texts(4, 800)]
    return harvest(tiny_english, Corpus(texts=texts), hooks=HOOKS, out=tmp_path_factory.mktemp("h") / "h", seq_len=32,
                   top_k=4, window=3, progress=False)


def test_logit_effect_of_a_neuron_is_its_w_out_row_through_ln_f_weight_and_w_u(tiny_english, harvested):
    dirs = output_directions(harvested, "blocks.0.mlp.hook_post", tiny_english)
    up_v, up_i, _, down_i = top_logit_effects(dirs[5:6], tiny_english, k=3)
    row = tiny_english.model.transformer.h[0].mlp.c_proj.weight[5].detach().float()
    gamma = tiny_english.model.transformer.ln_f.weight.detach().float()
    # TransformerLens's folded W_U (Neuronpedia's): ln_f's weight in, columns centred over d_model, rows over the vocab.
    folded = gamma[:, None] * tiny_english.model.lm_head.weight.detach().float().T
    folded = folded - folded.mean(0, keepdim=True)
    reference = row @ (folded - folded.mean(1, keepdim=True))
    assert up_i[0].tolist() == reference.topk(3).indices.tolist()
    assert down_i[0].tolist() == reference.topk(3, largest=False).indices.tolist()
    torch.testing.assert_close(up_v[0], reference.topk(3).values, atol=1e-5, rtol=1e-5)
    assert output_directions(harvested, "blocks.0.attn.hook_pattern", tiny_english) is None


needs_chromium = pytest.mark.skipif(not chromium_available(), reason="Debian's chromium is not installed")


@needs_chromium
def test_dashboard_in_a_browser_shows_tokens_literally_and_stays_offline(tiny_english, harvested, tmp_path):
    path = write_dashboard(harvested, tmp_path / "dash.html", probe=tiny_english, examples=3)
    order = harvested.hooks  # forward order: the layer-0 pattern comes first
    ready = "document.readyState === 'complete' && document.querySelectorAll('#hook option').length > 0"
    with open_page(path, offline=True, wait_for=ready) as page:
        page.evaluate(f"document.getElementById('hook').value = '{order.index(HOOKS[0])}';"
                      "document.getElementById('hook').dispatchEvent(new Event('change'))")
        n_items = page.evaluate("document.querySelectorAll('#units li').length")
        hooks = page.evaluate("[...document.querySelectorAll('#hook option')].map(o => o.textContent)")
        # Find the unit whose best example sits in the hostile document and show it.
        hostile_unit = next(u for u in range(harvested.n_units(HOOKS[0]))
                            if harvested.top_examples(HOOKS[0], u)[0].doc == 0)
        page.evaluate(f"document.getElementById('search').value = '{hostile_unit}';"
                      "document.getElementById('search').dispatchEvent(new Event('input'))")
        text = page.evaluate("document.getElementById('unit').textContent")
        first_context = page.evaluate("[...document.querySelector('.ctx').querySelectorAll('span:not(.meta)')]"
                                      ".map(s => s.textContent).join('')")
        spans = page.evaluate("document.querySelectorAll('.ctx span').length")
        peak_colour = page.evaluate("getComputedStyle(document.querySelector('.ctx span.center')).backgroundColor")
        page.evaluate(f"document.getElementById('hook').value = '{order.index(HOOKS[2])}';"
                      "document.getElementById('hook').dispatchEvent(new Event('change'))")
        heads = page.evaluate("document.querySelectorAll('#unit tr').length")
        pwned = page.evaluate("window.__pwned === undefined ? null : window.__pwned")
        errors, requests = list(page.errors), list(page.requests)
    assert errors == [] and pwned is None
    assert all(url.startswith(("file:", "data:")) for url in requests)
    assert hooks == order and sorted(order) == sorted(HOOKS) and n_items == tiny_english.cfg.d_mlp
    best = harvested.top_examples(HOOKS[0], hostile_unit)[0]
    expected = "".join(visible_whitespace(tiny_english.tokenizer.decode([t])) for t in best.tokens)
    assert first_context == expected and any(c in expected for c in "<&$")  # shown literally, not interpreted
    assert spans > 3 and "Promoted tokens" in text
    assert_blue(peak_colour)  # the peak's positive activation: blue = positive, as in every report
    assert heads == tiny_english.cfg.n_heads + 1


def test_cli_mistakes_print_one_error_line_and_exit_2(tmp_path, capsys):
    cases = [
        ["harvest", "--model", "tiny-english", "--corpus", str(tmp_path / "nope.txt"), "--hooks",
         "blocks.0.mlp.hook_post", "--out", str(tmp_path / "o")],
        ["harvest", "--model", "tiny-english", "--corpus", str(tmp_path / "*.txt"), "--hooks",
         "blocks.0.mlp.hook_post", "--out", str(tmp_path / "o"), "--examples", "many"],
        ["harvest", "--model", "tiny-english", "--hooks", "blocks.0.mlp.hook_post", "--out", str(tmp_path / "o")],
        ["harvest-report", str(tmp_path / "missing")],
    ]
    (tmp_path / "a.txt").write_text("Some text for the model to read.")
    cases.append(["harvest", "--model", "tiny-english", "--corpus", str(tmp_path / "a.txt"), "--hooks",
                  "blocks.0.mlp.hook_psot", "--out", str(tmp_path / "o"), "--no-progress"])
    for argv in cases:
        assert_one_error_line(argv, capsys)
    assert not (tmp_path / "o").exists()


# -- reads at a glance: opening hook, the address, split characters, peak and histogram axes ---------------
def test_the_page_opens_on_an_mlp_hook_not_attention(harvested):
    from gpt2probe.report.harvest_dashboard import opening_hook

    assert harvested.kind(harvested.hooks[0]) == "attention"  # forward order puts the layer-0 pattern first
    assert harvested.hooks[opening_hook(harvested, harvested.hooks)] == "blocks.0.mlp.hook_post"
    assert opening_hook(harvested, ["blocks.0.attn.hook_pattern", "blocks.3.hook_resid_post"]) == 1


def test_a_character_split_across_tokens_shows_as_the_character():
    from gpt2probe.report.harvest_dashboard import TokenDecoder, context_row
    from gpt2probe.tokenizer import gpt2_tokenizer

    tokenizer = gpt2_tokenizer()
    text = "a 😀 b \u6f22 c"
    ids = tokenizer(text)["input_ids"]
    decode = TokenDecoder(tokenizer)
    assert any("\ufffd" in decode(t) for t in ids)  # single tokens cannot show these characters
    pieces = decode.pieces(ids)
    assert "".join(p for _, _, p in pieces) == text and all("\ufffd" not in p for _, _, p in pieces)
    assert [stop - start for start, stop, _ in pieces] != [1] * len(pieces)
    acts = [float(i) * (-1) ** i for i in range(len(ids))]
    center = next(i for i, t in enumerate(ids) if "\ufffd" in decode(t)) + 1  # inside the emoji's tokens
    row = context_row(decode, ids, acts, center)
    emoji = next(i for i, t in enumerate(row["tokens"]) if "😀" in t)
    start, stop, _ = pieces[emoji]
    assert row["center"] == emoji and row["sizes"][emoji] == stop - start > 1
    assert row["acts"][emoji] == max((round(a, 3) for a in acts[start:stop]), key=abs)
    assert row["parts"][str(emoji)] == [round(a, 3) for a in acts[start:stop]]
    # a piece whose character begins before the context stays visibly broken, never silently dropped
    assert "".join(p for _, _, p in decode.pieces(ids[center:])).count("\ufffd") >= 1


@needs_chromium
def test_dashboard_opens_on_the_best_unit_and_the_address_selects_hook_unit_and_sort(tiny_english, harvested, tmp_path):
    from urllib.parse import parse_qs

    path = write_dashboard(harvested, tmp_path / "dash.html", probe=tiny_english, examples=3)
    ready = "document.readyState === 'complete' && document.querySelectorAll('#hook option').length > 0"
    mlp = "blocks.0.mlp.hook_post"
    best = int(harvested.stats(mlp)["max"].argmax())
    with open_page(path, offline=True, wait_for=ready) as page:
        state = page.evaluate("""({hook: document.getElementById('hook').selectedOptions[0].textContent,
            sort: document.getElementById('sort').value, hash: location.hash,
            title: document.querySelector('#unit h2').textContent,
            peak: [...document.querySelectorAll('.ctx')].map(c => [c.querySelector('.peak').textContent,
                                                                  c.querySelector('span.center').textContent]),
            axes: ['xlabel', 'ylabel', 'xtick', 'ytick'].map(c => document.querySelectorAll('#unit svg text.' + c).length)})""")
        assert state["hook"] == mlp and state["sort"] == "max"
        assert state["title"] == harvested.unit_label(mlp, best)
        assert parse_qs(state["hash"][1:]) == {"hook": [mlp], "unit": [str(best)], "sort": ["max"]}
        assert state["peak"] and all(p == c for p, c in state["peak"])
        assert state["axes"] == [1, 1, 2, 2]
        # the user changes the sort: the address follows
        page.evaluate("document.getElementById('sort').value = 'index';"
                      "document.getElementById('sort').dispatchEvent(new Event('change'))")
        assert parse_qs(page.evaluate("location.hash")[1:])["sort"] == ["index"]
        # an address picks hook, unit and sort (a fresh load, and a change of fragment)
        resid = "blocks.3.hook_resid_post"
        url = path.resolve().as_uri()
        for how in ("load", "fragment"):
            unit = 5 if how == "load" else 7
            if how == "load":
                page.send("Page.navigate", {"url": "about:blank"})
                page.wait_for("location.href === 'about:blank'")
            page.send("Page.navigate", {"url": f"{url}#hook={resid}&unit={unit}&sort=freq"})
            page.wait_for(ready + f" && document.querySelector('#unit h2') && "
                          f"document.querySelector('#unit h2').textContent === {harvested.unit_label(resid, unit)!r}")
            assert page.evaluate("document.getElementById('hook').selectedOptions[0].textContent") == resid
            assert page.evaluate("document.getElementById('sort').value") == "freq"
        assert page.errors == []


def _hook_data(path) -> dict[str, dict]:
    page = path.read_text(encoding="utf-8")
    blocks = re.findall(r'<script type="application/json" id="hook-\d+">(.*?)</script>', page, re.S)
    return {d["name"]: d for d in map(json.loads, blocks)}


def _note(path) -> str | None:
    """The page's note above the units (as text), or ``None`` if it has none."""
    notes = re.findall(r'<p class="note">(.*?)</p>', path.read_text(encoding="utf-8"), re.S)
    assert len(notes) <= 1
    return html.unescape(notes[0]) if notes else None


def test_the_formula_note_stands_only_where_some_unit_shows_logit_effects(tiny_english, harvested, tmp_path):
    # A model, but only an attention pattern: no unit shows logit effects, so no formula.
    path = write_dashboard(harvested, tmp_path / "attention.html", probe=tiny_english, hooks=["blocks.0.attn.hook_pattern"],
                           examples=1)
    assert _note(path) is None
    path = write_dashboard(harvested, tmp_path / "mixed.html", probe=tiny_english, examples=1)
    assert _note(path) == LOGIT_NOTE and any(d.get("logits") for d in _hook_data(path).values())
    assert _note(write_dashboard(harvested, tmp_path / "no_model.html", examples=1)) is None


def test_without_logit_effects_the_page_says_why_and_how_to_get_them(tiny_english, tmp_path):
    hooks = ["blocks.0.attn.hook_z", "blocks.0.ln1.hook_scale", "blocks.0.ln2.hook_normalized", "blocks.0.mlp.hook_post"]
    h = harvest(tiny_english, Corpus(texts=["Some text for the model to read, twice. " * 4]), hooks=hooks, out=tmp_path / "h",
                seq_len=16, top_k=2, window=2, progress=False)
    shown = _hook_data(write_dashboard(h, tmp_path / "with.html", probe=tiny_english, examples=1))
    # Only hooks whose units write no direction, with a model: no unit shows logit effects, so no formula note.
    none_shown = write_dashboard(h, tmp_path / "none.html", probe=tiny_english, hooks=hooks[:3], examples=1)
    assert _note(none_shown) is None and not any(d["logits"] for d in _hook_data(none_shown).values())
    assert shown["blocks.0.mlp.hook_post"]["logits"] and "no_logits" not in shown["blocks.0.mlp.hook_post"]
    assert shown["blocks.0.attn.hook_z"]["no_logits"] == (
        "none: a unit of blocks.0.attn.hook_z is a head's output norm, a size rather than a direction in the residual stream")
    for hook in ("blocks.0.ln1.hook_scale", "blocks.0.ln2.hook_normalized"):
        assert shown[hook]["no_logits"] == f"none: {hook} is not in the residual stream, so its units write no direction into it"
    path = write_dashboard(h, tmp_path / "without.html", examples=1)
    no_model = ("none: no model was given. To show them, run gpt2probe harvest-report without --no-logits (it loads the "
                "harvested model, or the one --model names), or pass probe= (the harvested model) to write_dashboard")
    assert all(d["no_logits"] == no_model for d in _hook_data(path).values())
    if not chromium_available():
        return
    ready = "document.readyState === 'complete' && !!document.querySelector('#unit h2')"
    with open_page(path, offline=True, wait_for=ready) as page:  # opens on the MLP hook
        panel = page.evaluate("document.getElementById('unit').textContent")
        errors = list(page.errors)
    assert errors == [] and "Logit effect" + no_model in panel
