"""TensorFlow and Keras, imported once and quietly, for every room that needs them.

TensorFlow's native start-up lines (oneDNN notices, CUDA probing on a CPU machine) go to file
descriptor 2 before any log filter applies and would land in every notebook and PDF, so the
import runs with that descriptor sent to /dev/null. The Keras backend and the C++ log level are
set first, where the environment does not set them. Rooms take `keras`, `layers`, `ops` and
`tf` from here; this is the one room whose import does more than define names.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

__all__ = ["keras", "layers", "ops", "tf"]


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for a while; Python-level errors still propagate."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
with native_stderr_silenced():
    import keras
    import tensorflow as tf
    from keras import layers, ops

    tf.config.list_physical_devices()

# Retracing notices name Keras internals, not anything a student can act on.
tf.get_logger().setLevel("ERROR")
