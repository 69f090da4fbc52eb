"""Published facts about GPT-2 small, reproduced with gpt2probe when its weights are here.

Marked ``needs_gpt2``: skipped (with the reason) unless ``gpt2`` is in the Hugging Face cache.
To run them: ``hf download gpt2`` once (or copy a cache into ``HF_HOME``), then
``python -m pytest -m needs_gpt2``. They never download anything themselves.

- The logit lens's last stream is the model's own prediction: " Paris" after
  "The Eiffel Tower is located in the city of".
- Induction heads 5.1, 5.5 and 6.9 (Olsson et al. 2022, "In-context learning and induction
  heads"; TransformerLens's main demo) score highest on repeated random tokens.
- Head 4.11 is a strong previous-token head.
- In the IOI prompt, the name movers 9.6, 9.9 and 10.0 (Wang et al. 2022, "Interpretability
  in the wild") have the largest direct logit attribution to logit(IO) - logit(S).
"""

from __future__ import annotations

import pytest

import gpt2probe
from gpt2probe import head_scores
from gpt2probe.lens import direct_logit_attribution, logit_lens


def _gpt2_cached() -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    for repo in ("gpt2", "openai-community/gpt2"):
        config = try_to_load_from_cache(repo, "config.json")
        weights = try_to_load_from_cache(repo, "model.safetensors")
        if isinstance(config, str) and isinstance(weights, str):
            return True
    return False


pytestmark = [
    pytest.mark.needs_gpt2,
    pytest.mark.skipif(
        not _gpt2_cached(),
        reason="GPT-2 small's weights are not in the Hugging Face cache: run `hf download gpt2` once, "
        "then `python -m pytest -m needs_gpt2`",
    ),
]


@pytest.fixture(scope="module")
def gpt2():
    probe = gpt2probe.load("gpt2", device="cpu")
    assert (probe.cfg.n_layers, probe.cfg.n_heads, probe.cfg.d_model) == (12, 12, 768), "not GPT-2 small"
    return probe


def _heads(rows) -> list[str]:
    return [f"{layer}.{head}" for layer, head, _ in rows]


def test_logit_lens_last_stream_predicts_paris(gpt2):
    lens = logit_lens(gpt2, "The Eiffel Tower is located in the city of", prepend_bos=True)
    token, p = lens[0].top1(stream=-1)
    assert token == " Paris", (token, p)


def test_top_induction_heads_are_the_published_ones(gpt2):
    scores = head_scores.induction_scores(gpt2, half_len=50, n_seqs=4)
    top = _heads(head_scores.rank_heads(scores, top=10))
    assert {"5.1", "5.5", "6.9"} <= set(top), top


def test_head_4_11_is_a_strong_previous_token_head(gpt2):
    text = ("The quick brown fox jumps over the lazy dog. Researchers study how language models "
            "represent the meaning of words, sentences and whole documents.")
    _, cache = gpt2.run_with_cache(text, names=head_scores.PATTERN_NAMES, prepend_bos=True)
    scores = head_scores.previous_token_scores(cache)
    assert float(scores[4, 11]) > 0.8, float(scores[4, 11])
    assert "4.11" in _heads(head_scores.rank_heads(scores, top=3))


def test_name_movers_carry_the_ioi_logit_difference(gpt2):
    prompt = "When Mary and John went to the store, John gave a drink to"
    attribution = direct_logit_attribution(gpt2, prompt, " Mary", baseline=" John", prepend_bos=True)
    assert attribution.total > 0, "GPT-2 prefers the indirect object"
    top = _heads(head_scores.rank_heads(attribution.head_values, top=6))
    assert {"9.6", "9.9", "10.0"} <= set(top), top
