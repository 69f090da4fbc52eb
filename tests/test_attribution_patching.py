"""Attribution patching checked against gradients taken with plain PyTorch hooks, TransformerLens and exact patching.

The reference gradients here use ``register_forward_hook``/``retain_grad`` on the Hugging Face
modules directly, sharing nothing with gpt2probe's hook registry; the exact-patching side uses
:func:`patch`. Fixtures are the perturbed random models of ``tests/models.py`` and the
hand-built ``toy-induction`` model.
"""

from __future__ import annotations

import math

import pytest
import torch
from einops import rearrange

from gpt2probe.errors import GPT2ProbeError
from gpt2probe.hooks import count_torch_hooks
from gpt2probe.interventions import attribution_patch, patch
from gpt2probe.toy import repeated_random_tokens

from models import SMALL, assert_close, random_ids

ANSWER, WRONG = 3, 4
HALF = 11


def pair(n_batch=2, n_pos=7, seed=1):
    clean = random_ids(SMALL, n_batch, n_pos, seed)
    corrupted = clean.clone()
    corrupted[:, 2] = random_ids(SMALL, n_batch, 1, seed + 100)[:, 0]
    corrupted[:, 4] = random_ids(SMALL, n_batch, 1, seed + 200)[:, 0]
    return clean, corrupted


def logit_diff(logits):
    return (logits[:, -1, ANSWER] - logits[:, -1, WRONG]).mean()


# -- an independent gradient computation: plain PyTorch hooks on the HF modules -----------------

def plain_module(model, kind, layer):
    """(module, 'in' or 'out', to_view) where the kind's activation is that module's input or output."""
    block, n_heads = model.transformer.h[layer], model.config.n_head
    heads = lambda t: rearrange(t, "b p (h d) -> b p h d", h=n_heads)  # noqa: E731
    return {
        "resid_pre": (block, "in", lambda t: t),
        "mlp_out": (block.mlp, "out", lambda t: t),
        "head": (block.attn.c_proj, "in", heads),
        "head_v": (block.attn.c_attn, "out", lambda t: heads(t.chunk(3, -1)[2])),
        "head_q": (block.attn.c_attn, "out", lambda t: heads(t.chunk(3, -1)[0])),
    }[kind]


def plain_run(model, tokens, kind, layer, grad):
    """One layer's activation (and its metric gradient), with a hook written against torch directly.

    The activation is replaced by a leaf that requires grad (the probe's parameters are frozen),
    one layer per run so that no later leaf cuts the path from an earlier one.
    """
    module, where, view = plain_module(model, kind, layer)
    seen = {}

    def leaf(tensor):
        seen["x"] = tensor.detach().clone().requires_grad_(grad)
        return seen["x"]

    if where == "in":
        def hook(mod, args, kwargs):
            if args:
                return (leaf(args[0]), *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": leaf(kwargs["hidden_states"])}

        handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    else:
        handle = module.register_forward_hook(lambda mod, args, out: leaf(out))
    try:
        with torch.set_grad_enabled(grad):
            value = logit_diff(model(tokens).logits)
            if grad:
                value.backward()
    finally:
        handle.remove()
    x = seen["x"]
    return float(value.detach()), view(x.detach()), view(x.grad) if grad else None


def plain_atp(model, clean, corrupted, kind, direction="denoise"):
    base, source = (corrupted, clean) if direction == "denoise" else (clean, corrupted)
    rows = []
    for layer in range(model.config.n_layer):
        base_metric, base_act, grad = plain_run(model, base, kind, layer, grad=True)
        _, source_act, _ = plain_run(model, source, kind, layer, grad=False)
        product = (source_act - base_act) * grad
        rows.append(product.sum((0, 2)) if kind in ("resid_pre", "mlp_out") else product.sum((0, 1, 3)))
    return base_metric + torch.stack(rows)


@pytest.mark.parametrize("kind,direction", [("resid_pre", "denoise"), ("mlp_out", "denoise"), ("head", "denoise"),
                                            ("head_v", "noise"), ("head_q", "denoise")])
def test_atp_equals_plain_torch_gradients(small_probe, kind, direction):
    clean, corrupted = pair()
    expected = plain_atp(small_probe.model, clean, corrupted, kind, direction)
    result = attribution_patch(small_probe, clean, corrupted, kind=kind, metric=logit_diff, direction=direction,
                               normalize=False)
    assert_close(result.values, expected.float(), 1e-4, kind)


def test_atp_normalises_and_lays_out_axes_like_patch(small_probe):
    clean, corrupted = pair()
    for kind, per_position in [("resid_mid", True), ("attn_out", False), ("head_k", True), ("head_pattern", True)]:
        exact = patch(small_probe, clean, corrupted, kind=kind, answer=ANSWER, wrong=WRONG, per_position=per_position)
        for method in ("atp", "atp*"):
            est = attribution_patch(small_probe, clean, corrupted, kind=kind, answer=ANSWER, wrong=WRONG,
                                    per_position=per_position, method=method)
            assert (est.axis_names, est.axis_labels, est.kind) == (exact.axis_names, exact.axis_labels, exact.kind)
            assert est.clean_metric == pytest.approx(exact.clean_metric, abs=1e-5)
            assert est.corrupted_metric == pytest.approx(exact.corrupted_metric, abs=1e-5)
            raw = attribution_patch(small_probe, clean, corrupted, kind=kind, answer=ANSWER, wrong=WRONG,
                                    per_position=per_position, method=method, normalize=False)
            assert_close(est.raw(), raw.values, 1e-4, f"{kind} {method}")


def test_positions_before_the_first_difference_estimate_zero(small_probe):
    clean, corrupted = pair()
    result = attribution_patch(small_probe, clean, corrupted, kind="resid_pre", metric=logit_diff, normalize=False)
    assert_close(result.values[:, :2], torch.full((SMALL.n_layer, 2), result.corrupted_metric), 1e-6)


# -- TransformerLens 4.3's tools.analysis.attribution_patching on the same checkpoint ------------

def test_atp_equals_transformer_lens_node_scores(small_probe, small_bridge):
    """TL scores nodes per position with (a_clean - a_corrupt) . grad on the corrupt run, averaged over pairs."""
    from transformer_lens.tools.analysis.attribution_patching import attribution_patch as tl_attribution_patch

    clean, corrupted = pair()
    tl = tl_attribution_patch(small_bridge, clean, corrupted, logit_diff).node_scores
    n_pos = clean.shape[1]
    ours = attribution_patch(small_probe, clean, corrupted, kind="mlp_out", metric=logit_diff, normalize=False)
    tl_mlp = torch.tensor([[tl[_node("mlp_out", p, l)] for p in range(n_pos)] for l in range(SMALL.n_layer)])
    assert_close(ours.values - ours.corrupted_metric, tl_mlp, 1e-4, "mlp_out")
    heads = attribution_patch(small_probe, clean, corrupted, kind="head", metric=logit_diff, normalize=False)
    tl_heads = torch.tensor([[sum(tl[_node("attn_head_out", p, l, h)] for p in range(n_pos)) for h in range(SMALL.n_head)]
                             for l in range(SMALL.n_layer)])
    assert_close(heads.values - heads.corrupted_metric, tl_heads, 1e-4, "head")


def _node(kind, position, layer, head=None):
    from transformer_lens.tools.analysis.attribution_patching import Node

    return Node(kind=kind, position=position, layer=layer, head=head)


# -- AtP*: the QK fix and GradDrop ----------------------------------------------------------------

def test_qk_fix_uses_the_exactly_patched_pattern(small_probe):
    """atp* for head_k equals (pattern with head h's keys patched, from a real run) - pattern, dotted with d metric/d pattern."""
    from gpt2probe import names as N
    from gpt2probe.interventions import patch_hook

    clean, corrupted = pair()
    fixed = attribution_patch(small_probe, clean, corrupted, kind="head_k", metric=logit_diff, normalize=False, method="atp*")
    pattern_atp = attribution_patch(small_probe, clean, corrupted, kind="head_pattern", metric=logit_diff,
                                    normalize=False)
    layer, head = 1, 2
    _, clean_cache = small_probe.run_with_cache(clean, names=[N.k(layer)])
    _, base = small_probe.run_with_cache(corrupted, names=[N.pattern(layer)])
    with small_probe.hooks([(N.k(layer), patch_hook(clean_cache[N.k(layer)], (slice(None), head)))]):
        _, patched = small_probe.run_with_cache(corrupted, names=[N.pattern(layer)])
    changed = (patched[N.pattern(layer)] - base[N.pattern(layer)])[:, head]
    assert changed.abs().max() > 1e-3  # the fixture's keys do change the pattern
    # Linearising after the pattern: the same gradient as head_pattern's atp, dotted with the exact change.
    grads = _pattern_grad(small_probe, corrupted, layer)[:, head]
    expected = fixed.corrupted_metric + float((changed.double() * grads.double()).sum())
    assert float(fixed.values[layer, head]) == pytest.approx(expected, abs=1e-4)
    assert not torch.allclose(fixed.values, pattern_atp.values)


def _pattern_grad(probe, tokens, layer):
    from gpt2probe import names as N

    store = {}

    def keep(activation, point):
        out = activation.clone().requires_grad_(True) if not activation.requires_grad else activation * 1.0
        out.retain_grad()
        store["p"] = out
        return out

    logits = probe.run_with_hooks(tokens, [(N.pattern(layer), keep)], grad=True)
    logit_diff(logits).backward()
    probe.model.zero_grad(set_to_none=True)
    return store["p"].grad


def test_graddrop_equals_a_plain_stop_gradient_computation(small_probe):
    clean, corrupted = pair()
    result = attribution_patch(small_probe, clean, corrupted, kind="resid_pre", metric=logit_diff, normalize=False,
                               method="atp*")
    model, n_layers = small_probe.model, SMALL.n_layer
    source = [plain_run(model, clean, "resid_pre", l, grad=False)[1] for l in range(n_layers)]
    total = torch.zeros(n_layers, clean.shape[1], dtype=torch.float64)
    for dropped in range(n_layers):
        block = model.transformer.h[dropped]
        handles = [ln.register_forward_pre_hook(lambda mod, args: (args[0].detach(),)) for ln in (block.ln_1, block.ln_2)]
        try:
            for layer in range(n_layers):
                _, base, grad = plain_run(model, corrupted, "resid_pre", layer, grad=True)
                total[layer] += ((source[layer] - base) * grad).double().sum((0, 2)).abs()
        finally:
            for h in handles:
                h.remove()
    assert_close(result.graddrop, (total / (n_layers - 1)).float(), 1e-4, "graddrop")  # the paper's 1/(L-1)
    assert result.graddrop[1:].abs().max() > 1e-3


# -- integrated gradients -------------------------------------------------------------------------

def test_ig_converges_to_exact_patching_of_one_site(small_probe):
    """With per_position=False one cell is one layer's whole hook: IG's path ends exactly at its patch."""
    clean, corrupted = pair()
    for kind in ("resid_mid", "mlp_out"):
        exact = patch(small_probe, clean, corrupted, kind=kind, metric=logit_diff, per_position=False)
        errors = [float((attribution_patch(small_probe, clean, corrupted, kind=kind, metric=logit_diff,
                                           per_position=False, method="ig", steps=steps).values - exact.values).abs().max())
                  for steps in (1, 4, 32)]
        assert errors[0] > 1e-2, (kind, errors)  # a nonlinear site: one step is not enough
        assert errors[2] < errors[1] < errors[0], (kind, errors)
        assert errors[2] < 2e-3, (kind, errors)


def test_ig_head_cells_sum_to_the_layer_patch(small_probe):
    """Completeness: the heads of a layer move together on the path, so their cells sum to patching the whole layer."""
    clean, corrupted = pair()
    exact = patch(small_probe, clean, corrupted, kind="attn_out", metric=logit_diff, per_position=False, normalize=False)
    ig = attribution_patch(small_probe, clean, corrupted, kind="head", metric=logit_diff, normalize=False, method="ig",
                           steps=32)
    assert_close(ig.raw().sum(-1) - (SMALL.n_head - 1) * ig.corrupted_metric, exact.values, 2e-3, "head sums")


# -- the toy induction circuit --------------------------------------------------------------------

def toy_pair():
    clean = repeated_random_tokens(4, HALF, 64, seed=1)
    corrupted = clean.clone()
    corrupted[:, 1 : HALF + 1] = repeated_random_tokens(4, HALF, 64, seed=2)[:, 1 : HALF + 1]

    def metric(logits):
        logprobs = logits[:, HALF + 1 : 2 * HALF].log_softmax(-1)
        return logprobs.gather(-1, clean[:, HALF + 2 :, None]).mean()

    return clean, corrupted, metric


def top_two(values):
    order = values.flatten().abs().argsort(descending=True)[:2]
    return {divmod(int(i), values.shape[1]) for i in order}


@pytest.mark.parametrize("method", ["exact", "atp", "atp*", "ig"])
def test_every_method_ranks_the_induction_circuit_heads_first(toy, method):
    clean, corrupted, metric = toy_pair()
    if method == "exact":
        result = patch(toy, clean, corrupted, kind="head", metric=metric)
    else:
        result = attribution_patch(toy, clean, corrupted, kind="head", metric=metric, method=method)
    assert top_two(result.values) == {(0, 0), (1, 0)}
    assert result.values.abs()[:, 1:].max() < 1e-5  # the zero-weight heads
    assert abs(float(result.values[0, 0])) > 1e-2  # a real estimate, not a tie broken by rounding


def test_qk_fix_recovers_the_saturated_key_effect(toy):
    """The induction head's attention is saturated: atp sees no key effect, atp* (exact softmax) and ig do."""
    clean, corrupted, metric = toy_pair()
    exact = patch(toy, clean, corrupted, kind="head_k", metric=metric)
    assert abs(float(exact.values[1, 0])) > 1.0
    assert abs(float(attribution_patch(toy, clean, corrupted, kind="head_k", metric=metric).values[1, 0])) < 1e-3
    fixed = attribution_patch(toy, clean, corrupted, kind="head_k", metric=metric, method="atp*")
    assert abs(float(fixed.values[1, 0])) > 0.1
    ig = attribution_patch(toy, clean, corrupted, kind="head_k", metric=metric, method="ig", steps=32)
    assert float(ig.values[1, 0]) == pytest.approx(float(exact.values[1, 0]), abs=0.05)


# -- errors and hooks ------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,match", [
    ({"method": "exact"}, "method must be one of"),
    ({"method": "atp", "steps": 4}, "only used by method='ig'"),
    ({"method": "ig", "steps": 0}, "positive integer"),
    ({"kind": "resid"}, "kind must be one of"),
    ({"direction": "both"}, "direction must be"),
])
def test_bad_arguments_raise(small_probe, kwargs, match):
    clean, corrupted = pair()
    with pytest.raises(GPT2ProbeError, match=match):
        attribution_patch(small_probe, clean, corrupted, metric=logit_diff, **kwargs)


def test_non_tensor_metric_and_hooks_never_leak(small_probe):
    clean, corrupted = pair()
    before = count_torch_hooks(small_probe.model)
    with pytest.raises(ValueError, match="one-element tensor"):
        attribution_patch(small_probe, clean, corrupted, metric=lambda logits: math.pi)
    for method in ("atp", "atp*", "ig"):
        attribution_patch(small_probe, clean, corrupted, kind="head_q", metric=logit_diff, method=method, steps=2
                          if method == "ig" else None)
    assert count_torch_hooks(small_probe.model) == before
    assert all(p.grad is None for p in small_probe.model.parameters())


# -- agreement between an estimate and exact patching ---------------------------------------------

def test_cells_that_disagree_are_labelled_with_tokens_as_every_report_writes_them():
    from gpt2probe.interventions.agreement import Agreement, cell_labels
    from gpt2probe.interventions.patching import PatchingResult
    from gpt2probe.report.attribution_patching import disagreement_table

    result = PatchingResult(kind="resid_pre", direction="denoise", values=torch.zeros(2, 3), axis_names=("layer", "pos"),
                            axis_labels=(("L0", "L1"), (" queue", "\n", "<b>")), clean_metric=1.0,
                            corrupted_metric=0.0, normalized=False)
    labels = cell_labels(result)
    assert labels == ["L0 pos 0 ␣queue", "L0 pos 1 ↵", "L0 pos 2 <b>", "L1 pos 0 ␣queue", "L1 pos 1 ↵", "L1 pos 2 <b>"]
    worst = tuple((label, 0.5, -0.5) for label in labels[:3])
    agreement = Agreement(pearson=0.0, spearman=0.0, k=1, top_k_overlap=0.0, worst=worst, labels=tuple(labels),
                          exact=torch.zeros(6), estimate=torch.zeros(6))
    shown = list(disagreement_table(agreement, method="atp").data[0].cells.values[0])
    shown = [text.removeprefix("<span>").removesuffix("</span>") for text in shown]  # report.style.table_cells
    assert shown == ["L0 pos 0 ␣queue", "L0 pos 1 ↵", "L0 pos 2 &lt;b&gt;"]  # as the heatmaps' axes, markup escaped


def test_agreement_statistics_by_hand(small_probe):
    from gpt2probe.interventions.agreement import compare

    clean, corrupted = pair()
    exact = patch(small_probe, clean, corrupted, kind="head", metric=logit_diff)
    estimate = attribution_patch(small_probe, clean, corrupted, kind="head", metric=logit_diff)
    same = compare(exact, exact, k=4)
    assert (same.pearson, same.spearman, same.top_k_overlap) == (pytest.approx(1.0), pytest.approx(1.0), 1.0)
    agreement = compare(exact, estimate, k=4, worst=3)
    a = (exact.raw() - exact.corrupted_metric).flatten().double()
    b = (estimate.raw() - estimate.corrupted_metric).flatten().double()
    pearson = float(torch.corrcoef(torch.stack([a, b]))[0, 1])
    rank = lambda x: torch.argsort(torch.argsort(x)).double()  # noqa: E731  (no ties in these values)
    spearman = float(torch.corrcoef(torch.stack([rank(a), rank(b)]))[0, 1])
    assert agreement.pearson == pytest.approx(pearson, abs=1e-6)
    assert agreement.spearman == pytest.approx(spearman, abs=1e-6)
    top = lambda x: set(x.abs().argsort(descending=True)[:4].tolist())  # noqa: E731
    assert agreement.top_k_overlap == len(top(a) & top(b)) / 4
    worst = (a - b).abs().argmax()
    assert agreement.worst[0][0] == f"L{int(worst) // SMALL.n_head}H{int(worst) % SMALL.n_head}"
    with pytest.raises(GPT2ProbeError, match="not on the same cells"):
        compare(exact, attribution_patch(small_probe, clean, corrupted, kind="head_v", metric=logit_diff))


# -- AtP*'s ranking and the false-negative bound (Kramár et al. 2024) --------------------------------

def test_ranking_is_by_the_methods_magnitude(small_probe):
    clean, corrupted = pair()
    star = attribution_patch(small_probe, clean, corrupted, kind="resid_pre", metric=logit_diff, method="atp*")
    assert torch.equal(star.magnitude, star.graddrop)  # AtP* ranks by its GradDrop score, not |values|
    flat = star.graddrop.flatten()
    assert [value for _, value in star.ranking()] == sorted(flat.tolist(), reverse=True)
    for direction, base in (("denoise", 0.0), ("noise", 1.0)):
        plain = attribution_patch(small_probe, clean, corrupted, kind="resid_pre", metric=logit_diff, direction=direction)
        assert plain.base_value == pytest.approx(base)
        assert_close(plain.magnitude, (plain.values - base).abs(), 1e-6, "magnitude")
        _, top_value = plain.ranking(1)[0]
        assert top_value == pytest.approx(float(plain.magnitude.max()))


def test_atp_star_needs_two_layers():
    import gpt2probe

    from models import Spec, build_gpt2

    one = gpt2probe.load(build_gpt2(Spec(n_layer=1, n_embd=12, n_head=3, n_positions=16, vocab_size=31, seed=3)),
                         device="cpu")
    ids = torch.tensor([[1, 2, 3, 4]])
    with pytest.raises(GPT2ProbeError, match="at least 2 layers"):
        attribution_patch(one, ids, ids.flip(1), metric=lambda lg: lg[:, -1, 0].mean(), method="atp*")


def test_max_above_by_hand():
    from gpt2probe.interventions.pruning import max_above

    # P(K >= k) = C(20 - k, 5) / C(20, 5): k=8 gives 792/15504 = 0.051 > 0.05, k=9 gives 462/15504 = 0.030
    assert max_above(20, 5, 0.95) == 8
    assert max_above(20, 20, 0.95) == 0 and max_above(20, 30, 0.95) == 0
    assert max_above(20, 19, 0.95) == 0  # P(K >= 1) = 1/20, not above 0.05
    assert max_above(20, 19, 0.96) == 1


@pytest.mark.parametrize("samples", [3, 100])
def test_false_negative_bound_patches_the_sampled_cells_exactly(small_probe, samples):
    """Sampled cells equal exact patching; sampling every pruned cell gives the exact maximum and no doubt."""
    from gpt2probe.interventions import PruningCheck

    clean, corrupted = pair()
    exact = patch(small_probe, clean, corrupted, kind="head", metric=logit_diff)
    for method in ("atp", "atp*"):
        result = attribution_patch(small_probe, clean, corrupted, kind="head", metric=logit_diff, method=method,
                                   pruning_check=PruningCheck(keep=4, samples=samples, seed=1))
        bound = result.bound
        ranked = sorted(range(result.magnitude.numel()), key=lambda i: (-float(result.magnitude.flatten()[i]), i))
        assert [divmod(i, SMALL.n_head) for i in ranked[:4]] == list(bound.kept)
        assert bound.pruned == exact.values.numel() - 4
        assert len(bound.sampled) == min(samples, bound.pruned) and not set(bound.sampled) & set(bound.kept)
        expected = torch.tensor([float(exact.values[cell]) for cell in bound.sampled], dtype=torch.float64)
        assert_close(bound.exact, expected, 1e-5, "sampled cells")
        assert bound.max_effect == pytest.approx(float(expected.abs().max()), abs=1e-5)
        pruned_effects = torch.tensor([abs(float(exact.values[divmod(i, SMALL.n_head)])) for i in ranked[4:]])
        above = int((pruned_effects > bound.max_effect + 1e-6).sum())
        if samples >= bound.pruned:
            assert bound.max_above == 0 and above == 0
            assert bound.max_effect == pytest.approx(float(pruned_effects.max()), abs=1e-5)
        else:
            assert 0 < bound.max_above < bound.pruned and above <= bound.max_above


def test_false_negative_bound_on_the_toy_finds_no_missed_head(toy):
    """The toy's only heads that matter are L0H0 and L1H0: kept first, every pruned head has effect ~0."""
    from gpt2probe.interventions import PruningCheck

    clean, corrupted, metric = toy_pair()
    result = attribution_patch(toy, clean, corrupted, kind="head", metric=metric, method="atp*",
                               pruning_check=PruningCheck(keep=2, samples=100))
    assert set(result.bound.kept) == {(0, 0), (1, 0)}
    assert result.bound.max_above == 0 and result.bound.max_effect < 1e-5


def test_atp_star_ranks_the_saturated_key_by_magnitude_though_its_sign_is_wrong(toy):
    """The docs' head_k example: the exact effect is negative, atp*'s signed estimate positive, its score ranks it first."""
    clean, corrupted, metric = toy_pair()
    exact = patch(toy, clean, corrupted, kind="head_k", metric=metric)
    star = attribution_patch(toy, clean, corrupted, kind="head_k", metric=metric, method="atp*")
    assert float(exact.values[1, 0]) < -1.0 and float(star.values[1, 0]) > 0.1
    assert top_two(exact.values) == {(1, 0), (0, 0)} and float(exact.values.abs().argmax()) == 1 * toy.cfg.n_heads
    assert star.ranking(1)[0][0] == ("L1", "H0")
