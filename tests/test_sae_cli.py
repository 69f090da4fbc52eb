"""``gpt2probe sae``: mistakes end with one error line and status 2, before any model is loaded."""

from __future__ import annotations

import pytest

from gpt2probe.cli import main


@pytest.mark.parametrize("argv, message", [
    (["sae"], "required"),
    (["sae", "train", "--model", "tiny-english", "--corpus", "x.txt", "--out", "o", "--d-sae", "8"], "--hook"),
    (["sae", "train", "--model", "tiny-english", "--corpus", "x.txt", "--out", "o", "--d-sae", "8", "--hook",
      "blocks.0.hook_resid_post", "--k", "0"], "--k"),
    (["sae", "train", "--model", "tiny-english", "--corpus", "x.txt", "--out", "o", "--d-sae", "8", "--layer", "0",
      "--k", "2"], "--transcoder"),
    # A top-k transcoder cannot be saved: refused before the model is loaded or anything is trained.
    (["sae", "train", "--model", "tiny-english", "--corpus", "x.txt", "--out", "o", "--d-sae", "8", "--transcoder",
      "--layer", "0", "--k", "2"], "no top-k transcoder"),
    (["sae", "evaluate", "--model", "tiny-english", "--corpus", "x.txt", "--sae", "nowhere"], "nowhere"),
])
def test_mistakes_are_one_error_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0]


def test_sae_is_listed(capsys):
    assert main(["--help"]) == 0
    assert "sae" in capsys.readouterr().out


def test_evaluate_names_a_damaged_cfg_json(tmp_path, capsys):
    """``sae evaluate`` read cfg.json with a bare json.loads: a damaged file was a raw JSONDecodeError traceback."""
    folder = tmp_path / "sae"
    folder.mkdir()
    (folder / "cfg.json").write_text('{"d_in": 128,', encoding="utf-8")
    corpus = tmp_path / "c.txt"
    corpus.write_text("Some text to evaluate on.", encoding="utf-8")
    assert main(["sae", "evaluate", "--model", "tiny-english", "--corpus", str(corpus), "--sae", str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "cfg.json" in err[0], err
