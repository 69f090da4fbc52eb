"""``gpt2probe patching --method ... --compare-exact`` and ``gpt2probe circuit`` end to end, mistakes included."""

from __future__ import annotations

import pytest
from test_cli import assert_one_error, run

from gpt2probe.cli import main
from gpt2probe.experiments import circuit as circuit_command
from gpt2probe.experiments import pairs
from gpt2probe.experiments import patching as patching_command

from browser import chromium_available, open_page


@pytest.fixture
def no_loading(monkeypatch):
    def refuse(args):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(patching_command, "load_model", refuse)
    monkeypatch.setattr(circuit_command, "load_model", refuse)


@pytest.mark.parametrize("argv,contains", [
    (["patching", "--method", "atp", "--ig-steps", "4"], "--ig-steps is only used with --method ig"),
    (["patching", "--compare-exact"], "--compare-exact compares an estimate"),
    (["patching", "--method", "eap"], "--method"),
    (["patching", "--method", "ig", "--ig-steps", "0"], "--ig-steps"),
    (["circuit", "--top", "0"], "--top"),
    (["circuit", "--method", "exact"], "--method"),
    (["circuit", "--method", "atp*", "--ig-steps", "8"], "--ig-steps is only used with --method ig"),
])
def test_mistakes_are_one_error_line(argv, contains, tmp_path, capsys, no_loading):
    out = tmp_path / "r.html"
    code, _, err = run(capsys, [*argv, "--out", str(out)])
    assert_one_error(code, err, out, contains=(contains,))


def test_patching_estimate_against_exact(vocab_dir, tmp_path, capsys):
    out = tmp_path / "patching.html"
    code, printed, err = run(capsys, ["patching", "--model", str(vocab_dir), "--method", "atp*", "--compare-exact",
                                      "--out", str(out)])
    assert code == 0, err
    assert "atp* vs exact: Pearson" in printed
    assert "Note: atp*: rank cells by magnitude" in printed  # signed estimates shown as they are
    text = out.read_text(encoding="utf-8")
    assert "a signed value can have the wrong sign" in text
    for heading in patching_command.PANELS.values():
        assert f"{heading[0]}: atp* against exact patching" in text
        assert f"{heading[0]}, exact patching" in text
    if chromium_available():
        with open_page(out, offline=True) as page:
            assert page.errors == []
            assert "Spearman" in page.text()


def test_circuit_report(vocab_dir, tmp_path, capsys):
    out = tmp_path / "circuit.html"
    code, printed, err = run(capsys, ["circuit", "--model", str(vocab_dir), "--top", "6", "--out", str(out)])
    assert code == 0, err
    assert "Circuit of the top 6 of" in printed and "recovers" in printed
    text = out.read_text(encoding="utf-8")
    assert "Faithfulness" in text and "Top edges" in text
    if chromium_available():
        with open_page(out, offline=True) as page:
            assert page.errors == []
            assert "recovers" in page.text()


def test_circuit_default_offline_is_copying_with_a_large_gap(tmp_path, capsys):
    """GPT-2 is unavailable (tests run offline): tiny-english runs on its own default pair and recovers most of it."""
    import re

    out = tmp_path / "circuit.html"
    code, printed, err = run(capsys, ["circuit", "--top", "10", "--out", str(out)])
    assert code == 0, err
    assert "Falling back" in err and "Default pair for tiny-english" in printed
    found = re.search(r"clean ([-+]\d+\.\d+), corrupted ([-+]\d+\.\d+), gap ([-+]\d+\.\d+)", printed)
    clean, corrupted, gap = map(float, found.groups())
    assert gap > 10.0 and abs(clean - corrupted - gap) < 2e-4, printed
    assert "WARNING" not in printed
    recovered = float(re.search(r"recovers (-?\d+\.\d)%", printed).group(1))
    assert recovered > 50.0, printed  # the induction heads carry the copy (measured: 89% with 20 edges)
    text = out.read_text(encoding="utf-8")
    assert "Default pair for tiny-english" in text and pairs.SMALL_GAP_FLAG not in text


def test_circuit_warns_on_a_pair_the_model_barely_tells_apart(tmp_path, capsys):
    out = tmp_path / "circuit.html"
    code, printed, err = run(capsys, ["circuit", "--model", "tiny-english", "--method", "atp", "--top", "5",
                                      "--clean", pairs.IOI.clean, "--corrupted", pairs.IOI.corrupted,
                                      "--answer", pairs.IOI.answer, "--wrong", pairs.IOI.wrong, "--out", str(out)])
    assert code == 0, err
    assert "WARNING: The clean and corrupted runs barely differ" in printed and "(see the warning" in printed
    text = out.read_text(encoding="utf-8")
    assert "barely differ on the metric" in text
    assert text.count(pairs.SMALL_GAP_FLAG) >= 2  # the circuit graph and the edge table, both normalised by the gap


def test_circuit_command_is_listed(capsys):
    assert main(["--help"]) == 0
    assert "circuit" in capsys.readouterr().out
