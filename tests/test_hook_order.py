"""Hooks compose in any order: every capture sees what the model really consumes, after every edit.

For every pair (edit site, capture site) within one block, plus the embeddings and the final
norm, and for both registration orders, each captured activation is compared with the
inputs and outputs of the Hugging Face modules themselves, recorded by plain PyTorch hooks
registered after ours (so they see the final values). Then each edit is checked to land
exactly where the model consumes it.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from einops import rearrange

from gpt2probe import names as N
from gpt2probe.hooks import count_torch_hooks

from models import SMALL, random_ids

LAYER = 1  # a middle block of the 3-block SMALL model: its input and output both pass through other blocks
SITES = [N.EMBED, N.POS_EMBED, *N.block_names(LAYER), N.LN_FINAL_SCALE, N.LN_FINAL_NORMALIZED]
IDS = random_ids(SMALL, batch=2, pos=7, seed=5)


def edit(x: torch.Tensor, hook=None) -> torch.Tensor:
    """A deterministic edit that changes every entry (no random state, same on every machine)."""
    wave = torch.sin(torch.arange(x.numel(), dtype=torch.float32, device=x.device)).reshape(x.shape)
    return x + (0.3 * wave).to(x.dtype)


class ModuleRecorder:
    """Plain PyTorch forward hooks on the HF modules: what each one really received and returned."""

    def __init__(self, model) -> None:
        t = model.transformer
        block, after = t.h[LAYER], (t.h[LAYER + 1] if LAYER + 1 < len(t.h) else t.ln_f)
        self.modules = {
            "wte": t.wte, "wpe": t.wpe, "block": block, "ln_1": block.ln_1, "c_attn": block.attn.c_attn,
            "attn_c_proj": block.attn.c_proj, "attn": block.attn, "ln_2": block.ln_2, "c_fc": block.mlp.c_fc,
            "mlp_c_proj": block.mlp.c_proj, "mlp": block.mlp, "after": after, "ln_f": t.ln_f,
        }  # fmt: skip
        self.seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.handles = []

    def __enter__(self) -> ModuleRecorder:
        for key, module in self.modules.items():
            def hook(module, args, kwargs, output, key=key):
                x = args[0] if args else kwargs["hidden_states"]
                out = output[0] if isinstance(output, tuple) else output
                self.seen[key] = (x.detach().clone(), out.detach().clone())

            self.handles.append(module.register_forward_hook(hook, with_kwargs=True))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()

    def input(self, key: str) -> torch.Tensor:
        return self.seen[key][0]

    def output(self, key: str) -> torch.Tensor:
        return self.seen[key][1]


def _ln_scale(x: torch.Tensor, eps: float) -> torch.Tensor:
    x = x.double()
    return ((x - x.mean(-1, keepdim=True)).pow(2).mean(-1, keepdim=True) + eps).sqrt()


def reference(name: str, rec: ModuleRecorder, model, edited: str) -> torch.Tensor:
    """``name``'s value computed from the HF modules' recorded inputs and outputs only."""
    n_heads, block = model.config.n_head, model.transformer.h[LAYER]
    heads = lambda t: rearrange(t, "b p (h dh) -> b p h dh", h=n_heads)  # noqa: E731
    lns = {"ln1": ("ln_1", block.ln_1), "ln2": ("ln_2", block.ln_2), "ln_final": ("ln_f", model.transformer.ln_f)}
    short = name.removeprefix(f"blocks.{LAYER}.")
    if short.endswith(("hook_scale", "hook_normalized")):
        key, ln = lns[short.split(".")[0]]
        if short.endswith("hook_scale"):
            return _ln_scale(rec.input(key), ln.eps)
        return (rec.output(key).double() - ln.bias.double()) / ln.weight.double()
    if short in ("attn.hook_attn_scores", "attn.hook_pattern"):
        q, k, _ = (heads(p) for p in rec.output("c_attn").chunk(3, dim=-1))
        scores = torch.einsum("bqhd,bkhd->bhqk", q.double(), k.double()) / q.shape[-1] ** 0.5
        n = scores.shape[-1]
        scores = scores.masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), torch.finfo(torch.float32).min)
        if edited == N.attn_scores(LAYER):
            scores = edit(scores)
        if short == "attn.hook_scores" or short.endswith("attn_scores"):
            return scores
        return torch.softmax(scores, dim=-1)
    table = {
        N.EMBED: lambda: rec.output("wte"),
        N.POS_EMBED: lambda: rec.output("wpe"),
        N.resid_pre(LAYER): lambda: rec.input("block"),
        N.q(LAYER): lambda: heads(rec.output("c_attn").chunk(3, dim=-1)[0]),
        N.k(LAYER): lambda: heads(rec.output("c_attn").chunk(3, dim=-1)[1]),
        N.v(LAYER): lambda: heads(rec.output("c_attn").chunk(3, dim=-1)[2]),
        N.z(LAYER): lambda: heads(rec.input("attn_c_proj")),
        N.attn_out(LAYER): lambda: rec.output("attn"),
        N.resid_mid(LAYER): lambda: rec.input("ln_2"),
        N.mlp_pre(LAYER): lambda: rec.output("c_fc"),
        N.mlp_post(LAYER): lambda: rec.input("mlp_c_proj"),
        N.mlp_out(LAYER): lambda: rec.output("mlp"),
        N.resid_post(LAYER): lambda: rec.input("after"),
    }
    return table[name]()


def compare(name: str, got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    got, want = got.double(), want.double()
    assert got.shape == want.shape, f"{what}: {name} shape {tuple(got.shape)} vs {tuple(want.shape)}"
    if name.endswith(("attn_scores", "hook_pattern")):  # compare the causal part; the masked part is -min/0
        keep = torch.ones(got.shape[-2:], dtype=torch.bool).tril()
        got, want = got[..., keep], want[..., keep]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=2e-5, msg=lambda m: f"{what}: {name}: {m}")


def capture_into(store: dict):
    return lambda x, hook: store.__setitem__(hook.name, x.detach().clone())


@pytest.mark.parametrize("edited", SITES)
def test_every_capture_sees_every_edit_in_either_order(small_probe, edited):
    """Each (edit, capture) pair alone, both registration orders: only those two sites are installed."""
    for captured, edit_first in itertools.product([s for s in SITES if s != edited], [True, False]):
        store = {}
        pairs = [(edited, edit), (captured, capture_into(store))]
        with small_probe.hooks(pairs if edit_first else pairs[::-1]), ModuleRecorder(small_probe.model) as rec:
            small_probe(IDS)
        what = f"edit {edited}, capture {captured}, {'edit' if edit_first else 'capture'} registered first"
        compare(captured, store[captured], reference(captured, rec, small_probe.model, edited), what)
    assert count_torch_hooks(small_probe.model) == 0


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("edited", SITES)
def test_all_captures_at_once_see_an_edit_registered_first_or_last(get_probe, attn, edited):
    probe = get_probe("small", attn)
    for edit_first in (True, False):
        store = {}
        captures = [(name, capture_into(store)) for name in SITES if name != edited]
        pairs = [(edited, edit), *captures] if edit_first else [*captures, (edited, edit)]
        with probe.hooks(pairs), ModuleRecorder(probe.model) as rec:
            probe(IDS)
        for captured, _ in captures:
            what = f"edit {edited} registered {'first' if edit_first else 'last'}, {attn}"
            compare(captured, store[captured], reference(captured, rec, probe.model, edited), what)
    assert count_torch_hooks(probe.model) == 0


# Edits whose consumer is one module boundary: the consumed value must be the edit, bit for bit.
EXACT = [N.EMBED, N.POS_EMBED, N.resid_pre(LAYER), N.q(LAYER), N.k(LAYER), N.v(LAYER), N.z(LAYER),
         N.attn_out(LAYER), N.resid_mid(LAYER), N.mlp_pre(LAYER), N.mlp_post(LAYER), N.mlp_out(LAYER),
         N.resid_post(LAYER)]  # fmt: skip


@pytest.mark.parametrize("edited", EXACT)
def test_an_edit_lands_exactly_where_the_model_consumes_it(small_probe, edited):
    before = {}
    pairs = [(edited, lambda x, hook: before.__setitem__("x", x.detach().clone())), (edited, edit)]
    with small_probe.hooks(pairs), ModuleRecorder(small_probe.model) as rec:
        small_probe(IDS)
    assert torch.equal(reference(edited, rec, small_probe.model, edited), edit(before["x"]))


def test_a_resid_mid_replacement_reaches_the_mlp_and_the_block_output(small_probe):
    """The block adds its MLP output to the *replaced* stream: ``resid_post = new_mid + mlp_out`` exactly."""
    new_mid = {}

    def replace(x, hook):
        new_mid["x"] = edit(x)
        return new_mid["x"]

    with small_probe.hooks({N.resid_mid(LAYER): replace}), ModuleRecorder(small_probe.model) as rec:
        small_probe(IDS)
    assert torch.equal(rec.input("ln_2"), new_mid["x"])
    assert torch.equal(rec.input("after"), new_mid["x"] + rec.output("mlp"))


def test_steering_inside_an_outer_hooks_block_composes(small_probe):
    """``steer`` inside ``probe.hooks(...)``: the steered ``resid_mid`` includes the outer ``resid_pre`` edit."""
    from gpt2probe.interventions import steer

    vector = torch.linspace(-1, 1, SMALL.n_embd)
    mid = N.resid_mid(LAYER)
    with small_probe.hooks({N.resid_pre(LAYER): edit}):
        _, outer_only = small_probe.run_with_cache(IDS, names=[mid])
        with steer(small_probe, LAYER, vector, 2.0, stream="resid_mid"), ModuleRecorder(small_probe.model) as rec:
            _, both = small_probe.run_with_cache(IDS, names=[mid])
    torch.testing.assert_close(both[mid], outer_only[mid] + 2.0 * vector)
    assert torch.equal(both[mid], rec.input("ln_2"))
    assert count_torch_hooks(small_probe.model) == 0
