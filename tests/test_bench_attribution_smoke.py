"""The attribution benchmark runs end to end on a tiny model and reports its cases (no timing asserted)."""

from __future__ import annotations

from benchmarks import bench_attribution


def test_bench_attribution_reports_the_speedup(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GPT2PROBE_BENCH_CACHE", str(tmp_path / "bench-cache"))
    out = tmp_path / "report.md"
    bench_attribution.main(["--quick", "--repeats", "1", "--no-memory", "--threads", "1",
                            "--cases", "exact_resid,atp_resid", "--out", str(out)])
    report = out.read_text(encoding="utf-8")
    assert "| exact_resid |" in report and "| atp_resid |" in report
    assert "exact_resid / atp_resid:" in report
