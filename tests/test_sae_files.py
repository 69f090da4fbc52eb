"""SAE files without SAELens: round trips, damaged files named, Dunefsky et al.'s transcoders, releases offline."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import gpt2probe
from gpt2probe import SAE, SAEConfig, Transcoder
from gpt2probe.sae.saelens_format import CFG_FILE, WEIGHTS_FILE

from models import assert_close

D_IN, D_SAE = 6, 10


def randomized(coder, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in coder.named_parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * (0.3 if name.startswith(("b_", "thr")) else 1.0))
    return coder


KINDS = {
    "standard": (SAE, {"hook_name": "blocks.0.hook_resid_post"}),
    "topk": (SAE, {"hook_name": "blocks.0.hook_resid_post", "architecture": "topk", "k": 3}),
    "jumprelu": (SAE, {"hook_name": "blocks.0.hook_resid_post", "architecture": "jumprelu"}),
    "batchtopk": (SAE, {"hook_name": "blocks.0.hook_resid_post", "architecture": "batchtopk", "k": 2.5}),
    "centered": (SAE, {"hook_name": "blocks.0.hook_resid_pre", "center_input": True, "model_name": "gpt2"}),
    "skip_transcoder": (Transcoder, {"hook_name": "blocks.2.ln2.hook_normalized", "hook_name_out": "blocks.2.hook_mlp_out",
                                     "skip": True}),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_save_then_load_gives_the_same_module(tmp_path, kind):
    cls, settings = KINDS[kind]
    coder = randomized(cls(SAEConfig(d_in=D_IN, d_sae=D_SAE, **settings)))
    coder.save(tmp_path / kind)
    assert sorted(p.name for p in (tmp_path / kind).iterdir()) == [CFG_FILE, WEIGHTS_FILE]
    back = cls.load(tmp_path / kind)
    assert back.cfg == coder.cfg
    for (name, a), (name_b, b) in zip(coder.named_parameters(), back.named_parameters()):
        assert name == name_b and torch.equal(a, b), name
    x = torch.randn(4, D_IN, generator=torch.Generator().manual_seed(1))
    assert torch.equal(back(x), coder(x))


def test_a_top_k_transcoder_is_refused_with_why_and_what_saves(tmp_path):
    tc = Transcoder(SAEConfig.for_transcoder(0, d_model=D_IN, d_sae=D_SAE, architecture="topk", k=2))
    with pytest.raises(gpt2probe.FileFormatError) as info:
        tc.save(tmp_path / "tc")
    message = str(info.value)
    assert "SAELens's format has no top-k transcoder" in message and "'batchtopk'" in message
    assert "JumpReLU transcoder with its thresholds" in message and "not JSON" not in message
    assert not (tmp_path / "tc").exists()  # refused before a byte is written


def test_metadata_that_json_cannot_hold_is_named(tmp_path):
    sae = SAE(SAEConfig(d_in=D_IN, d_sae=D_SAE, hook_name="blocks.0.hook_resid_post", metadata={"when": object()}))
    with pytest.raises(gpt2probe.FileFormatError, match="metadata is not JSON"):
        sae.save(tmp_path / "s")
    assert not (tmp_path / "s").exists()


def test_load_converts_device_and_dtype_only_when_asked(tmp_path):
    SAE(SAEConfig(d_in=D_IN, d_sae=D_SAE, hook_name="blocks.0.hook_resid_post")).save(tmp_path / "s")
    assert SAE.load(tmp_path / "s").dtype == torch.float32
    assert SAE.load(tmp_path / "s", dtype="float64").W_dec.dtype == torch.float64
    with pytest.raises(gpt2probe.InvalidArgumentError, match="dtype"):
        SAE.load(tmp_path / "s", dtype="double-ish")


def test_an_sae_folder_is_not_a_transcoder(tmp_path):
    SAE(SAEConfig(d_in=D_IN, d_sae=D_SAE, hook_name="blocks.0.hook_resid_post")).save(tmp_path / "s")
    with pytest.raises(gpt2probe.InvalidArgumentError, match="SAE"):
        Transcoder.load(tmp_path / "s")


def _folder(tmp_path: Path, cfg: dict, tensors: dict | None = None) -> Path:
    folder = tmp_path / "sae"
    folder.mkdir(exist_ok=True)
    (folder / CFG_FILE).write_text(json.dumps(cfg), encoding="utf-8")
    tensors = tensors if tensors is not None else {"W_enc": torch.zeros(D_IN, D_SAE), "b_enc": torch.zeros(D_SAE),
                                                   "W_dec": torch.zeros(D_SAE, D_IN), "b_dec": torch.zeros(D_IN)}
    save_file(tensors, folder / WEIGHTS_FILE)
    return folder


GOOD = {"d_in": D_IN, "d_sae": D_SAE, "dtype": "float32", "apply_b_dec_to_input": True, "normalize_activations": "none",
        "architecture": "standard", "metadata": {"sae_lens_version": "6.54.12", "hook_name": "blocks.1.hook_resid_pre"}}


@pytest.mark.parametrize(
    "change, match",
    [
        ({"d_sae": None}, "'d_sae'"),
        ({"d_in": "6"}, "'d_in' must be int"),
        ({"apply_b_dec_to_input": 1}, "'apply_b_dec_to_input' must be bool"),
        ({"architecture": "gated"}, "'gated' is not supported.*standard, topk"),
        ({"normalize_activations": "layer_norm"}, "layer_norm"),
        ({"reshape_activations": "hook_z"}, "hook_z"),
        ({"metadata": {"sae_lens_version": "6.54.12"}}, "names no hook"),
        ({"dtype": "int8"}, "dtype 'int8'"),
        ({"architecture": "topk"}, "integer 'k'"),
    ],
)
def test_bad_cfg_json_is_named_with_what_is_wrong(tmp_path, change, match):
    cfg = {**GOOD, **change}
    cfg = {k: v for k, v in cfg.items() if v is not None}
    folder = _folder(tmp_path, cfg)
    with pytest.raises(gpt2probe.FileFormatError, match=match) as info:
        SAE.load(folder)
    assert str(folder / CFG_FILE) in str(info.value)


def test_damaged_files_are_named(tmp_path):
    folder = _folder(tmp_path, GOOD)
    (folder / CFG_FILE).write_text('{"d_in": 6,', encoding="utf-8")
    with pytest.raises(gpt2probe.FileFormatError, match="not valid JSON") as info:
        SAE.load(folder)
    assert str(folder / CFG_FILE) in str(info.value)
    (folder / CFG_FILE).write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(gpt2probe.FileFormatError, match="JSON object"):
        SAE.load(folder)
    (folder / CFG_FILE).write_text(json.dumps(GOOD), encoding="utf-8")
    (folder / WEIGHTS_FILE).write_bytes(b"not safetensors")
    with pytest.raises(gpt2probe.FileFormatError, match="safetensors"):
        SAE.load(folder)
    (folder / WEIGHTS_FILE).unlink()
    with pytest.raises(gpt2probe.MissingFileError, match=WEIGHTS_FILE):
        SAE.load(folder)
    with pytest.raises(gpt2probe.MissingFileError, match="no such"):
        SAE.load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(gpt2probe.MissingFileError, match=CFG_FILE):
        SAE.load(tmp_path / "empty")


def test_tensors_must_match_the_config(tmp_path):
    good = {"W_enc": torch.zeros(D_IN, D_SAE), "b_enc": torch.zeros(D_SAE), "W_dec": torch.zeros(D_SAE, D_IN),
            "b_dec": torch.zeros(D_IN)}
    with pytest.raises(gpt2probe.FileFormatError, match=r"missing \['threshold'\]"):
        SAE.load(_folder(tmp_path, {**GOOD, "architecture": "jumprelu"}, good))
    with pytest.raises(gpt2probe.FileFormatError, match=r"unexpected \['scaling_factor'\]"):
        SAE.load(_folder(tmp_path, GOOD, {**good, "scaling_factor": torch.ones(D_SAE)}))
    with pytest.raises(gpt2probe.FileFormatError, match=r"W_dec has shape \[6, 10\]"):
        SAE.load(_folder(tmp_path, GOOD, {**good, "W_dec": torch.zeros(D_IN, D_SAE)}))



def test_non_finite_weights_and_dtype_overflow_are_refused(tmp_path):
    """A NaN weight used to load silently (and turn every spliced activation to NaN); float16 turned 1e5 into inf."""
    good = {"W_enc": torch.zeros(D_IN, D_SAE), "b_enc": torch.zeros(D_SAE), "W_dec": torch.zeros(D_SAE, D_IN),
            "b_dec": torch.zeros(D_IN)}
    nan_dec = good["W_dec"].clone()
    nan_dec[2, 3] = float("nan")
    with pytest.raises(gpt2probe.FileFormatError, match=r"W_dec holds 1 NaN or infinite value\(s\), the first at index \[2, 3\]"):
        SAE.load(_folder(tmp_path, GOOD, {**good, "W_dec": nan_dec}))
    with pytest.raises(gpt2probe.FileFormatError, match="b_enc holds"):
        SAE.load(_folder(tmp_path, GOOD, {**good, "b_enc": torch.full((D_SAE,), float("-inf"))}))
    jumprelu = {**GOOD, "architecture": "jumprelu"}
    never = torch.full((D_SAE,), float("inf"))  # a feature that never fires: a threshold of +inf is allowed, NaN is not
    assert torch.equal(SAE.load(_folder(tmp_path, jumprelu, {**good, "threshold": never})).threshold.detach(), never)
    with pytest.raises(gpt2probe.FileFormatError, match="threshold holds"):
        SAE.load(_folder(tmp_path, jumprelu, {**good, "threshold": torch.full((D_SAE,), float("nan"))}))
    # and what load refuses is not written: a NaN weight (a diverged run) is refused before a byte is written
    sae = SAE(SAEConfig(d_in=D_IN, d_sae=D_SAE, hook_name="blocks.1.hook_resid_pre"))
    with torch.no_grad():
        sae.W_enc[1, 2] = float("nan")
    with pytest.raises(gpt2probe.NonFiniteError, match=r"cannot save .* W_enc holds 1 NaN or infinite value\(s\)"):
        sae.save(tmp_path / "diverged")
    assert not (tmp_path / "diverged").exists()
    big = _folder(tmp_path, GOOD, {**good, "b_dec": torch.full((D_IN,), 1e5)})
    assert float(SAE.load(big).b_dec.detach()[0]) == 1e5
    with pytest.raises(gpt2probe.InvalidArgumentError, match="b_dec holds values up to 1e\\+05, which torch.float16 cannot hold"):
        SAE.load(big, dtype="float16")

def test_pre_6_config_layout_loads(tmp_path):
    """SAELens before 6.0 (and gpt2-small-res-jb's files) kept hook_point at the top level."""
    old = {"d_in": D_IN, "d_sae": D_SAE, "dtype": "torch.float32", "hook_point": "blocks.3.hook_resid_pre",
           "hook_point_layer": 3, "model_name": "gpt2-small", "apply_b_dec_to_input": True}
    sae = SAE.load(_folder(tmp_path, old))
    assert (sae.cfg.hook_name, sae.cfg.model_name, sae.cfg.architecture) == ("blocks.3.hook_resid_pre", "gpt2-small", "standard")


def test_centered_sae_removes_and_restores_each_tokens_mean():
    """Known answer: an identity SAE on a centered stream gives back x exactly (ReLU of a non-negative centered x)."""
    sae = SAE(SAEConfig(d_in=4, d_sae=4, hook_name="blocks.0.hook_resid_pre", center_input=True, apply_b_dec_to_input=False))
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(4))
        sae.W_dec.copy_(torch.eye(4))
    x = torch.tensor([[1.0, 2.0, 3.0, 6.0]])  # mean 3: centered [-2, -1, 0, 3]
    assert sae.encode(x).tolist() == [[0.0, 0.0, 0.0, 3.0]]
    assert sae(x).tolist() == [[3.0, 3.0, 3.0, 6.0]]


# -- Dunefsky et al.'s transcoders ------------------------------------------------------------
THEIR_CONFIG = """
from dataclasses import dataclass
import torch
@dataclass
class LanguageModelSAERunnerConfig:
    model_name: str = "gpt2-small"
    hook_point: str = "blocks.4.ln2.hook_normalized"
    out_hook_point: str = "blocks.4.hook_mlp_out"
    hook_point_layer: int = 4
    d_in: int = 6
    d_sae: int = 10
    is_transcoder: bool = True
    dtype: torch.dtype = torch.float32
"""


@pytest.fixture(scope="module")
def dunefsky_file(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A file laid out as theirs (their config class pickled inside), and its tensors.

    Their ``sae_training`` package exists only while the file is written; it is then removed
    from ``sys.path`` and ``sys.modules``, so loading must not need (or import) it.
    """
    root = tmp_path_factory.mktemp("dunefsky")
    package = root / "pkg" / "sae_training"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("", encoding="utf-8")
    (package / "config.py").write_text(textwrap.dedent(THEIR_CONFIG), encoding="utf-8")
    gen = torch.Generator().manual_seed(0)
    state = {"W_enc": torch.randn(6, 10, generator=gen), "b_enc": torch.randn(10, generator=gen) * 0.3,
             "W_dec": torch.randn(10, 6, generator=gen), "b_dec": torch.randn(6, generator=gen) * 0.3,
             "b_dec_out": torch.randn(6, generator=gen) * 0.3}
    path = root / "final_sparse_autoencoder_gpt2-small_blocks.4.ln2.hook_normalized_10.pt"
    sys.path.insert(0, str(root / "pkg"))
    try:
        from sae_training.config import LanguageModelSAERunnerConfig

        torch.save({"cfg": LanguageModelSAERunnerConfig(), "state_dict": dict(state)}, path)
    finally:
        sys.path.remove(str(root / "pkg"))
        for name in [m for m in sys.modules if m == "sae_training" or m.startswith("sae_training.")]:
            del sys.modules[name]
    return path, state


def test_dunefsky_transcoder_computes_their_forward_pass(dunefsky_file):
    path, state = dunefsky_file
    tc = Transcoder.load(path)
    assert "sae_training" not in sys.modules  # their code was not needed, nor imported
    assert (tc.cfg.hook_name, tc.cfg.hook_name_out, tc.cfg.layer) == ("blocks.4.ln2.hook_normalized", "blocks.4.hook_mlp_out", 4)
    x = torch.randn(3, 5, D_IN, generator=torch.Generator().manual_seed(4))
    raw = {k: v.double() for k, v in state.items()}
    acts = torch.relu((x.double() - raw["b_dec"]) @ raw["W_enc"] + raw["b_enc"])  # their forward pass
    out = acts @ raw["W_dec"] + raw["b_dec_out"]
    assert (acts > 0).any() and (acts == 0).any()
    assert_close(tc.encode(x), acts.float(), 1e-5, "their feature activations")
    assert_close(tc(x), out.float(), 1e-5, "their output")


def test_dunefsky_safetensors_with_explicit_hooks(tmp_path, dunefsky_file):
    tensors = {k: v.contiguous() for k, v in dunefsky_file[1].items()}
    path = tmp_path / "layer4.safetensors"
    save_file(tensors, path)
    from gpt2probe.sae.dunefsky_format import read_dunefsky

    with pytest.raises(gpt2probe.FileFormatError, match="hook_name"):
        read_dunefsky(path)
    with pytest.raises(gpt2probe.FileFormatError, match="put the hook it reads in its name.*for Transcoder.load"):
        Transcoder.load(path)  # which takes no hook_name: the message says what it can do
    named = path.rename(tmp_path / "blocks.4.ln2.hook_normalized.safetensors")
    assert Transcoder.load(named).cfg.hook_name_out == "blocks.4.hook_mlp_out"
    path = named.rename(path)
    cfg, got = read_dunefsky(path, hook_name="blocks.4.ln2.hook_normalized")
    assert cfg.hook_name_out == "blocks.4.hook_mlp_out" and torch.equal(got["W_dec"], tensors["W_dec"])
    # the output hook follows hook_name's layer: it was layer 0 for a hook without one, and the file's own
    # out_hook_point (another layer's) when hook_name overrode a .pt file's hook_point
    with pytest.raises(gpt2probe.FileFormatError, match="names no layer.*pass hook_name_out"):
        read_dunefsky(path, hook_name="hook_embed")
    assert read_dunefsky(dunefsky_file[0], hook_name="blocks.2.ln2.hook_normalized")[0].hook_name_out == "blocks.2.hook_mlp_out"
    assert read_dunefsky(dunefsky_file[0], hook_name_out="blocks.5.hook_mlp_out")[0].hook_name == "blocks.4.ln2.hook_normalized"


def test_a_folder_of_dunefsky_files_names_them(tmp_path, dunefsky_file):
    """Their hub repository is a folder of one .pt file per layer; Transcoder.load reads one file."""
    folder = tmp_path / "gpt2-transcoders"
    folder.mkdir()
    for layer in range(5):
        (folder / f"final_sparse_autoencoder_gpt2-small_blocks.{layer}.ln2.hook_normalized_10.pt").write_bytes(
            dunefsky_file[0].read_bytes())
    with pytest.raises(gpt2probe.MissingFileError, match=r"holds 5 transcoder file\(s\) \(final_sparse_autoencoder_gpt2"
                                                          r"-small_blocks.0.ln2.hook_normalized_10.pt, .*, \.\.\.\): give one file"):
        Transcoder.load(folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(gpt2probe.MissingFileError, match=r"\(\.pt\)$"):  # a folder without such files: no list
        Transcoder.load(tmp_path / "empty")



@pytest.mark.parametrize("change, match", [
    ({"state_dict": [1, 2]}, "state_dict is a list, not a dict"),
    ({"W_enc": torch.randn(6)}, r"W_enc has shape \[6\]; a matrix was expected"),
    ({"W_enc": torch.randn(6, 10, 2)}, r"W_enc has shape \[6, 10, 2\]; a matrix was expected"),
    ({"W_enc": torch.ones(6, 10, dtype=torch.long)}, "W_enc is torch.int64, not floating point"),
    ({"b_dec_out": torch.full((6,), float("nan"))}, "b_dec_out holds 6 NaN or infinite"),
])
def test_dunefsky_files_that_do_not_fit_their_format_are_named(tmp_path, dunefsky_file, change, match):
    """Raw ValueError / AttributeError from unpacking, an integer file read as weights, a NaN loaded silently."""
    state = {**dunefsky_file[1], **{k: v for k, v in change.items() if k != "state_dict"}}
    path = tmp_path / "final_sparse_autoencoder_gpt2-small_blocks.4.ln2.hook_normalized_10.pt"
    torch.save({"cfg": None, "state_dict": change.get("state_dict", state)}, path)
    with pytest.raises(gpt2probe.FileFormatError, match=match) as info:
        Transcoder.load(path)
    assert str(path) in str(info.value)

def test_a_damaged_pt_file_is_named(tmp_path):
    path = tmp_path / "broken.pt"
    path.write_bytes(b"\x80\x04garbage")
    with pytest.raises(gpt2probe.FileFormatError, match="broken.pt"):
        Transcoder.load(path)


# -- releases ---------------------------------------------------------------------------------
def test_from_pretrained_offline_says_how_to_get_the_files():
    # conftest switches the hub off, and no test machine has this release cached
    with pytest.raises(gpt2probe.WeightsUnavailableError, match="hf download jbloom/GPT2-Small-SAEs-Reformatted"):
        SAE.from_pretrained("gpt2-small-res-jb", "blocks.8.hook_resid_pre")
    with pytest.raises(gpt2probe.InvalidArgumentError, match="blocks.11.hook_resid_post"):
        SAE.from_pretrained("gpt2-small-res-jb", "blocks.12.hook_resid_pre")
    with pytest.raises(gpt2probe.InvalidArgumentError, match="unknown release"):
        SAE.from_pretrained("no-such-release", "x")


def test_from_pretrained_reads_a_local_copy_laid_out_as_the_hub(tmp_path):
    repo = tmp_path / "GPT2-Small-SAEs-Reformatted"
    sae = randomized(SAE(SAEConfig(d_in=D_IN, d_sae=D_SAE, hook_name="blocks.2.hook_resid_pre")))
    sae.save(repo / "blocks.2.hook_resid_pre")
    as_dir = SAE.from_pretrained(str(repo), "blocks.2.hook_resid_pre")
    assert torch.equal(as_dir.W_dec, sae.W_dec) and not as_dir.cfg.center_input
    # a copy of a known release gets the release's settings: gpt2-small-res-jb was trained on a centered stream
    known = SAE.from_pretrained("gpt2-small-res-jb", "blocks.2.hook_resid_pre", directory=repo)
    assert known.cfg.center_input
    with pytest.raises(gpt2probe.WeightsUnavailableError, match="blocks.2.hook_resid_pre"):
        SAE.from_pretrained(str(repo), "blocks.3.hook_resid_pre")


def test_from_pretrained_reads_only_folders_inside_the_release(tmp_path, monkeypatch):
    """An absolute sae_id replaced the release's folder (root / "/x" is "/x"): another SAE was read, and with
    directory= of a known release it was given that release's centered input, which it was not trained on."""
    repo = tmp_path / "GPT2-Small-SAEs-Reformatted"
    sae = randomized(SAE(SAEConfig(d_in=D_IN, d_sae=D_SAE, hook_name="blocks.2.hook_resid_pre")))
    sae.save(repo / "blocks.2.hook_resid_pre")
    elsewhere = tmp_path / "mine"
    sae.save(elsewhere)
    for sae_id in (str(elsewhere), "", ".", "../mine"):
        with pytest.raises(gpt2probe.InvalidArgumentError, match=r"sae_id names a folder inside the release.*SAE.load"):
            SAE.from_pretrained("gpt2-small-res-jb", sae_id, directory=repo)
        with pytest.raises(gpt2probe.InvalidArgumentError, match="sae_id names a folder inside the release"):
            SAE.from_pretrained(str(repo), sae_id)
    # a relative path that is not there reads as a hub id ('owner/name'); offline, the error says there is no such folder
    monkeypatch.chdir(tmp_path)
    with pytest.raises(gpt2probe.WeightsUnavailableError, match=r"hub repository id: there is no local directory .*saes.gpt2"):
        SAE.from_pretrained("saes/gpt2", "blocks.2.hook_resid_pre")


def test_weights_file_keys_as_saelens_writes_them(tmp_path):
    tc = randomized(Transcoder(SAEConfig(d_in=D_IN, d_sae=D_SAE, d_out=D_IN, hook_name="blocks.0.ln2.hook_normalized",
                                         hook_name_out="blocks.0.hook_mlp_out", skip=True)))
    tc.save(tmp_path / "tc")
    stored = load_file(tmp_path / "tc" / WEIGHTS_FILE)
    assert sorted(stored) == ["W_dec", "W_enc", "W_skip", "b_dec", "b_enc"]
    assert torch.equal(stored["W_skip"], tc.W_skip.detach().T)  # SAELens keeps W_skip as [d_out, d_in]
    cfg = json.loads((tmp_path / "tc" / CFG_FILE).read_text(encoding="utf-8"))
    assert cfg["architecture"] == "skip_transcoder" and cfg["metadata"]["hook_name_out"] == "blocks.0.hook_mlp_out"
