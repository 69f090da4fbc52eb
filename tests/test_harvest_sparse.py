"""Feature summaries read from the non-zero values only: the same as the dense passes, and as brute force."""

from __future__ import annotations

import math

import pytest
import torch

from gpt2probe.harvest.summaries import NonFiniteActivationError, UnitSummary
from gpt2probe.harvest.topk import FIELDS

N_BATCHES, N_BATCH, N_POS, N_UNITS, K, WINDOW, N_BINS = 6, 3, 11, 13, 4, 2, 7
SLOTS = 3  # support slots per position (a "top-3" coder)


def _sparse_batches(seed: int = 0):
    """Feature-like activations: mostly exact zeros, at most SLOTS non-zero units per position.

    Values are quarter steps (ties everywhere, at the top-k boundary too); unit 0 never fires,
    unit 1 fires on every position, unit 2 holds negative values (no shipped architecture gives
    them, but the sparse path must not assume their sign), unit 12 fires once. ``support``
    lists each position's non-zero units and pads with other units, whose values stay 0.
    """
    gen = torch.Generator().manual_seed(seed)
    shape = (N_BATCHES, N_BATCH, N_POS)
    acts = torch.zeros(*shape, N_UNITS)
    support = torch.empty(*shape, SLOTS, dtype=torch.int64)
    for idx in torch.cartesian_prod(*(torch.arange(s) for s in shape)).tolist():
        units = torch.cat([torch.tensor([1]), torch.randperm(N_UNITS - 3, generator=gen)[:SLOTS - 1] + 2])  # not 0, 12
        n_fire = int(torch.randint(1, SLOTS + 1, (), generator=gen))  # the rest of the slots stay 0
        values = (torch.randint(1, 9, (SLOTS,), generator=gen) / 4.0)
        values[n_fire:] = 0.0
        acts[tuple(idx)][units] = values
        support[tuple(idx)] = units
    acts[..., 2] = -acts[..., 2]
    acts[1, 2, 5, support[1, 2, 5, -1]] = 0.0  # the last slot goes to unit 12, which fires here only
    support[1, 2, 5, -1] = 12
    acts[1, 2, 5, 12] = 3.0
    acts[..., 11] *= 2.0  # values beyond the histogram's range: the overflow bin
    tokens = torch.randint(0, 99, shape, generator=gen)
    ids = torch.randperm(N_BATCHES * N_BATCH * N_POS, generator=gen).view(shape)
    valid = torch.full((N_BATCHES, N_BATCH), N_POS)
    valid[2, 0], valid[3, 2], valid[4, 1] = 4, 6, 0  # padding mid-batch, a short last window, an empty window
    valid[5, 2] = 1
    return acts, support, tokens, ids // 5, ids % 5, valid


def _empty(floor: float = 0.0) -> UnitSummary:
    hi = torch.linspace(2.0, 3.0, N_UNITS)
    return UnitSummary.empty(hi / 2**20, hi, n_bins=N_BINS, threshold=0.5, window=WINDOW, k=K, floor=floor)


def _run(batches, *, sparse: bool, use_support: bool, monkeypatch, rows=range(N_BATCHES)) -> UnitSummary:
    acts, support, tokens, doc, pos, valid = batches
    with monkeypatch.context() as m:
        if not sparse:
            m.setattr(UnitSummary, "sparse", lambda self, device: False)
        s = _empty()
        assert s.sparse(torch.device("cpu")) == sparse
        for i in rows:
            s.update(acts[i], tokens[i], doc[i], pos[i], valid[i], support[i] if use_support else None)
    return s


def _assert_equal(a: UnitSummary, b: UnitSummary, *, exact_moments: bool) -> None:
    sa, sb = a.state(), b.state()
    for key, value in sa.items():
        if key in ("mean", "m2") and not exact_moments:
            torch.testing.assert_close(value, sb[key], atol=1e-6, rtol=1e-6)
        else:
            assert torch.equal(value.nan_to_num(-7.0), sb[key].nan_to_num(-7.0)), key


def test_sparse_and_dense_summaries_agree_and_equal_brute_force(monkeypatch):
    batches = _sparse_batches()
    acts, support, tokens, doc, pos, valid = batches
    dense = _run(batches, sparse=False, use_support=False, monkeypatch=monkeypatch)
    found = _run(batches, sparse=True, use_support=False, monkeypatch=monkeypatch)  # non-zeros searched
    listed = _run(batches, sparse=True, use_support=True, monkeypatch=monkeypatch)  # non-zeros from the support
    _assert_equal(found, dense, exact_moments=False)
    _assert_equal(listed, found, exact_moments=False)  # the support lists some zeros too: other float64 roundings
    keep = torch.arange(N_POS) < valid[..., None]
    x = acts[keep].double()  # [token, unit]
    d, p = doc[keep], pos[keep]
    n = x.shape[0]
    s = listed
    assert int(s.count) == n
    torch.testing.assert_close(s.mean, x.mean(0), atol=1e-12, rtol=0)
    torch.testing.assert_close(s.m2, x.var(0, unbiased=False) * n, atol=1e-10, rtol=1e-12)
    assert torch.equal(s.min.double(), x.min(0).values) and torch.equal(s.max.double(), x.max(0).values)
    assert torch.equal(s.active, (x > 0.5).sum(0))
    edges = s.edges()
    assert torch.equal(s.hist[:, 0], (x < edges[:, 0]).sum(0)) and torch.equal(s.hist[:, -1], (x >= edges[:, -1]).sum(0))
    inner = torch.stack([((x[:, u] >= edges[u, b]) & (x[:, u] < edges[u, b + 1])).sum()
                         for u in range(N_UNITS) for b in range(N_BINS)]).view(N_UNITS, N_BINS)
    assert torch.equal(s.hist[:, 1:-1], inner)
    for unit in range(N_UNITS):  # top-k: values above the floor, by (value desc, doc, pos); empty slots after
        fired = [i for i in range(n) if x[i, unit] > 0]
        ref = sorted(fired, key=lambda i: (-float(x[i, unit]), int(d[i]), int(p[i])))[:K]
        assert s.top.doc[unit, :len(ref)].tolist() == d[ref].tolist(), unit
        assert s.top.pos[unit, :len(ref)].tolist() == p[ref].tolist(), unit
        assert bool((s.top.doc[unit, len(ref):] == -1).all())
    # The cases the fixture promises are all there.
    assert int(s.active[0]) == 0 and bool((x[:, 1] > 0).all()) and float(x[:, 2].min()) < 0
    assert int((x[:, 12] > 0).sum()) == 1 and int((s.top.doc[12] >= 0).sum()) == 1
    assert int(s.hist[11, -1]) > 0 and int(s.hist[1, 0]) == 0


def test_sparse_summaries_resume_bit_identically_and_merge(monkeypatch):
    batches = _sparse_batches(1)
    whole = _run(batches, sparse=True, use_support=True, monkeypatch=monkeypatch)
    first = _run(batches, sparse=True, use_support=True, monkeypatch=monkeypatch, rows=range(3))
    resumed = UnitSummary.from_state({k: v.clone() for k, v in first.state().items()}, n_bins=N_BINS, threshold=0.5,
                                     window=WINDOW, k=K, floor=0.0)
    acts, support, tokens, doc, pos, valid = batches
    for i in range(3, N_BATCHES):
        resumed.update(acts[i], tokens[i], doc[i], pos[i], valid[i], support[i])
    _assert_equal(resumed, whole, exact_moments=True)
    second = _run(batches, sparse=True, use_support=True, monkeypatch=monkeypatch, rows=range(3, N_BATCHES))
    _assert_equal(first.merge(second), whole, exact_moments=False)


@pytest.mark.parametrize("use_support", [True, False], ids=["support", "searched"])
def test_a_nan_or_infinite_feature_is_refused_and_leaves_the_summary_as_it_was(use_support, monkeypatch):
    acts, support, tokens, doc, pos, valid = _sparse_batches()
    s = _empty()
    s.update(acts[0], tokens[0], doc[0], pos[0], valid[0], support[0] if use_support else None)
    before = {k: v.clone() for k, v in s.state().items()}
    for bad in (torch.nan, torch.inf, -torch.inf):
        broken = acts[1].clone()
        broken[2, 4, int(support[1, 2, 4, 1])] = bad  # at a listed unit (a coder's support covers its non-zeros)
        with pytest.raises(NonFiniteActivationError):
            s.update(broken, tokens[1], doc[1], pos[1], valid[1], support[1] if use_support else None)
        after = s.state()
        for k, v in before.items():
            assert torch.equal(after[k].nan_to_num(-7.0), v.nan_to_num(-7.0)), k


def test_only_features_on_the_cpu_take_the_sparse_path():
    cpu = torch.device("cpu")
    assert _empty().sparse(cpu) and not _empty().sparse(torch.device("meta"))
    assert not _empty(-0.5).sparse(cpu)  # a negative floor: zeros would enter the top-k
    neurons = UnitSummary.empty(torch.zeros(3), torch.ones(3), n_bins=4, threshold=0.0, window=1)
    assert not neurons.sparse(cpu)
    assert set(FIELDS) <= {k.removeprefix("top_") for k in _empty().state()}


def _rescaling_topk_sae(d_in: int, d_sae: int, k: int, hook_name: str, seed: int):
    """A top-k SAE with ``rescale_acts_by_decoder_norm``, its decoder rows of norms 0.2 to 5 (so rescaling matters)."""
    from gpt2probe import SAE, SAEConfig

    sae = SAE(SAEConfig(d_in=d_in, d_sae=d_sae, hook_name=hook_name, architecture="topk", k=k,
                        rescale_acts_by_decoder_norm=True), generator=torch.Generator().manual_seed(seed))
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        norms = torch.logspace(math.log10(0.2), math.log10(5.0), d_sae)[torch.randperm(d_sae, generator=gen)]
        sae.W_dec.copy_(torch.nn.functional.normalize(torch.randn(d_sae, d_in, generator=gen), dim=-1) * norms[:, None])
        sae.W_enc.copy_(torch.randn(d_in, d_sae, generator=gen) / d_in)  # activations of order 1
        sae.b_enc.copy_(torch.randn(d_sae, generator=gen) * 0.1)
        sae.b_dec.copy_(torch.randn(d_in, generator=gen) * 0.1)
    return sae


def _unscaled_support(sae, x: torch.Tensor) -> torch.Tensor:
    """The top-k features the same SAE would keep without rescaling (to show that rescaling changes them)."""
    with torch.no_grad():
        return (sae.encode_pre(x) / sae.W_dec.norm(dim=-1)).topk(sae.cfg.k, dim=-1).indices.sort(-1).values


@pytest.mark.parametrize("architecture", ["topk", "topk-rescaled", "standard", "jumprelu"])
def test_encode_with_support_is_encode_and_its_support_holds_every_non_zero(architecture):
    from gpt2probe import SAE, SAEConfig

    x = torch.randn(2, 7, 5, generator=torch.Generator().manual_seed(1))
    if architecture == "topk-rescaled":
        sae = _rescaling_topk_sae(5, 11, 3, "blocks.0.hook_resid_post", seed=0)
        assert not torch.equal(sae.encode_with_support(x)[1].sort(-1).values, _unscaled_support(sae, x))
        architecture = "topk"
    else:
        k = 3 if architecture == "topk" else None
        sae = SAE(SAEConfig(d_in=5, d_sae=11, hook_name="blocks.0.hook_resid_post", architecture=architecture, k=k),
                  generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            sae.b_enc.copy_(torch.linspace(-0.5, 0.5, 11))
    with torch.no_grad():
        acts, support = sae.encode_with_support(x)
        assert torch.equal(acts, sae.encode(x))
    if architecture != "topk":
        assert support is None
        return
    assert support is not None and support.shape == (2, 7, 3)
    assert bool((support.sort(-1).values.diff(dim=-1) > 0).all())  # distinct units
    outside = torch.ones_like(acts, dtype=torch.bool).scatter_(-1, support, False)
    assert bool((acts[outside] == 0).all()) and bool((acts.gather(-1, support) > 0).any())


def test_a_rescaling_topk_coders_sparse_harvest_equals_the_dense_one_and_brute_force(tiny_english, tmp_path, monkeypatch):
    from harvest_helpers import assert_same_harvest, topic_texts

    from gpt2probe import SAE
    from gpt2probe.harvest import Corpus, harvest

    hook, seq, top_k = "blocks.2.hook_resid_post", 24, 4
    sae = _rescaling_topk_sae(tiny_english.cfg.d_model, 37, 5, hook, seed=3)
    texts = topic_texts(3, 500)
    calls = []
    with_support = SAE.encode_with_support
    monkeypatch.setattr(SAE, "encode_with_support", lambda self, x: calls.append(1) or with_support(self, x))

    def run(out):
        return harvest(tiny_english, Corpus(texts=texts), out=tmp_path / out, saes=[sae], seq_len=seq, top_k=top_k,
                       window=2, batch_size=4, block_chars=10**9, progress=False)

    sparse = run("sparse")
    assert calls  # the top-k support fed the summaries
    with monkeypatch.context() as m:
        m.setattr(UnitSummary, "sparse", lambda self, device: False)
        dense = run("dense")
    assert_same_harvest(sparse, dense, exact=False, atol=1e-6)

    # Brute force: encode every token of the corpus packed as the harvest packs one block.
    ids, doc, pos = [], [], []
    for d, text in enumerate(texts):
        t = tiny_english.tokenizer(text, add_special_tokens=False)["input_ids"] + [tiny_english.tokenizer.eos_token_id]
        ids, doc, pos = ids + t, doc + [d] * len(t), pos + list(range(len(t)))
    n, n_win = len(ids), -(-len(ids) // seq)
    padded = torch.tensor(ids + [tiny_english.tokenizer.eos_token_id] * (n_win * seq - n)).view(n_win, seq)
    _, cache = tiny_english.run_with_cache(padded, names=[hook])
    with torch.no_grad():
        x = sae.encode(cache[hook]).flatten(0, 1)[:n].double()  # [token, feature], in corpus order
    assert not torch.equal(sae.encode_with_support(cache[hook])[1].sort(-1).values, _unscaled_support(sae, cache[hook]))
    name = f"{hook}.hook_sae_acts_post"
    s = sparse.stats(name)
    assert torch.equal(s["count"], torch.full((37,), n)) and torch.equal(s["active"], (x > 0).sum(0))
    torch.testing.assert_close(s["mean"], x.mean(0), atol=1e-6, rtol=0)
    torch.testing.assert_close(s["max"].double(), x.max(0).values, atol=1e-6, rtol=0)
    for unit in range(37):
        column = x[:, unit].tolist()
        order = sorted((i for i in range(n) if column[i] > 0), key=lambda i: (-column[i], doc[i], pos[i]))[:top_k]
        assert [(e.doc, e.pos) for e in sparse.top_examples(name, unit)] == [(doc[i], pos[i]) for i in order], unit
    assert int((x > 0).sum(0).gt(0).sum()) > 10  # many features fire: the check covers more than a few


@pytest.mark.parametrize("architecture", ["standard", "jumprelu", "topk"])
def test_in_place_encoder_is_the_brute_force_and_keeps_gradients_and_taps(architecture):
    """The encoder's in-place bias and ReLU (no extra [token, d_sae] copies) change no bit, no gradient, no tap.

    Brute force: ``relu(x - b_dec) @ W_enc + b_enc`` written out, with every bias non-zero;
    the gradients of ``encode_with_support`` equal those of ``encode``; a tap on the
    pre-activations (``run_stages``) still sees them before the ReLU.
    """
    from gpt2probe import SAE, SAEConfig
    from gpt2probe.sae.coder import ACTS_PRE

    k = 3 if architecture == "topk" else None
    sae = SAE(SAEConfig(d_in=5, d_sae=11, hook_name="blocks.0.hook_resid_post", architecture=architecture, k=k),
              generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        sae.b_enc.copy_(torch.linspace(-0.5, 0.5, 11))
        sae.b_dec.copy_(torch.linspace(0.3, -0.2, 5))
        if sae.threshold is not None:
            sae.threshold.copy_(torch.linspace(0.0, 0.2, 11))
    x = torch.randn(2, 7, 5, generator=torch.Generator().manual_seed(1))
    pre = torch.matmul(x - sae.b_dec, sae.W_enc) + sae.b_enc
    with torch.no_grad():
        acts, _ = sae.encode_with_support(x)
        assert torch.equal(sae.encode_pre(x), pre.detach())
        if architecture == "standard":
            assert torch.equal(acts, pre.detach().relu())
    grads = []
    for encode in (lambda: sae.encode_with_support(x)[0], lambda: sae.encode(x)):
        sae.zero_grad()
        (encode() * torch.arange(11.0)).sum().backward()
        grads.append([p.grad.clone() for p in (sae.W_enc, sae.b_enc, sae.b_dec)])
    for a, b in zip(*grads, strict=True):
        assert torch.equal(a, b)
    seen = {}

    def keep(stage, t):  # keeps the tensor itself: an in-place ReLU after the tap would show here
        seen[stage] = t
        return t

    with torch.no_grad():
        sae.run_stages(x, keep)
    assert torch.equal(seen[ACTS_PRE], pre.detach())
