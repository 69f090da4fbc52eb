"""``probe.test_prompt``: every printed and returned number checked against the model's own logits."""

from __future__ import annotations

import contextlib
import io

import pytest
import torch

from gpt2probe.errors import PromptError

PROMPT = "The cat sat on the"
ANSWER = "mat and then"


def reference(probe, prompt_ids: list[int], answer_ids: list[int]):
    """HF's logits over prompt + answer, read before each answer token (no gpt2probe code)."""
    ids = torch.tensor([prompt_ids + answer_ids])
    with torch.no_grad():
        logits = probe.model(input_ids=ids).logits[0].float()
    n = len(prompt_ids)
    return logits[n - 1 : n - 1 + len(answer_ids)]


@pytest.mark.parametrize("prepend_bos", [False, True])
def test_numbers_are_the_models(vocab_probe, prepend_bos):
    tok = vocab_probe.tokenizer
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = vocab_probe.test_prompt(PROMPT, ANSWER, k=7, prepend_bos=prepend_bos)
    prompt_ids = ([tok.bos_token_id] if prepend_bos else []) + tok(PROMPT)["input_ids"]
    answer_ids = tok(" " + ANSWER)["input_ids"]  # a space is prepended, as TransformerLens does
    logits = reference(vocab_probe, prompt_ids, answer_ids)
    assert result.answer == " " + ANSWER
    assert result.answer_ids.tolist() == answer_ids
    assert result.prompt_tokens == [tok.decode([i]) for i in prompt_ids]
    assert result.answer_tokens == [tok.decode([i]) for i in answer_ids]
    probs = logits.softmax(-1)
    for i, answer_id in enumerate(answer_ids):
        row = logits[i]
        assert int(result.ranks[i]) == int((row > row[answer_id]).sum())
        assert abs(float(result.logits[i]) - float(row[answer_id])) < 1e-4
        assert abs(float(result.probs[i]) - float(probs[i, answer_id])) < 1e-6
        top = row.topk(7)
        assert result.top_ids[i].tolist() == top.indices.tolist()
        assert torch.allclose(result.top_logits[i], top.values, atol=1e-4)
        assert torch.allclose(result.top_probs[i], probs[i, top.indices], atol=1e-6)
        assert result.top_tokens[i] == [tok.decode([j]) for j in top.indices.tolist()]
    printed = out.getvalue()
    assert printed == str(result) + "\n"
    assert printed.startswith(f"Tokenized prompt: {result.prompt_tokens}\nTokenized answer: {result.answer_tokens}\n")
    first = result.answer_tokens[0]
    assert (f"Answer token 1/{len(answer_ids)} {first!r}: rank {int(result.ranks[0])}, "
            f"logit {float(result.logits[0]):.2f}, prob {float(result.probs[0]):.2%}") in printed
    assert printed.rstrip().endswith(f"Ranks of the answer tokens: {[(t, int(r)) for t, r in zip(result.answer_tokens, result.ranks)]}")


def test_rank_zero_is_the_top_prediction(vocab_probe):
    from gpt2probe.generation import next_token

    top = next_token(vocab_probe, PROMPT, 1).tokens[0][0]
    result = vocab_probe.test_prompt(PROMPT, top, k=3, prepend_space_to_answer=False, print_details=False)
    assert result.answer_tokens == [top] and int(result.ranks[0]) == 0


def test_silent_and_short(vocab_probe, capsys):
    result = vocab_probe.test_prompt(PROMPT, "mat", print_details=False)
    assert capsys.readouterr().out == ""
    assert result.k == 10 and len(repr(result).splitlines()) == 1


@pytest.mark.parametrize("prompt, answer, k, match", [
    ("", "mat", 10, "empty"),
    (PROMPT, "", 10, "empty"),
    (PROMPT, "mat", 0, "k must be"),
])
def test_bad_arguments(vocab_probe, prompt, answer, k, match):
    with pytest.raises(PromptError, match=match):
        vocab_probe.test_prompt(prompt, answer, k=k, print_details=False, prepend_space_to_answer=False)
