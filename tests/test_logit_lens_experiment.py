"""The main job end to end: ``experiments/logit_lens.py`` / ``gpt2probe logit-lens`` on the shipped
offline model, its terminal summary, and its report opened in headless Chromium."""

from __future__ import annotations

import copy
import html
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import gpt2probe
from gpt2probe.cli import main as cli_main
from gpt2probe.experiments.logit_lens import main
from gpt2probe.report import display_token
from gpt2probe.shipped import shipped_model

from browser import chromium_available, open_page

HOSTILE = "The <script>window.__pwned=1</script> tag &amp; the"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def offline_run(tmp_path_factory):
    """The README's main command, offline: GPT-2 is unavailable, so the shipped model is used."""
    out = tmp_path_factory.mktemp("lens") / "logit_lens.html"
    done = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "logit_lens.py"), "--prompt", HOSTILE, "--prompt", "The value of the",
         "--out", str(out), "--device", "cpu"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    return done, out


def test_offline_main_job_says_which_model_and_writes_the_report(offline_run):
    done, out = offline_run
    assert done.returncode == 0, done.stderr
    assert "not in the Hugging Face cache" in done.stderr and "'tiny-english'" in done.stderr
    assert "say nothing about GPT-2 itself" in done.stdout
    assert f"Report written to {out}" in done.stdout
    html = out.read_text(encoding="utf-8")
    assert "tiny-english" in html and "say nothing about GPT-2 itself" in html
    assert not re.search(r"<script[^>]*\bsrc=", html)  # plotly.js is inline; the browser test checks requests
    assert not list(out.parent.glob(".*.tmp"))  # nothing half-written left behind


def test_terminal_table_is_the_lens_at_the_last_position(offline_run):
    done, _ = offline_run
    probe = gpt2probe.load(shipped_model("tiny-english"), device="cpu")
    item = gpt2probe.logit_lens(probe, HOSTILE, positions="last")[0]
    table = done.stdout.split(f"Prompt: {HOSTILE!r}")[1].split("Prompt:")[0]
    target = int(probe(HOSTILE)[0, -1].argmax())  # the command follows the final top-1 by default
    with_target = gpt2probe.logit_lens(probe, HOSTILE, positions="last", targets=target)[0]
    assert f"Target: {probe.tokenizer.decode([target])!r}" in table
    for s, label in enumerate(item.stream_labels):
        token, prob = item.top1(stream=s)
        p_target, rank = float(with_target.target_prob[s, -1]), int(with_target.target_rank[s, -1]) + 1
        row = rf"^\s+{re.escape(label)}\s+{re.escape(repr(token))}\s+{prob:6.3f}\s+{p_target:9.3g}\s+{rank}\s*$"
        assert re.search(row, table, re.M), label
    # The reference is the model's own forward in float64: the float32 forward's probability is
    # itself 2.6e-5 off it here (logits near 10), while the lens is within 1e-6.
    model64 = copy.deepcopy(probe.model).double()
    final = model64(probe.tokenizer(HOSTILE, return_tensors="pt").input_ids).logits[0, -1].softmax(-1)
    assert item.top1()[1] == pytest.approx(float(final.max()), abs=1e-5)


@pytest.mark.skipif(not chromium_available(), reason="Debian's chromium is not installed (.ci/run installs it)")
def test_report_renders_in_a_real_browser(offline_run):
    _, out = offline_run
    probe = gpt2probe.load(shipped_model("tiny-english"), device="cpu")
    with open_page(out, offline=True) as page:
        figures = page.svg_texts()
        pwned = page.evaluate("window.__pwned === undefined ? null : window.__pwned")
        text = page.text()
        page.evaluate("1")
        errors, requests = list(page.errors), list(page.requests)
    assert errors == []
    assert all(url.startswith(("file:", "data:")) for url in requests)
    assert pwned is None and HOSTILE in text
    heatmap = figures[1]  # after the aggregate of the two prompts
    # the browser shows the escaped token strings as literal text, input tokens below and next tokens on top
    tokens = [html.unescape(display_token(t)) for t in probe.to_str_tokens(HOSTILE)]
    shown = len(heatmap["xticks"]) // 2  # a long prompt opens on its last positions (a range slider pans)
    assert 10 <= shown <= len(tokens)
    assert heatmap["xticks"] == tokens[-shown:] + (tokens[1:] + ["?"])[-shown:]
    assert "script" in heatmap["xticks"] and "␣&" in heatmap["xticks"] and "amp" in heatmap["xticks"]
    assert heatmap["cells"]  # the heatmap drew its cells


def test_console_command_and_explicit_target(tmp_path, capsys):
    out = tmp_path / "cli.html"
    code = cli_main(["logit-lens", "--model", str(shipped_model("tiny-english")), "--prompt", "The value of the",
                     "--target", " function", "--top", "3", "--include-mid", "--out", str(out)])
    assert code == 0 and out.is_file()
    printed = capsys.readouterr().out
    assert "L0.mid" in printed and "Note:" not in printed  # an explicit local model: no fallback note
    assert "Target ␣function across layers" in out.read_text(encoding="utf-8")


def test_bad_inputs_exit_with_a_clear_message(tmp_path, capsys):
    assert main(["--model", str(tmp_path / "missing"), "--out", str(tmp_path / "x.html")]) == 2
    assert "no such directory" in capsys.readouterr().err
    assert main(["--model", str(shipped_model("tiny-english")), "--prompt", "", "--out", str(tmp_path / "y.html")]) == 2
    assert "empty" in capsys.readouterr().err
    assert main(["--model", str(shipped_model("tiny-english")), "--prompt", "a", "--target", " two words",
                 "--out", str(tmp_path / "z.html")]) == 2
    assert "exactly one token" in capsys.readouterr().err
    assert not any(tmp_path.glob("*.html"))
    assert cli_main(["no-such-command"]) == 2


def test_several_prompts_get_contents_aggregate_and_attribution_each(offline_run):
    _, out = offline_run
    text = out.read_text(encoding="utf-8")
    headings = re.findall(r"<h2>(.*?)</h2>", text)
    assert headings[0] == "All 2 prompts: KL to the final prediction and target rank per layer"
    assert sum(h.startswith("Direct logit attribution of") for h in headings) == 2
    assert [h for h in headings if h.endswith("(prompt 2)")]
    contents = re.search(r'<nav class="contents".*?</nav>', text, re.S).group(0)
    assert contents.count("<li>") == len(headings)
