"""One window packer and one learning-rate schedule for every training loop, giving each loop's former results.

Fine-tuning, tuned-lens training and harvesting each had their own packer, and fine-tuning,
the tuned lens and SAE training their own schedule (issue 23). The shared ones must give
the same windows and the same learning rates, bit for bit: the former implementations are
kept here as the references.
"""

from __future__ import annotations

import math

import pytest
import torch

from gpt2probe.configs.sae import SAETrainConfig
from gpt2probe.finetune import pack_windows as finetune_pack
from gpt2probe.harvest.corpus import Block, pack
from gpt2probe.lens.tuned_training import pack_windows as lens_pack
from gpt2probe.schedule import lr_factor

TEXTS = ["The value of the expression is", "", "def f(x):\n    return x  # ünïcode ✓", "a " * 40,
         "<|endoftext|> is text here", "Zeile\r\nzwei\u2028drei"]


@pytest.fixture(scope="module")
def probe(vocab_probe):
    """A probe with GPT-2's vocabulary and tokenizer (a tiny random model)."""
    return vocab_probe


def old_training_ids(tokenizer, texts, verbose_kw):
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    for text in texts:
        ids += tokenizer(text, add_special_tokens=False, **verbose_kw)["input_ids"] + [eos]
    return ids


def old_harvest_pack(block, tokenizer, *, seq_len, eos, seed=None):
    docs = list(block.docs)
    if seed is not None:
        gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + block.index)
        docs = [docs[i] for i in torch.randperm(len(docs), generator=gen).tolist()]
    encoded = tokenizer.backend_tokenizer.encode_batch([t for _, t in docs], add_special_tokens=False)
    ids, lengths = [], []
    for enc in encoded:
        ids += enc.ids
        ids.append(eos)
        lengths.append(len(enc.ids) + 1)
    flat_ids = torch.tensor(ids, dtype=torch.int64)
    lengths_t = torch.tensor(lengths, dtype=torch.int64)
    flat_doc = torch.tensor([doc_id for doc_id, _ in docs], dtype=torch.int64).repeat_interleave(lengths_t)
    starts = torch.cumsum(lengths_t, 0) - lengths_t
    flat_pos = torch.arange(flat_ids.shape[0], dtype=torch.int64) - starts.repeat_interleave(lengths_t)
    total = flat_ids.shape[0]
    n_windows = -(-total // seq_len)
    pad = n_windows * seq_len - total
    valid = torch.full((n_windows,), seq_len, dtype=torch.int64)
    valid[-1] = seq_len - pad
    if pad:
        flat_ids = torch.cat([flat_ids, torch.full((pad,), eos, dtype=torch.int64)])
        flat_doc = torch.cat([flat_doc, torch.full((pad,), -1, dtype=torch.int64)])
        flat_pos = torch.cat([flat_pos, torch.full((pad,), -1, dtype=torch.int64)])
    shape = (n_windows, seq_len)
    return flat_ids.view(shape), flat_doc.view(shape), flat_pos.view(shape), valid


@pytest.mark.parametrize("seq_len", [1, 3, 7, 16])
def test_training_windows_are_unchanged(probe, seq_len):
    ids = old_training_ids(probe.tokenizer, TEXTS, {})
    n = len(ids) // seq_len
    expected = torch.tensor(ids[: n * seq_len]).view(n, seq_len)
    assert torch.equal(finetune_pack(probe, TEXTS, seq_len), expected)
    ids = old_training_ids(probe.tokenizer, TEXTS, {"verbose": False})
    windows, n_tokens = lens_pack(probe, TEXTS, seq_len)
    assert n_tokens == len(ids) and windows.dtype == torch.long
    assert torch.equal(windows, torch.tensor(ids[: n * seq_len], dtype=torch.long).view(n, seq_len))


def test_too_little_text_is_still_refused_or_empty(probe):
    from gpt2probe.errors import PromptError

    with pytest.raises(PromptError, match="fewer than one window"):
        finetune_pack(probe, ["a"], 64)
    windows, n_tokens = lens_pack(probe, ["a"], 64)
    assert windows.shape == (0, 64) and n_tokens == 2


@pytest.mark.parametrize("seq_len, seed", [(4, None), (5, 3), (64, None), (1, 0)])
def test_harvest_windows_are_unchanged(probe, seq_len, seed):
    block = Block(2, [(10 + i, t) for i, t in enumerate(TEXTS) if t])
    eos = probe.tokenizer.eos_token_id
    packed = pack(block, probe.tokenizer, seq_len=seq_len, eos=eos, seed=seed)
    tokens, doc, pos, valid = old_harvest_pack(block, probe.tokenizer, seq_len=seq_len, eos=eos, seed=seed)
    assert torch.equal(packed.tokens, tokens) and torch.equal(packed.doc, doc)
    assert torch.equal(packed.pos, pos) and torch.equal(packed.valid, valid)


def old_finetune_factor(step, steps, warmup):
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def old_lens_factor(step, steps, warmup):
    if step < warmup:
        return (step + 1) / warmup
    return (steps - step) / (steps - warmup)


def old_sae_factor(step, steps, warmup, decay):
    factor = 1.0
    if warmup and step < warmup:
        factor = (step + 1) / warmup
    remaining = steps - step
    if decay and remaining <= decay:
        factor = min(factor, remaining / decay)
    return factor


@pytest.mark.parametrize("steps, warmup", [(1, 0), (1, 1), (10, 0), (10, 1), (10, 3), (10, 10), (10, 25), (997, 99)])
def test_learning_rates_are_unchanged(steps, warmup):
    for step in range(steps):
        assert lr_factor(step, steps=steps, warmup=warmup, shape="cosine", floor=0.1) == \
            old_finetune_factor(step, steps, warmup)
        if warmup < steps or step < warmup:
            assert lr_factor(step, steps=steps, warmup=warmup) == old_lens_factor(step, steps, warmup)
        for decay in (0, 1, steps // 5, steps):
            assert lr_factor(step, steps=steps, warmup=warmup, decay_steps=decay) == \
                old_sae_factor(step, steps, warmup, decay)


def test_sae_options_use_the_shared_schedule():
    opts = SAETrainConfig(steps=100, lr=1e-3, warmup_steps=10, decay_steps=20)
    assert [opts.learning_rate(s) for s in range(100)] == [1e-3 * old_sae_factor(s, 100, 10, 20) for s in range(100)]


def test_unknown_shape_is_refused():
    from gpt2probe.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="cosine"):
        lr_factor(0, steps=2, warmup=0, shape="exponential")
