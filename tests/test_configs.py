"""One source per setting: the harvest's keyword arguments, flags and saved options all come from HarvestConfig.

Issue 23 counted the harvest's settings three times (``Options``, 18 keyword arguments, 22
flags). A setting is now a field of :class:`~gpt2probe.configs.harvest.HarvestConfig`; these
tests hold the keyword arguments, the ``gpt2probe harvest`` flags and the manifest's
``options`` to that one list, and check that options saved before the change still load.
"""

from __future__ import annotations

import dataclasses

import pytest

from gpt2probe.configs.base import add_arguments, build, cli_fields, flag_of, from_args, from_dict, to_dict
from gpt2probe.configs.harvest import HarvestConfig
from gpt2probe.errors import GPT2ProbeError, HarvestConfigError
from gpt2probe.experiments import options
from gpt2probe.experiments.common import Parser
from gpt2probe.experiments.harvest import build_parser

# The "options" entry of a harvest.json written before HarvestConfig existed (runner.Options, asdict).
OLD_MANIFEST_OPTIONS = {"batch_size": 4, "block_chars": 65536, "calibration_windows": 8, "n_bins": 64, "save_raw": [],
                        "seed": None, "seq_len": 32, "threshold": 0.0, "top_k": 6, "window": 3}


def test_saved_options_keep_their_keys_and_old_ones_load():
    config = from_dict(HarvestConfig, OLD_MANIFEST_OPTIONS)
    assert to_dict(config) == OLD_MANIFEST_OPTIONS
    assert set(to_dict(HarvestConfig())) == set(OLD_MANIFEST_OPTIONS)


def test_every_flag_of_the_command_is_a_field_and_back():
    parser = build_parser()
    flags = {flag for action in parser._actions for flag in action.option_strings}
    for field in cli_fields(HarvestConfig):
        assert flag_of(field) in flags, field.name
    args = parser.parse_args(["--model", "m", "--corpus", "c", "--hooks", "h", "--out", "o", "--examples", "3",
                              "--window", "0", "--seq-len", "16", "--batch-size", "2", "--threshold", "0.5",
                              "--bins", "7", "--block-chars", "99", "--seed", "4", "--save-raw", "h"])
    assert from_args(HarvestConfig, args) == HarvestConfig(top_k=3, window=0, seq_len=16, batch_size=2, threshold=0.5,
                                                           n_bins=7, block_chars=99, seed=4, save_raw=("h",))


def test_flag_defaults_are_the_fields_defaults():
    args = build_parser().parse_args(["--model", "m", "--corpus", "c", "--hooks", "h", "--out", "o"])
    assert from_args(HarvestConfig, args) == HarvestConfig()


def test_a_new_field_becomes_a_flag_with_its_help():
    @dataclasses.dataclass(frozen=True)
    class Toy:
        depth: int = __import__("gpt2probe.configs.base", fromlist=["setting"]).setting(3, "how deep")

    parser = Parser(prog="toy")
    add_arguments(Toy, parser, shared=options.SHARED, add_shared=options.add)
    assert parser.parse_args(["--depth", "5"]).depth == 5
    assert "how deep (default: 3)" in parser.format_help()
    with pytest.raises(GPT2ProbeError, match="--depth"):
        parser.parse_args(["--depth", "0"])


def test_keyword_arguments_are_the_fields():
    with pytest.raises(GPT2ProbeError, match="'top_kk'.*valid: .*top_k"):
        build(HarvestConfig, {"top_kk": 3})
    assert build(HarvestConfig, {"top_k": 3, "save_raw": ["a"]}) == HarvestConfig(top_k=3, save_raw=("a",))


def test_resolved_fills_seq_len_and_checks():
    assert HarvestConfig().resolved(64).seq_len == 64 and HarvestConfig().resolved(1024).seq_len == 128
    assert HarvestConfig(threshold=1).resolved(64).threshold == 1.0
    assert isinstance(HarvestConfig(threshold=1).resolved(64).threshold, float)
    with pytest.raises(HarvestConfigError, match="longer than the model's context"):
        HarvestConfig(seq_len=65).resolved(64)
    with pytest.raises(HarvestConfigError, match="window must be 0 or more"):
        HarvestConfig(window=-1).resolved(64)
    with pytest.raises(HarvestConfigError, match="top_k must be at least 1"):
        HarvestConfig(top_k=0).resolved(64)


def test_harvest_refuses_config_and_keywords_together(tmp_path):
    import gpt2probe

    with pytest.raises(HarvestConfigError, match="not both"):
        gpt2probe.harvest(None, ["x"], hooks="h", out=tmp_path, config=HarvestConfig(), top_k=3)


def test_harvest_takes_its_old_checkpoint_every_keyword_for_one_release(tmp_path, monkeypatch, own_deprecations):
    """Issue 23: a harvest's checkpoint cadence counts windows, so it is checkpoint_windows (checkpoint_every: steps)."""
    import gpt2probe
    import gpt2probe.harvest as harvest_package

    calls = []
    monkeypatch.setattr(harvest_package, "run_harvest", lambda *args, **kwargs: calls.append(kwargs))
    gpt2probe.harvest(None, ["x"], hooks="h", out=tmp_path, checkpoint_windows=3)
    with pytest.warns(DeprecationWarning, match="checkpoint_every is now checkpoint_windows") as caught:
        gpt2probe.harvest(None, ["x"], hooks="h", out=tmp_path, checkpoint_every=3)
    assert [w.filename for w in caught] == [__file__]
    assert calls[0]["checkpoint_windows"] == calls[1]["checkpoint_windows"] == 3 and calls[0] == calls[1]
    with pytest.raises(HarvestConfigError, match="not both"):
        gpt2probe.harvest(None, ["x"], hooks="h", out=tmp_path, checkpoint_every=3, checkpoint_windows=3)


# ---- tuned-lens training: TunedLensTrainConfig ----

def test_tuned_lens_flags_are_the_config_fields_and_defaults():
    from gpt2probe.configs.tuned_lens import TunedLensTrainConfig
    from gpt2probe.experiments.tuned_lens import build_parser as tuned_lens_parser

    parser = tuned_lens_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    flags = {flag for action in train._actions for flag in action.option_strings}
    for field in cli_fields(TunedLensTrainConfig):
        assert flag_of(field) in flags, field.name
    base = ["train", "--model", "m", "--corpus", "c", "--out", "o", "--steps", "5"]
    assert from_args(TunedLensTrainConfig, parser.parse_args(base)) == TunedLensTrainConfig(steps=5)
    args = parser.parse_args(base + ["--batch-size", "2", "--seq-len", "16", "--optimizer", "adam", "--lr", "0.5",
                                     "--seed", "3", "--include-mid"])
    assert from_args(TunedLensTrainConfig, args) == TunedLensTrainConfig(
        steps=5, batch_size=2, seq_len=16, optimizer="adam", lr=0.5, seed=3, include_mid=True)


def test_tuned_lens_config_fields_are_train_tuned_lens_keywords_with_its_defaults():
    import inspect

    from gpt2probe.configs.tuned_lens import TunedLensTrainConfig
    from gpt2probe.lens.tuned_training import OPTIMIZERS, train_tuned_lens

    parameters = inspect.signature(train_tuned_lens).parameters
    for field in dataclasses.fields(TunedLensTrainConfig):
        assert field.name in parameters, field.name
        if field.name != "steps":  # required in both
            assert parameters[field.name].default == field.default, field.name
    assert parameters["steps"].default is inspect.Parameter.empty
    choices = {f.name: f for f in dataclasses.fields(TunedLensTrainConfig)}["optimizer"].metadata["argparse"]["choices"]
    assert set(choices) == set(OPTIMIZERS)


def test_tuned_lens_saved_training_record_is_the_config(vocab_probe):
    import json
    import pydoc_data.topics
    from importlib.resources import files

    from gpt2probe import TunedLens
    from gpt2probe.configs.tuned_lens import TunedLensTrainConfig

    texts = [pydoc_data.topics.topics[name] for name in ("if", "while", "for")]
    config = TunedLensTrainConfig(steps=1, batch_size=2, seq_len=16, optimizer="adam", lr=0.01, seed=2)
    lens = TunedLens.train(vocab_probe, texts, **to_dict(config))
    recorded = {key: value for key, value in to_dict(config).items() if key != "warmup"}
    assert {key: lens.training[key] for key in recorded} == recorded
    assert lens.training["warmup_steps"] == 0  # adam's rule, min(1000, steps // 5)
    # a lens saved before the config existed records the same names (clip_grad_norm came later)
    shipped = json.loads((files("gpt2probe") / "assets/tiny-english/tuned-lens/tuned_lens.json").read_text())
    assert set(recorded) - {"clip_grad_norm"} <= set(shipped["training"])


# ---- SAE and transcoder training: SAETrainConfig ----

# The options a checkpoint's fingerprint recorded before SAETrainConfig (TrainOptions in sae/training.py):
# a run started then must still resume, so the keys may only change by a rename that reads old files
# (issue 23: batch_size, tokens per step, is SAELens's train_batch_size_tokens).
OLD_SAE_FINGERPRINT_KEYS = {"steps", "batch_size", "lr", "warmup_steps", "decay_steps", "min_steps", "l1_coefficient",
                            "l1_warmup_steps", "l0_coefficient", "jumprelu_bandwidth", "jumprelu_init_threshold",
                            "aux_k", "aux_coefficient", "dead_after_tokens", "threshold_decay", "b_dec_init",
                            "init_sample", "seed", "buffer_tokens"}
SAE_TRAIN = ["train", "--model", "m", "--corpus", "c", "--out", "o", "--d-sae", "8", "--hook", "h"]


def sae_train_parser():
    from gpt2probe.experiments.sae import build_parser as sae_parser

    parser = sae_parser()
    return parser, parser._subparsers._group_actions[0].choices["train"]


def test_sae_train_flags_are_the_config_fields_and_defaults():
    from gpt2probe.configs.sae import SAETrainConfig

    parser, train = sae_train_parser()
    flags = {flag for action in train._actions for flag in action.option_strings}
    for field in cli_fields(SAETrainConfig):
        assert flag_of(field) in flags, field.name
    assert {f.name for f in dataclasses.fields(SAETrainConfig)} - {f.name for f in cli_fields(SAETrainConfig)} == {
        "checkpoint_dir", "checkpoint_every", "resume", "progress"}  # the command's own --checkpoint-every...
    assert from_args(SAETrainConfig, parser.parse_args(SAE_TRAIN)) == SAETrainConfig()
    args = parser.parse_args(SAE_TRAIN + ["--steps", "5", "--train-batch-size-tokens", "64", "--lr", "0.5", "--seed", "3",
                                          "--warmup", "0", "--aux-k", "4", "--b-dec-init", "mean",
                                          "--threshold-decay", "0.9", "--l1-coefficient", "2"])
    assert from_args(SAETrainConfig, args) == SAETrainConfig(steps=5, train_batch_size_tokens=64, lr=0.5, seed=3, warmup_steps=0,
                                                             aux_k=4, b_dec_init="mean", threshold_decay=0.9,
                                                             l1_coefficient=2.0)


def test_sae_train_config_is_torch_free_and_keeps_the_checkpoint_keys():
    import os
    import subprocess
    import sys
    from pathlib import Path

    from gpt2probe.configs.sae import ARCHITECTURES, SAETrainConfig
    from gpt2probe.sae import config as sae_config
    from gpt2probe.sae import training

    renamed = dict(SAETrainConfig.RENAMED_FIELDS)
    assert renamed == {"batch_size": "train_batch_size_tokens"}
    assert set(SAETrainConfig().fingerprint()) == {renamed.get(key, key) for key in OLD_SAE_FINGERPRINT_KEYS}
    assert training.TrainOptions is SAETrainConfig  # the old name still imports
    assert sae_config.ARCHITECTURES is ARCHITECTURES
    code = "import sys, gpt2probe.configs.sae; print('torch' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert done.stdout.strip() == "False"


def test_sae_train_keywords_are_the_config_fields():
    import torch

    from gpt2probe import SAE

    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    with pytest.raises(GPT2ProbeError, match="'stpes'.*valid: .*steps"):
        SAE.fit(x, d_sae=8, k=2, hook_name="blocks.0.hook_resid_post", stpes=3, progress=False)


def test_sae_train_keyword_types_are_the_config_fields():
    """What type checkers see for SAE.train's and SAE.fit's ``**options``: every field, with its type."""
    from gpt2probe.configs.sae import FitKeywords, SAETrainConfig, TrainKeywords

    def spelled(hint: object) -> object:  # a TypedDict keeps a postponed annotation as a ForwardRef
        return getattr(hint, "__forward_arg__", hint)

    fields = {f.name: f.type for f in dataclasses.fields(SAETrainConfig)}
    assert {name: spelled(hint) for name, hint in FitKeywords.__annotations__.items()} == fields
    assert set(TrainKeywords.__annotations__) == set(fields) - {"seed"}  # SAE.train takes seed as its own keyword


def test_a_bad_sae_training_value_is_one_error_line_before_the_model_loads(capsys):
    from gpt2probe.cli import main

    assert main(["sae", *SAE_TRAIN[:-2], "--hook", "blocks.0.hook_resid_post", "--k", "2",
                 "--threshold-decay", "1.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "threshold_decay" in err[0], err


def test_a_trained_coder_saves_its_settings_and_they_read_back(tmp_path):
    import json

    import torch

    from gpt2probe import SAE
    from gpt2probe.configs.sae import TRAINING_METADATA, SAETrainConfig
    from gpt2probe.sae.training import resolve

    x = torch.randn(300, 5, generator=torch.Generator().manual_seed(1))
    sae = SAE.fit(x, d_sae=7, k=2, hook_name="blocks.0.hook_resid_post", steps=3, train_batch_size_tokens=64, aux_k=3,
                  progress=False)
    expected = resolve(SAETrainConfig(steps=3, train_batch_size_tokens=64, aux_k=3), sae.cfg, 300).fingerprint()
    assert expected["lr"] == pytest.approx(2e-4 * (16384 / 7) ** 0.5) and expected["decay_steps"] == 0
    assert sae.cfg.metadata[TRAINING_METADATA] == expected
    sae.save(tmp_path / "a")
    saved = json.loads((tmp_path / "a" / "cfg.json").read_text())["metadata"][TRAINING_METADATA]
    assert saved == expected
    record = SAE.load(tmp_path / "a").cfg.metadata[TRAINING_METADATA]
    assert from_dict(SAETrainConfig, record).fingerprint() == expected
    SAE.load(tmp_path / "a").save(tmp_path / "b")  # saving a loaded coder keeps the record
    assert json.loads((tmp_path / "b" / "cfg.json").read_text())["metadata"][TRAINING_METADATA] == expected



def test_a_coder_saved_before_batch_size_was_renamed_reads_its_settings_back(tmp_path):
    """A cfg.json written before issue 23's rename records ``batch_size``: it reads as train_batch_size_tokens."""
    import json

    import torch

    from gpt2probe import SAE
    from gpt2probe.configs.sae import TRAINING_METADATA, SAETrainConfig

    x = torch.randn(300, 5, generator=torch.Generator().manual_seed(1))
    SAE.fit(x, d_sae=7, k=2, hook_name="blocks.0.hook_resid_post", steps=3, train_batch_size_tokens=64,
            progress=False).save(tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    record = cfg["metadata"][TRAINING_METADATA]
    new = from_dict(SAETrainConfig, record)
    record["batch_size"] = record.pop("train_batch_size_tokens")  # as the older version wrote it
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    old = from_dict(SAETrainConfig, SAE.load(tmp_path).cfg.metadata[TRAINING_METADATA])  # no warning: a file, not a call
    assert old == new and old.train_batch_size_tokens == 64
    with pytest.raises(GPT2ProbeError, match="not both"):
        from_dict(SAETrainConfig, {**record, "train_batch_size_tokens": 64})

    from pathlib import Path

    shipped = sorted((Path(__file__).resolve().parents[1] / "gpt2probe" / "assets" / "tiny-english").glob("*/*/cfg.json"))
    assert len(shipped) == 8  # tiny-english's SAEs and transcoders (retrained after the rename: either name reads)
    for path in shipped:
        record = json.loads(path.read_text())["metadata"][TRAINING_METADATA]
        recorded = record["train_batch_size_tokens"] if "train_batch_size_tokens" in record else record["batch_size"]
        assert from_dict(SAETrainConfig, record).train_batch_size_tokens == recorded > 0, path
