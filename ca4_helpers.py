"""Helpers for the ca4 coursework: autoencoders and variational autoencoders on MNIST.

The notebook `ca4.ipynb` tells the story; this module does the work, grouped by concern:
configuration, data, models, training (with its trained-model cache), evaluation, plotting,
reporting, and headless notebook execution (`python -m ca4_helpers --help`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import hashlib
import inspect
import json
import math
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import matplotlib
import matplotlib.figure
import matplotlib.lines
import matplotlib.patches
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@contextlib.contextmanager
def native_stderr_silenced() -> Any:
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


# TensorFlow's native start-up lines (oneDNN notices, CUDA probing on a CPU machine) go to fd 2
# before any log filter applies and would land in every notebook and PDF: start it quietly.
with native_stderr_silenced():
    import keras
    import tensorflow as tf
    from keras import layers, ops

    tf.config.list_physical_devices()

# Retracing notices name Keras internals, not anything a student can act on.
tf.get_logger().setLevel("ERROR")

# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------

PROJECT_DIR = Path(__file__).resolve().parent
DEFAULT_SEED = 42
IMAGE_SHAPE = (28, 28, 1)
DIGITS = tuple(range(10))
KL_WEIGHTS = (0.1, 1.0, 5.0)
# The assignment's batch size, used for every model.
BATCH_SIZE = 128
# Predictions go through the network in large batches; the batch size does not change results.
PREDICT_BATCH_SIZE = 1000
# Bump when the cache file format changes (the key already covers the code, see training_key).
CACHE_FORMAT_VERSION = 2


@dataclasses.dataclass(frozen=True)
class Profile:
    """How much data and how many epochs one run of the notebook uses."""

    name: str
    train_size: int | None  # None: all 60,000 training images
    test_size: int | None  # None: all 10,000 test images
    autoencoder_epochs: int
    latent_sweep_epochs: int
    denoising_epochs: int
    vae_epochs: int
    classifier_epochs: int
    normalisation_epochs: int  # each of the two models of question 1

    def planned_epochs(self, latent_sizes: int, kl_weights: int) -> int:
        """Return the training epochs of one notebook run, for its estimate of the time left."""
        return (self.autoencoder_epochs + latent_sizes * self.latent_sweep_epochs
                + self.denoising_epochs + kl_weights * self.vae_epochs
                + self.classifier_epochs + 2 * self.normalisation_epochs)


PROFILES = {
    "full": Profile("full", None, None, autoencoder_epochs=20, latent_sweep_epochs=5,
                    denoising_epochs=5, vae_epochs=20, classifier_epochs=4,
                    normalisation_epochs=1),
    "fast": Profile("fast", 4000, 1000, autoencoder_epochs=2, latent_sweep_epochs=1,
                    denoising_epochs=1, vae_epochs=2, classifier_epochs=1,
                    normalisation_epochs=1),
}


def get_profile(name: str | None = None) -> Profile:
    """Return the named profile, else the one in $CA4_PROFILE, else `full`."""
    chosen = name if name is not None else os.environ.get("CA4_PROFILE", "full")
    chosen = chosen.strip().lower()
    if chosen not in PROFILES:
        raise ValueError(f"profile: expected one of {sorted(PROFILES)}, got {chosen!r} "
                         "(set CA4_PROFILE=full or CA4_PROFILE=fast)")
    return PROFILES[chosen]


def build_dir() -> Path:
    """Return the folder for generated files: $CA4_BUILD_DIR, else `build/` in the project."""
    return Path(os.environ.get("CA4_BUILD_DIR", PROJECT_DIR / "build")).resolve()


def library_versions() -> dict[str, str]:
    """Return the versions of Python and the libraries that change numerical results."""
    return {"python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "numpy": np.__version__}


def set_seed(seed: int) -> None:
    """Seed Python, NumPy, TensorFlow and Keras so that a run repeats exactly on the CPU."""
    check_non_negative_int(seed, "seed")
    keras.utils.set_random_seed(seed)


# ---------------------------------------------------------------------------------------------
# Argument checks (shared by every public function)
# ---------------------------------------------------------------------------------------------


def check_positive_int(value: Any, name: str) -> int:
    """Return `value` if it is an integer >= 1, else raise ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    return int(value)


def check_non_negative_int(value: Any, name: str) -> int:
    """Return `value` if it is an integer >= 0, else raise ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name}: expected a non-negative integer, got {value!r}")
    return int(value)


def check_non_negative_float(value: Any, name: str) -> float:
    """Return `value` as a float if it is finite and >= 0, else raise ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name}: expected a finite number >= 0, got {value!r}")
    if not math.isfinite(float(value)) or value < 0:
        raise ValueError(f"{name}: expected a finite number >= 0, got {value!r}")
    return float(value)


def check_learning_rate(learning_rate: Any) -> float:
    """Return the learning rate if it is a finite number > 0, else raise ValueError."""
    value = check_non_negative_float(learning_rate, "learning_rate")
    if value == 0:
        raise ValueError(f"learning_rate: expected a number > 0, got {learning_rate!r}")
    return value


def check_images(images: Any, name: str = "images") -> np.ndarray:
    """Return normalised images as float32 (N, 28, 28, 1) after checking shape, finiteness, range."""
    if not isinstance(images, np.ndarray):
        raise TypeError(f"{name}: expected a NumPy array of images, got {type(images).__name__}")
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(f"{name}: expected normalised float images in [0, 1], got dtype "
                         f"{images.dtype} (call normalize_images on raw uint8 pixels first)")
    if images.ndim != 4 or images.shape[1:] != IMAGE_SHAPE:
        raise ValueError(f"{name}: expected shape (N, 28, 28, 1) grey-scale 28x28 images, "
                         f"got {images.shape}")
    if images.shape[0] == 0:
        raise ValueError(f"{name}: expected at least one image, got an empty array")
    if not np.all(np.isfinite(images)):
        raise ValueError(f"{name}: expected finite pixel values, got NaN or infinity")
    low, high = float(images.min()), float(images.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(f"{name}: expected pixel values in [0, 1], got values in "
                         f"[{low:g}, {high:g}] (normalise raw pixels with normalize_images)")
    return images.astype(np.float32, copy=False)


def check_labels(labels: Any, count: int, name: str = "labels") -> np.ndarray:
    """Return `labels` as int64 after checking there are `count` integer digits 0-9."""
    if not isinstance(labels, np.ndarray):
        raise TypeError(f"{name}: expected a NumPy array of digit labels, "
                        f"got {type(labels).__name__}")
    if labels.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of labels, got shape {labels.shape}")
    if labels.shape[0] != count:
        raise ValueError(f"{name}: expected {count} labels (one per image), got {labels.shape[0]}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name}: expected integer digit labels, got dtype {labels.dtype}")
    if count and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{name}: expected digits 0-9, got values in "
                         f"[{labels.min()}, {labels.max()}]")
    return labels.astype(np.int64, copy=False)


def check_matching_images(targets: Any, predictions: Any) -> tuple[np.ndarray, np.ndarray]:
    """Return checked `targets` and `predictions`, which must be image arrays of one shape."""
    targets = check_images(targets, "targets")
    predictions = check_images(predictions, "predictions")
    if targets.shape != predictions.shape:
        raise ValueError(f"predictions: expected shape {targets.shape} to match targets, "
                         f"got {predictions.shape}")
    return targets, predictions


def check_same_length(first: np.ndarray, second: np.ndarray, names: tuple[str, str]) -> None:
    """Raise ValueError unless two image arrays hold the same number of images."""
    if first.shape[0] != second.shape[0]:
        raise ValueError(f"{names[1]}: expected {first.shape[0]} images to match {names[0]}, "
                         f"got {second.shape[0]}")


def check_targets(targets: Any, inputs: np.ndarray, name: str) -> np.ndarray:
    """Return training targets for `inputs`: the inputs when None, else images or digit labels."""
    if targets is None:
        return inputs
    if isinstance(targets, np.ndarray) and targets.ndim == 1:
        return check_labels(targets, inputs.shape[0], name)
    targets = check_images(targets, name)
    check_same_length(inputs, targets, ("the inputs", name))
    return targets


def check_codes(codes: Any, name: str = "codes", dimensions: int | None = None) -> np.ndarray:
    """Return finite latent codes as a float array of shape (N, D), D = `dimensions` if given."""
    codes = np.asarray(codes, dtype=np.float64)
    if codes.ndim != 2 or codes.shape[0] == 0 or (dimensions and codes.shape[1] != dimensions):
        shape = f"(N, {dimensions})" if dimensions else "(N, D)"
        raise ValueError(f"{name}: expected an array of shape {shape} with N >= 1, "
                         f"got {codes.shape}")
    if not np.all(np.isfinite(codes)):
        raise ValueError(f"{name}: expected finite values, got NaN or infinity")
    return codes


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------

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


def normalize_images(images: Any) -> np.ndarray:
    """Turn raw 0-255 pixel arrays (N, 28, 28) into float32 (N, 28, 28, 1) in [0, 1]."""
    if not isinstance(images, np.ndarray):
        raise TypeError(f"images: expected a NumPy array, got {type(images).__name__}")
    if not np.issubdtype(images.dtype, np.integer):
        raise ValueError(f"images: expected raw integer pixels 0-255 (uint8), got dtype "
                         f"{images.dtype}; float images look normalised already")
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"images: expected shape (N, 28, 28) or (N, 28, 28, 1) grey-scale "
                         f"28x28 images, got {images.shape}")
    if images.size and (images.min() < 0 or images.max() > 255):
        raise ValueError(f"images: expected pixel values 0-255, got values in "
                         f"[{images.min()}, {images.max()}]")
    return (images.astype(np.float32) / np.float32(255.0))[..., np.newaxis]


def add_gaussian_noise(images: np.ndarray, stddev: float, seed: int = DEFAULT_SEED) -> np.ndarray:
    """Return images plus N(0, stddev^2) pixel noise, clipped back to [0, 1]."""
    images = check_images(images)
    stddev = check_non_negative_float(stddev, "stddev")
    check_non_negative_int(seed, "seed")
    noisy = np.random.default_rng(seed).normal(0.0, stddev, size=images.shape)
    noisy += images  # in place: half a gigabyte less to allocate for the training set
    return np.clip(noisy, 0.0, 1.0, out=noisy).astype(np.float32)


def array_fingerprint(array: np.ndarray) -> str:
    """Return a short hash of an array's shape, dtype and bytes (for cache keys)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{array.shape}{array.dtype}".encode())
    digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------


def conv_feature_extractor(images: keras.KerasTensor) -> keras.KerasTensor:
    """Apply the assignment's trunk: two Conv2D + MaxPooling blocks, then Flatten."""
    hidden = layers.Conv2D(32, 3, activation="relu", padding="same")(images)
    hidden = layers.MaxPooling2D(2)(hidden)
    hidden = layers.Conv2D(64, 3, activation="relu", padding="same")(hidden)
    hidden = layers.MaxPooling2D(2)(hidden)
    return layers.Flatten()(hidden)


def build_decoder(latent_dim: int, name: str = "decoder") -> keras.Model:
    """Build the decoder of both tasks: Dense to 7x7x64, two ConvTranspose, sigmoid."""
    latent_dim = check_positive_int(latent_dim, "latent_dim")
    latent = keras.Input(shape=(latent_dim,), name="latent")
    hidden = layers.Dense(7 * 7 * 64, activation="relu")(latent)
    hidden = layers.Reshape((7, 7, 64))(hidden)
    hidden = layers.Conv2DTranspose(32, 3, strides=2, activation="relu",
                                    padding="same")(hidden)
    hidden = layers.Conv2DTranspose(16, 3, strides=2, activation="relu",
                                    padding="same")(hidden)
    images = layers.Conv2D(1, 3, activation="sigmoid", padding="same",
                           name="pixels")(hidden)
    return keras.Model(latent, images, name=name)


def build_autoencoder_encoder(latent_dim: int, input_scale: float = 1.0) -> keras.Model:
    """Build the Task 1 encoder: conv trunk, Dense(128), then a linear latent code.

    `input_scale` multiplies the pixels first: 255 feeds the network raw 0-255 values.
    """
    latent_dim = check_positive_int(latent_dim, "latent_dim")
    images = keras.Input(shape=IMAGE_SHAPE, name="images")
    scaled = layers.Rescaling(input_scale, name="input_scale")(images)
    hidden = conv_feature_extractor(scaled)
    hidden = layers.Dense(128, activation="relu")(hidden)
    code = layers.Dense(latent_dim, name="code")(hidden)
    return keras.Model(images, code, name="encoder")


class Autoencoder(keras.Model):
    """A convolutional autoencoder: `decoder(encoder(images))`."""

    def __init__(self, encoder: keras.Model, decoder: keras.Model,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.encoder = encoder
        self.decoder = decoder

    def call(self, images: Any, training: bool = False) -> Any:
        code = self.encoder(images, training=training)
        return self.decoder(code, training=training)


def build_autoencoder(latent_dim: int = 10, learning_rate: float = 1e-3,
                      input_scale: float = 1.0) -> Autoencoder:
    """Build and compile the Task 1 autoencoder: Adam, per-pixel cross-entropy."""
    learning_rate = check_learning_rate(learning_rate)
    input_scale = check_non_negative_float(input_scale, "input_scale")
    model = Autoencoder(build_autoencoder_encoder(latent_dim, input_scale),
                        build_decoder(latent_dim),
                        name=f"autoencoder_latent{latent_dim}")
    model(ops.zeros((1, *IMAGE_SHAPE)))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss="binary_crossentropy")
    return model


def build_vae_encoder(latent_dim: int = 2) -> keras.Model:
    """Build the VAE encoder: conv trunk, Dense(16), then `z_mean` and `z_log_var`."""
    latent_dim = check_positive_int(latent_dim, "latent_dim")
    images = keras.Input(shape=IMAGE_SHAPE, name="images")
    hidden = layers.Dense(16, activation="relu")(conv_feature_extractor(images))
    z_mean = layers.Dense(latent_dim, name="z_mean")(hidden)
    z_log_var = layers.Dense(latent_dim, name="z_log_var")(hidden)
    return keras.Model(images, [z_mean, z_log_var], name="encoder")


class Sampling(layers.Layer):
    """Draw z = z_mean + exp(z_log_var / 2) * epsilon, epsilon ~ N(0, I)."""

    def __init__(self, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs: Sequence[Any]) -> Any:
        z_mean, z_log_var = inputs
        # In the mean's dtype, so that the layer also runs under mixed precision.
        epsilon = keras.random.normal(ops.shape(z_mean), dtype=z_mean.dtype,
                                      seed=self.seed_generator)
        return z_mean + ops.exp(0.5 * z_log_var) * epsilon


def reconstruction_loss(targets: Any, reconstructions: Any) -> Any:
    """Return the pixel BCE summed over each image, averaged over the batch."""
    per_pixel = ops.binary_crossentropy(targets, reconstructions)
    return ops.mean(ops.sum(per_pixel, axis=(1, 2, 3)))


def kl_per_dimension(z_mean: Any, z_log_var: Any) -> Any:
    """Return KL(N(z_mean, exp(z_log_var)) || N(0, 1)) per image and dimension."""
    return -0.5 * (1.0 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var))


def kl_divergence(z_mean: Any, z_log_var: Any) -> Any:
    """Return KL(q(z|x) || N(0, I)) summed over dimensions, averaged over the batch."""
    return ops.mean(ops.sum(kl_per_dimension(z_mean, z_log_var), axis=1))


class VariationalAutoencoder(keras.Model):
    """A VAE trained on summed pixel BCE + kl_weight x KL(q(z|x) || N(0, I))."""

    def __init__(self, encoder: keras.Model, decoder: keras.Model,
                 kl_weight: float = 1.0, seed: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kl_weight = check_non_negative_float(kl_weight, "kl_weight")
        self.encoder = encoder
        self.decoder = decoder
        self.sampling = Sampling(seed=seed, name="sampling")
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction_loss")
        self.kl_tracker = keras.metrics.Mean(name="kl_loss")

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return [self.loss_tracker, self.reconstruction_tracker, self.kl_tracker]

    def call(self, images: Any, training: bool = False) -> Any:
        z_mean, z_log_var = self.encoder(images, training=training)
        z = self.sampling([z_mean, z_log_var])
        return self.decoder(z, training=training)

    def loss_terms(self, data: Any, training: bool) -> tuple[Any, Any]:
        """Return the reconstruction loss and the KL divergence of one batch."""
        # fit(x) passes the images alone; fit(x, y) and train_on_batch pass targets too.
        images, targets, _ = keras.utils.unpack_x_y_sample_weight(data)
        targets = images if targets is None else targets
        z_mean, z_log_var = self.encoder(images, training=training)
        z = self.sampling([z_mean, z_log_var])
        reconstructions = self.decoder(z, training=training)
        return (reconstruction_loss(targets, reconstructions),
                kl_divergence(z_mean, z_log_var))

    def train_step(self, data: Any) -> dict[str, Any]:
        with tf.GradientTape() as tape:
            reconstruction, kl = self.loss_terms(data, training=True)
            loss = reconstruction + self.kl_weight * kl
        gradients = tape.gradient(loss, self.trainable_weights)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_weights))
        return self.update_metrics(loss, reconstruction, kl)

    def test_step(self, data: Any) -> dict[str, Any]:
        reconstruction, kl = self.loss_terms(data, training=False)
        loss = reconstruction + self.kl_weight * kl
        return self.update_metrics(loss, reconstruction, kl)

    def update_metrics(self, loss: Any, reconstruction: Any, kl: Any) -> dict[str, Any]:
        """Add one batch's loss terms to the running means and return the means."""
        for tracker, value in zip(self.metrics, (loss, reconstruction, kl)):
            tracker.update_state(value)
        return {tracker.name: tracker.result() for tracker in self.metrics}


def build_vae(latent_dim: int = 2, kl_weight: float = 1.0, seed: int = DEFAULT_SEED,
              learning_rate: float = 2e-3) -> VariationalAutoencoder:
    """Build and compile the Task 2 VAE (Adam); `seed` fixes the sampling noise."""
    kl_weight = check_non_negative_float(kl_weight, "kl_weight")
    seed = check_non_negative_int(seed, "seed")
    learning_rate = check_learning_rate(learning_rate)
    model = VariationalAutoencoder(build_vae_encoder(latent_dim),
                                   build_decoder(latent_dim), kl_weight=kl_weight,
                                   seed=seed, name=f"vae_kl{kl_weight:g}")
    model(ops.zeros((1, *IMAGE_SHAPE)))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate))
    return model


def build_digit_classifier(learning_rate: float = 1e-3) -> keras.Model:
    """Build and compile a small CNN that tells the ten digits apart (the judge of samples)."""
    learning_rate = check_learning_rate(learning_rate)
    images = keras.Input(shape=IMAGE_SHAPE, name="images")
    hidden = layers.Dense(128, activation="relu")(conv_feature_extractor(images))
    hidden = layers.Dropout(0.3)(hidden)
    probabilities = layers.Dense(len(DIGITS), activation="softmax", name="digit")(hidden)
    model = keras.Model(images, probabilities, name="digit_classifier")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


# ---------------------------------------------------------------------------------------------
# Training: one entry point for every model, with a trained-model cache and epoch checkpoints
# ---------------------------------------------------------------------------------------------


class TrainingDivergedError(RuntimeError):
    """Training produced a NaN or infinite loss."""


@dataclasses.dataclass
class TrainingResult:
    """A trained model with its per-epoch history and how it was obtained."""

    model: keras.Model
    history: dict[str, list[float]]
    source: str  # "trained", "resumed" or "cache"
    seconds: float  # the model's training time, over every run that trained it
    cache_path: Path | None
    epoch_seconds: list[float] = dataclasses.field(default_factory=list)  # of this call

    @property
    def epochs(self) -> int:
        """Number of epochs in the history."""
        return len(next(iter(self.history.values()), []))

    def final(self, metric: str) -> float:
        """Return the last epoch's value of `metric` (for example `val_loss`)."""
        if metric not in self.history:
            raise ValueError(f"metric: expected one of {sorted(self.history)}, got {metric!r}")
        return self.history[metric][-1]


# Reached from training code but unable to change a trained model: left out of the key, so that
# rewording a progress line does not retrain anything. The key's own machinery is left out too:
# what it hashes is in the key, how it finds that is not.
NOT_IN_TRAINING_KEY = frozenset({
    "TrainingLog", "RunProgress", "format_duration", "TrainingResult", "TrainingDivergedError",
    "NOT_IN_TRAINING_KEY", "training_key", "training_code", "referenced_names", "source_of",
})


def referenced_names(item: Any) -> set[str]:
    """Return the global and attribute names that a function's or a class's code uses."""
    if isinstance(item, functools.partial):
        item = item.func
    if not inspect.isclass(item) and not hasattr(item, "__code__"):
        item = type(item)  # a callable object: its class's methods are its code
    if inspect.isclass(item):
        members = [getattr(member, "__func__", getattr(member, "fget", member))
                   for member in vars(item).values()]
        codes = [member.__code__ for member in members if inspect.isfunction(member)]
        names = {base.__name__ for base in item.__mro__[1:]}
    else:
        codes, names = [item.__code__], set()
    while codes:
        code = codes.pop()
        names.update(code.co_names)
        codes.extend(const for const in code.co_consts if inspect.iscode(const))
    return names


@functools.cache
def source_of(item: Any) -> str:
    """Return the source of a function or class, read once per process (inspect is slow)."""
    return inspect.getsource(item)


def training_code(*roots: Any) -> dict[str, str]:
    """Return the source of every function, class and constant of this module `roots` use.

    Names are followed through the code transitively, so the result is the part of the
    module that building and training a model runs: losses, layers, builders, the data
    pipeline and the loop. Plotting and reporting helpers are never reached. A module
    global replaced from the notebook (`ca4.kl_divergence = ...`) is followed too.
    """
    module_globals = globals()
    found: dict[str, str] = {}
    pending = list(roots)
    while pending:
        for name in referenced_names(pending.pop()):
            value = module_globals.get(name)
            if (name in found or name in NOT_IN_TRAINING_KEY or name.startswith("__")
                    or value is None):
                continue
            if inspect.isfunction(value) or inspect.isclass(value):
                if value.__module__ in (__name__, "__main__"):
                    found[name] = source_of(value)
                    pending.append(value)
            elif isinstance(value, (int, float, str, tuple, frozenset)):
                found[name] = repr(value)
    return dict(sorted(found.items()))


def model_signature(model: keras.Model) -> list[Any]:
    """Describe a model's layers and optimiser without the layer names Keras numbers."""

    def strip_names(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip_names(v) for k, v in sorted(value.items()) if k != "name"}
        if isinstance(value, (list, tuple)):
            return [strip_names(v) for v in value]
        return value

    description: list[Any] = [type(model).__name__, getattr(model, "kl_weight", None)]
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.Model):
            continue
        description.append([type(layer).__name__, strip_names(layer.get_config()),
                            [list(v.shape) for v in layer.weights]])
    description.append(strip_names(keras.optimizers.serialize(model.optimizer)))
    description.append(getattr(model, "loss", None))
    return description


def variables_digest(model: keras.Model) -> str:
    """Return a hash of a model's variables: initial weights and random-generator states."""
    digest = hashlib.blake2b(digest_size=16)
    for variable in model.variables:
        digest.update(np.ascontiguousarray(variable.numpy()).tobytes())
    return digest.hexdigest()


def training_key(model: keras.Model, build_model: Callable[[], keras.Model],
                 settings: Mapping[str, Any]) -> str:
    """Return a hash of everything that changes a trained model (README: the cache)."""
    payload = {
        "format": CACHE_FORMAT_VERSION,
        "code": training_code(train_model, build_model, type(model)),
        "architecture": model_signature(model),
        "initial_variables": variables_digest(model),
        "settings": dict(settings),
        "versions": library_versions(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def training_state(model: keras.Model) -> list[keras.Variable]:
    """Return every variable a resumed run needs: weights, RNG states, optimiser slots."""
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    return list(model.variables) + list(model.optimizer.variables)


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
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


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
    if bytes(stored.pop("key", b"")).decode(errors="replace") != key:
        raise ValueError(f"{path.name}: written for another training key")
    history = json.loads(bytes(stored.pop("history_json")).decode())
    seconds = float(stored.pop("training_seconds", 0.0))
    if len(stored) != len(variables):
        raise ValueError(f"{path.name}: holds {len(stored)} variables, "
                         f"the model has {len(variables)}")
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


def pipeline_options() -> tf.data.Options:
    """Return the tf.data options of every pipeline the project builds.

    Autotuning off: on the project's 2-core VMs, autotuned pipelines put a share of the
    epochs into a mode in which the training threads wait and an epoch takes up to twice
    as long (benchmarks/README.md). The pipelines only gather batches from memory, so a
    fixed prefetch on one thread of their own keeps ahead of training on any machine.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    options.threading.private_threadpool_size = 1
    options.threading.max_intra_op_parallelism = 1
    return options


def make_dataset(inputs: np.ndarray, targets: np.ndarray, batch_size: int,
                 orders: np.ndarray | None = None) -> tf.data.Dataset:
    """Batch (input, target) pairs: one pass per row of `orders` (index permutations).

    Without `orders`, one pass in the stored order (validation and prediction).
    """
    inputs_tensor = tf.convert_to_tensor(inputs)
    targets_tensor = inputs_tensor if targets is inputs else tf.convert_to_tensor(targets)
    if orders is None:
        orders = np.arange(len(inputs))[np.newaxis]
    dataset = tf.data.Dataset.from_tensor_slices(orders).flat_map(
        lambda order: tf.data.Dataset.from_tensor_slices(order).batch(batch_size))
    # flat_map hides the length; Keras needs it to end each pass without a warning.
    batches = len(orders) * math.ceil(orders.shape[1] / batch_size)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(batches))
    dataset = dataset.map(lambda index: (tf.gather(inputs_tensor, index),
                                         tf.gather(targets_tensor, index)))
    return dataset.prefetch(2).with_options(pipeline_options())


def epoch_orders(size: int, seed: int, epochs: range) -> np.ndarray:
    """Return the shuffled image order of each epoch, fixed by (seed, epoch)."""
    return np.stack([np.random.default_rng([seed, epoch]).permutation(size)
                     for epoch in epochs])


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


class TrainingLog(keras.callbacks.Callback):
    """Everything train_model prints: a line per epoch and a one-line record per model.

    An epoch line gives the losses, the seconds, and the time left for the model and (with a
    RunProgress) for the run's training. Not in the cache key: rewording changes no model.
    """

    def __init__(self, name: str, epochs: int, say: Callable[[str], None] | None,
                 run: RunProgress | None = None) -> None:
        super().__init__()
        self.name, self.epochs, self.run = name, epochs, run
        self.say = say or (lambda line: None)
        self.seconds: list[float] = []
        self.started = 0.0

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
        self.seconds.append(time.perf_counter() - self.started)
        logs = logs or {}
        losses = "  ".join(f"{metric} {logs[metric]:.4g}" for metric in ("loss", "val_loss")
                           if metric in logs)
        left = statistics.mean(self.seconds) * (self.epochs - epoch - 1)
        line = (f"  {self.name} epoch {epoch + 1}/{self.epochs}  {losses}  "
                f"{self.seconds[-1]:.1f} s  | {format_duration(left)} left")
        if self.run is not None:
            self.run.add_trained_epoch(self.seconds[-1])
            line += f" | run: about {format_duration(self.run.seconds_left())} of training left"
        self.say(line)

    def record(self, source: str, history: Mapping[str, list[float]], seconds: float) -> None:
        """Print the model's record: epochs, training time, final validation loss."""
        epochs = len(history.get("loss", []))
        loss = f", val_loss {history['val_loss'][-1]:.3g}" if history.get("val_loss") else ""
        self.say(f"{self.name} {source}: {epochs} epoch{'s' * (epochs != 1)} in "
                 f"{format_duration(seconds)}{loss}")

    def cached(self, history: Mapping[str, list[float]], seconds: float) -> None:
        """Report a model loaded from the cache."""
        if self.run is not None:
            self.run.add_skipped_epochs(self.epochs)
        self.record("from the cache", history, seconds)

    def resumed(self, start: int) -> None:
        """Report a run that continues from the checkpoint of an interrupted one."""
        if self.run is not None:
            self.run.add_skipped_epochs(start)
        self.say(f"{self.name}: resuming after epoch {start} of {self.epochs} "
                 f"from an interrupted run")

    def damaged(self, path: Path, error: ValueError) -> None:
        """Report a cache entry or checkpoint that could not be used."""
        kind = "checkpoint" if path.name.endswith(".partial.npz") else "cache entry"
        self.say(f"{self.name}: damaged {kind} ignored and retrained ({error})")


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


def train_model(build_model: Callable[[], keras.Model], train_images: np.ndarray,
                validation_images: np.ndarray, *, name: str, epochs: int,
                batch_size: int = BATCH_SIZE, seed: int = DEFAULT_SEED,
                train_targets: np.ndarray | None = None,
                validation_targets: np.ndarray | None = None,
                cache_dir: str | os.PathLike | None = None, retrain: bool | None = None,
                final_learning_rate_fraction: float = 0.1,
                log: Callable[[str], None] | None = print,
                run: RunProgress | None = None) -> TrainingResult:
    """Seed, build and train a model, or load it from the cache; validate every epoch.

    Targets default to the inputs (an autoencoder) and may be digit labels. The learning
    rate decays step by step on a cosine from the model's own value to
    `final_learning_rate_fraction` of it. Results are cached under `cache_dir` (default
    build/cache/) by `training_key`; each finished epoch is checkpointed, so an interrupted
    run resumes. `retrain=True` (or $CA4_RETRAIN=1) ignores the cache. `log` gets one line
    per epoch and a one-line record; `run` counts the epochs for the run's time estimate.
    """
    if not re.fullmatch(r"[A-Za-z0-9_-]+", str(name)):
        raise ValueError(f"name: expected letters, digits, '_' or '-' (a file name), got {name!r}")
    train_images = check_images(train_images, "train_images")
    validation_images = check_images(validation_images, "validation_images")
    train_targets = check_targets(train_targets, train_images, "train_targets")
    validation_targets = check_targets(validation_targets, validation_images,
                                       "validation_targets")
    epochs = check_positive_int(epochs, "epochs")
    steps_per_epoch = math.ceil(len(train_images) / check_positive_int(batch_size, "batch_size"))
    if retrain is None:
        retrain = os.environ.get("CA4_RETRAIN", "").strip() not in ("", "0", "false", "no")
    report = TrainingLog(name, epochs, log, run)

    set_seed(seed)
    model = build_model()
    model.optimizer.learning_rate = keras.optimizers.schedules.CosineDecay(
        float(model.optimizer.learning_rate), epochs * steps_per_epoch,
        alpha=final_learning_rate_fraction)
    data = [array_fingerprint(array) for array in
            (train_images, train_targets, validation_images, validation_targets)]
    key = training_key(model, build_model, {"epochs": epochs, "batch_size": batch_size,
                                            "seed": seed, "data": data})
    folder = Path(cache_dir) if cache_dir is not None else build_dir() / "cache"
    cache_path = folder / f"{name}-{key[:16]}.npz"
    checkpoint_path = cache_path.with_suffix(".partial.npz")

    cached = None if retrain else restore(model, cache_path, key, report)
    if cached is not None:
        history, seconds = cached
        report.cached(history, seconds)
        return TrainingResult(model, history, "cache", seconds, cache_path)
    resumed = None if retrain else restore(model, checkpoint_path, key, report)
    history, seconds = resumed or ({}, 0.0)
    start = len(history.get("loss", []))
    if resumed:
        report.resumed(start)
    checkpoint = EpochCheckpoint(name, epochs, checkpoint_path, key, history, seconds)
    if start < epochs:
        orders = epoch_orders(len(train_images), seed, range(start, epochs))
        model.fit(make_dataset(train_images, train_targets, batch_size, orders),
                  validation_data=make_dataset(validation_images, validation_targets,
                                               PREDICT_BATCH_SIZE),
                  epochs=epochs, initial_epoch=start, steps_per_epoch=steps_per_epoch,
                  shuffle=False, verbose=0,
                  callbacks=[keras.callbacks.TerminateOnNaN(), checkpoint, report])
    os.replace(checkpoint_path, cache_path)  # the last epoch's checkpoint is the finished model
    report.record("trained", history, checkpoint.seconds)
    return TrainingResult(model, history, "resumed" if resumed else "trained",
                          checkpoint.seconds, cache_path, checkpoint.epoch_seconds)


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


def run_kl_sweep(train_images: np.ndarray, validation_images: np.ndarray, *,
                 kl_weights: Sequence[float] = KL_WEIGHTS, epochs: int,
                 seed: int = DEFAULT_SEED, latent_dim: int = 2, **training_options: Any
                 ) -> dict[float, TrainingResult]:
    """Train one VAE per KL weight with the same seed and data; return them by weight."""
    if len(kl_weights) == 0:
        raise ValueError("kl_weights: expected at least one KL weight, got none")
    weights = [check_non_negative_float(w, "kl_weights") for w in kl_weights]
    return {
        weight: train_model(lambda w=weight: build_vae(latent_dim, w, seed), train_images,
                            validation_images, name=f"vae_kl{weight:g}".replace(".", "p"),
                            epochs=epochs, seed=seed, **training_options)
        for weight in weights
    }


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------

# A latent dimension whose average KL to the prior is below this carries almost no information
# about the image: the KL bounds what z_d can tell about x, and 0.01 nats is less than 1/60 of
# the ln 2 = 0.69 nats needed to tell even two kinds of image apart. Above it, it is "active".
ACTIVE_DIMENSION_NATS = 0.01
# The classifier "recognises" a digit when its top probability reaches this.
CONFIDENCE = 0.9


def predict(model: keras.Model, images: np.ndarray,
            batch_size: int = PREDICT_BATCH_SIZE) -> Any:
    """Run `model` on normalised images in batches, silently (no progress bar)."""
    images = check_images(images)
    batch_size = check_positive_int(batch_size, "batch_size")
    return model.predict(images, batch_size=batch_size, verbose=0)


def decode_codes(decoder: keras.Model, codes: np.ndarray) -> np.ndarray:
    """Decode latent codes (N, D) into images (N, 28, 28, 1) in large batches."""
    codes = check_codes(codes, dimensions=decoder.input_shape[-1]).astype(np.float32)
    return np.asarray(decoder.predict(codes, batch_size=PREDICT_BATCH_SIZE, verbose=0))


def first_of_each_digit(labels: np.ndarray) -> np.ndarray:
    """Return the index of the first image of each digit 0-9, in digit order."""
    if not isinstance(labels, np.ndarray):
        raise TypeError(f"labels: expected a NumPy array of digit labels, "
                        f"got {type(labels).__name__}")
    labels = check_labels(labels, labels.shape[0])
    missing = sorted(set(DIGITS) - set(labels.tolist()))
    if missing:
        raise ValueError(f"labels: expected every digit 0-9 at least once, "
                         f"digits {missing} are missing")
    return np.array([int(np.argmax(labels == digit)) for digit in DIGITS])


def vae_encode(model: VariationalAutoencoder, images: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """Return the encoder's z_mean and z_log_var for each image."""
    if not isinstance(model, VariationalAutoencoder):
        raise TypeError(f"model: expected a VariationalAutoencoder, got {type(model).__name__}")
    z_mean, z_log_var = predict(model.encoder, images)
    return np.asarray(z_mean), np.asarray(z_log_var)


def vae_reconstructions(model: VariationalAutoencoder, images: np.ndarray) -> np.ndarray:
    """Return the VAE's mean reconstructions: the decoder applied to z_mean, no sampling."""
    return decode_codes(model.decoder, vae_encode(model, images)[0])


def kl_by_dimension(model: VariationalAutoencoder, images: np.ndarray) -> np.ndarray:
    """Return each latent dimension's KL to the prior, averaged over `images`."""
    z_mean, z_log_var = vae_encode(model, images)
    return np.asarray(ops.mean(kl_per_dimension(z_mean, z_log_var), axis=0), dtype=np.float64)


def binary_cross_entropy(targets: Any, predictions: Any) -> np.ndarray:
    """Return Keras' binary cross-entropy of every value (predictions clipped to [1e-7, 1-1e-7])."""
    targets = np.asarray(targets, dtype=np.float32)
    predictions = np.asarray(predictions, dtype=np.float32)
    if targets.shape != predictions.shape:
        raise ValueError(f"predictions: expected shape {targets.shape} to match targets, "
                         f"got {predictions.shape}")
    return np.asarray(ops.binary_crossentropy(targets, predictions))


def mean_binary_cross_entropy(targets: np.ndarray, predictions: np.ndarray) -> float:
    """Return the mean per-pixel binary cross-entropy of predicted images."""
    targets, predictions = check_matching_images(targets, predictions)
    return float(np.mean(binary_cross_entropy(targets, predictions), dtype=np.float64))


def mean_squared_error(targets: np.ndarray, predictions: np.ndarray) -> float:
    """Return the mean per-pixel squared error between two image arrays."""
    targets, predictions = check_matching_images(targets, predictions)
    return float(np.mean((targets.astype(np.float64) - predictions) ** 2))


def denoising_report(clean: np.ndarray, noisy: np.ndarray, denoised: np.ndarray
                     ) -> dict[str, float]:
    """Compare noisy and denoised images with the clean ones (MSE, and how many times closer)."""
    noisy_mse = mean_squared_error(clean, noisy)
    denoised_mse = mean_squared_error(clean, denoised)
    return {"noisy_mse": noisy_mse, "denoised_mse": denoised_mse,
            "mse_ratio": noisy_mse / max(denoised_mse, 1e-12)}


def dead_unit_share(encoder: keras.Model, images: np.ndarray) -> float:
    """Return the share of the encoder's ReLU units (channels) that stay 0 on every image."""
    relu_layers = [layer for layer in encoder.layers
                   if getattr(layer, "activation", None) is keras.activations.relu]
    if not relu_layers:
        raise ValueError("encoder: expected layers with ReLU activations, found none")
    probe = keras.Model(encoder.inputs, [layer.output for layer in relu_layers])
    outputs = probe.predict(check_images(images), batch_size=PREDICT_BATCH_SIZE, verbose=0)
    # A unit is a channel: the last axis of a convolution's or a dense layer's output.
    active = [np.any(np.asarray(output).reshape(-1, output.shape[-1]) > 0, axis=0)
              for output in outputs]
    return 1.0 - float(np.mean(np.concatenate(active)))


def pca_2d(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project codes (N, D) on their first two principal components; return points, ratios."""
    from sklearn.decomposition import PCA

    codes = check_codes(codes)
    if codes.shape[0] < 2 or codes.shape[1] < 2:
        raise ValueError(f"codes: expected an (N, D) array with N >= 2 and D >= 2, "
                         f"got {codes.shape}")
    pca = PCA(n_components=2, random_state=0)
    return pca.fit_transform(codes), pca.explained_variance_ratio_


def knn_accuracy(train_codes: np.ndarray, train_labels: np.ndarray, test_codes: np.ndarray,
                 test_labels: np.ndarray, neighbours: int = 5) -> float:
    """Return the test accuracy of a k-nearest-neighbour digit classifier on latent codes."""
    from sklearn.neighbors import KNeighborsClassifier

    train_codes, test_codes = check_codes(train_codes, "train_codes"), check_codes(
        test_codes, "test_codes", dimensions=np.shape(train_codes)[1])
    train_labels = check_labels(train_labels, len(train_codes), "train_labels")
    test_labels = check_labels(test_labels, len(test_codes), "test_labels")
    if check_positive_int(neighbours, "neighbours") > len(train_codes):
        raise ValueError(f"neighbours: expected at most the {len(train_codes)} training codes, "
                         f"got {neighbours}")
    classifier = KNeighborsClassifier(n_neighbors=neighbours)
    return float(classifier.fit(train_codes, train_labels).score(test_codes, test_labels))


def vae_sweep_table(results: Mapping[float, TrainingResult], images: np.ndarray
                    ) -> list[dict[str, Any]]:
    """Summarise a KL-weight sweep on validation images: loss terms, -ELBO, KL per dimension."""
    rows = []
    for kl_weight, result in results.items():
        reconstruction = result.final("val_reconstruction_loss")
        kl = result.final("val_kl_loss")
        per_dimension = kl_by_dimension(result.model, images)
        rows.append({"kl_weight": float(kl_weight), "epochs": result.epochs,
                     "val_loss": result.final("val_loss"),
                     "val_reconstruction_loss": reconstruction, "val_kl_loss": kl,
                     "val_neg_elbo": reconstruction + kl,
                     "val_kl_per_dimension": [float(value) for value in per_dimension],
                     "active_dimensions": int(np.sum(per_dimension > ACTIVE_DIMENSION_NATS))})
    return rows


def latent_grid_points(points_per_side: int = 15, extent: float = 2.0,
                       spacing: str = "linear",
                       bounds: Sequence[Sequence[float]] | None = None) -> np.ndarray:
    """Return an (n*n, 2) grid of latent points, row-major from the top left.

    Linear spacing covers [-extent, extent]^2, or `bounds` ((z0 low, high), (z1 low, high));
    Gaussian spacing puts the points at the 5 % ... 95 % quantiles of N(0, 1).
    """
    from scipy.stats import norm

    points_per_side = check_positive_int(points_per_side, "points_per_side")
    extent = check_non_negative_float(extent, "extent")
    if bounds is not None and np.shape(bounds) != (2, 2):
        raise ValueError(f"bounds: expected ((z0 low, high), (z1 low, high)), got {bounds!r}")
    if spacing == "linear":
        limits = bounds if bounds is not None else ((-extent, extent),) * 2
        axes = [np.linspace(low, high, points_per_side) for low, high in limits]
    elif spacing == "gaussian":
        axes = [norm.ppf(np.linspace(0.05, 0.95, points_per_side))] * 2
    else:
        raise ValueError(f"spacing: expected 'linear' or 'gaussian', got {spacing!r}")
    # Rows run from high z[1] at the top to low at the bottom, as on a plot's y-axis.
    z1, z0 = np.meshgrid(axes[1][::-1], axes[0], indexing="ij")
    return np.stack([z0.ravel(), z1.ravel()], axis=1).astype(np.float32)


def tile_images(images: np.ndarray, columns: int) -> np.ndarray:
    """Tile images (N, 28, 28[, 1]) into one (28 rows, 28 columns) sheet, row by row."""
    images = np.asarray(images)
    images = images[..., 0] if images.ndim == 4 else images
    columns = check_positive_int(columns, "columns")
    if images.ndim != 3 or images.shape[0] % columns:
        raise ValueError(f"images: expected (N, 28, 28) with N a multiple of {columns}, "
                         f"got {images.shape}")
    rows = images.shape[0] // columns
    height, width = images.shape[1:]
    return images.reshape(rows, columns, height, width).transpose(0, 2, 1, 3).reshape(
        rows * height, columns * width)


def decode_latent_grid(decoder: keras.Model, points_per_side: int = 15, extent: float = 2.0,
                       spacing: str = "linear",
                       bounds: Sequence[Sequence[float]] | None = None) -> np.ndarray:
    """Decode a 2-D latent grid in one batched call and tile it into one image."""
    points = latent_grid_points(points_per_side, extent, spacing, bounds)
    if tuple(decoder.input_shape[1:]) != (2,):
        raise ValueError(f"decoder: expected a decoder of a 2-D latent space, got input shape "
                         f"{decoder.input_shape}")
    return tile_images(np.asarray(decoder(points, training=False)), points_per_side)


def latent_grid_coverage(means: np.ndarray, points_per_side: int = 15,
                         extent: float = 2.0) -> float:
    """Return the share of the grid's cells over [-extent, extent]^2 that hold a code."""
    means = check_codes(means, "means", dimensions=2)
    points_per_side = check_positive_int(points_per_side, "points_per_side")
    if check_non_negative_float(extent, "extent") == 0:
        raise ValueError("extent: expected a number > 0, got 0")
    edges = np.linspace(-extent, extent, points_per_side + 1)
    counts, _, _ = np.histogram2d(means[:, 0], means[:, 1], bins=[edges, edges])
    return float(np.mean(counts > 0))


def grid_neighbour_change(grid_image: np.ndarray) -> dict[str, Any]:
    """Return the mean-pixel change between neighbouring tiles of a decoded 2-D grid.

    `mean` and `max` over all neighbours; `along` the mean change between horizontal
    neighbours (a step in z[0]) and between vertical ones (a step in z[1]).
    """
    grid_image = np.asarray(grid_image)
    if (grid_image.ndim != 2 or grid_image.shape[0] != grid_image.shape[1]
            or grid_image.shape[0] % 28 or grid_image.shape[0] < 56):
        raise ValueError(f"grid_image: expected a (28n, 28n) image with n >= 2, "
                         f"got shape {grid_image.shape}")
    n = grid_image.shape[0] // 28
    tiles = grid_image.reshape(n, 28, n, 28).transpose(0, 2, 1, 3)
    along_z1 = np.abs(np.diff(tiles, axis=0)).mean(axis=(2, 3)).ravel()
    along_z0 = np.abs(np.diff(tiles, axis=1)).mean(axis=(2, 3)).ravel()
    changes = np.concatenate([along_z1, along_z0])
    return {"mean": float(changes.mean()), "max": float(changes.max()),
            "along": [float(along_z0.mean()), float(along_z1.mean())]}


def latent_space_table(means_by_weight: Mapping[float, np.ndarray],
                       decoders: Mapping[float, keras.Model], points_per_side: int,
                       extent: float) -> list[dict[str, float]]:
    """Measure each VAE's code space: spread, grid coverage, change between grid neighbours."""
    rows = []
    for kl_weight, means in means_by_weight.items():
        grid = decode_latent_grid(decoders[kl_weight], points_per_side, extent)
        change = grid_neighbour_change(grid)
        rows.append({"kl_weight": float(kl_weight),
                     "z_std": [float(value) for value in np.std(means, axis=0)],
                     "coverage": latent_grid_coverage(means, points_per_side, extent),
                     "neighbour_change": change["mean"], "largest_change": change["max"],
                     "change_along": change["along"]})
    return rows


def classify(classifier: keras.Model, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return each image's predicted digit and the classifier's probability for it."""
    probabilities = np.asarray(predict(classifier, images))
    return probabilities.argmax(axis=1), probabilities.max(axis=1)


def normalised_entropy(counts: Sequence[float]) -> float:
    """Return the entropy of a histogram divided by its maximum, log(number of bins)."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size < 2 or np.any(counts < 0) or counts.sum() <= 0:
        raise ValueError(f"counts: expected >= 2 non-negative counts with a positive sum, "
                         f"got {counts.tolist()}")
    shares = counts[counts > 0] / counts.sum()
    return float(-(shares * np.log(shares)).sum() / np.log(counts.size))


def generation_report(digits: np.ndarray, confidences: np.ndarray) -> dict[str, float]:
    """Judge generated digits by a classifier's verdicts: confidence and variety."""
    digits = np.asarray(digits)
    if digits.size == 0:
        raise ValueError("digits: expected at least one classified sample, got none")
    digits = check_labels(digits, len(digits), "digits")
    confidences = np.asarray(confidences, dtype=np.float64)
    if confidences.shape != digits.shape:
        raise ValueError(f"confidences: expected one per digit, shape {digits.shape}, "
                         f"got {confidences.shape}")
    counts = np.bincount(digits, minlength=len(DIGITS))
    return {"samples": int(len(digits)),
            "confident_share": float(np.mean(confidences >= CONFIDENCE)),
            "digit_entropy": normalised_entropy(counts),
            "least_digit_share": float(counts.min() / len(digits))}


def sample_prior(count: int, seed: int = DEFAULT_SEED, latent_dim: int = 2) -> np.ndarray:
    """Draw `count` latent codes from the VAE prior N(0, I), reproducibly."""
    rng = np.random.default_rng(check_non_negative_int(seed, "seed"))
    return rng.standard_normal((check_positive_int(count, "count"),
                                check_positive_int(latent_dim, "latent_dim")))


def sample_fitted_gaussian(codes: np.ndarray, count: int, seed: int = DEFAULT_SEED
                           ) -> np.ndarray:
    """Draw `count` codes from the Gaussian fitted to `codes` (mean and covariance)."""
    codes = check_codes(codes)
    if len(codes) < 2:
        raise ValueError(f"codes: expected at least 2 codes to fit a covariance, "
                         f"got {len(codes)}")
    rng = np.random.default_rng(check_non_negative_int(seed, "seed"))
    return rng.multivariate_normal(codes.mean(axis=0), np.cov(codes, rowvar=False),
                                   size=check_positive_int(count, "count"))


def interpolate_codes(start: np.ndarray, end: np.ndarray, frames: int = 10) -> np.ndarray:
    """Return `frames` codes evenly spaced on the straight line from `start` to `end`."""
    start, end = np.asarray(start, dtype=np.float64), np.asarray(end, dtype=np.float64)
    if start.ndim != 1:
        raise ValueError(f"start: expected one code, a 1-D array, got shape {start.shape}")
    if end.shape != start.shape:
        raise ValueError(f"end: expected a code of shape {start.shape} like start, "
                         f"got {end.shape}")
    if check_positive_int(frames, "frames") < 2:
        raise ValueError(f"frames: expected at least 2 (both ends), got {frames}")
    weights = np.linspace(0.0, 1.0, frames)[:, np.newaxis]
    return (1.0 - weights) * start + weights * end


def interpolation_report(frames: np.ndarray, digits: np.ndarray, confidences: np.ndarray,
                         pair: Sequence[int]) -> dict[str, float]:
    """Judge a decoded path between two digits: its largest step and its unclear frames.

    A step is the mean absolute pixel change between neighbouring frames; a frame is unclear
    when the classifier does not call it one of the two end digits with confidence.
    """
    frames = check_images(frames, "frames")
    steps = np.abs(np.diff(frames.astype(np.float64), axis=0)).mean(axis=(1, 2, 3))
    clear = np.isin(digits, list(pair)) & (np.asarray(confidences) >= CONFIDENCE)
    return {"largest_step": float(steps.max()), "unclear_share": float(1.0 - clear.mean())}


# ---------------------------------------------------------------------------------------------
# Plotting: every figure is drawn at the width it is printed at in the PDF
# ---------------------------------------------------------------------------------------------

# nbconvert prints a figure at most 0.9 x the 6.5 in text width of its LaTeX page. Drawn at that
# width, a figure prints at 100 %, so its text prints at the font sizes below (7 pt and up)
# and at REPORT_STYLE's 144 pixels per inch.
PRINT_WIDTH = 5.85
# One colour map for every image of digits: dark ink on white paper.
INK = "gray_r"
REPORT_STYLE = {
    "figure.dpi": 144, "savefig.dpi": 144, "font.size": 8, "axes.titlesize": 8.5,
    "axes.labelsize": 8, "xtick.labelsize": 7, "ytick.labelsize": 7, "legend.fontsize": 7,
    "legend.title_fontsize": 7.5, "figure.titlesize": 9.5, "image.cmap": INK,
}
# One colour per digit in every scatter plot.
DIGIT_COLOURS = np.array(matplotlib.colormaps["tab10"].colors)


def use_report_style() -> None:
    """Set matplotlib to the report's figure resolution and font sizes."""
    plt.rcParams.update(REPORT_STYLE)


def new_figure(rows: int, columns: int, height: float, **options: Any
               ) -> tuple[matplotlib.figure.Figure, np.ndarray]:
    """Return a PRINT_WIDTH-wide figure with a rows x columns array of axes."""
    return plt.subplots(rows, columns, figsize=(PRINT_WIDTH, height), squeeze=False,
                        layout="constrained", **options)


def show_image(axis: matplotlib.axes.Axes, image: np.ndarray) -> None:
    """Draw a grey-scale image in [0, 1] on `axis` as ink on paper."""
    axis.imshow(np.squeeze(image), cmap=INK, vmin=0.0, vmax=1.0)


def plot_image_rows(rows: Mapping[str, np.ndarray], title: str,
                    column_labels: Sequence[str] | None = None) -> matplotlib.figure.Figure:
    """Draw one labelled row of images per entry of `rows`: the one image-row plotter."""
    if not rows:
        raise ValueError("rows: expected at least one row of images, got none")
    arrays = {label: check_images(images, f"rows[{label!r}]") for label, images in rows.items()}
    columns = {images.shape[0] for images in arrays.values()}
    if len(columns) != 1:
        raise ValueError(f"rows: expected the same number of images in every row, "
                         f"got {sorted(columns)}")
    n_columns = columns.pop()
    if column_labels is not None and len(column_labels) != n_columns:
        raise ValueError(f"column_labels: expected {n_columns} labels, got {len(column_labels)}")
    image_width = min(0.5, (PRINT_WIDTH - 1.1) / n_columns)
    height = image_width * len(arrays) * 1.08 + 0.35 + (0.15 if column_labels else 0)
    figure, axes = new_figure(len(arrays), n_columns, height)
    for row, (label, images) in enumerate(arrays.items()):
        for column in range(n_columns):
            axis = axes[row, column]
            show_image(axis, images[column])
            axis.set_xticks([])
            axis.set_yticks([])
            if column == 0:
                axis.set_ylabel(label, rotation=0, ha="right", va="center")
            if row == 0 and column_labels is not None:
                axis.set_title(column_labels[column], fontsize=7)
    figure.suptitle(title)
    return figure


def plot_loss_curves(histories: Mapping[str, Mapping[str, Sequence[float]]],
                     metrics: Sequence[str] = ("loss",), title: str = "Loss per epoch",
                     ylabels: Mapping[str, str] | None = None) -> matplotlib.figure.Figure:
    """Plot each run's training (solid) and validation (dashed) curves, a panel per metric."""
    if not histories:
        raise ValueError("histories: expected at least one history, got none")
    if not metrics:
        raise ValueError("metrics: expected at least one metric name, got none")
    for run, history in histories.items():
        for metric in metrics:
            if metric not in history or f"val_{metric}" not in history:
                raise ValueError(f"histories[{run!r}]: expected '{metric}' and 'val_{metric}', "
                                 f"got {sorted(history)}")
    figure, axes = new_figure(1, len(metrics), 2.4 + 0.15 * math.ceil(len(histories) / 2))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for axis, metric in zip(axes[0], metrics):
        for index, (run, history) in enumerate(histories.items()):
            epochs = np.arange(1, len(history[metric]) + 1)
            colour = colours[index % len(colours)]
            axis.plot(epochs, history[metric], color=colour, marker="o", markersize=2.5,
                      label=f"{run} (train)")
            axis.plot(epochs, history[f"val_{metric}"], color=colour, linestyle="--",
                      marker="s", markersize=2.5, label=f"{run} (validation)")
        axis.set_title(metric.replace("_", " "))
        axis.set_xlabel("epoch")
        axis.set_ylabel((ylabels or {}).get(metric, metric.replace("_", " ")))
        axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
    # One legend under the panels, out of the curves' way.
    handles, labels = axes[0, 0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=2)
    figure.suptitle(title)
    return figure


def scatter_latent_codes(points: np.ndarray, labels: np.ndarray, axis: matplotlib.axes.Axes,
                         xlabel: str, ylabel: str, title: str) -> None:
    """Scatter 2-D points on `axis`, one colour per digit (add_digit_legend explains them)."""
    points = check_codes(points, "points", dimensions=2)
    labels = check_labels(labels, points.shape[0])
    axis.scatter(points[:, 0], points[:, 1], c=DIGIT_COLOURS[labels], s=2, alpha=0.5,
                 linewidths=0, rasterized=True)
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.set_title(title)


def add_digit_legend(figure: matplotlib.figure.Figure) -> None:
    """Add one legend of the ten digit colours on the right of the figure."""
    handles = [matplotlib.lines.Line2D([], [], marker="o", linestyle="", markersize=4,
                                       color=DIGIT_COLOURS[digit]) for digit in DIGITS]
    figure.legend(handles, [str(digit) for digit in DIGITS], title="Digit",
                  loc="outside right center")


def plot_latent_pca(codes: np.ndarray, labels: np.ndarray,
                    title: str = "Latent codes of the test set, PCA to 2-D"
                    ) -> matplotlib.figure.Figure:
    """Project latent codes to 2-D with PCA and scatter them by digit."""
    points, ratios = pca_2d(codes)
    figure, axes = new_figure(1, 1, 4.0)
    scatter_latent_codes(points, labels, axes[0, 0], f"PC 1 ({ratios[0]:.1%} of variance)",
                         f"PC 2 ({ratios[1]:.1%} of variance)", title)
    add_digit_legend(figure)
    return figure


def mark_region(axis: matplotlib.axes.Axes, bounds: Sequence[Sequence[float]],
                label: str) -> None:
    """Outline the rectangle `bounds` ((x low, high), (y low, high)) on `axis`."""
    (x0, x1), (y0, y1) = bounds
    axis.add_patch(matplotlib.patches.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False,
                                                linestyle="--", linewidth=0.8, color="0.2",
                                                label=label))


def plot_latent_means(means_by_run: Mapping[str, np.ndarray], labels: np.ndarray,
                      title: str = "z_mean of the test set", extent: float = 2.0,
                      columns: int = 2) -> matplotlib.figure.Figure:
    """Scatter each run's 2-D latent means by digit on shared axes, the grid's region marked."""
    if not means_by_run:
        raise ValueError("means_by_run: expected at least one run, got none")
    means_by_run = {run: check_codes(means, f"means_by_run[{run!r}]", dimensions=2)
                    for run, means in means_by_run.items()}
    rows = math.ceil(len(means_by_run) / check_positive_int(columns, "columns"))
    columns = min(columns, len(means_by_run))
    figure, axes = new_figure(rows, columns, (PRINT_WIDTH - 0.8) / columns * rows + 0.5,
                              sharex=True, sharey=True)
    # One square view for all runs, wide enough for every code and the marked region.
    limit = 1.05 * max(1.1 * extent, *(float(np.max(np.abs(m))) for m in means_by_run.values()))
    for axis, (run, means) in zip(axes.flat, means_by_run.items()):
        scatter_latent_codes(means, labels, axis, "z[0]", "z[1]", run)
        mark_region(axis, ((-extent, extent),) * 2, f"[-{extent:g}, {extent:g}]²")
        axis.set(xlim=(-limit, limit), ylim=(-limit, limit), aspect="equal")
        axis.tick_params(labelbottom=True)  # sharex hides them above a hidden panel too
    for axis in axes.flat[len(means_by_run):]:
        axis.set_visible(False)
    add_digit_legend(figure)
    figure.suptitle(title)
    return figure


def grid_ticks(values: np.ndarray, tile: int = 28) -> tuple[np.ndarray, list[str]]:
    """Return pixel positions and labels of round latent values along a decoded grid's axis."""
    low, high = float(values.min()), float(values.max())
    ticks = matplotlib.ticker.MaxNLocator(nbins=4).tick_values(low, high)
    ticks = ticks[(ticks >= low - 1e-9) & (ticks <= high + 1e-9)]
    index = np.interp(ticks, values, np.arange(len(values))) if values[0] < values[-1] else (
        np.interp(ticks, values[::-1], np.arange(len(values))[::-1]))
    return tile * index + (tile - 1) / 2, [f"{tick:g}" for tick in ticks]


def show_latent_grid(axis: matplotlib.axes.Axes, grid: np.ndarray, points: np.ndarray,
                     title: str) -> None:
    """Draw a decoded grid on `axis` with its latent coordinates on the axes."""
    n = int(round(math.sqrt(len(points))))
    show_image(axis, grid)
    axis.set_xticks(*grid_ticks(points[:n, 0]))
    axis.set_yticks(*grid_ticks(points[::n, 1]))
    axis.set_xlabel("z[0]")
    axis.set_ylabel("z[1]")
    axis.set_title(title)


def plot_image_sheets(sheets: Mapping[str, np.ndarray], title: str, columns: int = 2,
                      grid_points: Mapping[str, np.ndarray] | None = None
                      ) -> matplotlib.figure.Figure:
    """Show tiled image sheets side by side; with `grid_points`, as latent grids with axes."""
    if not sheets:
        raise ValueError("sheets: expected at least one sheet of images, got none")
    if grid_points is not None and set(grid_points) != set(sheets):
        raise ValueError(f"grid_points: expected the latent points of the sheets "
                         f"{sorted(sheets)}, got {sorted(grid_points)}")
    columns = min(check_positive_int(columns, "columns"), len(sheets))
    rows = math.ceil(len(sheets) / columns)
    panel = (PRINT_WIDTH - 0.3) / columns
    figure, axes = new_figure(rows, columns, rows * (panel + 0.25) + 0.3)
    figure.get_layout_engine().set(wspace=0.06, hspace=0.04)  # keep neighbouring sheets apart
    for axis, (name, sheet) in zip(axes.flat, sheets.items()):
        if grid_points is not None:
            show_latent_grid(axis, sheet, grid_points[name], name)
        else:
            show_image(axis, sheet)
            axis.set_axis_off()
            axis.set_title(name)
    for axis in axes.flat[len(sheets):]:
        axis.set_visible(False)
    figure.suptitle(title)
    return figure


def plot_latent_grids(decoders: Mapping[str, keras.Model], points_per_side: int = 15,
                      extent: float = 2.0, spacing: str = "linear",
                      title: str = "Decoded latent grid", columns: int = 2
                      ) -> matplotlib.figure.Figure:
    """Show each decoder's decoded latent grid, latent coordinates on the axes."""
    if not decoders:
        raise ValueError("decoders: expected at least one decoder, got none")
    points = latent_grid_points(points_per_side, extent, spacing)
    sheets = {run: decode_latent_grid(decoder, points_per_side, extent, spacing)
              for run, decoder in decoders.items()}
    return plot_image_sheets(sheets, title, columns, {run: points for run in sheets})


def plot_codes_beside_grids(models: Mapping[str, tuple[np.ndarray, keras.Model]],
                            labels: np.ndarray, points_per_side: int = 15,
                            title: str = "Codes and decoded grids") -> matplotlib.figure.Figure:
    """For each 2-D model: its test codes by digit above its decoder over those codes' span.

    The span is the 1st to 99th percentile of each coordinate, outlined on the scatter.
    """
    if not models:
        raise ValueError("models: expected at least one (codes, decoder) pair, got none")
    panel = (PRINT_WIDTH - 0.8) / len(models)
    figure, axes = new_figure(2, len(models), 2 * panel + 0.7)
    for column, (name, (codes, decoder)) in enumerate(models.items()):
        codes = check_codes(codes, f"models[{name!r}]", dimensions=2)
        bounds = np.percentile(codes, [1, 99], axis=0).T
        scatter_latent_codes(codes, labels, axes[0, column], "z[0]", "z[1]",
                             f"{name}: test codes")
        mark_region(axes[0, column], bounds, "decoded region")
        points = latent_grid_points(points_per_side, bounds=bounds)
        grid = decode_latent_grid(decoder, points_per_side, bounds=bounds)
        show_latent_grid(axes[1, column], grid, points, f"{name}: decoded grid")
    add_digit_legend(figure)
    figure.suptitle(title)
    return figure


# ---------------------------------------------------------------------------------------------
# Latent-space explorer: sliders over a trained VAE's 2-D code, in JupyterLab
# ---------------------------------------------------------------------------------------------

# What the executed notebook's text and the PDF show in the explorer's place.
EXPLORER_NOTE = ("Interactive latent-space explorer: open the notebook in JupyterLab "
                 "(make lab) to use it.")
# Each slider spans the 1st to 99th percentile of the model's test means along its coordinate,
# widened by this share of that span on both sides, in at most EXPLORER_STEPS round steps.
EXPLORER_MARGIN = 0.1
EXPLORER_STEPS = 200
# The decoded digit is drawn EXPLORER_ZOOM screen pixels per image pixel.
EXPLORER_ZOOM = 7


def explorer_ranges(means: np.ndarray) -> np.ndarray:
    """Return each coordinate's slider [low, high, step] for one model's test means.

    The 1st to 99th percentile of the means, widened by EXPLORER_MARGIN of that span on both
    sides, in at most EXPLORER_STEPS round steps (1, 2 or 5 times a power of ten), with both
    ends on the step grid so that z = 0 is a slider position.
    """
    means = check_codes(means, "means", dimensions=2)
    rows = []
    for low, high in np.percentile(means, [1, 99], axis=0).T:
        # A collapsed coordinate spans almost nothing; keep its slider movable.
        margin = EXPLORER_MARGIN * max(high - low, 0.05)
        low, high = low - margin, high + margin
        raw = (high - low) / EXPLORER_STEPS
        power = 10.0 ** math.floor(math.log10(raw))
        step = next(power * factor for factor in (1, 2, 5, 10) if power * factor >= raw)
        rows.append([math.floor(low / step) * step, math.ceil(high / step) * step, step])
    return np.round(np.array(rows), 12)


def png_bytes(pixels: np.ndarray) -> bytes:
    """Encode an (H, W, 3 or 4) uint8 array as PNG."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def digit_png(image: np.ndarray, zoom: int = EXPLORER_ZOOM) -> bytes:
    """Return a decoded digit in [0, 1] as a PNG in the INK colour map, `zoom` x enlarged."""
    rgb = matplotlib.colormaps[INK](np.clip(np.squeeze(image), 0, 1))[..., :3]
    rgb = np.repeat(np.repeat(rgb, zoom, axis=0), zoom, axis=1)
    return png_bytes(np.round(rgb * 255).astype(np.uint8))


class LatentScatter:
    """One model's test means by digit, drawn once; `png(z)` adds only the marker at z."""

    def __init__(self, name: str, means: np.ndarray, labels: np.ndarray,
                 ranges: np.ndarray) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        with matplotlib.rc_context(REPORT_STYLE):
            # Not a pyplot figure: the notebook's inline backend never shows it.
            self.figure = matplotlib.figure.Figure(figsize=(2.9, 2.25), dpi=90,
                                                   layout="constrained")
            self.canvas = FigureCanvasAgg(self.figure)
            self.axis = self.figure.add_subplot()
            scatter_latent_codes(means, labels, self.axis, "z[0]", "z[1]",
                                 f"{name}: test means")
            self.axis.set(xlim=ranges[0, :2], ylim=ranges[1, :2])
            add_digit_legend(self.figure)
            (self.marker,) = self.axis.plot([], [], marker="X", markersize=10, color="black",
                                            markeredgecolor="white", animated=True)
            self.canvas.draw()  # the animated marker is left out of this background
            self.background = self.canvas.copy_from_bbox(self.figure.bbox)

    def png(self, z: Sequence[float]) -> bytes:
        """Return the scatter with the marker at `z`, as PNG."""
        self.canvas.restore_region(self.background)
        self.marker.set_data([z[0]], [z[1]])
        self.axis.draw_artist(self.marker)
        return png_bytes(np.asarray(self.canvas.buffer_rgba()))


class LatentExplorer(widgets.VBox):
    """The widget `latent_explorer` returns; in a PDF or plain text it is EXPLORER_NOTE."""

    def __init__(self, decoders: Mapping[str, keras.Model], means: Mapping[str, np.ndarray],
                 labels: np.ndarray, classifier: keras.Model) -> None:
        self.decoders, self.classifier = dict(decoders), classifier
        self.ranges = {name: explorer_ranges(means[name]) for name in decoders}
        first = means[next(iter(decoders))]
        self.start = np.median(first, axis=0)  # a typical code of the first model
        self.scatters = {name: LatentScatter(name, means[name], labels, self.ranges[name])
                         for name in decoders}
        self.choice = widgets.ToggleButtons(options=list(decoders),
                                            style={"button_width": "auto"})
        self.sliders = [widgets.FloatSlider(description=f"z[{d}]", continuous_update=True)
                        for d in range(2)]
        size = f"{28 * EXPLORER_ZOOM}px"
        self.digit = widgets.Image(format="png", layout=widgets.Layout(width=size,
                                                                       height=size))
        self.position = widgets.Image(format="png")
        self.reading = widgets.Label()
        self.decoded = np.zeros(IMAGE_SHAPE[:2], np.float32)
        self.updates = 0  # decodes so far, one per change
        self._switching = False
        super().__init__([widgets.HBox([widgets.Label("VAE"), self.choice]),
                          widgets.HBox(self.sliders),
                          widgets.HBox([self.digit, self.position],
                                       layout=widgets.Layout(align_items="center")),
                          self.reading])
        self.add_class("ca4-latent-explorer")
        self.choice.observe(self._model_changed, "value")
        for slider in self.sliders:
            slider.observe(self._z_changed, "value")
        self._model_changed()

    @property
    def z(self) -> tuple[float, float]:
        return self.sliders[0].value, self.sliders[1].value

    def _model_changed(self, change: Any = None) -> None:
        """Give the sliders the chosen model's range (z stays where it fits), redraw.

        The first time, z starts at the median of the first model's test means.
        """
        self._switching = True
        try:
            ranges = self.ranges[self.choice.value]
            for slider, (low, high, step), start in zip(self.sliders, ranges, self.start):
                decimals = max(0, -math.floor(math.log10(step)))
                value = round(float(slider.value if change else start) / step) * step
                with slider.hold_sync(), slider.hold_trait_notifications():
                    slider.min, slider.max, slider.step = float(low), float(high), float(step)
                    slider.value = round(float(np.clip(value, low, high)), decimals)
                    slider.readout_format = f".{decimals}f"
        finally:
            self._switching = False
        self._redraw()

    def _z_changed(self, change: Any) -> None:
        if not self._switching:
            self._redraw()

    def _redraw(self) -> None:
        """Decode z with the chosen model (one image), classify it, update both panels."""
        name, z = self.choice.value, np.array([self.z], np.float32)
        self.decoded = np.asarray(self.decoders[name](z, training=False))[0, ..., 0]
        probabilities = np.asarray(self.classifier(self.decoded[None, ..., None],
                                                   training=False))[0]
        digit = int(np.argmax(probabilities))
        self.digit.value = digit_png(self.decoded)
        self.position.value = self.scatters[name].png(z[0])
        self.reading.value = (f"classifier reads: digit {digit} "
                              f"(p = {probabilities[digit]:.2f})")
        self.updates += 1

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        # JupyterLab renders the widget view; text and the PDF export get the note.
        bundle = super()._repr_mimebundle_(**kwargs)
        return {**bundle, "text/plain": EXPLORER_NOTE, "text/markdown": f"*{EXPLORER_NOTE}*"}


def latent_explorer(decoders: Mapping[str, keras.Model], means: Mapping[str, np.ndarray],
                    labels: np.ndarray, classifier: keras.Model) -> LatentExplorer:
    """Return an interactive explorer of trained VAEs' 2-D latent spaces (ipywidgets).

    `decoders` and `means` are keyed by the same model names ("KL weight 1"): each decoder
    maps a 2-D code to a 28x28 image and `means` holds the z_mean of the test images, whose
    digits are `labels`. The explorer has a choice of model, two sliders for z over that
    model's own code range (explorer_ranges), the decoded digit beside the model's scatter of
    test means with a marker at z, and the `classifier`'s reading of the decoded digit. Each
    change decodes one point, so it answers in milliseconds on a CPU. Displayed outside
    JupyterLab (nbconvert, the PDF) it is the one-line EXPLORER_NOTE.
    """
    if not isinstance(decoders, Mapping) or not decoders:
        raise ValueError(f"decoders: expected a non-empty mapping of model names to decoders, "
                         f"got {decoders!r}")
    for name, decoder in decoders.items():
        if (not isinstance(decoder, keras.Model) or tuple(decoder.input_shape[1:]) != (2,)
                or tuple(decoder.output_shape[1:]) != IMAGE_SHAPE):
            raise ValueError(f"decoders[{name!r}]: expected a keras.Model from 2-D codes to "
                             f"28x28x1 images, got {decoder!r}")
    if not isinstance(means, Mapping) or set(means) != set(decoders):
        keys = sorted(means) if isinstance(means, Mapping) else type(means).__name__
        raise ValueError(f"means: expected the test means of the models {sorted(decoders)}, "
                         f"got {keys}")
    if not isinstance(labels, np.ndarray):
        raise ValueError(f"labels: expected a NumPy array of digit labels, "
                         f"got {type(labels).__name__}")
    labels = check_labels(labels, labels.shape[0] if labels.ndim else 0)
    means = {name: check_codes(means[name], f"means[{name!r}]", dimensions=2)
             for name in decoders}
    for name, codes in means.items():
        if codes.shape[0] != labels.shape[0]:
            raise ValueError(f"means[{name!r}]: expected one mean per label "
                             f"({labels.shape[0]}), got {codes.shape[0]}")
    if (not isinstance(classifier, keras.Model)
            or tuple(classifier.output_shape[1:]) != (len(DIGITS),)):
        raise ValueError(f"classifier: expected a keras.Model with {len(DIGITS)} digit "
                         f"probabilities per image, got {classifier!r}")
    return LatentExplorer(decoders, means, labels, classifier)


# ---------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------


def layer_rows(model: keras.Model) -> list[dict[str, Any]]:
    """Return one row per layer of a Functional model: name, type, output shape, parameters."""
    if not isinstance(model, keras.Model) or not hasattr(model, "layers"):
        raise TypeError(f"model: expected a keras.Model, got {type(model).__name__}")
    return [{"layer": layer.name, "type": type(layer).__name__,
             "output": str(tuple(layer.output.shape)) if hasattr(layer, "output") else "",
             "parameters": layer.count_params()} for layer in model.layers]


def summary_markdown(*models: keras.Model) -> str:
    """Render the layers of one or more models as Markdown tables (a PDF-friendly summary)."""
    if not models:
        raise ValueError("models: expected at least one model, got none")
    parts = []
    for model in models:
        table = markdown_table(layer_rows(model), {"layer": "Layer", "type": "Type",
                                                  "output": "Output shape",
                                                  "parameters": "Parameters|,"})
        parts.append(f"**{model.name}** ({model.count_params():,} parameters)\n\n{table}")
    return "\n\n".join(parts)


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Mapping[str, str]) -> str:
    """Render rows as a Markdown table; `columns` maps each key to 'Header|format'.

    The dashes under each header are as many as the column's widest entry: pandoc sizes the
    PDF's columns in that proportion, so long headers do not run into their neighbours.
    """
    if not rows:
        raise ValueError("rows: expected at least one row, got none")
    headers, formats = [], []
    for key, spec in columns.items():
        header, _, fmt = spec.partition("|")
        headers.append(header)
        formats.append((key, fmt))
    body = [[format(row[key], fmt) if fmt else str(row[key]) for key, fmt in formats]
            for row in rows]
    widths = [max(3, len(header), *(len(cells[i]) for cells in body))
              for i, header in enumerate(headers)]
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join("-" * width for width in widths) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines)


def show_source(*objects: Any) -> Any:
    """Return the source code of functions or classes, syntax-highlighted for the report."""
    from IPython.display import Code

    if not objects or not all(inspect.isfunction(o) or inspect.isclass(o) for o in objects):
        raise TypeError(f"objects: expected functions or classes, got {objects!r}")
    return Code("\n\n".join(source_of(item).rstrip() for item in objects), language="python")


def joined(values: Sequence[Any], spec: str = "", separator: str = " / ") -> str:
    """Format values for a sentence: `joined([0.1, 1, 5], "g")` gives '0.1 / 1 / 5'."""
    return separator.join(format(value, spec) for value in values)


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


# ---------------------------------------------------------------------------------------------
# Headless execution and the PDF (used by `make run`, `make pdf` and the tests)
# ---------------------------------------------------------------------------------------------

PDF_TOOLS = {"xelatex": "texlive-xetex", "pandoc": "pandoc"}
PDF_PACKAGES = "texlive-xetex texlive-fonts-recommended texlive-plain-generic pandoc"
# nbconvert's LaTeX template ("latex"), changed for the report: no LaTeX title (the notebook's
# first heading is the title), unnumbered headings (they read as in the notebook), code in
# \small so that lines of up to 88 characters fit without wrapping, and a character missing
# from the fonts stops the export (\tracinglostchars=3) instead of silently dropping out.
PDF_TEMPLATE = r"""((*- extends 'index.tex.j2' -*))
((* block commands *))
((( super() )))
\setcounter{secnumdepth}{0}
\tracinglostchars=3
\fvset{fontsize=\small}
((* endblock commands *))
((* block maketitle *))((* endblock maketitle *))
"""


def missing_pdf_tools() -> list[str]:
    """Return the PDF tools (xelatex, pandoc) not on PATH."""
    return [tool for tool in PDF_TOOLS if shutil.which(tool) is None]


def pdf_tools_message() -> str:
    """Return how to install the missing PDF tools, or an empty string when none is missing."""
    missing = missing_pdf_tools()
    if not missing:
        return ""
    return (f"PDF export needs {', '.join(missing)}, which is not installed. On Debian/Ubuntu: "
            f"sudo apt-get install --no-install-recommends {PDF_PACKAGES}")


def section_titles(notebook: Any) -> dict[str, str]:
    """Map each code cell's id to the headings it sits under ('Task 1 > Training')."""
    titles: dict[str, str] = {}
    headings: dict[int, str] = {}
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            for match in re.finditer(r"^(#{1,3})\s+(.+)$", cell.source, re.MULTILINE):
                level = len(match[1])
                headings = {k: v for k, v in headings.items() if k < level}
                headings[level] = match[2].strip()
        elif cell.cell_type == "code":
            titles[cell.id] = " > ".join(headings[level] for level in sorted(headings))
    return titles


def execute_notebook(source: str | os.PathLike, target: str | os.PathLike, profile: str,
                     timeout: int = 4 * 3600, stream: Any = sys.stdout) -> Path:
    """Execute a notebook headlessly with papermill, PROFILE injected as a parameter.

    With a `stream`, what the notebook prints reaches it as it happens, each section's
    heading when the run gets there, and the time since the start.
    """
    import nbformat
    import papermill
    from traitlets.config import Config

    profile = get_profile(profile).name
    titles = section_titles(nbformat.read(source, as_version=4))
    started, shown = time.perf_counter(), [""]

    def announce(cell: Any, **_: Any) -> None:
        title = titles.get(cell.get("id"), "")
        if stream is not None and title and title != shown[0]:
            shown[0] = title
            stream.write(f"[{format_duration(time.perf_counter() - started)}] {title}\n")
            stream.flush()

    Path(target).parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(
        str(source), str(target), parameters={"PROFILE": profile}, kernel_name="python3",
        cwd=str(PROJECT_DIR), progress_bar=False, stdout_file=stream, stderr_file=stream,
        execution_timeout=timeout, on_cell_start=announce,
        # Unix sockets between runner and kernel: nothing on TCP, and no warning about it.
        config=Config({"KernelManager": {"transport": "ipc"}}))
    return Path(target)


def export_pdf(notebook_path: str | os.PathLike, pdf_path: str | os.PathLike) -> Path:
    """Export an executed notebook to the report PDF with nbconvert.

    Cells tagged `hide-input` show their output only; epoch progress lines are dropped, each
    model's one-line record stays; the LaTeX template is PDF_TEMPLATE.
    """
    import jinja2
    import nbconvert
    import nbformat
    from traitlets.config import Config

    class DropEpochLines(nbconvert.preprocessors.Preprocessor):
        """Remove TrainingLog's epoch lines from printed output."""

        def preprocess_cell(self, cell: Any, resources: Any, index: int) -> tuple[Any, Any]:
            for output in cell.get("outputs", []):
                if output.get("output_type") == "stream":
                    lines = output.text.splitlines(keepends=True)
                    output.text = "".join(line for line in lines if not EPOCH_LINE.match(line))
            return cell, resources

    message = pdf_tools_message()
    if message:
        raise RuntimeError(message)
    config = Config()
    config.TagRemovePreprocessor.enabled = True
    config.TagRemovePreprocessor.remove_input_tags = ("hide-input",)
    # Two xelatex passes settle the PDF's bookmarks; nbconvert's default third changes nothing.
    exporter = nbconvert.PDFExporter(
        config=config, template_file="ca4_report.tex.j2", latex_count=2,
        extra_loaders=[jinja2.DictLoader({"ca4_report.tex.j2": PDF_TEMPLATE})])
    exporter.register_preprocessor(DropEpochLines, enabled=True)
    notebook = nbformat.read(Path(notebook_path), as_version=4)
    body, _ = exporter.from_notebook_node(notebook, resources={"metadata": {"name": "ca4"}})
    pdf_path = Path(pdf_path)
    pdf_path.parent.mkdir(parents=True, exist_ok=True)
    pdf_path.write_bytes(body)
    return pdf_path


def preflight(need_pdf: bool = True) -> None:
    """Fail fast, before any training: MNIST must be found and checked, the PDF tools present."""
    load_mnist()
    if need_pdf and missing_pdf_tools():
        raise SystemExit(pdf_tools_message())


def main(arguments: Sequence[str] | None = None) -> int:
    """Command line: `preflight`, `execute` and `pdf` for the Makefile."""
    parser = argparse.ArgumentParser(prog="python -m ca4_helpers", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("preflight", help="check MNIST and the PDF tools before a run")
    check.add_argument("--no-pdf", action="store_true", help="do not require the PDF tools")
    run = commands.add_parser("execute", help="execute the notebook headlessly")
    run.add_argument("--profile", default=os.environ.get("CA4_PROFILE", "full"))
    run.add_argument("--source", default=str(PROJECT_DIR / "ca4.ipynb"))
    run.add_argument("--target", default=str(build_dir() / "ca4.ipynb"))
    pdf = commands.add_parser("pdf", help="export the executed notebook to PDF")
    pdf.add_argument("--source", default=str(build_dir() / "ca4.ipynb"))
    pdf.add_argument("--target", default=str(build_dir() / "ca4.pdf"))
    options = parser.parse_args(arguments)
    try:
        if options.command == "preflight":
            preflight(need_pdf=not options.no_pdf)
            print("preflight: MNIST found and checked"
                  + ("" if options.no_pdf else "; PDF tools present"))
        elif options.command == "execute":
            started = time.perf_counter()
            print(f"executing ca4.ipynb, profile {options.profile!r} -> {options.target}")
            execute_notebook(options.source, options.target, options.profile)
            print(f"executed in {format_duration(time.perf_counter() - started)}")
        else:
            export_pdf(options.source, options.target)
            print(f"wrote {options.target}")
    except MnistFileError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
