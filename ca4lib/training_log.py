"""What `ca4_helpers.train_model` prints: a line per epoch and a one-line record per model.

Not in the cache key: rewording a line retrains nothing.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from ca4lib.backend import keras
from ca4lib.progress import RunProgress, format_duration, loss_text


class TrainingLog(keras.callbacks.Callback):
    """Everything train_model prints: a line per epoch and a one-line record per model.

    An epoch line gives the losses, the seconds, and the time left for the model and (with a
    RunProgress) for the run's training. Not in the cache key: rewording changes no model.
    """

    # Within an epoch longer than this, a line every this many seconds: a cell is never silent
    # for long, even on a CPU where an epoch takes a minute.
    QUIET_SECONDS = 20.0

    def __init__(self, name: str, epochs: int, say: Callable[[str], None] | None,
                 run: RunProgress | None = None) -> None:
        super().__init__()
        self.name, self.epochs, self.run = name, epochs, run
        self.say = say or (lambda line: None)
        self.seconds: list[float] = []
        self.started = self.last_line = 0.0
        self.epoch = 0

    def on_train_begin(self, logs: Mapping[str, float] | None = None) -> None:
        if self.run is not None:
            self.run.start_model(self.name, self.epochs)

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
        self.started = self.last_line = time.perf_counter()
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: Mapping[str, float] | None = None) -> None:
        now = time.perf_counter()
        if now - self.last_line < self.QUIET_SECONDS:
            return
        self.last_line = now
        steps = (self.params or {}).get("steps") or 0
        done = (batch + 1) / steps if steps else 0.0
        left = (now - self.started) * (1 - done) / done if done else 0.0
        self.say(f"  {self.name} epoch {self.epoch + 1}/{self.epochs}  batch {batch + 1}/"
                 f"{steps}  {now - self.started:.0f} s  | {format_duration(left)} left in "
                 f"this epoch")

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
        self.seconds.append(time.perf_counter() - self.started)
        self.last_line = time.perf_counter()
        logs = logs or {}
        losses = "  ".join(f"{metric} {loss_text(logs[metric])}"
                           for metric in ("loss", "val_loss") if metric in logs)
        left = statistics.mean(self.seconds) * (self.epochs - epoch - 1)
        line = (f"  {self.name} epoch {epoch + 1}/{self.epochs}  {losses}  "
                f"{self.seconds[-1]:.1f} s  | {format_duration(left)} left")
        if self.run is not None:
            self.run.add_trained_epoch(self.name, self.seconds[-1])
            line += f" | run: about {format_duration(self.run.seconds_left())} of training left"
        self.say(line)

    def record(self, source: str, history: Mapping[str, list[float]], seconds: float) -> None:
        """Print the model's record: epochs, training time, final validation loss.

        A VAE's record gives its negative ELBO, which compares across KL weights; its
        weighted loss does not.
        """
        epochs = len(history.get("loss", []))
        if history.get("val_reconstruction_loss") and history.get("val_kl_loss"):
            elbo = history["val_reconstruction_loss"][-1] + history["val_kl_loss"][-1]
            loss = f", val. negative ELBO {elbo:.1f}"
        elif history.get("val_loss"):
            loss = f", val_loss {loss_text(history['val_loss'][-1])}"
        else:
            loss = ""
        self.say(f"{self.name} {source}: {epochs} epoch{'s' * (epochs != 1)} in "
                 f"{format_duration(seconds)}{loss}")

    def finished(self, source: str, history: Mapping[str, list[float]], seconds: float,
                 cache_file: Path) -> None:
        """Report a model trained or loaded (`source`: 'trained' or 'from the cache') and
        tell the run where its cache entry is."""
        if self.run is not None:
            self.run.finish_model(self.name, cache_file)
        self.record(source, history, seconds)

    def resumed(self, start: int) -> None:
        """Report a run that continues from the checkpoint of an interrupted one."""
        if self.run is not None:
            self.run.start_model(self.name, self.epochs)
            self.run.add_skipped_epochs(self.name, start)
        self.say(f"{self.name}: resuming after epoch {start} of {self.epochs} "
                 f"from an interrupted run")

    def damaged(self, path: Path, error: ValueError) -> None:
        """Report a cache entry or checkpoint that could not be used."""
        kind = "checkpoint" if path.name.endswith(".partial.npz") else "cache entry"
        self.say(f"{self.name}: damaged {kind} ignored and retrained ({error})")
