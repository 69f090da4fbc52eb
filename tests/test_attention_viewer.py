"""The attention viewer: its encoding checked against the patterns, and GPT-2 small's shape in a real browser.

The page stores each head's lower triangle as 8-bit steps, deflated and base64-encoded;
here the stored bytes are inflated with Python's zlib and compared with the model's
patterns, and the page is opened in headless Chromium, which must decode and draw every
one of 144 heads at 1,024 tokens, from a file under 40 MB, without a JavaScript error.
"""

from __future__ import annotations

import base64
import json
import re
import zlib

import numpy as np
import pytest
import torch

from gpt2probe import names as N
from gpt2probe.report.attention_viewer import AttentionData, encode_attention, quantise, thumbnail, write_attention_viewer

VIEWER_READY = "document.getElementById('selfcheck') && document.getElementById('selfcheck').dataset.status !== undefined"


def page_data(path) -> dict:
    html = path.read_text(encoding="utf-8")
    return json.loads(re.search(r'<script type="application/json" id="attention-data">(.*?)</script>', html, re.S).group(1))


def stored_head(data: dict, layer: int, head: int) -> np.ndarray:
    """A head's stored lower triangle as a full [n, n] uint8 matrix (zeros above the diagonal)."""
    n = data["n_tokens"]
    tri = np.frombuffer(zlib.decompress(base64.b64decode(data["heads"][layer * data["n_heads"] + head])), np.uint8)
    full = np.zeros((n, n), np.uint8)
    full[np.tril_indices(n)] = tri  # numpy's tril order is row by row, as the page's
    return full


def random_patterns(layers: int, heads: int, n: int, seed: int, sharpness: float = 3.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randn(layers, heads, n, n, generator=gen) * sharpness
    future = torch.ones(n, n, dtype=torch.bool).triu(1)
    return scores.masked_fill(future, float("-inf")).softmax(-1)


def test_quantise_keeps_the_lower_triangle_row_by_row():
    pattern = torch.tensor([[1.0, 0.0, 0.0], [0.25, 0.75, 0.0], [0.12, 0.28, 0.6]])
    assert quantise(pattern).tolist() == [255, 64, 191, 31, 71, 153]


def test_thumbnails_keep_a_single_sharp_weight():
    pattern = torch.zeros(128, 128)
    pattern[100, 3] = 1.0
    thumb = thumbnail(pattern)
    assert thumb.shape == (64, 64) and thumb[50, 1] == 255 and thumb.sum() == 255
    assert thumbnail(torch.eye(5)).shape == (5, 5)


def test_stored_bytes_are_the_patterns(tmp_path):
    patterns = random_patterns(2, 3, 40, seed=0)
    tokens = [f"t{i}" for i in range(39)] + ["</script><script>alert(1)</script>"]
    scores = {"previous_token": torch.rand(2, 3), "induction": torch.rand(2, 3)}
    path, threshold = write_attention_viewer(tmp_path / "v.html", encode_attention(patterns, tokens, scores),
                                             title="t", model_name="m", prompt="p")
    assert threshold == 0
    data = page_data(path)
    for layer in range(2):
        for head in range(3):
            expected = (patterns[layer, head] * 255).round().to(torch.uint8).numpy()
            assert np.array_equal(stored_head(data, layer, head), np.tril(expected))
    assert data["tokens"][-1] == tokens[-1] and data["sums"][0] == int(stored_head(data, 0, 0).astype(int).sum())
    assert data["scores"]["induction"][1][2] == round(float(scores["induction"][1, 2]), 4)
    assert path.read_text(encoding="utf-8").count("<script") == 2


def test_a_tight_budget_drops_small_weights_and_says_so(tmp_path):
    patterns = random_patterns(2, 2, 200, seed=1, sharpness=1.0)  # diffuse: compresses badly
    data = encode_attention(patterns, ["x"] * 200)
    full, _ = write_attention_viewer(tmp_path / "full.html", data, title="t", model_name="m", prompt="p")
    size = full.stat().st_size
    small, threshold = write_attention_viewer(tmp_path / "small.html", data, title="t", model_name="m", prompt="p",
                                              max_bytes=int(size * 0.6))
    assert threshold > 0 and small.stat().st_size <= size * 0.6
    text = small.read_text(encoding="utf-8")
    assert f"attention weights below {threshold}/255" in text
    stored, exact = stored_head(page_data(small), 1, 1), np.tril((patterns[1, 1] * 255).round().to(torch.uint8).numpy())
    assert np.array_equal(stored, np.where(exact < threshold, 0, exact))
    with pytest.raises(ValueError, match="shorter input"):
        write_attention_viewer(tmp_path / "none.html", data, title="t", model_name="m", prompt="p", max_bytes=1000)
    assert not (tmp_path / "none.html").exists()


def test_shapes_are_checked():
    data = AttentionData(["a", "b"], n_layers=1, n_heads=2)
    with pytest.raises(ValueError, match=r"\[head=2, 2, 2\]"):
        data.add_layer(torch.zeros(2, 3, 3))
    with pytest.raises(ValueError, match=r"expected \(1, 2\)"):
        data.set_scores({"induction": torch.zeros(2, 1)})


# -- GPT-2 small's shape: 144 heads at 1,024 tokens -----------------------------------------------
@pytest.fixture(scope="module")
def wide_page(tmp_path_factory):
    from gpt2probe import cli

    from models import WIDE, random_ids, save_gpt2

    model_dir = save_gpt2(WIDE, tmp_path_factory.mktemp("wide"))
    ids = random_ids(WIDE, 1, 1024, seed=3)[0]
    out = tmp_path_factory.mktemp("page") / "attention.html"
    assert cli.main(["attention", "--model", str(model_dir), "--tokens", ",".join(map(str, ids.tolist())),
                     "--out", str(out), "--device", "cpu", "--n-seqs", "1"]) == 0
    return out, model_dir, ids


def test_gpt2_small_shape_fits_in_one_file(wide_page):
    import gpt2probe

    path, model_dir, ids = wide_page
    size = path.stat().st_size
    print(f"\n144 heads x 1,024 tokens: {size / 1e6:.1f} MB")
    assert size < 40e6
    data = page_data(path)
    assert (data["n_layers"], data["n_heads"], data["n_tokens"]) == (12, 12, 1024) and data["threshold"] == 0
    probe = gpt2probe.load(model_dir, device="cpu")
    _, cache = probe.run_with_cache(ids, names=[N.pattern(0), N.pattern(11)])
    for layer, head in [(0, 0), (11, 7)]:
        expected = (cache[N.pattern(layer)][0, head] * 255).round().to(torch.uint8).numpy()
        assert np.array_equal(stored_head(data, layer, head), np.tril(expected))


def test_every_head_draws_in_chromium(wide_page):
    browser = pytest.importorskip("browser")
    if not browser.chromium_available():
        pytest.skip("chromium is not installed")
    path, _, _ = wide_page
    data = page_data(path)
    with browser.open_page(path, offline=True, wait_for=VIEWER_READY, timeout=120) as page:
        assert page.evaluate("document.getElementById('selfcheck').dataset.status") == "ok", page.text()[-2000:]
        assert page.errors == []
        # every thumbnail, clicked as a person would: each head inflates (checksum checked) and draws
        reached = page.evaluate("""(async () => {
          const reached = [];
          for (const el of document.querySelectorAll('.thumb')) {
            el.click();
            while (!el.classList.contains('selected')) await new Promise(r => setTimeout(r, 2));
            reached.push(document.getElementById('info').textContent.split(' ')[0]);
          }
          return reached;
        })()""", timeout=300)
        # in document order: the top layer first, layer 0 at the bottom (as in every gpt2probe figure)
        assert reached == [f"L{l}H{h}" for l in reversed(range(12)) for h in range(12)]
        # the pixels and the hover highlights of two heads match the stored weights
        for layer, head in [(3, 5), (11, 11)]:
            assert page.evaluate(f"attentionViewer.selfCheck({layer}, {head})", timeout=60) is True
            expected = stored_head(data, layer, head)
            got = page.evaluate(f"""(async () => {{
              const tri = await attentionViewer.head({layer}, {head});
              return [[1023, 0], [1023, 1022], [700, 699], [512, 100]].map(([q, k]) => attentionViewer.weight(tri, q, k));
            }})()""")
            assert got == [int(expected[q, k]) for q, k in [(1023, 0), (1023, 1022), (700, 699), (512, 100)]]
        assert page.evaluate("document.getElementById('selfcheck').dataset.status") == "ok"
        assert page.errors == []


# -- a small page, read as a person would: axes, colour bar, no default tint, sharp thumbnails ----------
@pytest.fixture(scope="module")
def small_page(tmp_path_factory):
    n = 20
    tokens = [f" t{i}" if i % 5 else "    " for i in range(n)]  # an indent among them
    patterns = random_patterns(2, 3, n, seed=5)
    scores = {key: torch.rand(2, 3, generator=torch.Generator().manual_seed(i)) for i, key in
              enumerate(("previous_token", "induction", "first_token"))}
    scores["first_token"][1, 2] = -0.5  # a negative score is the widest text a cell holds
    scores["induction"][0, 1] = 1.0
    path = tmp_path_factory.mktemp("small") / "attention.html"
    write_attention_viewer(path, encode_attention(patterns, tokens, scores), title="t", model_name="m", prompt="p")
    return path, tokens


def test_the_page_has_axes_and_a_colour_bar(small_page):
    html = small_page[0].read_text(encoding="utf-8")
    for element in ('id="xaxis"', 'id="yaxis"', 'id="cbar"', "query ↓ · key →"):
        assert element in html


def test_small_page_in_chromium_reads_at_a_glance(small_page):
    browser = pytest.importorskip("browser")
    if not browser.chromium_available():
        pytest.skip("chromium is not installed")
    path, tokens = small_page
    with browser.open_page(path, offline=True, wait_for=VIEWER_READY) as page:
        # a high-density screen: the thumbnails must be drawn at its resolution, not scaled up blurred
        page.send("Emulation.setDeviceMetricsOverride", {"width": 1600, "height": 1000, "deviceScaleFactor": 2,
                                                          "mobile": False})
        page.send("Page.reload")
        page.wait_for("window.attentionViewer && " + VIEWER_READY)
        page.wait_for("document.getElementById('selfcheck').dataset.status !== undefined")
        assert page.evaluate("document.getElementById('selfcheck').dataset.status") == "ok"
        assert page.errors == []
        assert page.evaluate("attentionViewer.dpr") == 2
        sizes = page.evaluate("""[...document.querySelectorAll('.thumb canvas')].map(c =>
            [c.width, c.height, c.getBoundingClientRect().width - 2])""")  # minus the 1 px border each side
        px = page.evaluate("attentionViewer.THUMB_PX")
        assert len(sizes) == 6 and all(s == [2 * px, 2 * px, px] for s in sizes), sizes
        # every token labelled on both axes of the large pattern (20 tokens leave 38 px a row)
        from gpt2probe.display.escape import visible_whitespace

        assert page.evaluate("attentionViewer.axis.labelled") == list(range(20))
        assert page.evaluate("attentionViewer.axis.text") == [f"{i} {visible_whitespace(t)}" for i, t in enumerate(tokens)]
        axes = page.evaluate("""['xaxis', 'yaxis', 'cbar'].map(id => {
            const c = document.getElementById(id), d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let ink = 0; for (let i = 3; i < d.length; i += 4) ink += d[i] > 0;
            return [c.getBoundingClientRect().width, c.getBoundingClientRect().height, ink]; })""")
        assert all(w > 10 and h > 10 and ink > 100 for w, h, ink in axes), axes
        # nothing tinted until the pointer is on the pattern: no row, no column, no token
        tint = page.evaluate("""(() => { const c = document.getElementById('overlay');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let a = 0; for (let i = 3; i < d.length; i += 4) a += d[i]; return a; })()""")
        assert tint == 0 and page.evaluate("attentionViewer.focused()") is None
        assert page.evaluate("[...document.querySelectorAll('#tokens span')].filter(s => s.style.background).length") == 0
        # every score line inside its own cell
        outside = page.evaluate("""[...document.querySelectorAll('.thumb')].filter(t => {
            const b = t.getBoundingClientRect(), s = t.querySelector('.s').getBoundingClientRect();
            return s.left < b.left || s.right > b.right || s.bottom > b.bottom; }).length""")
        assert outside == 0


def test_a_longer_prompt_keeps_the_page_in_the_window(tmp_path):
    """150 tokens: the token list wraps (it made the page 6,600 px wide), and the query labels sit against the pattern."""
    browser = pytest.importorskip("browser")
    if not browser.chromium_available():
        pytest.skip("chromium is not installed")
    n = 150
    path = tmp_path / "attention.html"
    write_attention_viewer(path, encode_attention(random_patterns(1, 2, n, seed=2), [f" w{i}" for i in range(n)]),
                           title="t", model_name="m", prompt="p")
    with browser.open_page(path, offline=True, wait_for=VIEWER_READY) as page:
        page.send("Emulation.setDeviceMetricsOverride", {"width": 1400, "height": 900, "deviceScaleFactor": 1,
                                                          "mobile": False})  # a laptop's window
        assert page.evaluate("document.getElementById('selfcheck').dataset.status") == "ok"
        width, window = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert width <= window, (width, window)
        gap = page.evaluate("document.getElementById('stage').getBoundingClientRect().left"
                            " - document.getElementById('yaxis').getBoundingClientRect().right")
        assert 0 <= gap <= 10
        assert page.evaluate("attentionViewer.axis.labelled") == list(range(0, n, 3))  # 5 px rows: every 3rd token
