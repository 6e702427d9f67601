"""Progress for a person: durations, the run's estimate of the training time left, progress
lines for long computations, and the patterns of those lines.

No TensorFlow: `tools/build.py` drops the lines that match `EPOCH_LINE`, `RECORD_LINE` and
`TICKER_LINE` from the PDF and prints its own durations with `format_duration`.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from ca4lib.checks import check_positive_int
from ca4lib.settings import build_dir
from ca4lib.storage import write_json_atomic


def format_duration(seconds: float) -> str:
    """Format seconds for a person: '45 s', '3 min 05 s', '1 h 02 min'."""
    seconds = round(max(0.0, seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class RunProgress:
    """The training of a whole notebook run: the models it plans, the ones the cache will serve,
    and the epochs trained so far with their time, for an estimate of the training time left.

    A planned model counts as served from the cache when the cache still holds the entry it
    was last trained or loaded from under this profile (the folder's `index.json`, which
    `finish_model` keeps). If its code changed since, train_model trains it after all, and
    `start_model` then counts its epochs again: the estimate cannot see an edit before the
    model is reached.
    """

    def __init__(self, planned: Mapping[str, int], profile: str,
                 cache_dir: str | os.PathLike | None = None) -> None:
        if not planned:
            raise ValueError("planned: expected the epochs of at least one model, got none")
        self.planned = {name: check_positive_int(epochs, f"planned[{name!r}]")
                        for name, epochs in planned.items()}
        self.profile = profile
        self.index_path = Path(cache_dir or build_dir() / "cache") / "index.json"
        stored = self.read_index().get(profile, {})
        self.expected_cached = {name for name in self.planned if name in stored
                                and (self.index_path.parent / stored[name]).is_file()}
        self.finished: dict[str, int] = dict.fromkeys(self.planned, 0)
        self.done: set[str] = set()
        self.trained_epochs = 0
        self.trained_seconds = 0.0

    def read_index(self) -> dict[str, dict[str, str]]:
        """The cache folder's index: profile -> model name -> the file last trained or loaded."""
        try:
            index = json.loads(self.index_path.read_text())
        except (OSError, ValueError):
            return {}
        return index if isinstance(index, dict) else {}

    def start_model(self, name: str, epochs: int) -> None:
        """A model starts (or resumes) training: its epochs count, whatever the index said."""
        self.planned.setdefault(name, epochs)
        self.finished.setdefault(name, 0)
        self.expected_cached.discard(name)

    def add_trained_epoch(self, name: str, seconds: float) -> None:
        """Count one epoch of `name` trained in this run."""
        self.finished[name] = self.finished.get(name, 0) + 1
        self.trained_epochs += 1
        self.trained_seconds += seconds

    def add_skipped_epochs(self, name: str, epochs: int) -> None:
        """Count epochs of `name` that need no training (from an interrupted run's checkpoint)."""
        self.finished[name] = self.finished.get(name, 0) + epochs

    def finish_model(self, name: str, cache_file: Path) -> None:
        """A model is trained or loaded: done, and the index points at its cache entry."""
        self.done.add(name)
        self.expected_cached.discard(name)
        index = self.read_index()
        index.setdefault(self.profile, {})[name] = Path(cache_file).name
        write_json_atomic(self.index_path, index)

    def epochs_left(self) -> int:
        """The epochs still to train: planned models neither done nor served by the cache."""
        return sum(max(0, epochs - self.finished[name]) for name, epochs in self.planned.items()
                   if name not in self.done and name not in self.expected_cached)

    def seconds_left(self) -> float:
        """Estimate the training time left: the epochs left at the mean epoch time so far."""
        return self.trained_seconds / max(1, self.trained_epochs) * self.epochs_left()


# The PDF export drops lines that match these: TrainingLog's epoch lines and its one-line
# record per model (the report's appendix tables every model's training instead), and
# Ticker's lines.
EPOCH_LINE = re.compile(r"^\s*\S+ epoch \d+/\d+\b")
RECORD_LINE = re.compile(r"^\S+ (trained|from the cache): \d+ epochs? in |^\S+: resuming after ")
TICKER_LINE = re.compile(r"^  [^:]+: \d+/\d+ done, ")


def loss_text(value: float) -> str:
    """A loss for a progress line, with a fixed number of decimals: '0.1000', '152.3'."""
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"


class Ticker:
    """Progress lines for a long computation outside training: what is done, and the time left.

    `tick(done)` prints a line at most every `every` seconds (and once at the end), so that a
    notebook cell that computes for minutes is never silent for long; a computation shorter
    than `every` prints nothing, unless it follows others without a pause (`PAUSE` seconds)
    and a line is due for them together: several short estimates in one cell share one quiet
    stretch, which is never longer than `every` either.

    >>> lines = []
    >>> ticker = Ticker("importance sampling", 4, say=lines.append, every=0.0)
    >>> ticker.tick(2); lines[-1].startswith("  importance sampling: 2/4 done")
    True
    """

    PAUSE = 2.0
    # The quiet stretch that Tickers share: when it began, and when a Ticker last ticked.
    quiet_since: float | None = None
    last_tick: float | None = None

    def __init__(self, label: str, total: int, say: Callable[[str], None] | None = print,
                 every: float = 10.0) -> None:
        self.label, self.total = label, check_positive_int(total, "total")
        self.say = say or (lambda line: None)
        self.every = every
        self.started = time.perf_counter()
        follows = (Ticker.last_tick is not None and Ticker.quiet_since is not None
                   and self.started - Ticker.last_tick < self.PAUSE)
        if not follows:
            Ticker.quiet_since = self.started
        self.shown = Ticker.quiet_since if follows else self.started
        Ticker.last_tick = self.started

    def tick(self, done: int) -> None:
        """Report that `done` of the total units are finished."""
        now = time.perf_counter()
        Ticker.last_tick = now
        if now - self.shown < self.every and (done < self.total or now - self.started
                                                < self.every):
            return  # a line is not due yet (a short computation needs none)
        Ticker.quiet_since = now
        self.shown = now
        left = (now - self.started) / max(done, 1) * (self.total - done)
        self.say(f"  {self.label}: {done}/{self.total} done, {format_duration(now - self.started)}"
                 f" so far, about {format_duration(left)} left")
