"""The prompt pairs ``patching`` and ``circuit`` run by default: one per model, each with a gap worth patching.

tiny-english (the model the commands fall back to offline) never learned indirect-object
identification, so its default pair is in-context copying, which its model card documents.
The gaps are computed here with plain PyTorch on the model's logits, independent of the
patching code.
"""

from __future__ import annotations

import argparse

import pytest
import torch

from gpt2probe.experiments import pairs
from gpt2probe.report.style import small_gap


def logit_diff(probe, prompt: str, answer: str, wrong: str) -> float:
    ids = torch.tensor([probe.tokenizer(prompt).input_ids])
    with torch.no_grad():
        logits = probe.model(ids).logits[0, -1].double()
    (a,), (w,) = probe.tokenizer(answer).input_ids, probe.tokenizer(wrong).input_ids
    return float(logits[a] - logits[w])


def test_each_model_has_its_default_pair():
    assert pairs.pair_for("tiny-english") is pairs.COPYING
    assert pairs.pair_for("gpt2") is pairs.IOI and pairs.pair_for("my-finetune") is pairs.IOI


@pytest.mark.parametrize("pair", [pairs.IOI, pairs.COPYING], ids=["ioi", "copying"])
def test_pairs_are_patchable(tiny_english, pair):
    """Both prompts have the same number of tokens and the answers are single tokens (GPT-2's tokenizer)."""
    tok = tiny_english.tokenizer
    assert len(tok(pair.clean).input_ids) == len(tok(pair.corrupted).input_ids)
    assert len(tok(pair.answer).input_ids) == len(tok(pair.wrong).input_ids) == 1


def test_the_offline_default_has_a_large_gap_and_ioi_does_not(tiny_english):
    pair = pairs.pair_for("tiny-english")
    clean = logit_diff(tiny_english, pair.clean, pair.answer, pair.wrong)
    corrupted = logit_diff(tiny_english, pair.corrupted, pair.answer, pair.wrong)
    assert clean > 5.0 and corrupted < -5.0, (clean, corrupted)  # each prompt favours the word it copies
    assert not small_gap(clean, corrupted, max(abs(clean), abs(corrupted)))
    # why tiny-english needs its own default: it cannot tell the indirect-object pair apart
    ioi = [logit_diff(tiny_english, p, pairs.IOI.answer, pairs.IOI.wrong) for p in (pairs.IOI.clean, pairs.IOI.corrupted)]
    assert small_gap(*ioi, max(map(abs, ioi))), ioi


def test_fill_pair_fills_only_what_was_left_out():
    args = argparse.Namespace(clean=None, corrupted=None, answer=None, wrong=None)
    said = pairs.fill_pair(args, "tiny-english")
    assert (args.clean, args.corrupted, args.answer, args.wrong) == (
        pairs.COPYING.clean, pairs.COPYING.corrupted, pairs.COPYING.answer, pairs.COPYING.wrong)
    assert said is not None and "tiny-english" in said and "copying" in said
    args = argparse.Namespace(clean="a b", corrupted="c d", answer=" x", wrong=None)
    said = pairs.fill_pair(args, "gpt2")
    assert (args.clean, args.answer, args.wrong) == ("a b", " x", " John") and "--wrong" in said
    args = argparse.Namespace(clean="a b", corrupted="c d", answer=" x", wrong=" y")
    assert pairs.fill_pair(args, "gpt2") is None


def test_gap_warning_fires_on_a_small_gap_only():
    warning = pairs.gap_warning(0.0501, 0.0509, 0.0509, "Normalised values divide by that gap")
    assert warning is not None and "+0.0501" in warning and "gap of 0.0008" in warning and "noise" in warning
    assert pairs.gap_warning(10.47, -7.90, 10.47, "Normalised values divide by that gap") is None


def test_flag_small_gap_marks_a_figure_once():
    import plotly.graph_objects as go

    fig = go.Figure(layout={"title": {"text": "Circuit: 5 of 479 edges"}})
    pairs.flag_small_gap(fig)
    pairs.flag_small_gap(fig)
    title = fig.layout.title.text
    assert title.startswith("Circuit: 5 of 479 edges<br>") and title.count(pairs.SMALL_GAP_FLAG) == 1
    flagged_by_itself = go.Figure(layout={"title": {"text": "heads<br>(a small gap next to values up to 3.5)"}})
    pairs.flag_small_gap(flagged_by_itself)
    assert pairs.SMALL_GAP_FLAG not in flagged_by_itself.layout.title.text
