"""A probe refuses, clearly, to be used from a second thread while another thread holds it."""

from __future__ import annotations

import threading

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

import gpt2probe
from gpt2probe.errors import ConcurrentUseError
from gpt2probe.hooks import count_torch_hooks


@pytest.fixture(scope="module")
def probe():
    torch.manual_seed(3)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=30, n_head=3, n_positions=17, vocab_size=97))
    return gpt2probe.load(model, device="cpu")


def in_thread(fn):
    outcome = {}

    def target():
        try:
            outcome["value"] = fn()
        except BaseException as error:  # noqa: BLE001 - handed back to the test
            outcome["error"] = error

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(timeout=60)
    return outcome


def test_second_thread_is_refused_while_hooks_are_attached(probe):
    ids = torch.tensor([[1, 2, 3, 4]])
    expected = probe(ids)
    with probe.hooks({"blocks.0.hook_resid_post": lambda x, hook: x * 0}):
        for attempt in (lambda: probe(ids), lambda: probe.run_with_cache(ids, names=["hook_embed"])):
            outcome = in_thread(attempt)
            assert isinstance(outcome.get("error"), ConcurrentUseError)
            assert "another thread" in str(outcome["error"])
        assert not torch.equal(probe(ids), expected)  # the owning thread still works
    assert count_torch_hooks(probe.model) == 0
    assert torch.equal(in_thread(lambda: probe(ids))["value"], expected)  # free again afterwards


def test_threads_taking_turns_are_fine(probe):
    ids = torch.tensor([[5, 6, 7]])
    expected = probe.run_with_cache(ids, names=["blocks.1.hook_resid_post"])[1]["blocks.1.hook_resid_post"]
    for _ in range(3):
        outcome = in_thread(lambda: probe.run_with_cache(ids, names=["blocks.1.hook_resid_post"])[1])
        assert torch.equal(outcome["value"]["blocks.1.hook_resid_post"], expected)


# -- several probes of one model share one registry and one lock ------------------------


@pytest.fixture
def two_probes():
    torch.manual_seed(4)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=30, n_head=3, n_positions=17, vocab_size=97)).eval()
    return gpt2probe.load(model, device="cpu"), gpt2probe.load(model, device="cpu")


def test_two_probes_of_one_model_share_the_registry(two_probes):
    a, b = two_probes
    assert a.registry is b.registry


def test_a_second_probe_does_not_switch_off_the_first_probes_pattern_hook(two_probes):
    """Probe B capturing a pattern (and releasing it) inside probe A's pattern hook leaves A's hook working."""
    a, b = two_probes
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    name = "blocks.0.attn.hook_pattern"
    seen = []
    with a.hooks({name: lambda x, hook: seen.append(x.detach().clone())}):
        _, cache = b.run_with_cache(ids, names=[name])
        a(ids)
    assert len(seen) == 2  # fired in B's run and again in A's after B released its own hook
    assert torch.equal(seen[1], cache[name])
    assert a.model.config._attn_implementation == "sdpa"
    assert count_torch_hooks(a.model) == 0


def test_second_probe_in_another_thread_is_refused_never_wrong(two_probes):
    a, b = two_probes
    ids = torch.tensor([[1, 2, 3, 4]])
    expected = b(ids)
    with a.hooks({"blocks.0.hook_resid_post": lambda x, hook: x * 0}):
        for attempt in (lambda: b(ids), lambda: b.run_with_cache(ids, names=["hook_embed"])[0],
                        lambda: b.model(ids).logits):  # fmt: skip
            outcome = in_thread(attempt)
            assert isinstance(outcome.get("error"), ConcurrentUseError), outcome
    assert torch.equal(in_thread(lambda: b(ids))["value"], expected)


def test_hooks_entered_in_one_thread_and_exited_in_another_release_the_model(probe):
    ids = torch.tensor([[1, 2, 3]])
    expected = probe(ids)
    block = probe.hooks({"blocks.0.hook_resid_post": lambda x, hook: x * 0})
    block.__enter__()
    assert in_thread(lambda: block.__exit__(None, None, None)).get("error") is None
    assert count_torch_hooks(probe.model) == 0
    assert torch.equal(probe(ids), expected)  # this thread is free again
    assert torch.equal(in_thread(lambda: probe(ids))["value"], expected)  # and so is any other
