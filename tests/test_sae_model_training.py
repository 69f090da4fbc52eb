"""SAE.train / Transcoder.train on a model over text, and sae.evaluate against an independent computation."""

from __future__ import annotations

import pytest
import torch

from gpt2probe import SAE, SAEConfig, Transcoder
from gpt2probe.errors import GPT2ProbeError
from gpt2probe.harvest.corpus import Corpus, blocks, pack
from gpt2probe.sae.stream import CorpusActivations

TEXTS = [f"Document {i}: the quick brown fox jumps over the lazy dog {i} times, and then it rests." * 3
         for i in range(12)]
SMALL = {"steps": 12, "train_batch_size_tokens": 64, "buffer_tokens": 256, "progress": False}


def test_streamed_activations_are_the_models(vocab_probe):
    source = CorpusActivations(vocab_probe, Corpus(texts=TEXTS), ["blocks.1.ln2.hook_normalized", "blocks.1.hook_mlp_out"],
                               seq_len=16, windows_per_pass=3, epochs=1)
    rows = torch.cat(list(source.chunks()))
    expected = []
    for block in blocks(Corpus(texts=TEXTS)):
        packed = pack(block, vocab_probe.tokenizer, seq_len=16, eos=vocab_probe.tokenizer.eos_token_id, seed=0)
        _, cache = vocab_probe.run_with_cache(packed.tokens, ["blocks.1.ln2.hook_normalized", "blocks.1.hook_mlp_out"])
        keep = torch.arange(16)[None] < packed.valid[:, None]
        expected.append(torch.cat([cache["blocks.1.ln2.hook_normalized"][keep], cache["blocks.1.hook_mlp_out"][keep]], -1))
    torch.testing.assert_close(rows, torch.cat(expected), atol=1e-5, rtol=1e-5)
    assert rows.shape[0] == source.count_tokens()


def test_train_an_sae_and_a_transcoder(vocab_probe, tmp_path):
    sae = SAE.train(vocab_probe, TEXTS, hook="blocks.1.hook_resid_post", d_sae=20, k=4, seed=3, seq_len=16, **SMALL)
    assert sae.cfg.hook_name == "blocks.1.hook_resid_post" and sae.cfg.d_in == 42 and sae.cfg.k == 4
    again = SAE.train(vocab_probe, TEXTS, hook="blocks.1.hook_resid_post", d_sae=20, k=4, seed=3, seq_len=16, **SMALL)
    assert torch.equal(sae.W_enc, again.W_enc)  # seeded: the same run twice
    tc = Transcoder.train(vocab_probe, TEXTS, layer=0, d_sae=20, k=4, seq_len=16, **SMALL)
    assert (tc.cfg.hook_name, tc.cfg.hook_name_out) == ("blocks.0.ln2.hook_normalized", "blocks.0.hook_mlp_out")

    def stop(step, metrics):
        if step == 7:
            raise KeyboardInterrupt

    settings = dict(hook="blocks.1.hook_resid_post", d_sae=20, k=4, seed=3, seq_len=16, **SMALL)
    with pytest.raises(KeyboardInterrupt):
        SAE.train(vocab_probe, TEXTS, checkpoint_dir=tmp_path, checkpoint_every=3, callback=stop, **settings)
    resumed = SAE.train(vocab_probe, TEXTS, checkpoint_dir=tmp_path, resume=True, **settings)
    for name, param in sae.named_parameters():
        assert torch.equal(param, getattr(resumed, name)), name


def test_train_refuses_what_cannot_work(vocab_probe):
    with pytest.raises(GPT2ProbeError, match="hook"):
        SAE.train(vocab_probe, TEXTS, d_sae=20, k=4, **SMALL)
    with pytest.raises(GPT2ProbeError, match="blocks.5"):
        SAE.train(vocab_probe, TEXTS, hook="blocks.5.hook_resid_post", d_sae=20, k=4, **SMALL)
    with pytest.raises(GPT2ProbeError, match="layer"):
        Transcoder.train(vocab_probe, TEXTS, layer=2, d_sae=20, k=4, **SMALL)
    with pytest.raises(GPT2ProbeError, match="train an SAE"):  # before the model runs over the corpus
        Transcoder.train(vocab_probe, TEXTS, cfg=SAEConfig(d_in=vocab_probe.cfg.d_model, d_sae=20, architecture="topk",
                                                           k=4, hook_name="blocks.1.hook_resid_post"), **SMALL)
    with pytest.raises(GPT2ProbeError, match="hook_name='blocks.0.hook_resid_post'"):  # was ignored for cfg's hook
        SAE.train(vocab_probe, TEXTS, hook="blocks.0.hook_resid_post", cfg=SAEConfig(
            d_in=vocab_probe.cfg.d_model, d_sae=20, architecture="topk", k=4, hook_name="blocks.1.hook_resid_post"), **SMALL)
    # seq_len=0 used to train on the default window (``seq_len or 128``); windows_per_pass=-1 read nothing, forever
    with pytest.raises(GPT2ProbeError, match=r"seq_len must be an integer in \[1, 29\].*got 0"):
        SAE.train(vocab_probe, TEXTS, hook="blocks.1.hook_resid_post", d_sae=20, k=4, seq_len=0, **SMALL)
    for windows in (0, -1):
        with pytest.raises(GPT2ProbeError, match=f"windows_per_pass must be >= 1, got {windows}"):
            SAE.train(vocab_probe, TEXTS, hook="blocks.1.hook_resid_post", d_sae=20, k=4, windows_per_pass=windows, **SMALL)
    with pytest.raises(GPT2ProbeError, match="fewer than one batch"):
        SAE.train(vocab_probe, ["tiny"], hook="blocks.1.hook_resid_post", d_sae=20, k=4, **SMALL)
    with pytest.raises(GPT2ProbeError, match="list of texts"):
        SAE.train(vocab_probe, "one string", hook="blocks.1.hook_resid_post", d_sae=20, k=4, **SMALL)


def _by_hand(probe, coder, tokens, valid):
    """CE, KL and reconstruction figures with plain torch on the HF model and hand-registered module hooks."""
    model = probe.model
    block = model.transformer.h[1]
    c = coder.cfg
    W_enc, b_enc, W_dec, b_dec = (p.detach().double() for p in (coder.W_enc, coder.b_enc, coder.W_dec, coder.b_dec))

    def reconstruct(x):
        pre = (x.double() - b_dec) @ W_enc + b_enc
        values, idx = pre.topk(c.k, dim=-1)
        acts = torch.zeros_like(pre).scatter(-1, idx, values.relu())
        return acts, acts @ W_dec + b_dec

    seen = {}

    def hook(mode):
        def fn(module, args, output):
            hidden = output[0] if isinstance(output, tuple) else output
            seen["x"] = hidden.detach()
            new = {"clean": hidden, "spliced": reconstruct(hidden)[1].float(), "zero": torch.zeros_like(hidden)}[mode]
            return (new, *output[1:]) if isinstance(output, tuple) else new
        return fn

    logits = {}
    for mode in ("clean", "spliced", "zero"):
        handle = block.register_forward_hook(hook(mode))
        try:
            with torch.no_grad():
                logits[mode] = model(input_ids=tokens).logits.double()
        finally:
            handle.remove()
    keep = torch.arange(tokens.shape[1])[None] < valid[:, None]
    pred = keep[:, 1:]
    ce = {}
    for mode, lg in logits.items():
        logp = torch.log_softmax(lg[:, :-1], -1)
        ce[mode] = float(-logp.gather(-1, tokens[:, 1:, None]).squeeze(-1)[pred].mean())
    p, q = torch.log_softmax(logits["clean"][:, :-1], -1), torch.log_softmax(logits["spliced"][:, :-1], -1)
    kl = float((p.exp() * (p - q)).sum(-1)[pred].mean())
    x = seen["x"][keep].double()
    acts, recons = reconstruct(x)
    return {"ce_loss_clean": ce["clean"], "ce_loss_spliced": ce["spliced"], "ce_loss_zero": ce["zero"], "kl": kl,
            "mse": float((recons - x).pow(2).mean()),
            "explained_variance": float(1 - (recons - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum()),
            "l0": float((acts > 0).sum(-1).double().mean()), "fires": (acts > 0).sum(0)}


def test_evaluate_matches_an_independent_computation(vocab_probe):
    sae = SAE(SAEConfig(d_in=42, d_sae=30, architecture="topk", k=5, hook_name="blocks.1.hook_resid_post"),
              generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        sae.b_dec.copy_(torch.randn(42, generator=torch.Generator().manual_seed(1)) * 0.1)
        sae.b_enc.copy_(torch.randn(30, generator=torch.Generator().manual_seed(2)) * 0.1)
    texts = TEXTS[:4]
    result = sae.evaluate(vocab_probe, texts, seq_len=20, batch_size=64)
    (block,) = list(blocks(Corpus(texts=texts)))
    packed = pack(block, vocab_probe.tokenizer, seq_len=20, eos=vocab_probe.tokenizer.eos_token_id)
    assert packed.valid[-1] < 20  # the padded tail is excluded
    ref = _by_hand(vocab_probe, sae, packed.tokens, packed.valid)
    for name in ("ce_loss_clean", "ce_loss_spliced", "ce_loss_zero", "kl", "mse", "explained_variance", "l0"):
        assert getattr(result, name) == pytest.approx(ref[name], rel=1e-4, abs=1e-6), name
    recovered = (ref["ce_loss_zero"] - ref["ce_loss_spliced"]) / (ref["ce_loss_zero"] - ref["ce_loss_clean"])
    assert result.ce_loss_recovered == pytest.approx(recovered, rel=1e-4)
    assert result.dead_fraction == pytest.approx(float((ref["fires"] == 0).double().mean()))
    n = int(packed.valid.sum())
    assert result.dense_fraction == pytest.approx(float((ref["fires"] > 0.1 * n).double().mean()))
    assert "ce_loss_recovered" in str(result) and result.n_tokens == n


@pytest.mark.parametrize("setting, match", [({"batch_size": True}, "batch_size must be an integer, got bool True"),
                                            ({"seq_len": True}, "seq_len must be an integer, got bool True"),
                                            ({"seq_len": 0}, "seq_len must be")])  # 0 read as the default
def test_evaluate_refuses_a_bool_for_an_integer(vocab_probe, setting, match):
    sae = SAE(SAEConfig(d_in=42, d_sae=30, architecture="topk", k=5, hook_name="blocks.1.hook_resid_post"))
    with pytest.raises(GPT2ProbeError, match=match):
        sae.evaluate(vocab_probe, TEXTS[:2], **setting)


def test_evaluate_a_transcoder_splices_the_mlp(vocab_probe):
    tc = Transcoder(SAEConfig.for_transcoder(0, d_model=42, d_sae=16, architecture="topk", k=3),
                    generator=torch.Generator().manual_seed(0))
    result = tc.evaluate(vocab_probe, TEXTS[:2], seq_len=20)
    assert result.hook_name == "blocks.0.hook_mlp_out" and result.ce_loss_spliced != result.ce_loss_clean
    with pytest.raises(GPT2ProbeError):
        SAE(SAEConfig(d_in=40, d_sae=8, architecture="topk", k=2, hook_name="blocks.1.hook_resid_post")).evaluate(
            vocab_probe, TEXTS[:2])



def test_evaluate_refuses_options_it_used_to_replace_or_ignore(vocab_probe):
    """seq_len=0 silently became the default (``seq_len or 128``) and max_tokens=0 or -5 evaluated a batch anyway."""
    sae = SAE(SAEConfig(d_in=42, d_sae=8, architecture="topk", k=2, hook_name="blocks.1.hook_resid_post"))
    for options, match in [({"seq_len": 0}, "seq_len must be between 2 and 29, got 0"),
                           ({"seq_len": 30}, "seq_len must be between 2 and 29, got 30"),
                           ({"max_tokens": 0}, "max_tokens must be >= 1, got 0"),
                           ({"max_tokens": -5}, "max_tokens must be >= 1, got -5"),
                           ({"dense_threshold": float("nan")}, "dense_threshold must be finite")]:
        with pytest.raises(GPT2ProbeError, match=match):
            sae.evaluate(vocab_probe, TEXTS[:1], **options)
    with pytest.raises(GPT2ProbeError, match=r"no texts given \(an empty list\)"):  # said "to train on" here too
        sae.evaluate(vocab_probe, [])
    with pytest.raises(GPT2ProbeError, match="float64 on cpu but the model is torch.float32"):  # before any run
        SAE(sae.cfg.replace(dtype=torch.float64)).evaluate(vocab_probe, TEXTS[:1])
    assert 0 < sae.evaluate(vocab_probe, TEXTS[:1], seq_len=29, max_tokens=1).n_tokens <= 8 * 29  # one batch of windows

def test_a_corpus_that_fits_the_buffer_runs_the_model_once(vocab_probe, monkeypatch):
    """One pass within buffer_tokens: the rows are kept, not recomputed every epoch; the result is the same as fitting them."""
    calls = []
    run = CorpusActivations._run
    monkeypatch.setattr(CorpusActivations, "_run", lambda self, tokens: calls.append(len(tokens)) or run(self, tokens))
    settings = dict(hook="blocks.1.hook_resid_post", d_sae=20, k=4, seed=3, seq_len=16, steps=40, train_batch_size_tokens=64,
                    progress=False)
    sae = SAE.train(vocab_probe, TEXTS, buffer_tokens=4096, **settings)
    source = CorpusActivations(vocab_probe, Corpus(texts=TEXTS), ["blocks.1.hook_resid_post"], seq_len=16, epochs=1,
                                seed=3)
    windows = sum(pack(b, vocab_probe.tokenizer, seq_len=16, eos=vocab_probe.tokenizer.eos_token_id).n_windows
                  for b in blocks(Corpus(texts=TEXTS)))
    assert sum(calls) == windows and 40 * 64 > 2 * source.count_tokens()  # 40 steps are several passes
    calls.clear()
    SAE.train(vocab_probe, TEXTS, buffer_tokens=256, **settings)  # streamed: the model runs every pass
    assert sum(calls) > 2 * windows
    rows = torch.cat(list(source.chunks()))
    fitted = SAE.fit(rows, d_sae=20, k=4, hook_name="blocks.1.hook_resid_post", steps=40, train_batch_size_tokens=64, seed=3,
                     progress=False)
    torch.testing.assert_close(sae.W_enc, fitted.W_enc)


@pytest.mark.parametrize("eos", [None, "<|endoftext|>", [50256, 0], True])  # True is an int to Python: not token 1
def test_a_tokenizer_without_one_end_of_text_id_is_refused(vocab_probe, eos):
    from types import SimpleNamespace

    # What CorpusActivations reads before any model runs; a tokenizer whose eos_token_id is not one id.
    probe = SimpleNamespace(model=vocab_probe.model, cfg=vocab_probe.cfg, hook_names=vocab_probe.hook_names,
                            run_until=vocab_probe.run_until, tokenizer=SimpleNamespace(eos_token_id=eos))
    with pytest.raises(GPT2ProbeError, match=r"no end-of-text token id to separate documents \(its eos_token_id is "
                                             r".*valid: one integer token id"):
        CorpusActivations(probe, Corpus(texts=TEXTS), ["blocks.1.hook_resid_post"], seq_len=16)


# A bool is an int to Python, so each of these read as 1 (seq_len=0 read as the default) before they were checked.
@pytest.mark.parametrize("coder, setting, match", [
    (SAE, {"seq_len": True}, "seq_len must be an integer, got bool True"),
    (SAE, {"seq_len": 0}, "seq_len must be an integer in"),
    (SAE, {"windows_per_pass": True}, "windows_per_pass must be an integer, got bool True"),
    (SAE, {"seed": True}, "seed must be an integer, got True"),
    (Transcoder, {"layer": True}, "layer must be in"),
])
def test_train_refuses_a_bool_for_an_integer(vocab_probe, coder, setting, match):
    settings = {"layer": 0} if coder is Transcoder else {"hook": "blocks.1.hook_resid_post"}
    with pytest.raises(GPT2ProbeError, match=match):
        coder.train(vocab_probe, TEXTS, **{"d_sae": 20, "k": 4, "seq_len": 16, **settings, **setting, **SMALL})


@pytest.mark.parametrize("setting", [{"windows_per_pass": True}, {"seed": True}, {"block_chars": True}, {"epochs": True},
                                     {"windows_per_pass": 0}])
def test_corpus_activations_refuse_a_bool_or_a_non_positive_count(vocab_probe, setting):
    name = next(iter(setting))
    with pytest.raises(GPT2ProbeError, match=name):
        CorpusActivations(vocab_probe, Corpus(texts=TEXTS), ["blocks.1.hook_resid_post"], **{"seq_len": 16, **setting})
