"""Bad arguments to public functions fail fast with an error that names the argument."""

from __future__ import annotations

import re
import types

import numpy as np
import pytest

import ca4_helpers as ca4

GOOD = np.full((2, 28, 28, 1), 0.5, dtype=np.float32)


def with_value(value: float) -> np.ndarray:
    images = GOOD.copy()
    images[1, 3, 4, 0] = value
    return images


def never_built():
    raise AssertionError("the model was built before the arguments were checked")


def train(**overrides):
    """Call train_model with cheap valid arguments except for `overrides` (nothing may train)."""
    arguments = {"build_model": never_built, "train_images": GOOD, "validation_images": GOOD,
                 "name": "check", "epochs": 1, "batch_size": 2, "log": None}
    arguments.update(overrides)
    return ca4.train_model(**arguments)


def labels_for_two(labels):
    return ca4.plot_reconstructions(GOOD, GOOD, labels)


CASES = [
    # images: shape, dtype and values
    ("images", ValueError, lambda: ca4.add_gaussian_noise(np.zeros((2, 28, 28), np.float32), 0.1)),
    ("images", ValueError, lambda: ca4.add_gaussian_noise(np.zeros((28, 28, 1), np.float32), 0.1)),
    ("images", ValueError, lambda: ca4.predict(None, np.zeros((2, 32, 32, 1), np.float32))),
    ("targets", ValueError, lambda: ca4.mean_squared_error(np.zeros((2, 28, 28, 3), np.float32), GOOD)),
    ("images", ValueError, lambda: ca4.add_gaussian_noise(np.zeros((2, 28, 28, 1), np.uint8), 0.1)),
    ("train_images", ValueError, lambda: train(train_images=with_value(np.nan))),
    ("validation_images", ValueError, lambda: train(validation_images=with_value(np.inf))),
    ("originals", ValueError, lambda: ca4.plot_reconstructions(with_value(1.5), GOOD)),
    ("reconstructions", ValueError, lambda: ca4.plot_reconstructions(GOOD, with_value(-0.1))),
    ("images", ValueError, lambda: ca4.add_gaussian_noise(np.zeros((0, 28, 28, 1), np.float32), 0.1)),
    ("images", TypeError, lambda: ca4.add_gaussian_noise(GOOD.tolist(), 0.1)),
    ("images", TypeError, lambda: ca4.normalize_images("digits")),
    ("predictions", ValueError, lambda: ca4.mean_binary_cross_entropy(GOOD, GOOD[:1])),
    # labels
    ("labels", ValueError, lambda: labels_for_two(np.array([1, 2, 3]))),
    ("labels", ValueError, lambda: labels_for_two(np.array([1.0, 2.0]))),
    ("labels", ValueError, lambda: labels_for_two(np.array([3, 10]))),
    ("labels", ValueError, lambda: labels_for_two(np.array([-1, 3]))),
    ("labels", ValueError, lambda: ca4.first_of_each_digit(np.zeros((2, 5), dtype=np.int64))),
    ("labels", ValueError, lambda: ca4.first_of_each_digit(np.arange(9))),
    ("labels", TypeError, lambda: ca4.first_of_each_digit([0, 1, 2])),
    # model sizes and hyper-parameters
    ("latent_dim", ValueError, lambda: ca4.build_decoder(0)),
    ("latent_dim", ValueError, lambda: ca4.build_autoencoder(-3)),
    ("latent_dim", ValueError, lambda: ca4.build_vae(2.5)),
    ("latent_dim", ValueError, lambda: ca4.build_vae_encoder(True)),
    ("learning_rate", ValueError, lambda: ca4.build_autoencoder(2, learning_rate=0)),
    ("learning_rate", ValueError, lambda: ca4.build_vae(2, learning_rate=float("nan"))),
    ("kl_weight", ValueError, lambda: ca4.build_vae(2, kl_weight=-1)),
    ("kl_weight", ValueError, lambda: ca4.build_vae(2, kl_weight=float("nan"))),
    ("kl_weight", ValueError, lambda: ca4.build_vae(2, kl_weight=float("inf"))),
    ("kl_weight", ValueError, lambda: ca4.build_vae(2, kl_weight="a")),
    ("seed", ValueError, lambda: ca4.build_vae(2, seed=-1)),
    ("seed", ValueError, lambda: ca4.set_seed(1.5)),
    # training
    ("epochs", ValueError, lambda: train(epochs=0)),
    ("batch_size", ValueError, lambda: train(batch_size=0)),
    ("seed", ValueError, lambda: train(seed=-2)),
    ("name", ValueError, lambda: train(name="my model")),
    ("build_model", TypeError, lambda: train(build_model="autoencoder")),
    ("train_targets", ValueError, lambda: train(train_targets=GOOD[:1])),
    ("validation_targets", ValueError, lambda: train(validation_targets=np.concatenate([GOOD, GOOD]))),
    ("kl_weights", ValueError, lambda: ca4.run_kl_sweep(GOOD, GOOD, kl_weights=(), epochs=1)),
    ("kl_weights", ValueError, lambda: ca4.run_kl_sweep(GOOD, GOOD, kl_weights=(1.0, -2.0), epochs=1)),
    ("batch_size", ValueError, lambda: ca4.predict(None, GOOD, batch_size=0)),
    ("metric", ValueError, lambda: ca4.TrainingResult(None, {"loss": [1.0]}, "trained", 0.0, None)
     .final("accuracy")),
    # noise
    ("stddev", ValueError, lambda: ca4.add_gaussian_noise(GOOD, -0.1)),
    ("stddev", ValueError, lambda: ca4.add_gaussian_noise(GOOD, float("nan"))),
    ("seed", ValueError, lambda: ca4.add_gaussian_noise(GOOD, 0.1, seed=-1)),
    # latent grids
    ("points_per_side", ValueError, lambda: ca4.latent_grid_points(0)),
    ("spacing", ValueError, lambda: ca4.latent_grid_points(4, spacing="cubic")),
    ("extent", ValueError, lambda: ca4.latent_grid_points(4, extent=-1)),
    ("decoder", ValueError, lambda: ca4.decode_latent_grid(
        types.SimpleNamespace(input_shape=(None, 10)), points_per_side=2)),
    # configuration, evaluation and reporting
    ("profile", ValueError, lambda: ca4.get_profile("medium")),
    ("codes", ValueError, lambda: ca4.pca_2d(np.zeros(5))),
    ("codes", ValueError, lambda: ca4.pca_2d(np.full((4, 3), np.nan))),
    ("scales", ValueError, lambda: ca4.gradient_norm_by_input_scale(never_built, GOOD, scales=(-1.0,))),
    ("target", ValueError, lambda: ca4.binary_cross_entropy_curve(-1.0, [0.5])),
    ("model", TypeError, lambda: ca4.vae_latent_means("vae", GOOD)),
    ("model", TypeError, lambda: ca4.layer_rows("encoder")),
    ("models", ValueError, lambda: ca4.summary_markdown()),
    ("rows", ValueError, lambda: ca4.markdown_table([], {"a": "A"})),
    ("rows", ValueError, lambda: ca4.plot_image_rows({}, "empty")),
    ("column_labels", ValueError, lambda: ca4.plot_image_rows({"a": GOOD}, "t", column_labels=["x"])),
    ("histories", ValueError, lambda: ca4.plot_loss_curves({})),
    ("metrics", ValueError, lambda: ca4.plot_loss_curves({"run": {"loss": [1], "val_loss": [1]}},
                                                         metrics=())),
    ("means_by_run", ValueError, lambda: ca4.plot_latent_means({}, np.arange(2))),
    ("decoders", ValueError, lambda: ca4.plot_latent_grids({})),
]


@pytest.mark.parametrize("argument, error, call",
                         [pytest.param(*case, id=f"{index:02d}-{case[0]}")
                          for index, case in enumerate(CASES)])
def test_bad_argument_names_the_argument(argument, error, call):
    with pytest.raises(error, match=rf"^{re.escape(argument)}\b"):
        call()
