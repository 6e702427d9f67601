"""Finding and checking the MNIST file (ca4lib.mnist): the search order, and the refusal of
wrong files, on small constructed files in Keras' layout (and the real file where present)."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

import ca4_helpers as ca4
from ca4lib import mnist, settings

REAL_MNIST = Path(settings.PROJECT_DIR) / "data" / "mnist.npz"


def mnist_arrays(train: int = 20, test: int = 10, marker: int = 0) -> dict[str, np.ndarray]:
    """Small arrays in Keras' MNIST layout; `marker` is the first training label (to tell files apart)."""
    rng = np.random.default_rng(marker)
    y_train = (np.arange(train) % 10).astype(np.uint8)
    y_train[0] = marker
    return {
        "x_train": rng.integers(0, 256, size=(train, 28, 28), dtype=np.uint8),
        "y_train": y_train,
        "x_test": rng.integers(0, 256, size=(test, 28, 28), dtype=np.uint8),
        "y_test": (np.arange(test) % 10).astype(np.uint8),
    }


def write_npz(path: Path, **overrides: np.ndarray | None) -> Path:
    """Write a small MNIST-layout file; an override of None drops that array."""
    arrays = mnist_arrays()
    arrays.update(overrides)
    np.savez(path, **{key: value for key, value in arrays.items() if value is not None})
    return path


def assert_refused(path: Path, pattern: str, check_content: bool = False) -> str:
    """Loading `path` raises MnistFileError (a ValueError) matching `pattern` and naming the file."""
    with pytest.raises(ValueError, match=pattern) as caught:
        mnist.read_mnist_npz(path, check_content=check_content)
    assert isinstance(caught.value, ca4.MnistFileError)
    message = str(caught.value)
    assert str(path) in message
    return message


# --- reading one file -----------------------------------------------------------------------------


def test_good_synthetic_file_loads_without_content_check(tmp_path):
    expected = mnist_arrays()
    path = tmp_path / "mnist.npz"
    np.savez(path, **expected)
    (x_train, y_train), (x_test, y_test) = mnist.read_mnist_npz(path, check_content=False)
    np.testing.assert_array_equal(x_train, expected["x_train"])
    np.testing.assert_array_equal(y_train, expected["y_train"])
    np.testing.assert_array_equal(x_test, expected["x_test"])
    np.testing.assert_array_equal(y_test, expected["y_test"])
    assert x_train.dtype == np.uint8 and x_train.shape == (20, 28, 28)


def test_small_synthetic_file_is_refused_by_content_check(tmp_path):
    path = write_npz(tmp_path / "mnist.npz")
    assert_refused(path, r"x_train has shape \(20, 28, 28\).*real MNIST", check_content=True)


@pytest.mark.skipif(not REAL_MNIST.is_file(), reason="data/mnist.npz is not present")
def test_real_file_passes_content_check():
    (x_train, y_train), (x_test, y_test) = mnist.read_mnist_npz(REAL_MNIST, check_content=True)
    assert x_train.shape == (60000, 28, 28) and x_train.dtype == np.uint8
    assert y_train.shape == (60000,)
    assert x_test.shape == (10000, 28, 28) and y_test.shape == (10000,)
    assert y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert x_train.max() == 255 and x_train.min() == 0


def test_missing_file(tmp_path):
    assert_refused(tmp_path / "nowhere" / "mnist.npz", "does not exist")


def test_truncated_archive(tmp_path):
    path = write_npz(tmp_path / "mnist.npz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert_refused(path, "truncated or corrupt")


def test_garbage_file(tmp_path):
    path = tmp_path / "mnist.npz"
    path.write_text("this is not an archive\n" * 20)
    assert_refused(path, "not a readable .npz")


def test_empty_file(tmp_path):
    path = tmp_path / "mnist.npz"
    path.write_bytes(b"")
    assert_refused(path, "not a readable .npz")


def test_single_npy_array_under_npz_name(tmp_path):
    path = tmp_path / "mnist.npz"
    with path.open("wb") as stream:
        np.save(stream, np.zeros((3, 28, 28), dtype=np.uint8))
    assert_refused(path, "not a readable .npz")


def test_missing_keys(tmp_path):
    path = write_npz(tmp_path / "mnist.npz", y_test=None, x_test=None)
    message = assert_refused(path, "lacks the arrays")
    assert "x_test" in message and "y_test" in message


def test_32x32_images(tmp_path):
    path = write_npz(tmp_path / "mnist.npz", x_train=np.zeros((20, 32, 32), dtype=np.uint8))
    assert_refused(path, r"x_train has shape \(20, 32, 32\)")


def test_rgb_images(tmp_path):
    path = write_npz(tmp_path / "mnist.npz", x_test=np.zeros((10, 28, 28, 3), dtype=np.uint8))
    assert_refused(path, r"x_test has shape \(10, 28, 28, 3\)")


def test_labels_beyond_nine(tmp_path):
    path = write_npz(tmp_path / "mnist.npz", y_train=(np.arange(20) % 20).astype(np.uint8))
    assert_refused(path, "labels from 0 to 19")


def test_negative_labels(tmp_path):
    labels = (np.arange(10) % 10).astype(np.int8)
    labels[3] = -1
    path = write_npz(tmp_path / "mnist.npz", y_test=labels)
    assert_refused(path, "labels from -1 to 9")


def test_float_images(tmp_path):
    path = write_npz(tmp_path / "mnist.npz", x_train=np.zeros((20, 28, 28), dtype=np.float32))
    assert_refused(path, "x_train has dtype float32")


def test_float_labels(tmp_path):
    path = write_npz(tmp_path / "mnist.npz", y_train=np.zeros(20, dtype=np.float64))
    assert_refused(path, "y_train has dtype float64")


def test_mismatched_label_count(tmp_path):
    path = write_npz(tmp_path / "mnist.npz", y_train=np.zeros(19, dtype=np.uint8))
    assert_refused(path, r"y_train has shape \(19,\); expected \(20,\)")


def test_fashion_like_file_refused_by_content_check(tmp_path):
    path = tmp_path / "fashion.npz"
    np.savez(path, x_train=np.zeros((60000, 28, 28), dtype=np.uint8),
             y_train=np.repeat(np.arange(10, dtype=np.uint8), 6000),
             x_test=np.zeros((10000, 28, 28), dtype=np.uint8),
             y_test=np.repeat(np.arange(10, dtype=np.uint8), 1000))
    # Layout, shapes and dtypes are MNIST's, so only the content check can tell.
    (x_train, _), _ = mnist.read_mnist_npz(path, check_content=False)
    assert x_train.shape == (60000, 28, 28)
    message = assert_refused(path, "another dataset", check_content=True)
    assert "per-digit counts" in message and "Fashion-MNIST" in message


def test_modified_pixels_refused_by_hash(tmp_path, mnist_raw):
    (x_train, y_train), (x_test, y_test) = mnist_raw
    changed = x_test.copy()
    changed[0, 0, 0] ^= 1
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=changed, y_test=y_test)
    assert_refused(path, "contents of x_test differ", check_content=True)


# --- where load_mnist looks -----------------------------------------------------------------------


@pytest.fixture
def sources(tmp_path, monkeypatch, patch_lookup):
    """Three candidate files told apart by their first label, and an empty project/Keras home."""
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    patch_lookup(mnist.find_mnist, "PROJECT_DIR", project)
    patch_lookup(mnist.find_mnist, "keras_mnist_cache",
                 lambda: tmp_path / "keras" / "mnist.npz")
    monkeypatch.delenv("CA4_MNIST", raising=False)

    def make(location: Path, marker: int) -> Path:
        location.parent.mkdir(parents=True, exist_ok=True)
        np.savez(location, **mnist_arrays(marker=marker))
        return location

    return {"project": project, "make": make, "tmp": tmp_path}


def first_label(path=None) -> int:
    (_, y_train), _ = ca4.load_mnist(path, check_content=False)
    return int(y_train[0])


def test_path_argument_beats_environment(sources, monkeypatch):
    from_env = sources["make"](sources["tmp"] / "env.npz", marker=1)
    explicit = sources["make"](sources["tmp"] / "explicit.npz", marker=2)
    sources["make"](sources["project"] / "data" / "mnist.npz", marker=3)
    monkeypatch.setenv("CA4_MNIST", str(from_env))
    assert first_label(explicit) == 2
    assert mnist.find_mnist(explicit) == explicit


def test_environment_beats_project_data(sources, monkeypatch):
    from_env = sources["make"](sources["tmp"] / "env.npz", marker=1)
    sources["make"](sources["project"] / "data" / "mnist.npz", marker=3)
    monkeypatch.setenv("CA4_MNIST", str(from_env))
    assert first_label() == 1


def test_project_data_beats_keras_cache(sources):
    project_file = sources["make"](sources["project"] / "data" / "mnist.npz", marker=3)
    sources["make"](mnist.keras_mnist_cache(), marker=4)
    assert mnist.find_mnist() == project_file
    assert first_label() == 3


def test_keras_cache_is_the_last_local_source(sources):
    sources["make"](mnist.keras_mnist_cache(), marker=4)
    assert first_label() == 4


def test_environment_pointing_at_missing_file_is_an_error(sources, monkeypatch):
    missing = sources["tmp"] / "missing.npz"
    sources["make"](sources["project"] / "data" / "mnist.npz", marker=3)
    monkeypatch.setenv("CA4_MNIST", str(missing))
    with pytest.raises(ValueError, match="does not exist") as caught:
        ca4.load_mnist(check_content=False)
    assert str(missing) in str(caught.value)


def test_nothing_found_and_download_fails(sources, monkeypatch):
    calls = []

    def offline(*args, **kwargs):
        calls.append(args)
        raise OSError("no network")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline)
    assert mnist.find_mnist() is None
    with pytest.raises(ca4.MnistFileError, match="could not download") as caught:
        ca4.load_mnist()
    message = str(caught.value)
    assert calls, "load_mnist should try the Keras download before giving up"
    assert "OSError: no network" in message
    assert "CA4_MNIST" in message and "data/mnist.npz" in message


def test_successful_download_is_read_from_keras_cache(sources, monkeypatch):
    def download(*args, **kwargs):
        sources["make"](mnist.keras_mnist_cache(), marker=7)

    monkeypatch.setattr(keras.datasets.mnist, "load_data", download)
    assert first_label() == 7
