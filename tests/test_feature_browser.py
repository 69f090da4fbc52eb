"""The SAE feature browser (``gpt2probe sae report``): its numbers against independent computation, the page in a
real browser (search, literal tokens, offline), and the command line from harvest to page."""

from __future__ import annotations

import html
import json
import re

import pytest
import torch
from harvest_helpers import assert_blue, assert_one_error_line

import gpt2probe
from gpt2probe import SAE, SAEConfig, Transcoder
from gpt2probe.cli import main
from gpt2probe.display.escape import display_token, visible_whitespace
from gpt2probe.errors import InvalidArgumentError, InvalidTypeError, ModelMismatchError
from gpt2probe.harvest import Corpus, harvest
from gpt2probe.report.feature_browser import LOGIT_NOTE, write_feature_browser

from browser import chromium_available, open_page

HOSTILE = "<script>window.__pwned = 1</script> x &amp; y $x$ " * 3
SAE_HOOK = "blocks.2.hook_resid_post"
SAE_NAME = f"{SAE_HOOK}.hook_sae_acts_post"
TC_NAME = "blocks.1.ln2.hook_normalized.hook_sae_acts_post"
SEQ = 32


def _randomize(coder, seed: int):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in coder.named_parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * (0.1 if name.startswith("b_") else 0.3))
    return coder


@pytest.fixture(scope="module")
def coders(tiny_english):
    sae = _randomize(SAE(SAEConfig(d_in=tiny_english.cfg.d_model, d_sae=30, hook_name=SAE_HOOK, architecture="topk", k=3)), 0)
    with torch.no_grad():
        sae.b_enc[-2:] = -1e4  # two dead features: listed only with "show dead"
    tc = _randomize(Transcoder(SAEConfig.for_transcoder(1, d_model=tiny_english.cfg.d_model, d_sae=20)), 1)
    return sae, tc


@pytest.fixture(scope="module")
def texts():
    from harvest_helpers import topic_texts

    return [HOSTILE, *topic_texts(4, 800)]


@pytest.fixture(scope="module")
def harvested(tiny_english, coders, texts, tmp_path_factory):
    return harvest(tiny_english, Corpus(texts=texts), saes=list(coders), hooks=["blocks.0.mlp.hook_post"],
                   out=tmp_path_factory.mktemp("h") / "h", seq_len=SEQ, top_k=5, window=3, progress=False,
                   block_chars=10**9)


def _page_data(path) -> list[dict]:
    page = path.read_text(encoding="utf-8")
    blocks = re.findall(r'<script type="application/json" id="hook-\d+">(.*?)</script>', page, re.S)
    return [json.loads(block) for block in blocks]


def _note(path) -> str | None:
    """The page's note above the features (as text), or ``None`` if it has none."""
    notes = re.findall(r'<p class="note">(.*?)</p>', path.read_text(encoding="utf-8"), re.S)
    assert len(notes) <= 1
    return html.unescape(notes[0]) if notes else None


def _all_tokens(tiny_english, texts):
    """Every token of the corpus in the harvest's windows (one block: the documents joined by <|endoftext|>)."""
    ids = []
    for text in texts:
        ids += tiny_english.tokenizer(text, add_special_tokens=False)["input_ids"] + [tiny_english.tokenizer.eos_token_id]
    n = len(ids)
    n_win = -(-n // SEQ)
    padded = torch.tensor(ids + [tiny_english.tokenizer.eos_token_id] * (n_win * SEQ - n)).view(n_win, SEQ)
    return padded, (torch.arange(n_win * SEQ) < n).view(n_win, SEQ)


def test_the_pages_numbers_match_independent_computation(tiny_english, coders, texts, harvested, tmp_path):
    sae, tc = coders
    path = write_feature_browser(harvested, tmp_path / "f.html", saes=[sae, tc], probe=tiny_english, examples=3)
    data = {d["name"]: d for d in _page_data(path)}
    assert list(data) == [TC_NAME, SAE_NAME]  # only feature hooks, in forward order
    padded, valid = _all_tokens(tiny_english, texts)
    _, cache = tiny_english.run_with_cache(padded, names=[SAE_HOOK, "blocks.1.ln2.hook_normalized"])
    # TransformerLens's folded W_U (what Neuronpedia multiplies by), built from the modules, not probe.W_U:
    # ln_f's weight folded in, each column centred over d_model, each row over the vocabulary.
    w_u = tiny_english.model.transformer.ln_f.weight.detach()[:, None] * tiny_english.model.lm_head.weight.detach().T
    w_u = w_u - w_u.mean(0, keepdim=True)
    w_u = w_u - w_u.mean(1, keepdim=True)  # [d_model, d_vocab]
    for coder, name, hook in ((sae, SAE_NAME, SAE_HOOK), (tc, TC_NAME, "blocks.1.ln2.hook_normalized")):
        with torch.no_grad():
            acts = coder.encode(cache[hook])[valid]  # [token, feature]: every token encoded
            logits = coder.W_dec @ w_u  # [feature, d_vocab]: the decoder rows through the folded W_U
        page = data[name]
        assert page["tokens"] == acts.shape[0] and len(page["features"]) == coder.cfg.d_sae
        for f, feature in enumerate(page["features"]):
            assert feature["id"] == f
            assert feature["active"] == int((acts[:, f] > 0).sum())
            assert feature["density"] == pytest.approx(float((acts[:, f] > 0).double().mean()), abs=1e-12)
            assert feature["max"] == pytest.approx(float(acts[:, f].max()), abs=1e-4)
            assert sum(feature["hist"]) == feature["active"]  # the bins hold exactly the active tokens
            top = torch.sort(acts[:, f], descending=True).values[: min(3, feature["active"])]
            assert [e["value"] for e in feature["examples"]] == pytest.approx(top.tolist(), abs=1e-4)
            for e, ex in zip(feature["examples"], harvested.top_examples(name, f)):  # every token escaped once
                assert e["tokens"] == [display_token(tiny_english.tokenizer.decode([t])) for t in ex.tokens]
            up, down = logits[f].topk(10), logits[f].topk(10, largest=False)
            assert [t for t, _ in feature["up"]] == [display_token(tiny_english.tokenizer.decode([i])) for i in up.indices]
            assert [v for _, v in feature["up"]] == pytest.approx(up.values.tolist(), abs=2e-3)
            assert [t for t, _ in feature["down"]] == [display_token(tiny_english.tokenizer.decode([i])) for i in down.indices]
            assert [v for _, v in feature["down"]] == pytest.approx(down.values.tolist(), abs=2e-3)
    assert [f["active"] for f in data[SAE_NAME]["features"][-2:]] == [0, 0]


def test_the_dashboards_feature_histogram_holds_the_active_tokens_as_the_browsers(tiny_english, coders, harvested, tmp_path):
    from gpt2probe.report.harvest_dashboard import write_dashboard

    sae, tc = coders
    browser = {d["name"]: d for d in _page_data(write_feature_browser(harvested, tmp_path / "f.html", examples=1))}
    path = write_dashboard(harvested, tmp_path / "d.html", examples=1)
    dashboard = {d["name"]: d for d in _page_data(path)}
    n_bins = harvested.manifest["options"]["n_bins"]
    for name in (SAE_NAME, TC_NAME):
        total = browser[name]["tokens"]
        for unit, feature in zip(dashboard[name]["units"], browser[name]["features"]):
            # the zeros (underflow bin) left out: the bars hold exactly the active tokens, as in the feature browser
            assert unit["hist"] == feature["hist"] and len(unit["hist"]) == n_bins + 1
            assert unit["drawn"] == sum(unit["hist"]) == feature["active"] and unit["tokens"] == total
    for unit in dashboard["blocks.0.mlp.hook_post"]["units"]:  # dense MLP neurons keep every bin, zeros included
        assert len(unit["hist"]) == n_bins + 2 and "drawn" not in unit
    if not chromium_available():
        return
    live = next(f for f, feature in enumerate(browser[SAE_NAME]["features"]) if feature["active"])
    active, total = browser[SAE_NAME]["features"][live]["active"], browser[SAE_NAME]["tokens"]
    ready = "document.readyState === 'complete' && document.querySelectorAll('#hook option').length > 0"
    with open_page(path, offline=True, wait_for=ready) as page:
        page.evaluate(f"location.hash = {json.dumps(f'hook={SAE_NAME}&unit={live}&sort=index')}")
        page.wait_for(f"document.querySelector('#unit h2').textContent === {harvested.unit_label(SAE_NAME, live)!r}")
        note = page.evaluate("document.querySelector('.hist-note').textContent")
        first_bar = page.evaluate("document.querySelector('#unit svg rect').getAttribute('fill')")
        errors = list(page.errors)
    assert errors == []
    assert note.startswith(f"activations > 0: {active:,} of {total:,} tokens")
    assert first_bar != "#999"  # the first bar is an active one, not a grey underflow bin


def test_without_logit_effects_the_page_says_why_and_how_to_get_them(tiny_english, coders, harvested, tmp_path):
    from gpt2probe.report.feature_browser import decoder_directions, no_logits_reason

    sae, tc = coders
    no_model = ("none: no model was given. To show them, run gpt2probe sae report without --no-logits (it loads the "
                "harvested model and the SAE folders the harvest recorded, or those --model and --sae name), or pass "
                "probe= (the harvested model) and saes= (the harvested coders) to write_feature_browser")
    path = write_feature_browser(harvested, tmp_path / "plain.html", examples=1)
    assert [d["no_logits"] for d in _page_data(path)] == [no_model, no_model]
    # The formula note stands only above logit effects: not without a model, nor with a model but no coder.
    assert _note(path) is None
    assert _note(write_feature_browser(harvested, tmp_path / "nocoder.html", probe=tiny_english, examples=1)) is None
    one = write_feature_browser(harvested, tmp_path / "one.html", saes=[sae], probe=tiny_english, examples=1)
    assert _note(one) == LOGIT_NOTE
    data = {d["name"]: d for d in _page_data(one)}
    assert data[SAE_NAME]["logits"] and "no_logits" not in data[SAE_NAME]
    assert data[TC_NAME]["no_logits"] == ("none: no SAE or transcoder was given for these features. To show them, add "
                                          "its folder to gpt2probe sae report's --sae, or the coder to "
                                          "write_feature_browser's saes=")
    on_ln = SAE(SAEConfig(d_in=tiny_english.cfg.d_model, d_sae=4, hook_name="blocks.1.ln2.hook_normalized"))
    assert decoder_directions(on_ln, tiny_english) is None
    assert no_logits_reason(on_ln, tiny_english) == ("none: this coder writes blocks.1.ln2.hook_normalized, neither the "
                                                     "residual stream nor an MLP's hook_post, so its features have no "
                                                     "single direction in the residual stream")
    # The harvest dashboard of the same harvest sends features to this page.
    from gpt2probe.report.harvest_dashboard import write_dashboard

    dashboard = {d["name"]: d for d in _page_data(write_dashboard(harvested, tmp_path / "d.html", probe=tiny_english, examples=1))}
    assert dashboard[SAE_NAME]["no_logits"] == ("none here: SAE and transcoder features show their logit effects in the "
                                                "feature browser (gpt2probe sae report DIR)")
    if not chromium_available():
        return
    ready = "document.readyState === 'complete' && !!document.querySelector('#feature h2')"
    with open_page(path, offline=True, wait_for=ready) as page:
        panel = page.evaluate("document.getElementById('feature').textContent")
        errors = list(page.errors)
    assert errors == [] and "Logit effects" + no_model in panel


def test_a_coder_or_harvest_that_does_not_match_is_refused(tiny_english, coders, harvested, tmp_path):
    sae, tc = coders
    other = _randomize(SAE(sae.cfg), 7)
    with pytest.raises(ModelMismatchError, match="not the one harvested"):
        write_feature_browser(harvested, tmp_path / "x.html", saes=[other], probe=tiny_english)
    with pytest.raises(InvalidArgumentError, match="not a harvested feature hook"):
        write_feature_browser(harvested, tmp_path / "x.html", hooks=["blocks.0.mlp.hook_post"])
    # one name given as a string is that hook (it used to be split into characters, the first refused: "'b' is not...")
    one = f"{SAE_HOOK}.hook_sae_acts_post"
    write_feature_browser(harvested, tmp_path / "one.html", hooks=one, examples=1)
    assert [d["name"] for d in _page_data(tmp_path / "one.html")] == [one]
    plain = harvest(tiny_english, Corpus(texts=["Some text for the model."]), hooks="blocks.0.mlp.hook_post",
                    out=tmp_path / "plain", seq_len=SEQ, progress=False)
    with pytest.raises(InvalidArgumentError, match="no SAE features"):
        write_feature_browser(plain, tmp_path / "x.html")
    assert not (tmp_path / "x.html").exists()


@pytest.mark.parametrize("wrap", [lambda c: [c], lambda c: {SAE_NAME: c}], ids=["list", "mapping"])
def test_something_that_is_not_a_coder_is_refused_in_a_list_or_a_mapping(harvested, tmp_path, wrap):
    with pytest.raises(InvalidTypeError, match="saes must be gpt2probe SAE or Transcoder objects, got str"):
        write_feature_browser(harvested, tmp_path / "x.html", saes=wrap("runs/sae"))
    assert not (tmp_path / "x.html").exists()


def test_a_single_coder_for_saes_is_refused_naming_the_list(coders, harvested, tmp_path):
    """The run-time type checker of this test run refuses ``saes=sae`` at the call; ``__wrapped__`` is what
    a user without it calls, and the library's own check must name the fix."""
    plain = getattr(write_feature_browser, "__wrapped__", write_feature_browser)
    sae, _ = coders
    with pytest.raises(InvalidTypeError, match=r"got one SAE: pass saes=\[sae\]"):
        plain(harvested, tmp_path / "x.html", saes=sae)
    with pytest.raises(InvalidTypeError, match="load it first"):
        plain(harvested, tmp_path / "x.html", saes="runs/sae")
    assert not (tmp_path / "x.html").exists()


needs_chromium = pytest.mark.skipif(not chromium_available(), reason="Debian's chromium is not installed")


@needs_chromium
def test_the_browser_searches_by_number_and_token_and_shows_tokens_literally(tiny_english, coders, harvested, tmp_path):
    sae, tc = coders
    path = write_feature_browser(harvested, tmp_path / "f.html", saes=[sae, tc], probe=tiny_english, examples=3)
    order = [TC_NAME, SAE_NAME]
    # A feature with a top context (of the 3 shown) in the hostile document, and which one.
    hostile, slot = next((f, j) for f in range(sae.cfg.d_sae)
                         for j, ex in enumerate(harvested.top_examples(SAE_NAME, f)[:3]) if ex.doc == 0)
    # A word shown on some feature's page (a top context's own token); the search must list every feature showing it.
    word = next(w for f in range(sae.cfg.d_sae) for ex in harvested.top_examples(SAE_NAME, f)
                if len(w := tiny_english.tokenizer.decode([ex.tokens[ex.center]]).strip()) >= 3 and w.isalpha())
    expected = [f for f, feat in enumerate(_page_data(path)[1]["features"])
                if feat["active"] and word.lower() in feat["search"]]
    assert expected
    ready = "document.readyState === 'complete' && document.querySelectorAll('#hook option').length > 0"

    def set_value(element: str, value: str, event: str) -> None:
        page.evaluate(f"document.getElementById('{element}').value = {json.dumps(value)};"
                      f"document.getElementById('{element}').dispatchEvent(new Event('{event}'))")

    with open_page(path, offline=True, wait_for=ready) as page:
        hooks = page.evaluate("[...document.querySelectorAll('#hook option')].map(o => o.textContent)")
        set_value("hook", str(order.index(SAE_NAME)), "change")
        listed_live = page.evaluate("document.querySelectorAll('#features li').length")
        page.evaluate("document.getElementById('dead').click()")
        listed_all = page.evaluate("document.querySelectorAll('#features li').length")
        set_value("search", str(hostile), "input")
        title = page.evaluate("document.querySelector('#feature h2').textContent")
        density = page.evaluate("document.getElementById('density').textContent")
        first_context = page.evaluate(f"[...document.querySelectorAll('.ctx')[{slot}].querySelectorAll('span.tok')]"
                                      ".map(s => s.textContent).join('')")
        promoted = page.evaluate("document.getElementById('feature').textContent")
        peak_colour = page.evaluate("getComputedStyle(document.querySelector('.ctx span.center')).backgroundColor")
        set_value("search", word.upper(), "input")  # search ignores case
        found = page.evaluate("[...document.querySelectorAll('#features li')].map(li => Number(li.dataset.k))")
        pwned = page.evaluate("window.__pwned === undefined ? null : window.__pwned")
        errors, requests = list(page.errors), list(page.requests)
    assert errors == [] and pwned is None
    assert all(url.startswith(("file:", "data:")) for url in requests)
    assert hooks == order
    assert listed_live == sae.cfg.d_sae - 2 and listed_all == sae.cfg.d_sae
    assert title == f"Feature {hostile}"
    freq = float(harvested.stats(SAE_NAME)["frequency"][hostile])
    assert float(density.rstrip("%")) == pytest.approx(100 * freq, rel=1e-2)
    best = harvested.top_examples(SAE_NAME, hostile)[slot]
    shown = "".join(visible_whitespace(tiny_english.tokenizer.decode([t])) for t in best.tokens)
    assert first_context == shown and any(c in shown for c in "<>&$")  # shown literally, never interpreted
    assert "Promoted tokens" in promoted and "Suppressed tokens" in promoted
    assert_blue(peak_colour)  # a positive activation is blue, as on the harvest dashboard and in every figure
    assert sorted(found) == sorted(expected)


def test_harvest_and_report_from_the_command_line(tiny_english, coders, texts, tmp_path, capsys):
    sae, tc = coders
    sae.save(tmp_path / "sae")
    tc.save(tmp_path / "tc")
    (tmp_path / "corpus").mkdir()
    for i, text in enumerate(texts[1:]):
        (tmp_path / "corpus" / f"{i}.txt").write_text(text, encoding="utf-8")
    out = tmp_path / "run"
    assert main(["harvest", "--model", "tiny-english", "--corpus", str(tmp_path / "corpus" / "*.txt"), "--sae",
                 str(tmp_path / "sae"), str(tmp_path / "tc"), "--out", str(out), "--seq-len", "32", "--top-k", "4",
                 "--no-progress"]) == 0
    h = gpt2probe.Harvest.load(out)
    assert h.hooks == [TC_NAME, SAE_NAME] and h.manifest["sae_sources"][SAE_NAME] == str((tmp_path / "sae").resolve())
    assert main(["sae", "report", str(out)]) == 0  # the SAEs and the model found from the manifest
    data = _page_data(out / "features.html")
    assert [d["name"] for d in data] == [TC_NAME, SAE_NAME] and all(d["logits"] for d in data)
    assert main(["sae", "report", str(out), "--no-logits", "--out", str(tmp_path / "plain.html")]) == 0
    assert not any(d["logits"] for d in _page_data(tmp_path / "plain.html"))
    capsys.readouterr()
    for argv in (["sae", "report", str(tmp_path / "missing")],
                 ["sae", "report", str(out), "--sae", str(tmp_path / "nope")],
                 ["harvest", "--model", "tiny-english", "--corpus", str(tmp_path / "corpus" / "*.txt"), "--out",
                  str(tmp_path / "o")],
                 ["harvest", "--model", "tiny-english", "--corpus", str(tmp_path / "corpus" / "*.txt"), "--sae",
                  str(tmp_path / "nope"), "--out", str(tmp_path / "o")]):
        assert_one_error_line(argv, capsys)
    assert not (tmp_path / "o").exists()
