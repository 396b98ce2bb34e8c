"""The ILM step profile's report and its CPU-time step estimate (no training)."""

import time

from benchmarks import ilm_step_profile


def test_report_puts_runs_side_by_side_and_marks_missing_cells():
    runs = {
        "before": {"ms": {"phase 1, ITC only": 501.4, "phase 2, 4 examples": 1781.0}, "profile": "p1",
                   "command": "cmd a", "load": "4.9 -> 5.4", "scale": "800 items"},
        "after": {"ms": {"phase 1, ITC only": 382.2}, "profile": "p2", "command": "cmd b", "load": "5.3 -> 5.0",
                  "scale": "800 items"},
    }
    md = ilm_step_profile.report(runs)
    assert "| step (CPU ms, 1 torch thread) | before | after |" in md
    assert "| phase 1, ITC only | 501 | 382 |" in md
    assert "| phase 2, 4 examples | 1781 | n/a |" in md
    assert "- before (800 items): `cmd a`" in md and "before: 4.9 -> 5.4, after: 5.3 -> 5.0" in md


def test_per_step_ms_subtracts_the_warm_up_run():
    def run(steps: int) -> None:  # 30 ms of CPU per step plus 50 ms of setup
        end = time.process_time() + 0.05 + 0.03 * steps
        while time.process_time() < end:
            pass

    assert abs(ilm_step_profile.per_step_ms(run, 3) - 30) < 8
