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


def test_the_prompt_description_is_computed_from_what_runs():
    """The IOI pair is 14 GPT-2 tokens (not 15): 12 x 14 = 168 layer x position cells on GPT-2 small."""
    from gpt2probe.tokenizer import gpt2_tokenizer

    ids = gpt2_tokenizer()(bench_attribution.CLEAN, add_special_tokens=False)["input_ids"]
    assert bench_attribution.prompt_length() == len(ids) == 14
    assert "12 x 14 = 168" in bench_attribution.cells(12, 12, 14) and "12 x 12 = 144" in bench_attribution.cells(12, 12, 14)
