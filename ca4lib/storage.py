"""Files that are never seen half-written: atomic writes and strict JSON (`metrics.json`)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


@contextlib.contextmanager
def atomic_file(path: Path, mode: str) -> Any:
    """Open a temporary file beside `path`; rename it over `path` once fully written."""
    if mode not in ("w", "wb"):
        raise ValueError(f"mode: expected 'w' or 'wb', got {mode!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, mode) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        # mkstemp makes the file private (0600): give it the permissions any new file gets.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def non_finite_keys(data: Any, path: str = "metrics") -> list[str]:
    """Return the key paths of NaN and infinite numbers inside nested dicts and lists."""
    if isinstance(data, Mapping):
        return [key for name, value in data.items()
                for key in non_finite_keys(value, f"{path}[{name!r}]")]
    if isinstance(data, (list, tuple)):
        return [key for index, value in enumerate(data)
                for key in non_finite_keys(value, f"{path}[{index}]")]
    if isinstance(data, (float, np.floating)) and not math.isfinite(data):
        return [path]
    return []


def numpy_to_python(value: Any) -> Any:
    """Turn a NumPy scalar or array into the Python number or list JSON can hold."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"data: {type(value).__name__} is not JSON serializable")


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """Write strict JSON (no NaN or infinity) through a temporary file; readers never see half."""
    bad = non_finite_keys(data)
    if bad:
        raise ValueError(f"data: strict JSON has no NaN or infinity, found at {', '.join(bad)}")
    path = Path(path)
    with atomic_file(path, "w") as stream:
        json.dump(data, stream, indent=2, allow_nan=False, default=numpy_to_python)
        stream.write("\n")
    return path
