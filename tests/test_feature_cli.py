"""The feature commands as a researcher types them (``sae train/evaluate/report``, ``harvest``, ``harvest-report``,
``graph``): the documented command lines parse, and plausible mistakes end in one ``error:`` line and status 2,
before any work where they can be seen, instead of a traceback, a wasted run, or a silent change of what was asked."""

from __future__ import annotations

import codecs
import re
import shlex
from pathlib import Path

import pytest
import torch
from harvest_helpers import assert_one_error_line, topic_texts

from gpt2probe import SAE, SAEConfig, Transcoder
from gpt2probe.cli import main, parsers
from gpt2probe.harvest import Corpus, harvest

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^```bash\n(?P<body>.*?)^```", re.M | re.S)
ANSI_C = re.compile(r"\$'((?:[^'\\]|\\.)*)'")  # bash's $'...' quoting, which shlex does not know


def _ansi_c(match: re.Match) -> str:
    return shlex.quote(codecs.decode(match[1], "unicode_escape"))


def documented_commands() -> list[tuple[str, list[str]]]:
    """Every ``gpt2probe COMMAND ...`` line of the docs' and README's bash blocks, as (page, argv after gpt2probe)."""
    found = []
    for page in sorted([*ROOT.glob("docs/**/*.md"), ROOT / "README.md"]):
        for block in FENCE.finditer(page.read_text(encoding="utf-8")):
            for line in block["body"].replace("\\\n", " ").splitlines():
                words = shlex.split(ANSI_C.sub(_ansi_c, line), comments=True)
                at = next((i for i, w in enumerate(words) if w == "gpt2probe" or w.endswith("/gpt2probe")), None)
                if at is None or words[-1] == "...":  # not gpt2probe, or an elided command ("... -m gpt2probe harvest ...")
                    continue
                found.append((page.relative_to(ROOT).as_posix(), words[at + 1:]))
    return found


@pytest.mark.parametrize("page, argv", documented_commands(), ids=lambda x: x if isinstance(x, str) else " ".join(x)[:60])
def test_documented_command_lines_parse(page, argv):
    """A documented command line is accepted by its command's parser as written (a renamed flag breaks it here)."""
    assert argv and argv[0] in parsers(), (page, argv)
    parsers()[argv[0]].parse_args(argv[1:])


def test_the_graph_page_documents_a_prompt_with_newlines_that_bash_passes_as_newlines():
    """``--prompt "import os\\nimport"`` in bash is a backslash and an n, not a newline: the docs use $'...'."""
    for page, argv in documented_commands():
        for i, word in enumerate(argv[:-1]):
            if word == "--prompt":
                assert "\\n" not in argv[i + 1], (page, argv[i + 1])


# -- mistakes -----------------------------------------------------------------------------------------------

@pytest.fixture
def no_loading(monkeypatch):
    """Fail a test whose command would load the model (the mistake is to be caught before)."""
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    for module in ("sae", "harvest", "graph"):  # harvest-report imports harvest.load_model when it runs
        monkeypatch.setattr(f"gpt2probe.experiments.{module}.load_model", refuse)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "a.txt"
    path.write_text(topic_texts(1, 400)[0], encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def coders(tiny_english, tmp_path_factory) -> Path:
    """A folder of two coder folders, as a shipped model's saes/ or transcoders/ is."""
    root = tmp_path_factory.mktemp("coders")
    d = tiny_english.cfg.d_model
    SAE(SAEConfig(d_in=d, d_sae=11, hook_name="blocks.1.hook_resid_post", architecture="topk", k=2)).save(
        root / "blocks.1.hook_resid_post")
    Transcoder(SAEConfig.for_transcoder(0, d_model=d, d_sae=7)).save(root / "blocks.0.hook_mlp_out")
    return root


@pytest.fixture(scope="module")
def neurons(tiny_english, tmp_path_factory):
    """A harvest of MLP neurons only (no --sae), keeping 3 contexts per unit."""
    return harvest(tiny_english, Corpus(texts=topic_texts(2, 300)), hooks=["blocks.0.mlp.hook_post", "blocks.1.mlp.hook_post"],
                   out=tmp_path_factory.mktemp("h") / "neurons", seq_len=32, top_k=3, window=2, progress=False)


@pytest.fixture(scope="module")
def features(tiny_english, coders, tmp_path_factory):
    """A harvest of one SAE's features, keeping 3 contexts per unit."""
    sae = SAE.load(coders / "blocks.1.hook_resid_post")
    return harvest(tiny_english, Corpus(texts=topic_texts(2, 300)), saes=[sae], out=tmp_path_factory.mktemp("h") / "f",
                   seq_len=32, top_k=3, window=2, progress=False)


def test_an_output_inside_a_file_is_refused_before_training_or_harvesting(corpus, tmp_path, capsys, no_loading):
    """sae train wrote --out only after training: an --out under a file cost the whole run, then failed."""
    inside = str(corpus / "run")
    for argv in (["sae", "train", "--model", "tiny-english", "--corpus", str(corpus), "--hook", "blocks.0.hook_resid_post",
                  "--d-sae", "8", "--k", "2", "--out", inside],
                 ["harvest", "--model", "tiny-english", "--corpus", str(corpus), "--hooks", "blocks.0.mlp.hook_post",
                  "--out", inside]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: --out") and "is a file, not a directory" in err[0], err


def test_sae_train_does_not_overwrite_a_trained_coder(coders, corpus, capsys, no_loading):
    argv = ["sae", "train", "--model", "tiny-english", "--corpus", str(corpus), "--hook", "blocks.1.hook_resid_post",
            "--d-sae", "8", "--k", "2", "--out", str(coders / "blocks.1.hook_resid_post")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "already holds a trained coder" in err and "choose another --out" in err


def test_an_unknown_hook_names_the_valid_ones(corpus, tmp_path, capsys):
    argv = ["sae", "train", "--model", "tiny-english", "--corpus", str(corpus), "--hook", "blocks.9.hook_resid_post",
            "--d-sae", "8", "--k", "2", "--out", str(tmp_path / "o"), "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "blocks 0..3" in err[0] and "'blocks.3.hook_resid_post'" in err[0], err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("model", ["toy-induction", "small"])
def test_a_model_with_its_own_vocabulary_cannot_read_a_text_corpus(model, small_dir, corpus, coders, tmp_path, capsys):
    """Such a model failed deep in tokenization: "token ids must lie in [0, 64); got values from 2 to 50032"."""
    name = str(small_dir) if model == "small" else model
    common = ["--model", name, "--corpus", str(corpus)]
    for argv in (["sae", "train", *common, "--hook", "blocks.0.hook_resid_post", "--d-sae", "8", "--k", "2",
                  "--out", str(tmp_path / "t"), "--no-progress"],
                 ["sae", "evaluate", *common, "--sae", str(coders / "blocks.1.hook_resid_post")],
                 ["harvest", *common, "--hooks", "blocks.0.mlp.hook_post", "--out", str(tmp_path / "h"), "--no-progress"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        err = [line for line in err if not line.startswith("Loading weights")]
        assert len(err) == 1 and "vocabulary" in err[0] and "text corpus" in err[0], err
    assert not (tmp_path / "t").exists() and not (tmp_path / "h").exists()


def test_a_folder_of_coders_is_named_with_the_ones_inside(coders, corpus, tmp_path, features, capsys, no_loading):
    """--sae saes/ said "has no cfg.json: expected ... a Dunefsky et al. transcoder file (.pt)", not what to pass."""
    for argv in (["sae", "evaluate", "--model", "tiny-english", "--corpus", str(corpus), "--sae", str(coders)],
                 ["harvest", "--model", "tiny-english", "--corpus", str(corpus), "--sae", str(coders),
                  "--out", str(tmp_path / "h")],
                 ["sae", "report", str(features.directory), "--sae", str(coders), "--out", str(tmp_path / "r.html")]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is a folder of 2 coder folders" in err[0], err
        assert "blocks.0.hook_mlp_out, blocks.1.hook_resid_post" in err[0] and str(coders / "blocks.0.hook_mlp_out") in err[0]
    (tmp_path / "empty").mkdir()
    assert main(["sae", "evaluate", "--model", "tiny-english", "--corpus", str(corpus), "--sae", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "has no cfg.json" in err and ".pt" not in err


def test_sae_evaluate_checks_json_before_evaluating(coders, corpus, tmp_path, capsys, no_loading):
    """--json naming a directory was a traceback (IsADirectoryError) after the whole evaluation."""
    (tmp_path / "d").mkdir()
    for target, says in ((tmp_path / "d", "is a directory"), (corpus / "x.json", "is a file, not a directory")):
        assert main(["sae", "evaluate", "--model", "tiny-english", "--corpus", str(corpus), "--sae",
                     str(coders / "blocks.1.hook_resid_post"), "--json", str(target)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: --json") and says in err[0], err


def test_sae_report_on_a_harvest_without_features_says_so_first(neurons, tmp_path, capsys, no_loading):
    """It said "pass --sae DIR, or --no-logits", and --no-logits then failed with "holds no SAE features"."""
    for extra in ([], ["--no-logits"]):
        assert main(["sae", "report", str(neurons.directory), "--out", str(tmp_path / "r.html"), *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "holds no SAE or transcoder features" in err[0] and "harvest-report" in err[0], err
        assert "blocks.0.mlp.hook_post" in err[0]


def test_reports_refuse_more_examples_than_the_harvest_kept(neurons, features, tmp_path, capsys, no_loading):
    """--examples 50 on a harvest that kept 3 contexts showed 3, without a word."""
    for argv in (["sae", "report", str(features.directory), "--no-logits", "--examples", "4", "--out", str(tmp_path / "a.html")],
                 ["harvest-report", str(neurons.directory), "--no-logits", "--examples", "4", "--out", str(tmp_path / "b.html")]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "kept 3 contexts per unit" in err[0] and "--examples 3 or fewer" in err[0], err
    assert not list(tmp_path.iterdir())
    # the default shows what there is ("up to"), and an allowed number is shown
    assert main(["harvest-report", str(neurons.directory), "--no-logits", "--out", str(tmp_path / "b.html")]) == 0
    assert main(["sae", "report", str(features.directory), "--no-logits", "--examples", "2", "--out", str(tmp_path / "a.html")]) == 0
    page = (tmp_path / "a.html").read_text(encoding="utf-8")
    data = re.findall(r'<script type="application/json" id="hook-\d+">(.*?)</script>', page, re.S)
    import json

    assert max(len(f["examples"]) for f in json.loads(data[0])["features"]) == 2


def test_report_hooks_take_globs_as_the_harvest_does(neurons, features, tmp_path, capsys, no_loading):
    """harvest --hooks took 'blocks.*.mlp.hook_post'; the reports' --hooks said the glob "was not harvested"."""
    out = tmp_path / "d.html"
    assert main(["harvest-report", str(neurons.directory), "--no-logits", "--hooks", "blocks.1.*", "--out", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert '"blocks.1.mlp.hook_post"' in page and '"blocks.0.mlp.hook_post"' not in page
    assert main(["sae", "report", str(features.directory), "--no-logits", "--hooks", "blocks.*",
                 "--out", str(tmp_path / "f.html")]) == 0
    capsys.readouterr()
    assert main(["harvest-report", str(neurons.directory), "--no-logits", "--hooks", "blocks.7.*", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'blocks.7.*' matches none of the harvested hooks" in err[0] and "blocks.0.mlp.hook_post" in err[0]


def test_harvest_directions_alone_harvests_the_files_hooks(tiny_english, corpus, tmp_path, capsys):
    """docs/attribution-graphs.md: "Make it with gpt2probe harvest --directions F.safetensors" answered
    "give --hooks ... or --sae ..."; the file names its hooks."""
    from safetensors.torch import save_file

    from gpt2probe import Harvest

    directions = torch.randn(3, tiny_english.cfg.d_model, generator=torch.Generator().manual_seed(0))
    save_file({"blocks.1.ln2.hook_normalized": directions}, str(tmp_path / "d.safetensors"))
    out = tmp_path / "h"
    assert main(["harvest", "--model", "tiny-english", "--corpus", str(corpus), "--directions",
                 str(tmp_path / "d.safetensors"), "--out", str(out), "--no-progress", "--seq-len", "32"]) == 0
    h = Harvest.load(out)
    assert h.hooks == ["blocks.1.ln2.hook_normalized"] and h.kind("blocks.1.ln2.hook_normalized") == "direction"
    assert torch.equal(h.directions("blocks.1.ln2.hook_normalized"), directions)
    (tmp_path / "bad.safetensors").write_text("not a safetensors file", encoding="utf-8")
    assert_one_error_line(["harvest", "--model", "tiny-english", "--corpus", str(corpus), "--directions",
                           str(tmp_path / "bad.safetensors"), "--out", str(tmp_path / "h2")], capsys)


@pytest.mark.parametrize("extra, says", [
    (["--tokens", "1,2", "--prepend-bos"], "--prepend-bos is for a text prompt"),  # was silently ignored
    (["--prompt", ""], "--prompt is empty"),  # was the library's "pass prepend_bos=True", after loading
    (["--tokens", "1,2", "--examples", "3"], "--examples counts top contexts"),  # was silently ignored
    (["--tokens", "1,2", "--json", "INSIDE"], "--json"),  # was refused only after the graph was computed
])
def test_graph_mistakes_fail_before_loading(extra, says, corpus, tmp_path, capsys, no_loading):
    extra = [str(corpus / "g.json") if word == "INSIDE" else word for word in extra]
    assert main(["graph", "--model", "tiny-english", "--out", str(tmp_path / "g.html"), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and says in err[0], err
    assert not (tmp_path / "g.html").exists()


def test_graph_refuses_more_examples_than_the_harvest_kept(neurons, tmp_path, capsys, no_loading):
    assert main(["graph", "--model", "tiny-english", "--tokens", "1,2", "--harvest", str(neurons.directory),
                 "--examples", "9", "--out", str(tmp_path / "g.html")]) == 2
    assert "kept 3 contexts per unit" in capsys.readouterr().err


def test_sae_report_says_when_a_recorded_coder_folder_is_gone(tiny_english, coders, corpus, tmp_path, capsys, no_loading):
    """The report read the harvest's recorded folder as if typed: "--sae '...' is not a directory", with no --sae given."""
    import shutil

    moved = tmp_path / "sae"
    shutil.copytree(coders / "blocks.1.hook_resid_post", moved)
    sae = SAE.load(moved)
    h = harvest(tiny_english, Corpus(texts=topic_texts(1, 200)), saes=[sae], sae_sources=[str(moved)],
                out=tmp_path / "h", seq_len=32, top_k=2, window=2, progress=False)
    shutil.rmtree(moved)
    assert main(["sae", "report", str(h.directory), "--out", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"recorded {str(moved)!r}" in err[0] and "is gone" in err[0] and "--sae" in err[0], err


@pytest.mark.parametrize("hook, width", [("blocks.0.mlp.hook_post", 512), ("blocks.0.attn.hook_z", 128),
                                         ("blocks.0.attn.hook_pattern", 128), ("blocks.0.ln1.hook_scale", 128)])
def test_directions_on_a_hook_with_its_own_units_are_refused(tiny_english, hook, width, tmp_path):
    """Directions for an MLP, per-head or attention hook were dropped without a word: it was harvested as neurons
    (or heads), and the page showed those instead of the projections asked for."""
    from gpt2probe.harvest.errors import HarvestConfigError

    directions = {hook: torch.ones(2, width)}
    with pytest.raises(HarvestConfigError, match=re.escape(hook) + ".*not a \\[batch, pos, d_model\\] stream"):
        harvest(tiny_english, Corpus(texts=["a b c"]), hooks=[hook], directions=directions, out=tmp_path / "h",
                progress=False)
    assert not (tmp_path / "h").exists()
