"""The probe's two partial ways of running: ``run_until`` (stop after a hook) and ``decode_step`` (one KV-cached step).

Both are checked against a full run, for what they compute, what they do not compute (no
later hook, module or unembedding runs), and that they leave no hook behind, exceptions included.
"""

from __future__ import annotations

import pytest
import torch

import gpt2probe
from gpt2probe import HookNameError, ShapeError
from gpt2probe import names as N
from gpt2probe.hooks import count_torch_hooks

from models import SMALL, assert_close, random_ids

IDS = random_ids(SMALL, 2, 7, seed=31)
PADDED = gpt2probe.Tokens(IDS, torch.tensor([[1] * 7, [0, 0, 0, 1, 1, 1, 1]]))  # the second prompt left-padded
LAST = SMALL.n_layer - 1
STOPS = [N.EMBED, N.resid_pre(0), N.q(0), N.pattern(1), N.ln_normalized(1, 2), N.mlp_post(1), N.resid_mid(LAST),
         N.resid_post(LAST), N.LN_FINAL_NORMALIZED]


@pytest.fixture(scope="module", params=["sdpa", "eager"])
def probe(request, small_dir):
    return gpt2probe.load(small_dir, device="cpu", attn_implementation=request.param)


@pytest.fixture
def guarded(probe):
    """The probe; after the test: no PyTorch hook left, the attention implementation restored."""
    attn = probe.model.config._attn_implementation
    yield probe
    assert count_torch_hooks(probe.model) == 0, "hooks left attached"
    assert probe.model.config._attn_implementation == attn


class _Calls:
    """PyTorch forward hooks on some modules, counting calls, removed on exit whatever happens."""

    def __init__(self, modules):
        self.modules, self.count = modules, 0

    def __enter__(self):
        def hook(module, args, output):
            self.count += 1

        self.handles = [m.register_forward_hook(hook) for m in self.modules]
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()


def _before(probe, stop_at: str) -> list[str]:
    names = probe.hook_names
    return names[: names.index(stop_at) + 1]


# -- run_until ---------------------------------------------------------------------------
@pytest.mark.parametrize("stop_at", STOPS)
def test_run_until_captures_what_a_full_run_captures(guarded, stop_at):
    names = _before(guarded, stop_at)
    _, full = guarded.run_with_cache(PADDED, names=names)
    cache = guarded.run_until(PADDED, stop_at, names=names)
    assert list(cache) == names
    for name in names:
        assert torch.equal(cache[name], full[name]), name
    only = guarded.run_until(IDS, stop_at)
    assert list(only) == [stop_at]
    assert torch.equal(only[stop_at], guarded.run_with_cache(IDS, names=[stop_at])[1][stop_at])


def test_run_until_computes_nothing_after_the_stop(guarded):
    later = []
    blocks = guarded.model.transformer.h
    with _Calls([blocks[LAST], guarded.model.transformer.ln_f, guarded.model.lm_head]) as after, \
            _Calls([blocks[0]]) as first, guarded.hooks({N.resid_pre(1): lambda t, h: later.append(h.name)}):
        cache = guarded.run_until(IDS, N.resid_post(0))
    assert first.count == 1 and after.count == 0 and later == []
    assert cache[N.resid_post(0)].shape == (2, 7, SMALL.n_embd)


def test_run_until_runs_every_hook_on_the_stop_and_sees_upstream_edits(guarded):
    seen = []
    doubled = {N.resid_pre(1): lambda t, h: 2 * t, N.resid_mid(1): lambda t, h: seen.append(h.name)}
    with guarded.hooks(doubled):
        cache = guarded.run_until(IDS, N.resid_mid(1), names=[N.resid_pre(1), N.resid_mid(1)])
        _, full = guarded.run_with_cache(IDS, names=[N.resid_pre(1), N.resid_mid(1)])
    assert seen == [N.resid_mid(1), N.resid_mid(1)]
    assert torch.equal(cache[N.resid_pre(1)], full[N.resid_pre(1)])
    assert torch.equal(cache[N.resid_mid(1)], full[N.resid_mid(1)])
    assert torch.equal(cache[N.resid_pre(1)], 2 * guarded.run_until(IDS, N.resid_pre(1))[N.resid_pre(1)])


def test_run_until_refuses_names_it_never_reaches_and_unknown_stops(guarded):
    with pytest.raises(HookNameError, match="come after stop_at"):
        guarded.run_until(IDS, N.resid_pre(1), names=[N.resid_post(1)])
    with pytest.raises(HookNameError):
        guarded.run_until(IDS, "blocks.0.hook_nothing")
    assert count_torch_hooks(guarded.model) == 0
    assert list(guarded.run_until(IDS, N.resid_pre(1), names=[])) == []


def test_run_until_leaves_nothing_when_a_hook_raises(guarded):
    def boom(tensor, hook):
        raise RuntimeError(f"boom in {hook.name}")

    for name in (N.pattern(0), N.resid_pre(1)):
        with pytest.raises(RuntimeError, match="boom"):
            with guarded.hooks({name: boom}):
                guarded.run_until(IDS, N.resid_post(1), names=N.resid_pre(1))
        assert count_torch_hooks(guarded.model) == 0

    def interrupt(tensor, hook):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        with guarded.hooks({N.attn_scores(1): interrupt}):
            guarded.run_until(IDS, N.resid_post(1), names=[N.resid_pre(1), N.pattern(1)])
    assert count_torch_hooks(guarded.model) == 0
    cache = guarded.run_until(IDS, N.resid_post(1), names=[N.resid_pre(1)])
    assert torch.equal(cache[N.resid_pre(1)], guarded.run_with_cache(IDS, names=[N.resid_pre(1)])[1][N.resid_pre(1)])


# -- decode_step -------------------------------------------------------------------------
def test_decode_step_reproduces_the_full_pass_position_by_position(guarded):
    tokens = PADDED
    full = guarded(PADDED)
    logits, kv = guarded.decode_step(tokens.ids[:, :4], tokens.attention_mask[:, :4], tokens.position_ids[:, :4])
    assert_close(logits, full[:, 3], 1e-5, "prompt step")
    for pos in range(4, IDS.shape[1]):
        logits, kv = guarded.decode_step(tokens.ids[:, pos : pos + 1], tokens.attention_mask[:, : pos + 1],
                                         tokens.position_ids[:, pos : pos + 1], kv)
        assert_close(logits, full[:, pos], 1e-5, f"step {pos}")


def test_decode_step_runs_active_hooks_on_the_new_positions_only(guarded):
    tokens = guarded.as_tokens(IDS)
    shapes = []
    with guarded.hooks({N.resid_pre(1): lambda t, h: shapes.append(tuple(t.shape)),
                        N.pattern(0): lambda t, h: shapes.append(tuple(t.shape))}):
        _, kv = guarded.decode_step(tokens.ids[:, :4], tokens.attention_mask[:, :4], tokens.position_ids[:, :4])
        guarded.decode_step(tokens.ids[:, 4:5], tokens.attention_mask[:, :5], tokens.position_ids[:, 4:5], kv)
    assert shapes == [(2, SMALL.n_head, 4, 4), (2, 4, SMALL.n_embd), (2, SMALL.n_head, 1, 5), (2, 1, SMALL.n_embd)]


def test_decode_step_checks_its_inputs_and_leaves_nothing_when_a_hook_raises(guarded):
    tokens = guarded.as_tokens(IDS)
    ids, mask, pos = tokens.ids[:, :3], tokens.attention_mask[:, :3], tokens.position_ids[:, :3]
    _, kv = guarded.decode_step(ids, mask, pos)
    with pytest.raises(ShapeError, match="the cache holds 3"):
        guarded.decode_step(tokens.ids[:, 3:4], tokens.attention_mask[:, :3], tokens.position_ids[:, 3:4], kv)
    # (wrong dtypes, ranks and batch sizes fail the jaxtyping annotations first in the test run)

    def boom(tensor, hook):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        with guarded.hooks({N.pattern(1): boom}):
            guarded.decode_step(ids, mask, pos)
    assert count_torch_hooks(guarded.model) == 0


def test_generate_steps_through_decode_step(guarded, monkeypatch):
    calls = []
    step = gpt2probe.GPT2Probe.decode_step

    def counting(self, *args, **kwargs):
        calls.append(args[0].shape)
        return step(self, *args, **kwargs)

    monkeypatch.setattr(gpt2probe.GPT2Probe, "decode_step", counting)
    gen = guarded.generate(IDS, 4, greedy=True, stop_at_eos=False)
    assert gen.new_ids.shape == (2, 4)
    assert calls == [IDS.shape, (2, 1), (2, 1), (2, 1)]
