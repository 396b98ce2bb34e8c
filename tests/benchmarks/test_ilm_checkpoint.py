"""The ILM checkpoint benchmark's report (the measurement itself runs at full model size, outside the tests)."""

from benchmarks import ilm_checkpoint


def test_report_lists_size_times_and_the_per_step_share():
    result = {"command": "cmd", "load": "5.0 -> 5.5", "repeats": 3, "every": 50, "parameters": 32137469,
              "file_mb": 368.2, "write_s": 3.541, "restore_s": 0.104, "write_ms_per_step": 70.8}
    md = ilm_checkpoint.report(result)
    assert "| 32,137,469 | 368 | 3.54 | 0.10 | 71 |" in md
    assert "write per step at every=50 (ms)" in md and "`cmd` (load average 5.0 -> 5.5; median of 3 runs)" in md
