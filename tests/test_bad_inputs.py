"""Issue 24's reproductions: each bad input gives a correct result or a GPT2ProbeError naming it.

Values here have the annotated types (under pytest jaxtyping and beartype check those first);
``test_wrongly_typed_arguments`` runs the wrongly typed ones in a plain interpreter, as a user's
script would, where only our own checks stand between the value and a raw Python error.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

import gpt2probe
from gpt2probe import GPT2ProbeError, Tokens, head_scores
from gpt2probe import names as N
from gpt2probe.errors import ConcurrentUseError
from gpt2probe.finetune import finetune
from gpt2probe.generation import generate
from gpt2probe.hooks import count_torch_hooks
from gpt2probe.interventions.attribution_patching import attribution_patch
from gpt2probe.interventions.patching import patch

from models import SMALL, VOCAB, random_ids

IDS = random_ids(SMALL, 2, 5, seed=9)
CLEAN, CORRUPTED = "When John and Mary went, John gave it to", "When John and Mary went, Mary gave it to"


def _refused(call, kind, match):
    with pytest.raises(kind, match=match) as info:
        call()
    assert isinstance(info.value, GPT2ProbeError), type(info.value)
    return info.value


# -- a forward pass inside a hook function -----------------------------------------------------
def test_a_forward_pass_inside_a_hook_is_refused(vocab_probe):
    """The issue's reproduction: the inner pass reset BlockTailSite's shared state and dropped the resid_mid edit.

    Either the logits equal the run without the inner call, or a clear error; we refuse re-entry,
    and the probe is left clean (no hooks, no lock, the guard reset) for the next call and thread.
    """
    p, d = vocab_probe, torch.zeros(VOCAB.n_embd)
    d[0] = 3.0
    calls = []

    def inner(activation, hook):  # once: without the guard the run completes, its logits off by up to 1.4 here
        calls.append(hook.name)
        if len(calls) == 1:
            p("Hi")

    hooks = [(N.resid_mid(0), lambda a, h: a + d), (N.mlp_post(0), inner)]
    before = count_torch_hooks(p.model)
    _refused(lambda: p.run_with_hooks("The cat sat", hooks), RuntimeError,
             r"hook function on 'blocks\.0\.mlp\.hook_post' ran the model again")
    assert calls == [N.mlp_post(0)]
    # a raw model call inside the hook is caught the same way
    raw = [(N.resid_mid(0), lambda a, h: a + d), (N.mlp_post(0), lambda a, h: p.model(torch.tensor([[1, 2]])) and None)]
    _refused(lambda: p.run_with_hooks("The cat sat", raw), ConcurrentUseError, "ran the model again")
    assert count_torch_hooks(p.model) == before and p.registry.lock.owner is None

    # the edit alone, and the model afterwards from another thread, are unaffected
    edited = p.run_with_hooks("The cat sat", hooks[:1])
    with p.hooks(hooks[:1]):
        assert torch.equal(p("The cat sat"), edited)
    plain = p("The cat sat")
    assert not torch.allclose(edited, plain)
    out = {}
    thread = threading.Thread(target=lambda: out.setdefault("logits", p("The cat sat")))
    thread.start()
    thread.join()
    assert torch.equal(out["logits"], plain)


def test_a_hook_that_raises_resets_the_reentry_guard(small_probe):
    def boom(activation, hook):
        raise KeyError("mine")

    with pytest.raises(KeyError, match="mine"):
        small_probe.run_with_hooks(IDS, {N.resid_pre(1): boom})
    assert small_probe.registry._in_hook is None
    small_probe.run_with_hooks(IDS, {N.resid_pre(1): lambda a, h: None})


# -- tokens ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [10**9, -1, VOCAB.vocab_size])
def test_ids_outside_the_vocabulary_do_not_decode_to_empty_text(vocab_probe, bad):
    _refused(lambda: vocab_probe.to_string([5, bad]), ValueError, rf"token ids\[1\] = {bad} is outside the vocabulary")
    _refused(lambda: vocab_probe.to_str_tokens([bad]), ValueError, "outside the vocabulary")
    _refused(lambda: vocab_probe.to_string(torch.tensor([[1, 2], [3, bad]])), ValueError, r"row 1\[1\]")
    assert vocab_probe.to_str_tokens([464, 3797]) == ["The", " cat"]


def test_ids_beyond_a_small_models_vocabulary(small_probe):
    """The tokenizer has 50257 tokens but this model only 101: id 500 decodes, yet the model can never produce it."""
    _refused(lambda: small_probe.to_string([500]), ValueError, r"\[0, 101\)")


def test_prepend_bos_with_token_ids_is_refused_not_ignored(small_probe):
    for inputs in (IDS, Tokens(IDS, torch.ones_like(IDS))):
        _refused(lambda inputs=inputs: small_probe(inputs, prepend_bos=True), ValueError, "prepend_bos=True applies to text")
        _refused(lambda inputs=inputs: small_probe.run_with_cache(inputs, prepend_bos=True), ValueError, "applies to text")
    _refused(lambda: small_probe.to_str_tokens([1, 2], prepend_bos=True), ValueError, "applies to text")


def test_pads_outside_the_vocabulary(small_probe):
    """Only the real ids were checked: a pad id of 50256 on a 101-token model was an IndexError in the embedding."""
    mask = torch.ones_like(IDS)
    mask[1, :2] = 0
    for pad in (50256, -5):
        ids = IDS.clone()
        ids[1, :2] = pad
        _refused(lambda ids=ids: small_probe(Tokens(ids, mask)), ValueError, "pad positions hold ids")
    ids = IDS.clone()
    ids[1, :2] = 0
    small_probe(Tokens(ids, mask))


def test_meta_tensors(small_probe):
    _refused(lambda: small_probe(IDS.to("meta")), ValueError, "meta device")
    _refused(lambda: small_probe(Tokens(IDS.to("meta"), torch.ones_like(IDS))), ValueError, "meta device")


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.bool])
def test_captures_in_integer_dtypes_are_refused(small_probe, dtype):
    """``dtype=torch.int32`` cached zeros (every activation truncated)."""
    _refused(lambda: small_probe.run_with_cache(IDS, names=N.EMBED, dtype=dtype), ValueError, "floating-point dtype")
    _, cache = small_probe.run_with_cache(IDS, names=N.EMBED, dtype=torch.float64)
    assert cache[N.EMBED].dtype == torch.float64


def test_hook_functions_of_the_wrong_arity_attach_nothing(small_probe):
    before = count_torch_hooks(small_probe.model)
    _refused(lambda: small_probe.run_with_hooks(IDS, {N.resid_pre(0): lambda t: t}), TypeError,
             r"called as fn\(activation, hook\)")
    _refused(lambda: small_probe.run_with_hooks(IDS, [(N.resid_pre(0), lambda a, h: None),
                                                     (N.resid_pre(1), lambda: None)]), TypeError, "resid_pre")
    assert count_torch_hooks(small_probe.model) == before
    # functions that take the two arguments in other forms are fine
    seen = []
    small_probe.run_with_hooks(IDS, [(N.resid_pre(0), lambda *args: seen.append(len(args))),
                                     (N.resid_pre(1), lambda a, h, extra=1: None)])
    assert seen == [2]


# -- interventions --------------------------------------------------------------------------------
def test_patch_refuses_a_metric_with_answer_and_wrong(vocab_probe):
    """``answer``/``wrong`` only build the default metric: with ``metric=`` they were silently ignored."""
    metric = lambda logits: logits[0, -1, 0]  # noqa: E731
    for extra in ({"answer": " Mary"}, {"wrong": " John"}, {"answer": " Mary", "wrong": " John"}):
        _refused(lambda extra=extra: patch(vocab_probe, CLEAN, CORRUPTED, metric=metric, **extra), ValueError,
                 "metric= replaces")
        _refused(lambda extra=extra: attribution_patch(vocab_probe, CLEAN, CORRUPTED, metric=metric, **extra),
                 ValueError, "metric= replaces")


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_metric_is_an_error_not_a_grid_of_nan(vocab_probe, bad):
    """NaN compared unequal to itself, so the "same metric on both runs" check passed and every cell was NaN."""
    _refused(lambda: patch(vocab_probe, CLEAN, CORRUPTED, metric=lambda logits: logits[0, -1, 0] * bad, kind="head"),
             ValueError, r"the metric returned -?(nan|inf) on the clean run")

    calls = []

    def finite_on_the_plain_runs_only(logits):
        calls.append(1)
        value = logits[0, -1, 0] - logits[0, -1, 1]
        return value if len(calls) <= 2 else value * bad

    _refused(lambda: patch(vocab_probe, CLEAN, CORRUPTED, metric=finite_on_the_plain_runs_only, kind="head"),
             ValueError, r"the metric returned .* with blocks\.0\.attn\.hook_z patched")
    _refused(lambda: attribution_patch(vocab_probe, CLEAN, CORRUPTED, metric=lambda logits: logits[0, -1, 0] * bad),
             ValueError, "non-finite")


def test_attribution_needs_a_metric_with_a_gradient(vocab_probe):
    _refused(lambda: attribution_patch(vocab_probe, CLEAN, CORRUPTED, metric=lambda logits: logits[0, -1].argmax()),
             ValueError, "has no gradient")
    _refused(lambda: attribution_patch(vocab_probe, CLEAN, CORRUPTED,
                                       metric=lambda logits: logits[0, -1, 0].detach()), ValueError, "has no gradient")


def test_rank_heads_of_only_nan_is_an_error(small_probe):
    _refused(lambda: head_scores.rank_heads(torch.full((3, 5), float("nan"))), ValueError, "every one of the 15")
    partly = torch.full((2, 2), float("nan"))
    partly[1, 0] = 0.5
    assert head_scores.rank_heads(partly) == [(1, 0, 0.5)]


# -- arguments ------------------------------------------------------------------------------------
@pytest.mark.parametrize("extra", [{"top_k": 5}, {"top_p": 0.9}, {"temperature": 0.7}, {"seed": 3}])
def test_greedy_with_sampling_options_is_contradictory(small_probe, extra):
    name = next(iter(extra))
    _refused(lambda: generate(small_probe, IDS, 2, greedy=True, **extra), ValueError, rf"greedy=True .*{name}=")
    generate(small_probe, IDS, 2, **extra)  # each is fine without greedy=True


def test_greedy_with_temperature_zero_agrees(small_probe):
    a = generate(small_probe, IDS, 3, greedy=True, temperature=0, stop_at_eos=False)
    b = generate(small_probe, IDS, 3, greedy=True, stop_at_eos=False)
    assert torch.equal(a.new_ids, b.new_ids)


def test_steering_command_refuses_top_k_with_greedy(capsys, tmp_path):
    from gpt2probe.experiments.steering import main

    code = main(["--model", "toy-induction", "--greedy", "--top-k", "5", "--out", str(tmp_path / "s.html")])
    assert code == 2 and "--top-k and --temperature would be ignored" in capsys.readouterr().err


def test_apply_final_ln_of_a_wrong_width(small_probe):
    _, cache = small_probe.run_with_cache(IDS, names=[N.resid_pre(0), N.LN_FINAL_SCALE])
    stack = cache[N.resid_pre(0)]
    _refused(lambda: cache.apply_final_ln(stack[..., :-1]), ValueError, f"d_model={SMALL.n_embd}")
    _refused(lambda: cache.apply_final_ln(stack[..., :-1], frozen=True), ValueError, "d_model")


# -- fine-tuning ----------------------------------------------------------------------------------
def test_finetune_checks_text_ids_against_the_vocabulary(toy):
    """``gpt2probe finetune --model toy-induction --corpus doc.txt`` ended in an IndexError inside the embedding."""
    _refused(lambda: finetune(toy, ["Some ordinary text. " * 20], steps=1), ValueError,
             f"vocabulary has only {toy.cfg.d_vocab} tokens")


def test_finetune_command_on_a_small_vocabulary(tmp_path, capsys):
    from gpt2probe.experiments.finetune import main

    doc = tmp_path / "doc.txt"
    doc.write_text("Hello world, a document of ordinary words. " * 30)
    code = main(["--model", "toy-induction", "--corpus", str(doc), "--steps", "1", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "vocabulary has only 64 tokens" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("settings, match", [({"weight_decay": -1.0}, "weight_decay must be >= 0"),
                                             ({"weight_decay": float("nan")}, "weight_decay must be finite"),
                                             ({"seed": 2**64}, "seed must be between"),
                                             ({"warmup": -1}, "warmup must be >= 0")])
def test_finetune_settings(vocab_probe, settings, match):
    _refused(lambda: finetune(vocab_probe, ["text " * 50], steps=1, **settings), ValueError, match)


def test_attention_command_with_negative_token_ids(capsys, tmp_path):
    from gpt2probe.experiments.attention import main

    code = main(["--model", "toy-induction", "--tokens", "1,-2", "--out", str(tmp_path / "a.html")])
    err = capsys.readouterr().err
    assert code == 2 and "token ids must lie in [0, 64)" in err and "Traceback" not in err


# -- loading --------------------------------------------------------------------------------------
def test_a_malicious_pickle_is_refused_with_our_error_and_never_runs(tmp_path):
    """``allow_pickle=True`` still unpickles with ``weights_only``: the payload is refused, as our error."""
    from gpt2probe.errors import UnsafeCheckpointError
    from gpt2probe.shipped import shipped_model

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    folder = tmp_path / "evil"
    shutil.copytree(shipped_model("toy-induction"), folder)
    (folder / "model.safetensors").unlink()
    with open(folder / "pytorch_model.bin", "wb") as f:
        pickle.dump({"transformer.wte.weight": Payload()}, f, protocol=2)
    _refused(lambda: gpt2probe.load(folder, allow_pickle=True, device="cpu"), ValueError, "holds more than tensors")
    assert isinstance(UnsafeCheckpointError("x"), GPT2ProbeError)
    assert not marker.exists()


def test_loading_options(tmp_path):
    if not torch.cuda.is_available():
        _refused(lambda: gpt2probe.load("toy-induction", device="cuda"), ValueError, "CUDA is not available")
    _refused(lambda: gpt2probe.load("toy-induction", device="banana"), ValueError, "'banana' is not a device")
    _refused(lambda: gpt2probe.load("toy-induction", device="cpu", dtype=torch.int32), ValueError, "floating-point")
    _refused(lambda: gpt2probe.load("~nonexistentuser24/x", device="cpu"), OSError, "nonexistentuser24")
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        _refused(lambda: gpt2probe.load("toy-induction", device="cpu", attn_implementation="flash_attention_2"),
                 ValueError, "flash_attention_2")


def test_reading_options_with_a_model_object_are_refused_not_ignored(small_probe):
    """``attn_implementation``, ``revision`` and ``allow_pickle`` say how to read a checkpoint; an object was read already."""
    model = small_probe.model
    before = model.config._attn_implementation
    for option in ({"attn_implementation": "sdpa" if before == "eager" else "eager"}, {"revision": "main"},
                   {"allow_pickle": True}):
        name = next(iter(option))
        _refused(lambda option=option: gpt2probe.load(model, device="cpu", **option), ValueError,
                 f"{name} only apply when gpt2probe reads the checkpoint")
    assert model.config._attn_implementation == before
    assert gpt2probe.load(model, device="cpu").model is model  # without them the object is wrapped as before


def _captures(probe, device):
    """Every public capture that takes ``device=``."""
    return [lambda: probe.run_with_cache(IDS, names=N.EMBED, device=device),
            lambda: probe.run_until(IDS, N.resid_pre(1), device=device)]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_a_capture_onto_cuda_without_cuda(small_probe):
    """The GPU check's finding: ``device='cuda:99'`` was a raw torch error raised inside the capture hook.

    Without CUDA it was ``AssertionError: Torch not compiled with CUDA enabled``, on an H200
    ``AcceleratorError: invalid device ordinal``; now our error before the forward, naming what exists.
    """
    before = count_torch_hooks(small_probe.model)
    for device in ("cuda", "cuda:99", torch.device("cuda", 0)):
        for call in _captures(small_probe, device):
            error = _refused(call, ValueError, "CUDA is not available on this machine")
            assert "valid here: 'cpu'" in str(error), str(error)
    assert count_torch_hooks(small_probe.model) == before
    _, cache = small_probe.run_with_cache(IDS, names=N.EMBED, device="cpu")
    assert cache[N.EMBED].device.type == "cpu"


def test_a_capture_onto_a_gpu_this_machine_lacks(small_probe, monkeypatch):
    """The H200's case, ``cuda:99`` on a one-GPU machine, with the device count mocked (no GPU needed).

    Validation must stop it before the forward: were it to pass, the capture hook's ``.to('cuda:99')``
    would fail inside the forward with a raw torch error (here, without CUDA, an AssertionError).
    """
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    before = count_torch_hooks(small_probe.model)
    for call in _captures(small_probe, "cuda:99"):
        error = _refused(call, ValueError, r"'cuda:99' asks for CUDA device 99, but this machine has 1 CUDA device")
        assert "valid here: 'cpu', 'cuda:0'" in str(error), str(error)
    assert count_torch_hooks(small_probe.model) == before
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 100)  # the same call passes validation and reaches torch
    with pytest.raises(Exception) as info:
        small_probe.run_with_cache(IDS, names=N.EMBED, device="cuda:99")
    assert not isinstance(info.value, GPT2ProbeError), info.value
    assert count_torch_hooks(small_probe.model) == before


def test_one_device_check_for_captures_loading_and_files(monkeypatch, tmp_path):
    """``load``, captures, SAEs and files read onto a device refuse a missing GPU with the same words."""
    from gpt2probe import validate
    from gpt2probe.errors import InvalidArgumentError, UnsupportedError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    _refused(lambda: gpt2probe.load("toy-induction", device="cuda:2"), UnsupportedError, "this machine has 2 CUDA device")
    _refused(lambda: validate.device("device", "cuda:2"), InvalidArgumentError, "valid here: 'cpu', 'cuda:0', 'cuda:1'")
    gpt2probe.SAE(gpt2probe.SAEConfig(d_in=6, d_sae=10, hook_name=N.resid_post(0))).save(tmp_path / "sae")
    _refused(lambda: gpt2probe.SAE.load(tmp_path / "sae", device="cuda:2"), InvalidArgumentError, "has 2 CUDA device")
    assert validate.device("device", "cuda:1") == torch.device("cuda:1")
    assert validate.device("device", None) is None


# -- wrongly typed arguments, as a plain script meets them ---------------------------------------
# Each case: (label, code, expected error class, pattern). ``p`` is a probe with GPT-2's vocabulary,
# ``s`` one with a 101-token vocabulary, ``toy`` the shipped toy model.
TYPED_CASES = [
    ("forward None", "p(None)", "InvalidTypeError", "prompts must be a string or a list of strings"),
    ("forward int", "p(123)", "InvalidTypeError", "got int"),
    ("forward float", "p(3.5)", "InvalidTypeError", "got float"),
    ("forward dict", "p({'The cat': 1})", "InvalidTypeError", "got dict"),
    ("forward set", "p({'The cat'})", "InvalidTypeError", "got set"),
    ("forward bytes", "p(b'The cat')", "InvalidTypeError", "got bytes"),
    ("prepend_bos str", "p('Hi', prepend_bos='yes')", "InvalidTypeError", "prepend_bos must be True or False"),
    ("grad str", "p('Hi', grad='no')", "InvalidTypeError", "grad must be True or False"),
    ("to_str_tokens None", "p.to_str_tokens(None)", "InvalidTypeError", "token ids must be a list"),
    ("to_string floats", "p.to_string([1.5])", "InvalidTypeError", r"token ids\[0\] is float"),
    ("names int", "p.run_with_cache('Hi', names=123)", "HookNameError", "got int 123"),
    ("dtype str", "p.run_with_cache('Hi', dtype='float16')", "InvalidTypeError", "dtype must be a torch dtype"),
    ("device int", "p.run_with_cache('Hi', device=3.5)", "InvalidTypeError", "device must be"),
    ("hooks None", "p.hooks(None).__enter__()", "InvalidTypeError", "hooks must be a dict"),
    ("hooks int key", "p.run_with_hooks('Hi', {5: lambda a, h: None})", "HookNameError", "got int 5"),
    ("hooks 3-tuple", "p.run_with_hooks('Hi', [('blocks.0.hook_resid_pre', lambda a, h: None, 1)])",
     "InvalidTypeError", "3-tuple"),
    ("hooks not callable", "p.run_with_hooks('Hi', {'blocks.0.hook_resid_pre': 5})", "InvalidTypeError",
     "not a function"),
    ("ablate heads=[0]", "ablate(s, heads=[0]).__enter__()", "InvalidTypeError", r"heads\[0\] is 0"),
    ("ablate heads=(0, 0)", "ablate(s, heads=(0, 0)).__enter__()", "InvalidTypeError", "not a \\(layer, head\\) pair"),
    ("ablate head str", "ablate(s, heads=[(0, 'a')]).__enter__()", "InvalidTypeError", "the head must be an integer"),
    ("ablate mlps int", "ablate(s, mlps=0).__enter__()", "InvalidTypeError", "mlps must be a list"),
    ("faithfulness 5", "faithfulness(p, 5, A, B, answer=' Mary', wrong=' John')", "InvalidTypeError",
     "a circuit is a Circuit or a list of edges"),
    ("faithfulness edge int", "faithfulness(p, [5], A, B, answer=' Mary', wrong=' John')", "InvalidTypeError",
     "edge 0 is int"),
    ("include_mid", "logit_lens(p, 'Hi', include_mid='yes')", "InvalidTypeError", "include_mid must be True or False"),
    ("lens progress", "logit_lens(p, 'Hi', progress=5)", "InvalidTypeError", "progress must be a function"),
    ("lens targets float", "logit_lens(p, 'Hi', targets=3.5)", "InvalidTypeError", "one token"),
    ("patch kind list", "patch(p, A, B, answer=' Mary', wrong=' John', kind=[])", "InvalidArgumentError",
     "kind must be one of"),
    ("patch metric int", "patch(p, A, B, metric=5)", "InvalidTypeError", "metric must be a function"),
    ("patch metric str", "patch(p, A, B, metric=lambda l: 'x')", "InvalidTypeError", "must return a number"),
    ("patch per_position", "patch(p, A, B, answer=' Mary', wrong=' John', per_position='no')", "InvalidTypeError",
     "per_position must be True or False"),
    ("not a probe", "patch(s.model, A, B, answer=' Mary', wrong=' John')", "InvalidTypeError",
     "wrap it with gpt2probe.load"),
    ("generate seed float", "generate(p, 'Hi', 2, seed=3.5)", "InvalidTypeError", "seed must be an integer"),
    ("generate eos str", "generate(p, 'Hi', 2, eos_token_id='x')", "InvalidTypeError", "eos_token_id"),
    ("rank_heads list", "head_scores.rank_heads([[1.0]])", "InvalidTypeError", "scores must be a"),
    ("head scores of a tensor", "head_scores.previous_token_scores(torch.ones(2))", "InvalidTypeError",
     "ActivationCache"),
    ("steer stream list", "steer(s, 0, torch.ones(60), 1.0, stream=[]).__enter__()", "InvalidArgumentError",
     "stream must be one of"),
    ("cache frozen tensor", "s.run_with_cache(torch.tensor([[1, 2]]))[1].apply_final_ln(torch.ones(1, 2, 60), "
     "frozen=torch.ones(2))", "InvalidTypeError", "frozen must be True or False"),
    ("finetune seed str", "finetune(p, ['text ' * 50], steps=1, seed='x')", "InvalidTypeError",
     "seed must be an integer"),
    ("finetune train str", "finetune(p, ['text ' * 50], steps=1, train='blocks.0')", "InvalidTypeError",
     "train must be a list"),
    ("lens result index", "logit_lens(p, ['Hi', 'Yo'])[5]", "PromptError", "prompt index 5 is out of range"),
    ("lens top1 stream", "logit_lens(p, 'Hi')[0].top1(stream=99)", "LayerIndexError", "stream 99 is out of range"),
    ("lens save None", "logit_lens(p, 'Hi').save(None)", "InvalidTypeError", "path must be a file path"),
    ("node parse None", "Node.parse(None)", "InvalidTypeError", "a node is a string"),
    ("circuit_of_nodes None", "circuit_of_nodes(None, 2, 2)", "InvalidTypeError", "nodes must be a list"),
    ("zero ablation index", "zero_ablation_hook(1.5)", "InvalidTypeError", "index must be an integer or a list"),
    ("logit_diff_metric None", "logit_diff_metric(None, torch.tensor([1]))", "InvalidTypeError",
     "answer must be a 1-d integer tensor"),
    ("largest float", "patch(p, A, B, answer=' Mary', wrong=' John', per_position=False).largest(2.5)",
     "InvalidTypeError", "n must be an integer"),
    ("load tokenizer str", "gpt2probe.load('toy-induction', device='cpu', tokenizer='gpt2')", "InvalidTypeError",
     "tokenizer must be a tokenizer object"),
    ("load allow_pickle str", "gpt2probe.load('toy-induction', device='cpu', allow_pickle='yes')", "InvalidTypeError",
     "allow_pickle must be True or False"),
]

RUNNER = """
import json, sys, torch, gpt2probe
from gpt2probe import GPT2ProbeError, head_scores, logit_lens
from gpt2probe.finetune import finetune
from gpt2probe.generation import generate
from gpt2probe.interventions import (Node, ablate, circuit_of_nodes, faithfulness, logit_diff_metric, patch, steer,
                                     zero_ablation_hook)
p, s = gpt2probe.load(sys.argv[1], device="cpu"), gpt2probe.load(sys.argv[2], device="cpu")
A, B = "When John and Mary went, John gave it to", "When John and Mary went, Mary gave it to"
out = {}
for label, code in json.loads(sys.stdin.read()):
    try:
        eval(code)
        out[label] = ["no error", False, ""]
    except Exception as error:
        out[label] = [type(error).__name__, isinstance(error, GPT2ProbeError), str(error)]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def typed_results(vocab_dir, small_dir):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("GPT2PROBE_CHECK_SHAPES", None)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(gpt2probe.__file__).parents[1]), env.get("PYTHONPATH", "")])
    cases = json.dumps([(label, code) for label, code, _, _ in TYPED_CASES])
    done = subprocess.run([sys.executable, "-c", RUNNER, str(vocab_dir), str(small_dir)], input=cases,
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("label, code, kind, match", TYPED_CASES, ids=[c[0] for c in TYPED_CASES])
def test_wrongly_typed_arguments(typed_results, label, code, kind, match):
    import re

    name, ours, message = typed_results[label]
    assert ours and name == kind, f"{code}: {name}: {message}"
    assert re.search(match, message), f"{code}: {message!r} does not match {match!r}"
