"""Every file gpt2probe reads back, damaged: truncated, not UTF-8, not JSON, edited (issues 19 and 24).

Each case must end in a :class:`~gpt2probe.errors.GPT2ProbeError` that names the file and
says what to do, never a ``json.JSONDecodeError``, ``KeyError`` or ``SafetensorError`` from
deep inside, and never a silently wrong load.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from gpt2probe import TunedLens
from gpt2probe.errors import DamagedFileError, GPT2ProbeError, LensMismatchError, MissingFileError, ShapeError
from gpt2probe.jsonfile import parse_object, read_object

FIX = "Re-run it."


# -- the one reader ---------------------------------------------------------------------
@pytest.mark.parametrize("content, words", [
    (b'{"a": 1', "not valid JSON \\(truncated\\?\\)"),
    (b"", "not valid JSON \\(truncated\\?\\)"),
    (b'{"a": "\xff\xfe"}', "not UTF-8"),
    (b"[1, 2]", "should be object, got \\[1, 2\\]"),
    (b'"text"', "should be object"),
    (b"[" * 100_000, "JSON"),  # too deep for the parser (RecursionError) or not JSON
])
def test_the_reader_turns_bad_files_into_our_error(tmp_path, content, words):
    path = tmp_path / "x.json"
    path.write_bytes(content)
    with pytest.raises(DamagedFileError, match=words) as info:
        read_object(path, fix=FIX)
    assert str(path) in str(info.value) and FIX in str(info.value)


def test_the_reader_checks_entries_and_their_types(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"n": 3, "flag": True, "x": 1.5, "names": ["a", 2], "inner": {"d": "7"},
                                "nan": float("nan")}))
    doc = read_object(path, fix=FIX)
    assert doc.get("n", int) == 3 and doc.get("x", float) == 1.5 and doc.get("n", float) == 3
    for key, kind, words in [("missing", int, "'missing' is missing"), ("flag", int, "should be integer, got true"),
                             ("names", list, "names\\[1\\] should be string"), ("nan", float, "should be number")]:
        with pytest.raises(DamagedFileError, match=words):
            doc.get(key, kind, items=str if key == "names" else None)
    with pytest.raises(DamagedFileError, match="'inner.d' should be integer"):
        doc.object("inner").get("d", int)
    with pytest.raises(MissingFileError, match="no such file"):
        read_object(tmp_path / "absent.json", fix=FIX)
    with pytest.raises(DamagedFileError, match="is a directory"):
        read_object(tmp_path, fix=FIX)
    with pytest.raises(DamagedFileError, match="metadata entry 'run' is not valid JSON"):
        parse_object("{", where="ckpt.safetensors", fix=FIX, path="metadata entry 'run'")


# -- tuned lens ----------------------------------------------------------------------------
@pytest.fixture
def lens_dir(vocab_probe, tmp_path) -> Path:
    lens = TunedLens.identity(vocab_probe)
    with torch.no_grad():
        lens.translators.bias.normal_(generator=torch.Generator().manual_seed(0))
    return lens.save(tmp_path / "lens")


def _edit_json(directory: Path, edit) -> None:
    path = directory / "tuned_lens.json"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


LENS_JSON_DAMAGE = {
    "truncated": (lambda d: (d / "tuned_lens.json").write_bytes((d / "tuned_lens.json").read_bytes()[:40]),
                  "not valid JSON \\(truncated\\?\\)"),
    "not UTF-8": (lambda d: (d / "tuned_lens.json").write_bytes(b'{"format": "\xff"}'), "not UTF-8"),
    "a list": (lambda d: (d / "tuned_lens.json").write_text("[1, 2, 3]"), "should be object"),
    "stream_names missing": (lambda d: _edit_json(d, lambda m: m.pop("stream_names")), "'stream_names' is missing"),
    "d_model a string": (lambda d: _edit_json(d, lambda m: m["model"].update(d_model="42")),
                         "'model.d_model' should be integer"),
    "model a list": (lambda d: _edit_json(d, lambda m: m.update(model=[1])), "'model' should be object"),
    "stream names reversed": (lambda d: _edit_json(d, lambda m: m.update(stream_names=m["stream_names"][::-1])),
                              "not the streams of a 2-layer model in forward order"),
    "stream name unknown": (lambda d: _edit_json(d, lambda m: m["stream_names"].__setitem__(0, "hook_embed")),
                            "not the streams"),
    "a stream dropped": (lambda d: _edit_json(d, lambda m: m["stream_names"].pop()), "not the streams"),
    "fingerprint a number": (lambda d: _edit_json(d, lambda m: m["model"].update(fingerprint=5)),
                             "'model.fingerprint' should be string"),
}


@pytest.mark.parametrize("damage", LENS_JSON_DAMAGE)
def test_a_damaged_tuned_lens_json_is_a_clear_error(vocab_probe, lens_dir, damage):
    edit, words = LENS_JSON_DAMAGE[damage]
    edit(lens_dir)
    with pytest.raises(DamagedFileError, match=words) as info:
        TunedLens.load(lens_dir, vocab_probe)
    assert "tuned_lens.json" in str(info.value) and "Train the lens again" in str(info.value)


def _edit_weights(directory: Path, edit) -> None:
    path = directory / "tuned_lens.safetensors"
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path), metadata={"format": "gpt2probe.TunedLens/1"})


LENS_WEIGHT_DAMAGE = {
    "truncated": (lambda d: (d / "tuned_lens.safetensors").write_bytes((d / "tuned_lens.safetensors").read_bytes()[:300]),
                  "truncated or damaged"),
    "NaN everywhere": (lambda d: _edit_weights(d, lambda t: [v.fill_(float("nan")) for v in t.values()]),
                       "NaN or infinite"),
    "one infinity": (lambda d: _edit_weights(d, lambda t: t["bias"].view(-1).__setitem__(3, float("inf"))),
                     "1 NaN or infinite"),
    "float16": (lambda d: _edit_weights(d, lambda t: t.update(weight=t["weight"].half())), "float16"),
    "bias missing": (lambda d: _edit_weights(d, lambda t: t.pop("bias")), "holds tensors"),
    "wrong shape": (lambda d: _edit_weights(d, lambda t: t.update(bias=t["bias"][:, :5].contiguous())), "holds tensors"),
}


@pytest.mark.parametrize("damage", LENS_WEIGHT_DAMAGE)
def test_damaged_tuned_lens_weights_are_a_clear_error(vocab_probe, lens_dir, damage):
    edit, words = LENS_WEIGHT_DAMAGE[damage]
    edit(lens_dir)
    with pytest.raises(DamagedFileError, match=words) as info:
        TunedLens.load(lens_dir, vocab_probe)
    assert "tuned_lens.safetensors" in str(info.value)


def test_an_intact_lens_still_loads_exactly(vocab_probe, lens_dir):
    loaded = TunedLens.load(lens_dir, vocab_probe)
    assert torch.equal(loaded.translators.bias, load_file(str(lens_dir / "tuned_lens.safetensors"))["bias"])


def test_translate_with_the_wrong_width_is_a_shape_error(vocab_probe):
    lens = TunedLens.identity(vocab_probe)
    names = [*lens.stream_names, "ln_final.hook_normalized"]
    stack = torch.zeros(len(names), 1, 3, vocab_probe.cfg.d_model + 1)
    with pytest.raises(ShapeError, match="d_model=42"):
        lens.translate(stack, names)


def test_a_lens_of_another_width_is_refused_before_its_tensors_are_read(vocab_probe, lens_dir):
    _edit_json(lens_dir, lambda m: m["model"].update(d_model=10**9))
    with pytest.raises(LensMismatchError, match="d_model=1000000000"):
        TunedLens.load(lens_dir, vocab_probe)


def test_every_damage_is_one_of_ours():
    assert issubclass(DamagedFileError, GPT2ProbeError) and issubclass(DamagedFileError, ValueError)


# -- tuned-lens training checkpoints -------------------------------------------------------
def _texts() -> list[str]:
    import pydoc_data.topics

    return [pydoc_data.topics.topics[name] for name in ("if", "while", "for", "pass", "del")]


TRAIN = dict(steps=2, checkpoint_every=1, batch_size=4, seq_len=16, max_chunk_bytes=2**20)


def _edit_checkpoint(path: Path, edit) -> None:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        metadata = dict(f.metadata())
    tensors = load_file(str(path))
    edit(metadata, tensors)
    save_file(tensors, str(path), metadata=metadata)


CHECKPOINT_DAMAGE = {
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[:200]), "truncated or damaged"),
    "run truncated": (lambda p: _edit_checkpoint(p, lambda m, t: m.update(run=m["run"][:30])),
                      "metadata entry 'run' is not valid JSON"),
    "run a list": (lambda p: _edit_checkpoint(p, lambda m, t: m.update(run="[1]")), "'run' should be object"),
    "step missing": (lambda p: _edit_checkpoint(p, lambda m, t: m.pop("step")), "'step' is not valid JSON"),
    "step a word": (lambda p: _edit_checkpoint(p, lambda m, t: m.update(step='"two"')), "'step' should be integer"),
    "step beyond the run": (lambda p: _edit_checkpoint(p, lambda m, t: m.update(step="99")), "99 steps were done"),
    "NaN weights": (lambda p: _edit_checkpoint(p, lambda m, t: t["weight"].fill_(float("nan"))), "NaN or infinite"),
    "bias wrong shape": (lambda p: _edit_checkpoint(p, lambda m, t: t.update(bias=torch.zeros(3))),
                         "'bias' .* does not belong"),
    "optimiser state wrong shape": (lambda p: _edit_checkpoint(p, lambda m, t: t.update({"optimizer.0.exp_avg": torch.zeros(2)})),
                                    "'optimizer.0.exp_avg' .* does not belong"),
    "stray tensor": (lambda p: _edit_checkpoint(p, lambda m, t: t.update(extra=torch.zeros(1))), "'extra' .* does not belong"),
}


@pytest.fixture(scope="module")
def trained_checkpoint(vocab_probe, tmp_path_factory) -> bytes:
    from gpt2probe.lens.tuned_training import CHECKPOINT_FILE

    directory = tmp_path_factory.mktemp("ckpt")
    TunedLens.train(vocab_probe, _texts(), checkpoint_dir=directory, **TRAIN)
    return (directory / CHECKPOINT_FILE).read_bytes()


@pytest.mark.parametrize("damage", CHECKPOINT_DAMAGE)
def test_a_damaged_training_checkpoint_is_a_clear_error(vocab_probe, trained_checkpoint, tmp_path, damage):
    from gpt2probe.lens.tuned_training import CHECKPOINT_FILE

    (tmp_path / CHECKPOINT_FILE).write_bytes(trained_checkpoint)
    edit, words = CHECKPOINT_DAMAGE[damage]
    edit(tmp_path / CHECKPOINT_FILE)
    with pytest.raises(DamagedFileError, match=words) as info:
        TunedLens.train(vocab_probe, _texts(), checkpoint_dir=tmp_path, **TRAIN)
    assert CHECKPOINT_FILE in str(info.value) and "to train from the start" in str(info.value)


# -- harvests --------------------------------------------------------------------------------
HARVEST_HOOKS = ["blocks.0.mlp.hook_post", "blocks.0.attn.hook_pattern"]


@pytest.fixture(scope="module")
def harvest_dir(tiny_english, tmp_path_factory) -> Path:
    from harvest_helpers import topic_texts

    from gpt2probe.harvest import Corpus, harvest

    out = tmp_path_factory.mktemp("harvest") / "h"
    harvest(tiny_english, Corpus(texts=topic_texts(3, 600)), hooks=HARVEST_HOOKS, out=out, seq_len=32, top_k=3, window=2,
            progress=False)
    return out


@pytest.fixture
def harvest_copy(harvest_dir, tmp_path) -> Path:
    import shutil

    return Path(shutil.copytree(harvest_dir, tmp_path / "h"))


def _edit_manifest(directory: Path, edit) -> None:
    path = directory / "harvest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


def _edit_summaries(directory: Path, edit) -> None:
    path = directory / "summaries.safetensors"
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path))


def _mlp(manifest: dict) -> dict:
    return next(h for h in manifest["hooks"] if h["name"] == "blocks.0.mlp.hook_post")


HARVEST_DAMAGE = {
    "manifest truncated": (lambda d: (d / "harvest.json").write_bytes((d / "harvest.json").read_bytes()[:100]),
                           "not valid JSON \\(truncated\\?\\)"),
    "manifest a list": (lambda d: (d / "harvest.json").write_text("[]"), "should be object"),
    "manifest not UTF-8": (lambda d: (d / "harvest.json").write_bytes(b'{"format": "\xff"}'), "not UTF-8"),
    "hooks removed": (lambda d: _edit_manifest(d, lambda m: m.pop("hooks")), "'hooks' is missing"),
    "options removed": (lambda d: _edit_manifest(d, lambda m: m.pop("options")), "'options' is missing"),
    "totals removed": (lambda d: _edit_manifest(d, lambda m: m.pop("totals")), "'totals' is missing"),
    "model removed": (lambda d: _edit_manifest(d, lambda m: m.pop("model")), "'model' is missing"),
    "top_k removed": (lambda d: _edit_manifest(d, lambda m: m["options"].pop("top_k")), "'options.top_k' is missing"),
    "n_units a string": (lambda d: _edit_manifest(d, lambda m: _mlp(m).update(n_units="64")),
                         "'hooks\\[\\d\\].n_units' should be integer"),
    "n_units edited": (lambda d: _edit_manifest(d, lambda m: _mlp(m).update(n_units=10**9)),
                       "blocks.0.mlp.hook_post::lo is torch.float32 \\(\\d+,\\); expected torch.float32 \\(1000000000,\\)"),
    "unknown kind": (lambda d: _edit_manifest(d, lambda m: _mlp(m).update(kind="banana")), "valid: neuron"),
    "top_k edited": (lambda d: _edit_manifest(d, lambda m: m["options"].update(top_k=4)), "top_values"),
    "summaries truncated": (lambda d: (d / "summaries.safetensors").write_bytes(
        (d / "summaries.safetensors").read_bytes()[:500]), "truncated or damaged"),
    "summaries missing": (lambda d: (d / "summaries.safetensors").unlink(), "is missing"),
    "a field dropped": (lambda d: _edit_summaries(d, lambda t: t.pop("blocks.0.mlp.hook_post::hist")),
                        "lacks the tensors \\['hist'\\]"),
    "a hook dropped": (lambda d: _edit_summaries(d, lambda t: [t.pop(k) for k in list(t) if "hook_pattern" in k]),
                       "hook_pattern' lacks"),
    "a stray tensor": (lambda d: _edit_summaries(d, lambda t: t.update(extra=torch.zeros(1))), "names no hook"),
    "a wrong dtype": (lambda d: _edit_summaries(d, lambda t: t.update({"blocks.0.mlp.hook_post::count":
                                                                     torch.zeros((), dtype=torch.float32)})), "count"),
}


@pytest.mark.parametrize("damage", HARVEST_DAMAGE)
def test_a_damaged_harvest_is_a_clear_error(harvest_copy, damage):
    from gpt2probe.harvest import Harvest

    edit, words = HARVEST_DAMAGE[damage]
    edit(harvest_copy)
    with pytest.raises(DamagedFileError, match=words) as info:
        Harvest.load(harvest_copy)
    assert str(harvest_copy) in str(info.value) and "harvest again" in str(info.value)


def test_an_intact_harvest_loads_and_the_report_command_refuses_a_damaged_one(harvest_copy, capsys):
    from gpt2probe.cli import main
    from gpt2probe.harvest import Harvest

    assert sorted(Harvest.load(harvest_copy).hooks) == sorted(HARVEST_HOOKS)
    (harvest_copy / "harvest.json").write_text("[]")
    assert main(["harvest-report", str(harvest_copy), "--no-logits"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "harvest.json" in err[0] and "should be object" in err[0]


def test_the_report_refuses_another_models_vocabulary_and_sizes(harvest_copy, tiny_english, capsys):
    from gpt2probe.cli import main
    from gpt2probe.errors import ModelMismatchError
    from gpt2probe.harvest import Harvest
    from gpt2probe.report.harvest_dashboard import write_dashboard

    assert main(["harvest-report", str(harvest_copy), "--model", "toy-induction", "--out",
                 str(harvest_copy / "d.html")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "error: " in err[-1] and "other sizes" in err[-1] and "toy-induction" in err[-1]
    _edit_summaries(harvest_copy, lambda t: t["blocks.0.mlp.hook_post::top_ctx_tokens"].view(-1).__setitem__(0, 10**6))
    with pytest.raises(ModelMismatchError, match="token id 1000000, outside the vocabulary of 50257"):
        write_dashboard(Harvest.load(harvest_copy), harvest_copy / "d.html")
    assert not (harvest_copy / "d.html").exists()


def test_a_damaged_run_file_or_rank_checkpoint_is_a_clear_error(tiny_english, tmp_path):
    from harvest_helpers import topic_texts

    from gpt2probe.harvest import Corpus, harvest
    from gpt2probe.harvest.runner import Options, run_harvest

    texts = topic_texts(3, 600)
    options = Options(top_k=3, window=2, seq_len=32, batch_size=2)
    out = tmp_path / "cut"
    assert run_harvest(tiny_english, Corpus(texts=texts), ["blocks.0.mlp.hook_post"], out, options=options,
                       checkpoint_windows=1, progress=False, stop_after_windows=2) is None
    run_file = out / "checkpoint" / "run.json"
    ckpt = next((out / "checkpoint").glob("rank-*.safetensors"))
    good_run, good_ckpt = run_file.read_bytes(), ckpt.read_bytes()

    def resume():
        return harvest(tiny_english, Corpus(texts=texts), hooks=["blocks.0.mlp.hook_post"], out=out, seq_len=32, top_k=3,
                       window=2, batch_size=2, progress=False, resume=True)

    run_file.write_bytes(good_run[:50])
    with pytest.raises(DamagedFileError, match="run.json' is damaged: it is not valid JSON"):
        resume()
    run_file.write_bytes(good_run)
    ckpt.write_bytes(good_ckpt[:300])
    with pytest.raises(DamagedFileError, match="truncated or damaged"):
        resume()
    from safetensors import safe_open

    ckpt.write_bytes(good_ckpt)
    with safe_open(str(ckpt), framework="pt") as f:
        metadata = dict(f.metadata())
    # Copies: safetensors 0.4's load_file maps the file, and save_file below rewrites it in place.
    tensors = {name: t.clone() for name, t in load_file(str(ckpt)).items()}
    save_file(tensors, str(ckpt), metadata={**metadata, "progress": '{"block": 0}'})
    with pytest.raises(DamagedFileError, match="'progress.window' is missing"):
        resume()
    save_file(tensors, str(ckpt), metadata=metadata)
    assert resume().hooks == ["blocks.0.mlp.hook_post"]  # intact again: it resumes


# -- activation caches ----------------------------------------------------------------------
def _rewrite_cache(path: Path, edit) -> None:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        metadata, tensors = dict(f.metadata()), {key: f.get_tensor(key) for key in f.keys()}
    edit(metadata, tensors)
    save_file(tensors, str(path), metadata=metadata)


@pytest.fixture
def vocab_cache(vocab_probe, tmp_path) -> Path:
    from gpt2probe import names as N

    _, cache = vocab_probe.run_with_cache(["The cat sat", "Hello there friend"],
                                          names=[N.resid_pre(0), N.resid_post(1), N.pattern(0)])
    return _saved(cache, tmp_path / "cache.safetensors")


def _saved(cache, path: Path) -> Path:
    cache.save(path)
    return path


@pytest.mark.parametrize("n_layers", [10**6, 10**8])
def test_a_huge_n_layers_is_refused_at_once(vocab_cache, n_layers):
    import time

    from gpt2probe import ActivationCache
    from gpt2probe.errors import FileFormatError

    _rewrite_cache(vocab_cache, lambda m, t: m.update(n_layers=str(n_layers)))
    began = time.perf_counter()
    with pytest.raises(FileFormatError, match=f"n_layers is {n_layers}"):
        ActivationCache.load(vocab_cache)
    assert time.perf_counter() - began < 5  # minutes and gigabytes before


def test_names_are_checked_from_the_tensors_not_from_a_list_of_every_hook(vocab_cache, monkeypatch):
    from gpt2probe import ActivationCache
    from gpt2probe import names as N

    def refuse(n_layers):
        raise AssertionError("all_names was built from the file's n_layers")

    monkeypatch.setattr(N, "all_names", refuse)
    _rewrite_cache(vocab_cache, lambda m, t: m.update(n_layers="4000"))
    assert ActivationCache.load(vocab_cache).n_layers == 4000  # a partial capture: legal, and instant


def test_edited_prompts_or_ids_are_refused(vocab_cache, vocab_probe):
    from gpt2probe import ActivationCache
    from gpt2probe.errors import FileFormatError

    good = vocab_cache.read_bytes()
    _rewrite_cache(vocab_cache, lambda m, t: m.update(prompts=json.dumps(["The dog sat", "Hello there friend"])))
    with pytest.raises(FileFormatError, match="prompts or token ids were changed after saving"):
        ActivationCache.load(vocab_cache)
    _rewrite_cache(vocab_cache, lambda m, t: m.pop("tokens_sha256"))  # a file without the checksum: the probe checks
    with pytest.raises(FileFormatError, match="prompt 0 \\('The dog sat'\\) does not tokenize to its saved token ids"):
        ActivationCache.load(vocab_cache, probe=vocab_probe)
    vocab_cache.write_bytes(good)
    _rewrite_cache(vocab_cache, lambda m, t: t["__tokens__.ids"].add_(10**7))
    with pytest.raises(FileFormatError, match="outside the model's vocabulary of 50257"):
        ActivationCache.load(vocab_cache)
    vocab_cache.write_bytes(good)
    loaded = ActivationCache.load(vocab_cache, probe=vocab_probe)
    assert loaded.tokens.prompts == ("The cat sat", "Hello there friend")


def test_a_generation_cache_whose_ids_extend_the_prompt_loads(vocab_probe, tmp_path):
    from gpt2probe import ActivationCache

    gen = vocab_probe.generate("The cat", 3, greedy=True, capture="blocks.0.hook_resid_post")
    loaded = ActivationCache.load(_saved(gen.captures, tmp_path / "g.st"), probe=vocab_probe)
    assert loaded.tokens.ids.shape[1] == gen.captures.tokens.ids.shape[1]


def test_a_cache_of_another_model_is_refused_at_load(vocab_cache, small_probe):
    from gpt2probe import ActivationCache
    from gpt2probe.errors import ModelMismatchError

    with pytest.raises(ModelMismatchError, match="n_layers 2 vs 3.*d_model \\[42\\] vs 60.*d_vocab 50257 vs 101"):
        ActivationCache.load(vocab_cache, probe=small_probe)
    with pytest.raises(ModelMismatchError, match="the weights given"):
        ActivationCache.load(vocab_cache, weights=small_probe.weights)


def test_a_directory_and_a_bad_device_are_named(vocab_cache, tmp_path):
    from gpt2probe import ActivationCache
    from gpt2probe.errors import FileFormatError, InvalidArgumentError

    with pytest.raises(FileFormatError, match="is a directory"):
        ActivationCache.load(tmp_path)
    vocab_cache.write_bytes(vocab_cache.read_bytes()[:100])  # damaged too: the device is named first
    with pytest.raises(InvalidArgumentError, match="device 'banana' is not a device"):
        ActivationCache.load(vocab_cache, device="banana")
    if not torch.cuda.is_available():
        with pytest.raises(InvalidArgumentError, match="CUDA is not available"):
            ActivationCache.load(vocab_cache, device="cuda")
