"""Finding and checking the MNIST file, with no internet access (notebook: *Data*).

`load_mnist` is the coursework's loader (`ca4_helpers` re-exports it); this room holds the file
checks behind it, which refuse a truncated file or a look-alike dataset. Keras is imported only
for its download, the last resort, so `tools/build.py` checks MNIST without TensorFlow.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ca4lib.settings import PROJECT_DIR

MNIST_SHAPES = {"x_train": (60000, 28, 28), "y_train": (60000,),
                "x_test": (10000, 28, 28), "y_test": (10000,)}

# From ../shared/data/README.md: what tells real MNIST apart from look-alikes such as
# Fashion-MNIST, which share its file layout, shapes and dtypes.
MNIST_LABEL_COUNTS = {
    "y_train": (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
    "y_test": (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009),
}

MNIST_SHA256 = {
    "x_train": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
    "y_train": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
    "x_test": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
    "y_test": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
}

MNIST_FIX = (
    "Supply MNIST in one of these ways: pass load_mnist(path=...); set CA4_MNIST=/path/to/mnist.npz; "
    "put the file at data/mnist.npz in the project (a symbolic link is fine); or let Keras "
    "download it once, with internet access, into ~/.keras/datasets/mnist.npz "
    "(python -c 'import keras; keras.datasets.mnist.load_data()')."
)


class MnistFileError(ValueError):
    """A file that should hold MNIST is missing, unreadable or holds something else."""


def keras_mnist_cache() -> Path:
    """Return where Keras caches its MNIST download (honours $KERAS_HOME)."""
    keras_home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    return keras_home / "datasets" / "mnist.npz"


def find_mnist(path: str | os.PathLike | None = None) -> Path | None:
    """Return the MNIST file the loader would read, or None when only a download is left."""
    if path is not None:
        return Path(path)
    from_environment = os.environ.get("CA4_MNIST", "").strip()
    if from_environment:
        return Path(from_environment)
    for candidate in (PROJECT_DIR / "data" / "mnist.npz", keras_mnist_cache()):
        if candidate.is_file():
            return candidate
    return None


def load_mnist(path: str | os.PathLike | None = None, *, check_content: bool = True
               ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Return `(x_train, y_train), (x_test, y_test)` from the first MNIST source found."""
    source = find_mnist(path)
    if source is None:
        from ca4lib.backend import keras  # TensorFlow only for the download, the last resort

        try:
            keras.datasets.mnist.load_data()
        except Exception as error:  # any download failure ends in the same advice
            raise MnistFileError(f"MNIST was not found locally and Keras could not download it "
                                 f"({type(error).__name__}: {error}). {MNIST_FIX}") from error
        source = keras_mnist_cache()
    return read_mnist_npz(source, check_content=check_content)


def read_mnist_npz(path: str | os.PathLike, *, check_content: bool = True
                   ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Read and check an MNIST .npz in Keras' layout; refuse a wrong file with MnistFileError."""
    path = Path(path)
    if not path.is_file():
        raise MnistFileError(f"MNIST file {path} does not exist. {MNIST_FIX}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = sorted(set(MNIST_SHAPES) - set(archive.files))
            if missing:
                raise MnistFileError(f"MNIST file {path} lacks the arrays {missing} (it holds "
                                     f"{sorted(archive.files)}; expected {sorted(MNIST_SHAPES)}). "
                                     f"Replace it with the real file. {MNIST_FIX}")
            arrays = {key: archive[key] for key in MNIST_SHAPES}
    except MnistFileError:
        raise
    # TypeError: np.load returned a bare array (a .npy file), which has no `with` protocol.
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, TypeError) as error:
        raise MnistFileError(f"MNIST file {path} is not a readable .npz archive; it is truncated "
                             f"or corrupt ({type(error).__name__}: {error}). Delete it and supply "
                             f"it again. {MNIST_FIX}") from error
    check_mnist_arrays(arrays, path)
    if check_content:
        check_mnist_content(arrays, path)
    return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])


def check_mnist_arrays(arrays: Mapping[str, np.ndarray], path: Path) -> None:
    """Raise MnistFileError unless the arrays have MNIST's ranks, sizes, dtypes and label range."""
    for split in ("train", "test"):
        images, labels = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if images.ndim != 3 or images.shape[1:] != (28, 28):
            raise MnistFileError(f"MNIST file {path}: x_{split} has shape {images.shape}; expected "
                                 f"(N, 28, 28) grey-scale 28x28 images. This is not MNIST in "
                                 f"Keras' layout. {MNIST_FIX}")
        if images.dtype != np.uint8:
            raise MnistFileError(f"MNIST file {path}: x_{split} has dtype {images.dtype}; "
                                 f"expected uint8 pixels 0-255. {MNIST_FIX}")
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise MnistFileError(f"MNIST file {path}: y_{split} has shape {labels.shape}; "
                                 f"expected ({images.shape[0]},), one label per image. {MNIST_FIX}")
        if not np.issubdtype(labels.dtype, np.integer):
            raise MnistFileError(f"MNIST file {path}: y_{split} has dtype {labels.dtype}; "
                                 f"expected integer digit labels. {MNIST_FIX}")
        if labels.size and (labels.min() < 0 or labels.max() > 9):
            raise MnistFileError(f"MNIST file {path}: y_{split} holds labels from {labels.min()} "
                                 f"to {labels.max()}; expected digits 0-9. {MNIST_FIX}")


def check_mnist_content(arrays: Mapping[str, np.ndarray], path: Path) -> None:
    """Raise MnistFileError unless the arrays are exactly the real MNIST (sizes, labels, hashes)."""
    for key, shape in MNIST_SHAPES.items():
        if arrays[key].shape != shape:
            raise MnistFileError(f"MNIST file {path}: {key} has shape {arrays[key].shape}; the real "
                                 f"MNIST has {shape}. {MNIST_FIX}")
    for key, expected in MNIST_LABEL_COUNTS.items():
        counts = tuple(int(c) for c in np.bincount(arrays[key], minlength=10))
        if counts != expected:
            raise MnistFileError(f"MNIST file {path}: {key} has per-digit counts {counts}, not "
                                 f"MNIST's {expected}; it looks like another dataset in MNIST's "
                                 f"layout (Fashion-MNIST, say). {MNIST_FIX}")
    for key, expected in MNIST_SHA256.items():
        if hashlib.sha256(arrays[key].tobytes()).hexdigest() != expected:
            raise MnistFileError(f"MNIST file {path}: the contents of {key} differ from the real "
                                 f"MNIST (SHA-256 mismatch); the file is modified or another "
                                 f"dataset. {MNIST_FIX}")
