"""Progress for a person: durations, the run's training estimate and the epoch-line pattern.

No TensorFlow: `tools/build.py` uses `EPOCH_LINE` to drop epoch lines from the PDF and
`format_duration` for its own lines.
"""

from __future__ import annotations

import re

from ca4lib.checks import check_positive_int


def format_duration(seconds: float) -> str:
    """Format seconds for a person: '45 s', '3 min 05 s', '1 h 02 min'."""
    seconds = round(max(0.0, seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class RunProgress:
    """The training epochs of a whole notebook run: planned, finished, and their time."""

    def __init__(self, planned_epochs: int) -> None:
        self.planned_epochs = check_positive_int(planned_epochs, "planned_epochs")
        self.finished_epochs = 0
        self.trained_epochs = 0
        self.trained_seconds = 0.0

    def add_trained_epoch(self, seconds: float) -> None:
        """Count one epoch trained in this run."""
        self.finished_epochs += 1
        self.trained_epochs += 1
        self.trained_seconds += seconds

    def add_skipped_epochs(self, epochs: int) -> None:
        """Count epochs that need no training (loaded from the cache or a checkpoint)."""
        self.finished_epochs += epochs

    def seconds_left(self) -> float:
        """Estimate the training time left: the epochs left at the mean epoch time so far."""
        mean = self.trained_seconds / max(1, self.trained_epochs)
        return mean * max(0, self.planned_epochs - self.finished_epochs)


# The PDF export drops lines that match this (TrainingLog's epoch lines); the record stays.
EPOCH_LINE = re.compile(r"^\s*\S+ epoch \d+/\d+\b")


def loss_text(value: float) -> str:
    """A loss for a progress line, with a fixed number of decimals: '0.1000', '152.3'."""
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
