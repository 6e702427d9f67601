"""The ca4 coursework: autoencoders and variational autoencoders on MNIST (TensorFlow / Keras 3).

This module holds what the assignment teaches and a grader marks, in the order a reader meets
it, as in the Keras VAE example: the data, the Task 1 autoencoder, the Task 2 VAE (encoder,
`Sampling`, the two loss terms, the model with its `train_step` and `test_step`), the one
training entry point `train_model` and the KL-weight sweep. The notebook `ca4.ipynb` imports it
as `ca4` and prints its graded parts from here.

Everything else lives in rooms of the `ca4lib` package, which this module imports and which
never import it: settings, argument checks, the MNIST file checks, the cache key, checkpoints
and the training log (what `train_model` uses), then the analyses, figures, report and
discussion (what the notebook uses after training). README, *Architecture*, has the map.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ca4lib.backend import keras, layers, ops, tf
from ca4lib.cache_key import array_fingerprint, training_key
from ca4lib.checkpoints import EpochCheckpoint, remove_interrupted_writes, restore
from ca4lib.checks import (
    check_fraction,
    check_images,
    check_model_settings,
    check_non_negative_float,
    check_non_negative_int,
    check_positive_int,
    check_retrain,
    check_targets,
)
from ca4lib.inference import decode_codes
from ca4lib.mnist import MnistFileError, load_mnist
from ca4lib.progress import RunProgress
from ca4lib.settings import (
    BATCH_SIZE,
    DEFAULT_SEED,
    DIGITS,
    IMAGE_SHAPE,
    KL_WEIGHTS,
    PREDICT_BATCH_SIZE,
    build_dir,
    vae_name,
)
from ca4lib.training_log import TrainingLog
from ca4lib.vae_analyses import bernoulli_log_likelihood, sample_posterior, vae_encode

__all__ = [
    # Data
    "load_mnist", "MnistFileError", "normalize_images", "add_gaussian_noise",
    # Task 1: the convolutional autoencoder
    "conv_feature_extractor", "build_decoder", "build_autoencoder_encoder", "Autoencoder",
    "build_autoencoder",
    # Task 2: the variational autoencoder
    "build_vae_encoder", "Sampling", "reconstruction_loss", "kl_per_dimension", "kl_divergence",
    "VariationalAutoencoder", "build_vae",
    # The digit classifier the report measures with
    "build_digit_classifier",
    # Training
    "set_seed", "TrainingResult", "make_dataset", "train_model", "run_kl_sweep",
    # The VAE's loss terms on the test images
    "vae_test_terms",
]


# ---------------------------------------------------------------------------------------------
# Data: MNIST, normalised (load_mnist and its file checks: ca4lib.mnist)
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Models: the Task 1 autoencoder, the Task 2 VAE and its losses, the digit classifier
# ---------------------------------------------------------------------------------------------


def conv_feature_extractor(images: keras.KerasTensor) -> keras.KerasTensor:
    """Apply the assignment's trunk: two Conv2D + MaxPooling blocks, then Flatten."""
    hidden = layers.Conv2D(32, 3, activation="relu", padding="same")(images)
    hidden = layers.MaxPooling2D(2)(hidden)
    hidden = layers.Conv2D(64, 3, activation="relu", padding="same")(hidden)
    hidden = layers.MaxPooling2D(2)(hidden)
    return layers.Flatten()(hidden)


def build_decoder(latent_dim: int, channels: Sequence[int] = (32, 16),
                  name: str = "decoder") -> keras.Model:
    """Build the decoder of both tasks: Dense to 7x7x64, a stride-2 ConvTranspose per
    entry of `channels` (7x7 to 14x14 to 28x28), then a 3x3 convolution, sigmoid."""
    latent = keras.Input(shape=(latent_dim,), name="latent")
    hidden = layers.Dense(7 * 7 * 64, activation="relu")(latent)
    hidden = layers.Reshape((7, 7, 64))(hidden)
    for width in channels:
        hidden = layers.Conv2DTranspose(width, 3, strides=2, activation="relu",
                                        padding="same")(hidden)
    images = layers.Conv2D(1, 3, activation="sigmoid", padding="same",
                           name="pixels")(hidden)
    return keras.Model(latent, images, name=name)


def build_autoencoder_encoder(latent_dim: int, input_scale: float = 1.0) -> keras.Model:
    """Build the Task 1 encoder: conv trunk, Dense(128), then a linear latent code.

    `input_scale` multiplies the pixels first: 255 feeds the network raw 0-255 values.
    """
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
    check_model_settings(latent_dim=latent_dim, learning_rate=learning_rate,
                         input_scale=input_scale)
    model = Autoencoder(build_autoencoder_encoder(latent_dim, input_scale),
                        build_decoder(latent_dim),
                        name=f"autoencoder_latent{latent_dim}")
    model(ops.zeros((1, *IMAGE_SHAPE)))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss="binary_crossentropy")
    return model


def build_vae_encoder(latent_dim: int = 2) -> keras.Model:
    """Build the VAE encoder: conv trunk, Dense(16), then `z_mean` and `z_log_var`."""
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
        self.kl_weight = kl_weight
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
    check_model_settings(latent_dim=latent_dim, kl_weight=kl_weight, seed=seed,
                         learning_rate=learning_rate)
    model = VariationalAutoencoder(build_vae_encoder(latent_dim),
                                   build_decoder(latent_dim), kl_weight=kl_weight,
                                   seed=seed, name=f"vae_kl{kl_weight:g}")
    model(ops.zeros((1, *IMAGE_SHAPE)))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate))
    return model


def build_digit_classifier(learning_rate: float = 1e-3) -> keras.Model:
    """Build and compile a small CNN that tells the ten digits apart (the judge of samples)."""
    check_model_settings(learning_rate=learning_rate)
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


def set_seed(seed: int) -> None:
    """Seed Python, NumPy, TensorFlow and Keras so that a run repeats exactly on the CPU."""
    check_non_negative_int(seed, "seed")
    keras.utils.set_random_seed(seed)


@dataclasses.dataclass
class TrainingResult:
    """A trained model with its per-epoch history and how it was obtained."""

    name: str
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

    The one training entry point of the project.

    Parameters
    ----------
    build_model : callable
        Returns a compiled model; called once, after seeding.
    train_images, validation_images : ndarray
        Normalised images, (N, 28, 28, 1) in [0, 1].
    name : str
        Letters, digits, `_` and `-`: names the cache file and the printed lines.
    epochs, batch_size, seed : int
        The training run. The images are shuffled anew each epoch, fixed by (seed, epoch).
    train_targets, validation_targets : ndarray, optional
        Images or digit labels; default: the inputs (an autoencoder).
    cache_dir : path, optional
        Where trained models are kept (default `build/cache/`).
    retrain : bool, optional
        True trains even when the cache holds the model; default: $CA4_RETRAIN.
    final_learning_rate_fraction : float
        The learning rate decays step by step on a cosine from the optimiser's own value to
        this fraction of it. A builder that set a learning-rate schedule keeps it (and the
        log says so).
    log : callable, optional
        Receives a line per epoch and a one-line record per model; None is silent.
    run : RunProgress, optional
        Counts the epochs of the whole run for its estimate of the time left.

    Returns
    -------
    TrainingResult
        The model, its per-epoch history, and whether it was trained, resumed or loaded.
    """
    if not re.fullmatch(r"[A-Za-z0-9_-]+", str(name)):
        raise ValueError(f"name: expected letters, digits, '_' or '-' (a file name), got {name!r}")
    train_images = check_images(train_images, "train_images")
    validation_images = check_images(validation_images, "validation_images")
    train_targets = check_targets(train_targets, train_images, "train_targets")
    validation_targets = check_targets(validation_targets, validation_images,
                                       "validation_targets")
    epochs = check_positive_int(epochs, "epochs")
    batch_size = check_positive_int(batch_size, "batch_size")
    fraction = check_fraction(final_learning_rate_fraction, "final_learning_rate_fraction")
    retrain = check_retrain(retrain)
    report = TrainingLog(name, epochs, log, run)

    set_seed(seed)
    model = build_model()
    steps = epochs * math.ceil(len(train_images) / batch_size)
    if isinstance(model.optimizer.get_config()["learning_rate"], Mapping):
        report.say(f"{name}: keeps the learning-rate schedule its builder set "
                   f"(final_learning_rate_fraction does not apply)")
    else:
        model.optimizer.learning_rate = keras.optimizers.schedules.CosineDecay(
            float(model.optimizer.learning_rate), steps, alpha=fraction)
    arrays = (train_images, train_targets, validation_images, validation_targets)
    # An autoencoder's targets are its inputs: each distinct array is hashed once.
    fingerprints = {id(array): array_fingerprint(array) for array in arrays}
    data = [fingerprints[id(array)] for array in arrays]
    key = _training_key(model, build_model, {"epochs": epochs, "batch_size": batch_size,
                                             "seed": seed, "data": data})
    folder = Path(cache_dir) if cache_dir is not None else build_dir() / "cache"
    cache_path = folder / f"{name}-{key[:16]}.npz"
    checkpoint_path = cache_path.with_suffix(".partial.npz")
    remove_interrupted_writes(folder, name)

    cached = None if retrain else restore(model, cache_path, key, report)
    if cached is not None:
        history, seconds = cached
        report.finished("from the cache", history, seconds, cache_path)
        return TrainingResult(name, model, history, "cache", seconds, cache_path)
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
                  epochs=epochs, initial_epoch=start, steps_per_epoch=steps // epochs,
                  shuffle=False, verbose=0,
                  callbacks=[keras.callbacks.TerminateOnNaN(), checkpoint, report])
    os.replace(checkpoint_path, cache_path)  # the last epoch's checkpoint is the finished model
    report.finished("trained", history, checkpoint.seconds, cache_path)
    return TrainingResult(name, model, history, "resumed" if resumed else "trained",
                          checkpoint.seconds, cache_path, checkpoint.epoch_seconds)


def _training_key(model: keras.Model, build_model: Callable[[], keras.Model],
                  settings: Mapping[str, Any]) -> str:
    """The cache key of a model that train_model trains: its code, train_model's, and both
    reach (ca4lib.cache_key.training_key)."""
    return training_key(model, [train_model, build_model], settings)


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
                            validation_images, name=vae_name(weight, seed),
                            epochs=epochs, seed=seed, **training_options)
        for weight in weights
    }


# ---------------------------------------------------------------------------------------------
# Evaluation: the VAE's loss terms on each test image
# ---------------------------------------------------------------------------------------------


def vae_test_terms(model: VariationalAutoencoder, images: np.ndarray, seed: int = DEFAULT_SEED
                   ) -> dict[str, np.ndarray]:
    """Per image: the VAE loss terms (one z ~ q(z|x) per image, as Keras' validation does),
    the reconstruction term at z = z_mean, the KL per dimension, and the posterior."""
    z_mean, z_log_var = vae_encode(model, images)
    z = sample_posterior(z_mean, z_log_var, seed)
    kl = np.asarray(kl_per_dimension(z_mean, z_log_var), np.float64)
    return {"reconstruction": -bernoulli_log_likelihood(images, decode_codes(model.decoder, z)),
            "mean_reconstruction": -bernoulli_log_likelihood(
                images, decode_codes(model.decoder, z_mean)),
            "kl_per_dimension": kl, "kl": kl.sum(axis=1), "z_mean": z_mean,
            "z_log_var": z_log_var, "z": z}
