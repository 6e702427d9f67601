"""Shared set-up for the ca4 tests: import path, a private build folder, small real MNIST."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Before matplotlib or TensorFlow is imported anywhere: no windows, no C++ start-up chatter.
os.environ["MPLBACKEND"] = "Agg"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import ca4_helpers as ca4  # noqa: E402

TRAIN_SIZE = 256
VALIDATION_SIZE = 128


@pytest.fixture(scope="session", autouse=True)
def private_build_dir(tmp_path_factory: pytest.TempPathFactory):
    """Point CA4_BUILD_DIR at a session temp folder so that no test writes into build/."""
    folder = tmp_path_factory.mktemp("ca4_build")
    previous = os.environ.get("CA4_BUILD_DIR")
    os.environ["CA4_BUILD_DIR"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("CA4_BUILD_DIR", None)
    else:
        os.environ["CA4_BUILD_DIR"] = previous


@pytest.fixture(autouse=True)
def close_figures():
    """Close the figures a test opened, so that they do not pile up over the session."""
    yield
    plt.close("all")


@pytest.fixture(scope="session")
def mnist_raw():
    """The real MNIST arrays `(x_train, y_train), (x_test, y_test)`.

    Without a local file the tests that need it skip, except where CA4_REQUIRE_MNIST=1 (CI):
    there a missing or damaged file fails them, so a broken data link cannot pass as a skip.
    """
    required = os.environ.get("CA4_REQUIRE_MNIST") == "1"
    if ca4.find_mnist() is None:  # never fall through to the Keras download in a test
        if required:
            pytest.fail("CA4_REQUIRE_MNIST=1 but no MNIST file was found (CA4_MNIST, data/)")
        pytest.skip("real MNIST not available: set CA4_MNIST or link data/mnist.npz")
    try:
        return ca4.load_mnist()
    except ca4.MnistFileError as error:
        if required:
            pytest.fail(f"CA4_REQUIRE_MNIST=1 and the MNIST file is unusable: {error}")
        pytest.skip(f"real MNIST not available: {error}")


@pytest.fixture(scope="session")
def mnist_small(mnist_raw):
    """A few hundred real normalised images: train, validation (test split) and their labels."""
    (x_train, y_train), (x_test, y_test) = mnist_raw
    return {
        "train_images": ca4.normalize_images(x_train[:TRAIN_SIZE]),
        "train_labels": y_train[:TRAIN_SIZE].astype(np.int64),
        "validation_images": ca4.normalize_images(x_test[:VALIDATION_SIZE]),
        "validation_labels": y_test[:VALIDATION_SIZE].astype(np.int64),
    }


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    """An empty folder for the trained-model cache of one test."""
    folder = tmp_path / "cache"
    folder.mkdir()
    return folder
