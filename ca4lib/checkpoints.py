"""Saving and restoring a model's whole training state: the cache entries and the checkpoint
after every epoch (`EpochCheckpoint`) that `ca4_helpers.train_model` writes, and the checks that
refuse a damaged file.
"""

from __future__ import annotations

import json
import math
import re
import time
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ca4lib.backend import keras
from ca4lib.storage import atomic_file
from ca4lib.training_log import TrainingLog


class TrainingDivergedError(RuntimeError):
    """Training produced a NaN or infinite loss."""


def training_state(model: keras.Model) -> list[keras.Variable]:
    """Return every variable a resumed run needs: weights, RNG states, optimiser slots."""
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    return list(model.variables) + list(model.optimizer.variables)


def save_training_state(path: Path, model: keras.Model, history: Mapping[str, list[float]],
                        key: str, seconds: float) -> None:
    """Write model and optimiser state, history and training time to `path` atomically."""
    arrays = {f"variable_{i:04d}": np.asarray(v.numpy())
              for i, v in enumerate(training_state(model))}
    arrays["history_json"] = np.frombuffer(json.dumps(history).encode(), dtype=np.uint8)
    arrays["key"] = np.frombuffer(key.encode(), dtype=np.uint8)
    arrays["training_seconds"] = np.float64(seconds)
    with atomic_file(path, "wb") as stream:
        np.savez(stream, **arrays)


def load_training_state(path: Path, model: keras.Model, key: str
                        ) -> tuple[dict[str, list[float]], float]:
    """Restore what save_training_state wrote; return (history, training seconds).

    Everything is checked before anything is assigned, so a damaged file (ValueError)
    leaves the model as built.
    """
    variables = training_state(model)
    try:
        with np.load(path, allow_pickle=False) as archive:
            stored = {name: archive[name] for name in archive.files}
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as error:
        raise ValueError(f"{path.name}: unreadable ({type(error).__name__}: {error})") from error
    expected = {"key", "history_json", "training_seconds",
                *(f"variable_{i:04d}" for i in range(len(variables)))}
    if set(stored) != expected:
        missing, extra = sorted(expected - set(stored)), sorted(set(stored) - expected)
        raise ValueError(f"{path.name}: lacks {missing[:3]} / holds unknown {extra[:3]} "
                         f"(the model has {len(variables)} variables)")
    if bytes(stored["key"]).decode(errors="replace") != key:
        raise ValueError(f"{path.name}: written for another training key")
    history = json.loads(bytes(stored["history_json"]).decode())
    if not (isinstance(history, dict) and all(isinstance(v, list) for v in history.values())):
        raise ValueError(f"{path.name}: its history is not a record of per-epoch values")
    seconds = float(stored["training_seconds"])
    values = [stored[f"variable_{i:04d}"] for i in range(len(variables))]
    for variable, value in zip(variables, values):
        if tuple(variable.shape) != value.shape:
            raise ValueError(f"{path.name}: variable {variable.path} has shape {value.shape}, "
                             f"expected {tuple(variable.shape)}")
        if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
            raise ValueError(f"{path.name}: variable {variable.path} holds NaN or infinity")
    for variable, value in zip(variables, values):
        variable.assign(value)
    return history, seconds


class EpochCheckpoint(keras.callbacks.Callback):
    """After every epoch: refuse a non-finite loss, extend the history, save the state."""

    def __init__(self, name: str, epochs: int, path: Path, key: str,
                 history: dict[str, list[float]], seconds: float) -> None:
        super().__init__()
        self.name, self.epochs, self.path, self.key = name, epochs, path, key
        self.history, self.seconds = history, seconds
        self.epoch_seconds: list[float] = []
        self.started = 0.0

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
        logs = dict(logs or {})
        bad = {metric: value for metric, value in logs.items() if not math.isfinite(value)}
        if bad:
            raise TrainingDivergedError(
                f"{self.name}: the loss became non-finite in epoch {epoch + 1} of "
                f"{self.epochs} ({bad}); lower the learning rate or check the inputs for NaN")
        for metric, value in logs.items():
            self.history.setdefault(metric, []).append(float(value))
        self.epoch_seconds.append(time.perf_counter() - self.started)
        self.seconds += self.epoch_seconds[-1]
        save_training_state(self.path, self.model, self.history, self.key, self.seconds)


def remove_interrupted_writes(folder: Path, name: str) -> None:
    """Delete the temporary files a killed run of model `name` left half-written."""
    pattern = re.compile(rf"\.{re.escape(name)}-[0-9a-f]{{16}}(\.partial)?\.npz\.\w+\.tmp")
    if folder.is_dir():
        for path in folder.iterdir():
            if pattern.fullmatch(path.name):
                path.unlink(missing_ok=True)


def restore(model: keras.Model, path: Path, key: str, report: TrainingLog
            ) -> tuple[dict[str, list[float]], float] | None:
    """Load a cache entry or checkpoint into `model`; None (and deleted) if missing or damaged."""
    if not path.exists():
        return None
    try:
        return load_training_state(path, model, key)
    except ValueError as error:
        report.damaged(path, error)
        path.unlink(missing_ok=True)
        return None
