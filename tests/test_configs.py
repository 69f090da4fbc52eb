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
