"""Training SAEs and transcoders on activations without a model: known answers, checkpoints, refusals."""

from __future__ import annotations

import pytest
import torch

from gpt2probe import SAE, SAEConfig, Transcoder
from gpt2probe.errors import GPT2ProbeError
from gpt2probe.sae.buffer import IteratorSource, StreamBatches

HOOK = "blocks.0.hook_resid_post"


def sparse_sums(n: int = 8000, d: int = 16, m: int = 24, k: int = 3, seed: int = 0, offset: float = 0.3):
    """Rows that are sums of ``k`` of ``m`` known unit directions (coefficients in [0.5, 1.5]), plus a constant."""
    gen = torch.Generator().manual_seed(seed)
    directions = torch.randn(m, d, generator=gen)
    directions /= directions.norm(dim=-1, keepdim=True)
    chosen = torch.stack([torch.randperm(m, generator=gen)[:k] for _ in range(n)])
    coefficients = torch.zeros(n, m).scatter_(1, chosen, 0.5 + torch.rand(n, k, generator=gen))
    return coefficients, directions, coefficients @ directions + offset


def mean_max_cosine(directions: torch.Tensor, W_dec: torch.Tensor) -> float:
    """For each true direction, the best cosine similarity with a decoder row; averaged."""
    rows = W_dec.detach() / W_dec.detach().norm(dim=-1, keepdim=True)
    return float((directions @ rows.T).max(-1).values.mean())


def explained_variance(x: torch.Tensor, recons: torch.Tensor) -> float:
    return float(1 - (recons - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum())


FAST = {"steps": 400, "train_batch_size_tokens": 256, "progress": False}
# ReLU and JumpReLU learn sparsity from a penalty, which takes longer than a fixed k.
SETTINGS = {"topk": {"k": 3}, "batchtopk": {"k": 3}, "standard": {"steps": 900}, "jumprelu": {"steps": 900}}


@pytest.mark.parametrize("architecture", list(SETTINGS))
def test_known_directions_are_recovered(architecture):
    _, directions, x = sparse_sums()
    sae = SAE.fit(x, d_sae=32, architecture=architecture, hook_name=HOOK, **{**FAST, **SETTINGS[architecture]})
    assert sae.cfg.architecture == architecture and sae.cfg.hook_name == HOOK
    assert mean_max_cosine(directions, sae.W_dec) >= 0.95
    with torch.no_grad():
        acts = sae.encode(x)
        assert explained_variance(x, sae(x)) >= 0.8
    l0 = float((acts > 0).sum(-1).double().mean())
    assert 1.5 <= l0 <= 8, l0
    if architecture == "batchtopk":  # the inference threshold keeps about k features per token
        assert sae.threshold is not None and torch.all(sae.threshold == sae.threshold[0]) and 2.2 <= l0 <= 3.8


def test_scale_is_folded_into_the_weights():
    """Trained on activations 100x larger, the SAE reads and writes them raw, with the same quality."""
    _, directions, x = sparse_sums()
    sae = SAE.fit(100 * x, d_sae=32, k=3, hook_name=HOOK, **FAST)
    assert sae.cfg.normalize_activations == "none"
    with torch.no_grad():
        assert explained_variance(100 * x, sae(100 * x)) >= 0.9
    norms = sae.W_dec.detach().norm(dim=-1)  # unit rows in training, divided by one scale when folded
    torch.testing.assert_close(norms, norms.mean().expand_as(norms))
    assert mean_max_cosine(directions, sae.W_dec) >= 0.95


def test_transcoder_learns_a_sparse_map():
    coefficients, directions, x = sparse_sums()
    gen = torch.Generator().manual_seed(5)
    out_directions = torch.randn(24, 11, generator=gen)
    out_directions /= out_directions.norm(dim=-1, keepdim=True)
    y = coefficients @ out_directions
    tc = Transcoder.fit(x, y, layer=1, d_sae=32, k=3, **{**FAST, "steps": 900})
    assert tc.cfg.hook_name == "blocks.1.ln2.hook_normalized" and tc.cfg.hook_name_out == "blocks.1.hook_mlp_out"
    assert (tc.cfg.d_in, tc.cfg.d_out) == (16, 11)
    with torch.no_grad():
        assert explained_variance(y, tc(x)) >= 0.8
    assert mean_max_cosine(out_directions, tc.W_dec) >= 0.9


def test_an_iterator_of_chunks_trains_through_the_buffer():
    _, directions, x = sparse_sums(n=12000)
    chunks = iter(x.split(500))
    sae = SAE.fit(chunks, d_sae=32, k=3, hook_name=HOOK, steps=40, train_batch_size_tokens=256, buffer_tokens=2048,
                  progress=False)
    assert sae.cfg.d_in == 16
    with pytest.raises(GPT2ProbeError, match="steps"):
        SAE.fit(iter(x.split(500)), d_sae=32, k=3, hook_name=HOOK, progress=False)
    with pytest.raises(GPT2ProbeError, match="ran out"):
        SAE.fit(iter(x[:1000].split(500)), d_sae=32, k=3, hook_name=HOOK, steps=40, train_batch_size_tokens=256,
                buffer_tokens=2048, progress=False)


def test_the_buffer_hands_out_every_row_once_and_holds_only_its_capacity():
    rows = torch.arange(5000, dtype=torch.float32)[:, None].repeat(1, 3)
    batches = StreamBatches(IteratorSource(iter(rows.split(123)), 3), 100, 1000, torch.Generator().manual_seed(0))
    seen = [batches.next() for _ in range(50)]
    assert batches.storage.shape == (1000, 3)
    values = torch.cat(seen)[:, 0].long()
    assert values.unique().numel() == 5000  # each row exactly once
    assert not torch.equal(values, torch.arange(5000))  # shuffled


class Interrupt(Exception):
    pass


def _checkpoint_then_stop(x, checkpoint_dir, settings):
    """Train with a checkpoint every 5 steps and stop during step 17 (the last checkpoint: after step 15)."""

    def stop(step, metrics):
        if step == 17:
            raise Interrupt

    with pytest.raises(Interrupt):
        SAE.fit(x, checkpoint_dir=checkpoint_dir, checkpoint_every=5, callback=stop, **settings)


@pytest.mark.parametrize("architecture", ["topk", "batchtopk", "jumprelu"])
def test_resume_is_bit_identical(tmp_path, architecture):
    _, _, x = sparse_sums(n=3000)
    settings = dict(d_sae=32, architecture=architecture, hook_name=HOOK, steps=30, train_batch_size_tokens=128, progress=False,
                    **({"k": 3} if architecture != "jumprelu" else {}))
    whole = SAE.fit(x, **settings)

    _checkpoint_then_stop(x, tmp_path, settings)
    with pytest.raises(GPT2ProbeError, match="already holds a checkpoint"):
        SAE.fit(x, checkpoint_dir=tmp_path, **settings)
    with pytest.raises(GPT2ProbeError, match=r"different options \(lr\)"):
        SAE.fit(x, checkpoint_dir=tmp_path, resume=True, **{**settings, "lr": 0.1})
    steps = []
    resumed = SAE.fit(x, checkpoint_dir=tmp_path, resume=True, callback=lambda s, m: steps.append(s), **settings)
    assert steps[0] == 16  # the last checkpoint was after step 15
    for name, param in whole.named_parameters():
        assert torch.equal(param, getattr(resumed, name)), name


def test_a_checkpoint_saved_before_batch_size_was_renamed_resumes(tmp_path):
    """Issue 23: ``batch_size`` (tokens per step) is now ``train_batch_size_tokens``; a run started before still resumes."""
    import json

    _, _, x = sparse_sums(n=3000)
    settings = dict(d_sae=32, k=3, hook_name=HOOK, steps=30, train_batch_size_tokens=128, progress=False)
    whole = SAE.fit(x, **settings)

    _checkpoint_then_stop(x, tmp_path, settings)
    path = tmp_path / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    fingerprint = json.loads(state["fingerprint"])
    options = fingerprint["options"]
    options["batch_size"] = options.pop("train_batch_size_tokens")  # as the older version wrote it
    state["fingerprint"] = json.dumps(fingerprint, sort_keys=True)
    torch.save(state, path)
    with pytest.raises(GPT2ProbeError, match=r"different options \(dead_after_tokens, train_batch_size_tokens\)"):
        SAE.fit(x, checkpoint_dir=tmp_path, resume=True, **{**settings, "train_batch_size_tokens": 64})
    steps = []
    resumed = SAE.fit(x, checkpoint_dir=tmp_path, resume=True, callback=lambda s, m: steps.append(s), **settings)
    assert steps[0] == 16
    for name, param in whole.named_parameters():
        assert torch.equal(param, getattr(resumed, name)), name


def test_the_old_batch_size_keyword_still_trains_with_a_deprecation_warning(own_deprecations):
    _, _, x = sparse_sums(n=600)
    settings = dict(d_sae=8, k=2, hook_name=HOOK, steps=3, progress=False)
    new = SAE.fit(x, train_batch_size_tokens=64, **settings)
    with pytest.warns(DeprecationWarning, match="batch_size is now train_batch_size_tokens") as caught:
        old = SAE.fit(x, batch_size=64, **settings)
    assert [w.filename for w in caught] == [__file__]  # points at the caller's line, not into gpt2probe
    for name, param in new.named_parameters():
        assert torch.equal(param, getattr(old, name)), name
    with pytest.raises(GPT2ProbeError, match="not both"):
        SAE.fit(x, batch_size=64, train_batch_size_tokens=64, **settings)


def test_runs_that_cannot_be_done_say_why_before_starting():
    _, _, x = sparse_sums(n=300)
    with pytest.raises(GPT2ProbeError, match="fewer than one batch"):
        SAE.fit(x, d_sae=8, k=2, hook_name=HOOK, train_batch_size_tokens=4096, progress=False)
    with pytest.raises(GPT2ProbeError, match=r"fewer than one batch \(256\)"):  # the smallest default batch
        SAE.fit(x[:200], d_sae=8, k=2, hook_name=HOOK, progress=False)
    with pytest.raises(GPT2ProbeError, match="needs k"):
        SAE.fit(x, d_sae=8, hook_name=HOOK, train_batch_size_tokens=64, progress=False)
    with pytest.raises(GPT2ProbeError, match="hook_name"):
        SAE.fit(x, d_sae=8, k=2, train_batch_size_tokens=64, progress=False)
    with pytest.raises(GPT2ProbeError, match="d_sae"):
        SAE.fit(x, k=2, hook_name=HOOK, train_batch_size_tokens=64, progress=False)
    with pytest.raises(GPT2ProbeError, match="cannot exceed d_sae"):
        SAE.fit(x, d_sae=8, k=9, hook_name=HOOK, train_batch_size_tokens=64, progress=False)
    bad = x.clone()
    bad[7, 2] = float("nan")
    with pytest.raises(GPT2ProbeError, match="NaN"):
        SAE.fit(bad, d_sae=8, k=2, hook_name=HOOK, train_batch_size_tokens=64, progress=False)
    with pytest.raises(GPT2ProbeError, match="all zero"):
        SAE.fit(torch.zeros(300, 4), d_sae=8, k=2, hook_name=HOOK, train_batch_size_tokens=64, steps=2, progress=False)
    with pytest.raises(GPT2ProbeError, match="targets"):
        Transcoder.fit(x, layer=0, d_sae=8, k=2, train_batch_size_tokens=64, progress=False)
    with pytest.raises(GPT2ProbeError, match="pair up"):
        Transcoder.fit(x, x[:100], layer=0, d_sae=8, k=2, train_batch_size_tokens=64, progress=False)
    with pytest.raises(GPT2ProbeError, match="lr"):
        SAE.fit(x, d_sae=8, k=2, hook_name=HOOK, train_batch_size_tokens=64, lr=-1.0, progress=False)
    with pytest.raises(GPT2ProbeError, match="checkpoint_dir"):
        SAE.fit(x, d_sae=8, k=2, hook_name=HOOK, train_batch_size_tokens=64, resume=True, progress=False)
    # A batch top-k config may lack k (a record only, at inference); training one needs it.
    with pytest.raises(GPT2ProbeError, match="needs k"):
        SAE.fit(x, cfg=SAEConfig(d_in=16, d_sae=8, hook_name=HOOK, architecture="batchtopk"), train_batch_size_tokens=64,
                progress=False)
    # A config of the other kind of coder, refused by name before any data is used.
    with pytest.raises(GPT2ProbeError, match="train a Transcoder"):
        SAE.fit(x, cfg=SAEConfig.for_transcoder(0, d_model=16, d_sae=8, architecture="topk", k=2), train_batch_size_tokens=64,
                progress=False)
    with pytest.raises(GPT2ProbeError, match="train an SAE"):
        Transcoder.fit(x, x, cfg=SAEConfig(d_in=16, d_sae=8, hook_name=HOOK, architecture="topk", k=2), train_batch_size_tokens=64,
                       progress=False)



def test_settings_beside_a_config_must_agree_with_it():
    """SAE.fit(x, cfg=<8 features>, d_sae=32) used to train 8 features: a piece beside cfg was silently ignored."""
    _, _, x = sparse_sums(n=300)
    cfg = SAEConfig(d_in=16, d_sae=8, hook_name=HOOK, architecture="topk", k=2)
    quick = {"train_batch_size_tokens": 64, "steps": 2, "progress": False}
    for piece, match in [({"d_sae": 32}, r"d_sae=32 \(cfg.d_sae is 8\)"),
                         ({"architecture": "jumprelu"}, r"architecture='jumprelu' \(cfg.architecture is 'topk'\)"),
                         ({"k": 5}, r"k=5 \(cfg.k is 2\)"),
                         ({"hook_name": "blocks.0.hook_resid_pre"}, "hook_name='blocks.0.hook_resid_pre'")]:
        with pytest.raises(GPT2ProbeError, match=match):
            SAE.fit(x, cfg=cfg, **piece, **quick)
    tc_cfg = SAEConfig.for_transcoder(0, d_model=16, d_sae=8, architecture="standard")
    with pytest.raises(GPT2ProbeError, match=r"layer=1 \(cfg reads 'blocks.0.ln2.hook_normalized'\)"):
        Transcoder.fit(x, x, cfg=tc_cfg, layer=1, **quick)
    with pytest.raises(GPT2ProbeError, match=r"skip=True \(cfg.skip is False\)"):
        Transcoder.fit(x, x, cfg=tc_cfg, skip=True, **quick)
    # pieces that agree with cfg are fine, and without cfg the architecture is still top-k by default
    assert SAE.fit(x, cfg=cfg, d_sae=8, architecture="topk", k=2, hook_name=HOOK, **quick).cfg == cfg.replace(
        metadata={})
    assert SAE.fit(x, d_sae=8, k=2, hook_name=HOOK, **quick).cfg.architecture == "topk"


def test_an_iterator_whose_first_chunk_has_no_width_is_named():
    """The first chunk sets the width: a 0-d tensor was a raw IndexError, a pair of lists a raw AttributeError."""
    quick = {"train_batch_size_tokens": 64, "steps": 2, "progress": False}
    with pytest.raises(GPT2ProbeError, match=r"the activations \(chunk 0\) is a 0-d tensor"):
        SAE.fit(iter([torch.tensor(1.0)]), d_sae=8, k=2, hook_name=HOOK, **quick)
    with pytest.raises(GPT2ProbeError, match=r"the activations \(chunk 0\) must be a tensor, got list"):
        SAE.fit(iter([[1.0, 2.0]]), d_sae=8, k=2, hook_name=HOOK, **quick)
    with pytest.raises(GPT2ProbeError, match=r"the inputs \(chunk 0\) must be a tensor, got list"):
        Transcoder.fit(iter([([1.0, 2.0], torch.ones(1, 2))]), d_sae=8, layer=0, **quick)


def test_options_of_the_wrong_kind_are_refused_before_the_first_step():
    """seed=1.5 was torch's RuntimeError at the first step, resume="no" read as True, lr=True as 1.0."""
    _, _, x = sparse_sums(n=300)
    quick = {"d_sae": 8, "k": 2, "hook_name": HOOK, "train_batch_size_tokens": 64, "steps": 2, "progress": False}
    with pytest.raises(GPT2ProbeError, match="seed must be an integer, got 1.5"):
        SAE.fit(x, **{**quick, "seed": 1.5})
    with pytest.raises(GPT2ProbeError, match="resume must be True or False, got 'no'"):
        SAE.fit(x, resume="no", checkpoint_dir="unused", **quick)
    with pytest.raises(GPT2ProbeError, match="lr must be a finite number"):
        SAE.fit(x, lr=True, **quick)

def test_default_schedule_follows_the_data():
    from gpt2probe import SAEConfig
    from gpt2probe.configs.sae import SAETrainConfig
    from gpt2probe.sae.training import resolve

    cfg = SAEConfig(d_in=64, d_sae=512, architecture="topk", k=8, hook_name=HOOK)
    small = resolve(SAETrainConfig(), cfg, 100_000)
    assert small.steps == 2000 and small.warmup_steps == 100 and small.decay_steps == 400
    assert small.train_batch_size_tokens == 512  # about 128 steps per pass over 100,000 rows, a power of two
    assert resolve(SAETrainConfig(), cfg, 132_129).train_batch_size_tokens == 1024 and resolve(
        SAETrainConfig(train_batch_size_tokens=300), cfg, 100_000).train_batch_size_tokens == 300
    assert small.lr == pytest.approx(2e-4 * (16384 / 512) ** 0.5)
    big = resolve(SAETrainConfig(), cfg, 4096 * 5000 + 1)
    assert big.steps == 5001 and big.warmup_steps == 250 and big.train_batch_size_tokens == 4096
    assert [round(big.learning_rate(s) / big.lr, 4) for s in (0, 249, 2000, 5000)] == [0.004, 1.0, 1.0, 0.001]


def test_pytorch_train_mode_still_works_on_an_instance():
    sae = SAE.fit(sparse_sums(n=600)[2], d_sae=8, k=2, hook_name=HOOK, steps=2, train_batch_size_tokens=64, progress=False)
    assert sae.eval() is sae and not sae.training
    assert sae.train() is sae and sae.training


def test_geometric_median_meets_its_optimality_condition():
    """At the geometric median the unit vectors towards the points sum to zero (checked in float64, not by Weiszfeld)."""
    from gpt2probe.sae.training import geometric_median

    gen = torch.Generator().manual_seed(3)
    points = torch.randn(3001, 11, generator=gen) * torch.linspace(0.5, 3.0, 11) + 2.0
    points[:300] += 40.0  # a tenth are far outliers: they pull the mean, hardly the median
    median = geometric_median(points).double()
    units = points.double() - median
    units /= units.norm(dim=-1, keepdim=True)
    assert float(units.sum(0).norm()) / points.shape[0] < 1e-4
    assert float((median - 2.0).abs().max()) < 0.6 < float((points.double().mean(0) - 2.0).abs().min())
    assert geometric_median(torch.ones(5, 3)).tolist() == [1.0, 1.0, 1.0]


def test_aux_k_loss_is_a_normalised_error_weighed_by_the_target_variance():
    """Gao et al.'s weighting, computed by hand: top-k_aux dead features, error over the residual's variance."""
    from gpt2probe.sae.losses import aux_k_loss

    gen = torch.Generator().manual_seed(5)
    pre_dead = torch.randn(7, 5, generator=gen)  # 5 dead features among 9
    dead_features = torch.tensor([0, 2, 3, 6, 8])
    W_dec = torch.randn(9, 4, generator=gen)
    residual = torch.randn(7, 4, generator=gen) * 0.1
    expected_recons = torch.zeros(7, 4)
    for row in range(7):
        for j in pre_dead[row].argsort(descending=True)[:2].tolist():  # k_aux = 2 of the 5 dead
            expected_recons[row] += max(float(pre_dead[row, j]), 0.0) * W_dec[dead_features[j]]
    error = (expected_recons - residual).pow(2).sum(-1).mean()
    variance = (residual - residual.mean(0)).pow(2).sum(-1).mean()
    got = aux_k_loss(pre_dead, dead_features, residual, W_dec, 2, torch.tensor(3.0))
    torch.testing.assert_close(got, 3.0 * error / variance)  # min(5 / 2, 1) = 1
    # The weight does not shrink with the residual: a residual 10 times smaller, the same loss per unit of it.
    assert float(aux_k_loss(pre_dead * 0.1, dead_features, residual * 0.1, W_dec, 2, torch.tensor(3.0))) \
        == pytest.approx(float(got), rel=1e-5)
    assert float(aux_k_loss(pre_dead[:, :0], dead_features[:0], residual, W_dec, 2, torch.tensor(3.0))) == 0.0
