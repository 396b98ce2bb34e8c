"""Per-step training records of both phases, saved as JSON and plotted as a PNG of the loss curves."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from retrieval.storage import write_atomic


def trailing_mean(values: np.ndarray, window: int) -> np.ndarray:
    """out[i] = mean(values[max(0, i - window + 1) : i + 1]), so the first points average what exists."""
    sums = np.concatenate([[0.0], np.cumsum(values)])
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(0, ends - window)
    return (sums[ends] - sums[starts]) / (ends - starts)


@dataclass
class TrainingHistory:
    """One record per optimiser step: `{"phase": "phase1", "step": 0, "loss": ..., "itc": ..., "lr": ...}`."""

    records: list[dict[str, float | int | str]] = field(default_factory=list)

    def log(self, phase: str, step: int, **values: float) -> None:
        self.records.append({"phase": phase, "step": step, **values})

    def phase(self, name: str) -> list[dict[str, float | int | str]]:
        """Records of one phase, in step order."""
        return [r for r in self.records if r["phase"] == name]

    def save(self, path: Path) -> None:
        """Write the records as JSON, atomically."""
        write_atomic(Path(path), json.dumps(self.records).encode())

    def plot(self, path: Path) -> None:
        """PNG with one panel per phase: every loss series (raw, faint) and its 20-step trailing mean."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        phases = list(dict.fromkeys(str(r["phase"]) for r in self.records))
        fig, axes = plt.subplots(1, max(len(phases), 1), figsize=(6 * max(len(phases), 1), 4), squeeze=False)
        for ax, name in zip(axes[0], phases, strict=False):
            records = self.phase(name)
            keys = [k for k in records[0] if k == "loss" or k.startswith("loss_")]
            steps = [int(r["step"]) for r in records]
            for key in keys:
                values = np.array([float(r[key]) for r in records])
                (line,) = ax.plot(steps, values, alpha=0.25)
                ax.plot(steps, trailing_mean(values, 20), color=line.get_color(), label=key)
            ax.set_title(name)
            ax.set_xlabel("step")
            ax.set_ylabel("loss")
            ax.legend()
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100)
        plt.close(fig)
        write_atomic(Path(path), buffer.getvalue())
