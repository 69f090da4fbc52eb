"""The benchmark scripts run end to end on a tiny model and print the tables they promise.

Smoke tests only: one repeat on a tiny model, so the numbers mean nothing and no timing is
asserted; what is checked is that every configuration ran at every length and was reported.
"""

from __future__ import annotations

import re

import pytest

from benchmarks import bench_capture, bench_logit_lens

from reference import transformer_lens_bridge

LENGTHS = [5, 9]


@pytest.fixture(autouse=True)
def bench_cache(tmp_path_factory, monkeypatch):
    """Tiny checkpoints go to a temporary directory (the memory subprocesses inherit it)."""
    monkeypatch.setenv("GPT2PROBE_BENCH_CACHE", str(tmp_path_factory.getbasetemp() / "bench-cache"))


def tables(report: str) -> list[list[list[str]]]:
    """Every Markdown table of a report, as rows of cells (header first, separator dropped)."""
    found, current = [], []
    for line in report.splitlines() + [""]:
        if line.startswith("|"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if not all(re.fullmatch(r"-+", c) for c in cells):
                current.append(cells)
        elif current:
            found.append(current)
            current = []
    return found


def rows_by_key(table: list[list[str]]) -> dict[tuple[int, str], dict[str, str]]:
    header, *body = table
    return {(int(row[0]), row[1]): dict(zip(header, row)) for row in body}


def quick(*extra: str) -> list[str]:
    return ["--quick", "--lengths", ",".join(map(str, LENGTHS)), "--repeats", "1", "--threads", "1", *extra]


def test_capture_reports_every_configuration_at_every_length(tmp_path):
    transformer_lens_bridge()  # the benchmarks compare with TransformerLens
    out = tmp_path / "capture.md"
    report = bench_capture.main(quick("--no-memory", "--out", str(out)))
    assert out.read_text(encoding="utf-8") == report + "\n"
    results, targets = tables(report)
    rows = rows_by_key(results)
    assert set(rows) == {(n, case.label) for n in LENGTHS for case in bench_capture.CASES}
    for row in rows.values():
        assert float(row["median ms"].replace(",", "")) > 0
        assert row["peak growth MiB"] == "–"  # --no-memory
    ours = rows[LENGTHS[0], "gpt2probe, resid streams (sdpa)"]
    assert ours["vs plain"].endswith("(sdpa)") and ours["vs TL"].endswith("x")
    assert [int(row[0]) for row in targets[1:]] == LENGTHS
    assert "captured the same" in report  # gpt2probe and TransformerLens were checked to agree


def test_lens_reports_every_configuration_and_the_floor(tmp_path):
    transformer_lens_bridge()  # the benchmarks compare with TransformerLens
    report = bench_logit_lens.main(quick("--no-memory"))
    results, targets = tables(report)
    rows = rows_by_key(results)
    labels = [case.label for case in bench_logit_lens.CASES] + ["*plain forward + projection (sum)*"]
    assert set(rows) == {(n, label) for n in LENGTHS for label in labels}
    for n in LENGTHS:
        assert rows[n, "gpt2probe.logit_lens(k=5)"]["vs forward + projection"].endswith("x")
        assert rows[n, "gpt2probe.logit_lens(k=5)"]["vs TL"].endswith("x")
    assert [int(row[0]) for row in targets[1:]] == LENGTHS
    assert targets[0][-1].startswith("tuned lens vs logit lens") and all(row[-1][0].isdigit() for row in targets[1:])
    assert "top-1 ids agree" in report


def test_memory_is_measured_in_subprocesses():
    report = bench_logit_lens.main(quick("--cases", "plain,ours", "--lengths", "7", "--memory-runs", "1"))
    results, _ = tables(report)
    rows = rows_by_key(results)
    assert set(rows) == {(7, "plain HF forward (sdpa)"), (7, "gpt2probe.logit_lens(k=5)")}
    for row in rows.values():
        total = float(row["peak total MiB"].replace(",", ""))
        growth = float(row["peak growth MiB"].replace(",", ""))
        assert 0 <= growth <= total and total > 10  # a whole Python process with torch holds far more than 10 MiB
    assert "1 fresh subprocess(es) per configuration" in report


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--lengths", "40"], "outside 1..32"),
        (["--repeats", "1,2,3"], "one per length"),
        (["--cases", "nope"], "unknown --cases"),
        (["--memory-runs", "0"], "at least 1"),
    ],
)
def test_bad_options_say_what_is_valid(argv, message):
    with pytest.raises(SystemExit, match=re.escape(message)):
        bench_capture.main(["--quick", "--no-memory", *argv])


def test_bench_graph_counts_layers_with_n_layers_and_takes_the_old_layers_with_a_warning(capsys):
    from benchmarks import bench_graph

    assert bench_graph.parse_args([]).n_layers == 12
    assert bench_graph.parse_args(["--n-layers", "3"]).n_layers == 3
    assert capsys.readouterr().err == ""
    assert bench_graph.parse_args(["--layers", "3"]).n_layers == 3  # the old spelling, elsewhere a list of layers
    assert "warning: --layers is deprecated here" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench_graph.parse_args(["--layers", "3", "--n-layers", "3"])
    assert "--layers is the old spelling of --n-layers: give only the new one" in capsys.readouterr().err


def test_random_saes_fire_as_calibrated():
    """bench_harvest's random gpt2-small-res-jb-shaped SAEs: each feature fires on exactly m sample positions.

    ``b_enc`` is minus the midpoint of each feature's m-th and m+1-th largest pre-activation,
    so on the calibration sample (Gaussian: no ties) the L0 is exactly ``m * d_sae / positions``;
    a top-k SAE keeps k per position (its random directions' top pre-activations are positive).
    """
    import argparse

    import torch

    from benchmarks.bench_harvest import random_saes

    torch.manual_seed(0)
    sample = {f"blocks.{layer}.hook_resid_pre": torch.randn(300, 24) for layer in range(2)}
    args = argparse.Namespace(d_sae=250, target_l0=7.0, topk_k=5)
    m = round(300 * 7.0 / 250)  # 8 positions per feature
    saes, l0 = random_saes(sample, args, "standard")
    assert [s.cfg.hook_name for s in saes] == list(sample)
    assert [(s.cfg.architecture, s.cfg.d_sae, s.cfg.d_in) for s in saes] == [("standard", 250, 24)] * 2
    for sae, x, got in zip(saes, sample.values(), l0, strict=True):
        fired = (sae.encode(x) > 0).sum(0)
        assert fired.tolist() == [m] * 250
        assert got == pytest.approx(m * 250 / 300)
    saes, l0 = random_saes(sample, args, "topk")
    assert l0 == [5.0, 5.0]
    assert saes[0].cfg.k == 5
