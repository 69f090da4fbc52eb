"""Harvesting SAE and transcoder features as units, checked against encoding every token by brute force."""

from __future__ import annotations

import copy

import pytest
import torch
from harvest_helpers import assert_same_harvest, topic_texts

import gpt2probe
from gpt2probe import SAE, SAEConfig, Transcoder
from gpt2probe.errors import HookNameError, InvalidTypeError
from gpt2probe.harvest import Corpus, HarvestConfig, HarvestConfigError, ResumeMismatchError, harvest
from gpt2probe.hooks import count_torch_hooks

SEQ = 32
K = 4
WINDOW = 3
SAE_HOOK = "blocks.2.hook_resid_post"
TC_HOOK = "blocks.1.ln2.hook_normalized"


@pytest.fixture(scope="module")
def tiny():
    from gpt2probe.shipped import shipped_model

    return gpt2probe.load(shipped_model("tiny-english"), device="cpu")


@pytest.fixture(scope="module")
def texts():
    return topic_texts(8, 1200)


def _randomize(coder, seed: int, enc_bias: torch.Tensor | None = None):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in coder.named_parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * (0.1 if name.startswith("b_") else 0.3))
        if enc_bias is not None:
            coder.b_enc.copy_(enc_bias)
    return coder


@pytest.fixture(scope="module")
def sae(tiny, texts):
    """A ReLU SAE whose features fire on a chosen number of this corpus's tokens: from most to 1, and never.

    Each encoder bias sits halfway between two of the feature's sorted pre-activations, so
    the counts are exact: dense features, rare ones (fewer active tokens than top-k slots,
    which must leave empty slots) and dead ones are all in the check.
    """
    d_sae = 40
    sae = _randomize(SAE(SAEConfig(d_in=tiny.cfg.d_model, d_sae=d_sae, hook_name=SAE_HOOK)), 0, torch.zeros(d_sae))
    *_, padded, valid = _reference(tiny, texts)
    _, cache = tiny.run_with_cache(padded, names=[SAE_HOOK])
    with torch.no_grad():
        pre = torch.sort(sae.encode_pre(cache[SAE_HOOK][valid]), dim=0, descending=True).values
        n = pre.shape[0]
        counts = [n * 3 // 4, n // 2, n // 4, 300, 100, 30, 10, 5, 4, 3, 2, 1] * 3 + [0] * 4
        for j, c in enumerate(counts):
            sae.b_enc[j] = -pre[0, j] - 1.0 if c == 0 else -(pre[c - 1, j] + pre[c, j]) / 2
    return sae


@pytest.fixture(scope="module")
def transcoder(tiny):
    cfg = SAEConfig.for_transcoder(1, d_model=tiny.cfg.d_model, d_sae=24, architecture="topk", k=3)
    return _randomize(Transcoder(cfg), 1)


def _run(tiny, texts, out, **kwargs):
    kwargs = {"seq_len": SEQ, "top_k": K, "window": WINDOW, "batch_size": 3, "progress": False,
              "block_chars": 2500, **kwargs}
    return harvest(tiny, Corpus(texts=texts), out=out, **kwargs)


def _reference(tiny, texts):
    """Independent packing (as tests/test_harvest.py): the documents' tokens joined by <|endoftext|>, in windows."""
    ids, doc, pos = [], [], []
    for d, text in enumerate(texts):
        t = tiny.tokenizer(text, add_special_tokens=False)["input_ids"] + [tiny.tokenizer.eos_token_id]
        ids += t
        doc += [d] * len(t)
        pos += list(range(len(t)))
    ids, doc, pos = torch.tensor(ids), torch.tensor(doc), torch.tensor(pos)
    n = ids.shape[0]
    n_win = -(-n // SEQ)
    padded = torch.cat([ids, torch.full((n_win * SEQ - n,), tiny.tokenizer.eos_token_id)]).view(n_win, SEQ)
    valid = (torch.arange(n_win * SEQ) < n).view(n_win, SEQ)
    return ids, doc, pos, padded, valid


def test_feature_summaries_match_encoding_every_token(tiny, texts, sae, transcoder, tmp_path):
    # One block (huge block_chars): the reference packing is the plain concatenation.
    h = _run(tiny, texts, tmp_path / "h", saes=[sae, transcoder], block_chars=10**9)
    assert h.hooks == [f"{TC_HOOK}.hook_sae_acts_post", f"{SAE_HOOK}.hook_sae_acts_post"]  # forward order
    assert count_torch_hooks(tiny.model) == 0
    ids, doc, pos, padded, valid = _reference(tiny, texts)
    n = ids.shape[0]
    _, cache = tiny.run_with_cache(padded, names=[SAE_HOOK, TC_HOOK])
    for coder, hook in ((sae, SAE_HOOK), (transcoder, TC_HOOK)):
        name = f"{hook}.hook_sae_acts_post"
        assert h.kind(name) == "feature" and h.n_units(name) == coder.cfg.d_sae
        with torch.no_grad():
            acts = coder.encode(cache[hook])  # [window, pos, feature]
        x = acts[valid].double()
        s = h.stats(name)
        assert torch.equal(s["count"], torch.full((x.shape[1],), n))
        assert torch.equal(s["active"], (x > 0).sum(0))
        torch.testing.assert_close(s["frequency"], (x > 0).double().mean(0), atol=0, rtol=0)  # density
        torch.testing.assert_close(s["mean"], x.mean(0), atol=1e-6, rtol=0)
        torch.testing.assert_close(s["var"], x.var(0, unbiased=False), atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(s["max"].double(), x.max(0).values, atol=1e-6, rtol=0)
        fired = (x > 0).sum(0)
        for unit in range(x.shape[1]):
            # Top-k: the active tokens ordered by (value desc, doc asc, pos asc); fewer than k: empty slots.
            column, docs, poss = x[:, unit].tolist(), doc.tolist(), pos.tolist()
            active = [i for i in range(n) if column[i] > 0]
            order = sorted(active, key=lambda i: (-column[i], docs[i], poss[i]))[:K]
            examples = h.top_examples(name, unit)
            assert [(e.doc, e.pos) for e in examples] == [(int(doc[i]), int(pos[i])) for i in order], (name, unit)
            torch.testing.assert_close(torch.tensor([e.value for e in examples], dtype=torch.float64), x[order, unit],
                                       atol=1e-6, rtol=0)
            top = h.top_values(name)[unit]
            assert bool(torch.isinf(top[len(order):]).all())
            if order:
                i = order[0]
                w, p = divmod(i, SEQ)
                lo, hi = max(0, p - WINDOW), min(SEQ, p + WINDOW + 1, n - w * SEQ)
                assert examples[0].tokens == padded[w, lo:hi].tolist()
                torch.testing.assert_close(torch.tensor(examples[0].acts), acts[w, lo:hi, unit].float(), atol=1e-6,
                                           rtol=0)
            # Histogram: zeros below the first edge; the positive activations in the bins.
            hist = h.histogram(name, unit)
            edges = hist.edges.double()
            assert int(hist.counts.sum()) == n and int(hist.counts[0]) == int((x[:, unit] < edges[0]).sum())
            inner = ((x[:, unit] >= edges[0]) & (x[:, unit] < edges[-1])).sum()
            assert int(hist.counts[1:-1].sum()) == int(inner)
            assert int(hist.counts[0]) >= n - int(fired[unit])  # every zero is in the underflow bin
        if coder is sae:
            # Dense, rare (fewer active tokens than K: empty slots) and dead features were all checked. (Counts can
            # differ from the fixture's targets: tokens with the same context have tied activations.)
            assert int(fired.max()) > n // 2 and int(((fired > 0) & (fired < K)).sum()) >= 3
            assert int((fired == 0).sum()) >= 4
        # A feature index outside 0..d_sae-1 is refused; True used to index the summaries as a mask, so
        # histogram(name, True) returned every feature's histogram ([1, d_sae, bins]) instead of feature 1's.
        for unit in (True, -1, coder.cfg.d_sae):
            for read in (h.histogram, h.top_examples):
                with pytest.raises((gpt2probe.InvalidTypeError, gpt2probe.LayerIndexError), match=f"the unit of '{name}'"):
                    read(name, unit)


def test_two_processes_and_resume_equal_one_run(tiny, texts, sae, transcoder, tmp_path):
    """The feature summaries merge across ranks' shares and restarts exactly like the neuron summaries.

    The ReLU SAE's non-zeros are searched, the top-k transcoder's come from its support.
    """
    from gpt2probe.harvest.runner import Options, run_harvest

    whole = _run(tiny, texts, tmp_path / "whole", saes=[sae, transcoder], hooks=["blocks.0.mlp.hook_post"])
    options = Options(top_k=K, window=WINDOW, seq_len=SEQ, batch_size=3, block_chars=2500)
    out = tmp_path / "cut"
    stopped = run_harvest(tiny, Corpus(texts=texts), ["blocks.0.mlp.hook_post"], out, options=options,
                          checkpoint_windows=3, progress=False, stop_after_windows=6, saes=[sae, transcoder])
    assert stopped is None and (out / "checkpoint").is_dir()
    other = _randomize(SAE(sae.cfg), 9)
    with pytest.raises(ResumeMismatchError, match="hooks"):
        _run(tiny, texts, out, saes=[other, transcoder], hooks=["blocks.0.mlp.hook_post"], resume=True)
    resumed = _run(tiny, texts, out, saes=[sae, transcoder], hooks=["blocks.0.mlp.hook_post"], resume=True)
    assert_same_harvest(whole, resumed, exact=True)


def test_bad_saes_are_refused_before_any_work(tiny, texts, sae, tmp_path):
    out = tmp_path / "out"
    wide = SAE(SAEConfig(d_in=tiny.cfg.d_mlp, d_sae=8, hook_name=SAE_HOOK))
    with pytest.raises(HarvestConfigError, match="another model"):
        _run(tiny, texts, out, saes=[wide])
    deep = SAE(SAEConfig(d_in=tiny.cfg.d_model, d_sae=8, hook_name="blocks.9.hook_resid_post"))
    with pytest.raises(HookNameError, match="does not have"):
        _run(tiny, texts, out, saes=[deep])
    with pytest.raises(HarvestConfigError, match="same hook"):
        _run(tiny, texts, out, saes=[sae, _randomize(SAE(sae.cfg), 3)])
    with pytest.raises(HarvestConfigError, match="SAE or Transcoder"):
        _run(tiny, texts, out, saes=["saes/blocks.2"])
    with pytest.raises(HarvestConfigError, match="save_raw"):
        _run(tiny, texts, out, saes=[sae], save_raw=[f"{SAE_HOOK}.hook_sae_acts_post"])
    with pytest.raises(HarvestConfigError, match="no hooks"):
        _run(tiny, texts, out)
    assert not out.exists()
    half = copy.deepcopy(sae).to(torch.float16)  # encoded in float32; the user's SAE is not moved or cast
    h = _run(tiny, texts[:2], tmp_path / "half", saes=[half])
    assert half.dtype == torch.float16 and h.n_units(f"{SAE_HOOK}.hook_sae_acts_post") == sae.cfg.d_sae


def test_a_single_coder_or_a_dict_for_saes_is_refused_naming_the_list(tiny, texts, sae, transcoder, tmp_path):
    """``saes=sae`` was a raw TypeError ('SAE' object is not iterable) for a user without a run-time type checker.

    This test run's jaxtyping/beartype import hook refuses it at the call, before the library's
    own check; ``__wrapped__`` is the function as a user without that hook calls it.
    """
    from gpt2probe.harvest.runner import run_harvest

    public = getattr(harvest, "__wrapped__", harvest)
    internal = getattr(run_harvest, "__wrapped__", run_harvest)
    out = tmp_path / "out"
    for one in (sae, transcoder):
        with pytest.raises(InvalidTypeError, match=rf"got one {type(one).__name__}: pass saes=\[sae\]"):
            public(tiny, Corpus(texts=texts), out=out, saes=one, progress=False)
        with pytest.raises(InvalidTypeError, match=r"saes=\[sae\]"):
            internal(tiny, Corpus(texts=texts), [], out, options=HarvestConfig(), saes=one, progress=False)
    with pytest.raises(InvalidTypeError, match=r"got a dict: pass saes=list\(saes.values\(\)\)"):
        public(tiny, Corpus(texts=texts), out=out, saes={SAE_HOOK: sae}, progress=False)
    with pytest.raises(InvalidTypeError, match=r"load it first"):
        public(tiny, Corpus(texts=texts), out=out, saes="saes/blocks.2", progress=False)
    # a string is a sequence of one-character sources: "ab" for two SAEs was recorded as "a" and "b"
    with pytest.raises(InvalidTypeError, match=r"sae_sources is one entry per SAE, got str 'ab': pass sae_sources=\[source\]"):
        _run(tiny, texts, out, saes=[sae, transcoder], sae_sources="ab")
    assert not out.exists()


def test_a_float32_coder_is_used_as_it_is_and_another_is_cast_as_a_copy(tiny, sae):
    """A float32 coder on the model's device is not copied (GPT-2 small's 12 SAEs would cost 1.7 GB twice);
    any other is cast as a copy, since Module.to is in place: the user's coder is left as it was."""
    from gpt2probe.harvest.units import plan_features

    settings = dict(d_model=tiny.cfg.d_model, d_mlp=tiny.cfg.d_mlp, device=torch.device("cpu"))
    (plan,) = plan_features([sae], tiny.hook_names, **settings)
    assert plan.coder is sae
    wide = copy.deepcopy(sae).double()
    (plan,) = plan_features([wide], tiny.hook_names, **settings)
    assert plan.coder is not wide and plan.coder.dtype == torch.float32
    assert wide.dtype == torch.float64 and torch.equal(wide.W_enc.float(), plan.coder.W_enc)
