"""Bad arguments to public functions fail fast with an error that names the argument."""

from __future__ import annotations

import re
import tempfile
import types
from pathlib import Path

import numpy as np
import pytest

import ca4_helpers as ca4
from ca4lib import (
    figures,
    generation,
    inference,
    latent_space,
    measures,
    progress,
    report,
    settings,
    storage,
    vae_analyses,
)

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
    return figures.plot_latent_means({"run": np.zeros((2, 2))}, labels)


CODES = np.arange(12.0).reshape(6, 2)
LABELS = np.arange(6)
SHEET = np.zeros((56, 56))


# Never written: every case that uses it must raise before writing anything.
UNWRITTEN_JSON = Path(tempfile.gettempdir()) / "ca4-validation-never-written.json"


CASES = [
    # images: shape, dtype and values
    ("images", ValueError, lambda: ca4.add_gaussian_noise(np.zeros((2, 28, 28), np.float32), 0.1)),
    ("images", ValueError, lambda: ca4.add_gaussian_noise(np.zeros((28, 28, 1), np.float32), 0.1)),
    ("images", ValueError, lambda: inference.predict(None, np.zeros((2, 32, 32, 1), np.float32))),
    ("targets", ValueError,
     lambda: measures.per_image_squared_error(np.zeros((2, 28, 28, 3), np.float32), GOOD)),
    ("images", ValueError, lambda: ca4.add_gaussian_noise(np.zeros((2, 28, 28, 1), np.uint8), 0.1)),
    ("train_images", ValueError, lambda: train(train_images=with_value(np.nan))),
    ("validation_images", ValueError, lambda: train(validation_images=with_value(np.inf))),
    ("rows['Original']", ValueError, lambda: figures.plot_image_rows({"Original": with_value(1.5)}, "t")),
    ("rows['Denoised']", ValueError, lambda: figures.plot_image_rows({"Original": GOOD,
                                                                  "Denoised": with_value(-0.1)}, "t")),
    ("images", ValueError, lambda: ca4.add_gaussian_noise(np.zeros((0, 28, 28, 1), np.float32), 0.1)),
    ("images", TypeError, lambda: ca4.add_gaussian_noise(GOOD.tolist(), 0.1)),
    ("images", TypeError, lambda: ca4.normalize_images("digits")),
    ("predictions", ValueError, lambda: measures.mean_binary_cross_entropy(GOOD, GOOD[:1])),
    # labels
    ("labels", ValueError, lambda: labels_for_two(np.array([1, 2, 3]))),
    ("labels", ValueError, lambda: labels_for_two(np.array([1.0, 2.0]))),
    ("labels", ValueError, lambda: labels_for_two(np.array([3, 10]))),
    ("labels", ValueError, lambda: labels_for_two(np.array([-1, 3]))),
    ("labels", ValueError, lambda: measures.first_of_each_digit(np.zeros((2, 5), dtype=np.int64))),
    ("labels", ValueError, lambda: measures.first_of_each_digit(np.arange(9))),
    ("labels", TypeError, lambda: measures.first_of_each_digit([0, 1, 2])),
    # model sizes and hyper-parameters
    ("latent_dim", ValueError, lambda: ca4.build_autoencoder(0)),
    ("latent_dim", ValueError, lambda: ca4.build_autoencoder(-3)),
    ("latent_dim", ValueError, lambda: ca4.build_vae(2.5)),
    ("latent_dim", ValueError, lambda: ca4.build_vae(True)),
    ("seed", ValueError, lambda: ca4.build_vae(2, seed=-1)),
    ("input_scale", ValueError, lambda: ca4.build_autoencoder(2, input_scale=-255)),
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
    ("train_targets", ValueError, lambda: train(train_targets=GOOD[:1])),
    ("validation_targets", ValueError, lambda: train(validation_targets=np.concatenate([GOOD, GOOD]))),
    ("kl_weights", ValueError, lambda: ca4.run_kl_sweep(GOOD, GOOD, kl_weights=(), epochs=1)),
    ("kl_weights", ValueError, lambda: ca4.run_kl_sweep(GOOD, GOOD, kl_weights=(1.0, -2.0), epochs=1)),
    ("batch_size", ValueError, lambda: inference.predict(None, GOOD, batch_size=0)),
    ("metric", ValueError, lambda: ca4.TrainingResult("m", None, {"loss": [1.0]}, "trained", 0.0, None)
     .final("accuracy")),
    # noise
    ("stddev", ValueError, lambda: ca4.add_gaussian_noise(GOOD, -0.1)),
    ("stddev", ValueError, lambda: ca4.add_gaussian_noise(GOOD, float("nan"))),
    ("seed", ValueError, lambda: ca4.add_gaussian_noise(GOOD, 0.1, seed=-1)),
    # latent grids
    ("points_per_side", ValueError, lambda: latent_space.latent_grid_points(0)),
    ("spacing", ValueError, lambda: latent_space.latent_grid_points(4, spacing="cubic")),
    ("extent", ValueError, lambda: latent_space.latent_grid_points(4, extent=-1)),
    ("decoder", ValueError, lambda: latent_space.decode_latent_grid(
        types.SimpleNamespace(input_shape=(None, 10)), points_per_side=2)),
    # configuration, evaluation and reporting
    ("profile", ValueError, lambda: settings.get_profile("medium")),
    ("codes", ValueError, lambda: measures.pca_2d(np.zeros(5))),
    ("codes", ValueError, lambda: measures.pca_2d(np.full((4, 3), np.nan))),
    ("codes", ValueError, lambda: measures.pca_2d(np.zeros((1, 3)))),
    ("codes", ValueError, lambda: inference.decode_codes(types.SimpleNamespace(input_shape=(None, 2)),
                                                   np.zeros((3, 5)))),
    ("model", TypeError, lambda: vae_analyses.vae_encode("vae", GOOD)),
    ("model", TypeError, lambda: report.layer_rows("encoder")),
    ("rows", ValueError, lambda: report.markdown_table([], {"a": "A"})),
    ("rows", ValueError, lambda: figures.plot_image_rows({}, "empty")),
    ("column_labels", ValueError, lambda: figures.plot_image_rows({"a": GOOD}, "t", column_labels=["x"])),
    ("histories", ValueError, lambda: figures.plot_loss_curves({})),
    ("metrics", ValueError, lambda: figures.plot_loss_curves({"run": {"loss": [1], "val_loss": [1]}},
                                                         metrics=())),
    ("means_by_run", ValueError, lambda: figures.plot_latent_means({}, np.arange(2))),
    ("decoders", ValueError, lambda: figures.plot_latent_grids({})),
    # kNN of latent codes
    ("train_codes", ValueError, lambda: measures.knn_correct(np.zeros(6), LABELS, CODES, LABELS)),
    ("train_codes", ValueError, lambda: measures.knn_correct(np.full((6, 2), np.nan), LABELS, CODES, LABELS)),
    ("test_codes", ValueError, lambda: measures.knn_correct(CODES, LABELS, np.zeros((6, 3)), LABELS)),
    ("train_labels", ValueError, lambda: measures.knn_correct(CODES, LABELS[:5], CODES, LABELS)),
    ("test_labels", ValueError, lambda: measures.knn_correct(CODES, LABELS, CODES, LABELS + 0.5)),
    ("test_labels", TypeError, lambda: measures.knn_correct(CODES, LABELS, CODES, LABELS.tolist())),
    ("neighbours", ValueError, lambda: measures.knn_correct(CODES, LABELS, CODES, LABELS, neighbours=0)),
    ("neighbours", ValueError, lambda: measures.knn_correct(CODES, LABELS, CODES, LABELS,
                                                                  neighbours=7)),
    # judging generated digits
    ("counts", ValueError, lambda: generation.normalised_entropy([5])),
    ("counts", ValueError, lambda: generation.normalised_entropy([3, -1, 2])),
    ("counts", ValueError, lambda: generation.normalised_entropy([0, 0, 0])),
    ("counts", ValueError, lambda: generation.normalised_entropy([[1, 2], [3, 4]])),
    ("digits", ValueError, lambda: generation.generation_row("g", np.array([0, 10]), np.ones(2))),
    ("digits", ValueError, lambda: generation.generation_row("g", np.array([0.5, 1.0]), np.ones(2))),
    ("confidences", ValueError, lambda: generation.generation_row("g", np.arange(10), np.ones(3))),
    # sampling and interpolation
    ("count", ValueError, lambda: vae_analyses.sample_prior(0)),
    ("count", ValueError, lambda: vae_analyses.sample_prior(2.5)),
    ("seed", ValueError, lambda: vae_analyses.sample_prior(3, seed=-1)),
    ("latent_dim", ValueError, lambda: vae_analyses.sample_prior(3, latent_dim=0)),
    ("codes", ValueError, lambda: generation.sample_fitted_gaussian(np.zeros(5), 3)),
    ("codes", ValueError, lambda: generation.sample_fitted_gaussian(np.full((4, 2), np.inf), 3)),
    ("count", ValueError, lambda: generation.sample_fitted_gaussian(CODES, 0)),
    ("seed", ValueError, lambda: generation.sample_fitted_gaussian(CODES, 3, seed=-1)),
    ("codes", ValueError, lambda: generation.sample_fitted_gaussian(np.zeros((1, 2)), 3)),
    ("end", ValueError, lambda: generation.interpolate_codes(np.zeros(2), np.zeros(3))),
    ("frames", ValueError, lambda: generation.interpolate_codes(np.zeros(2), np.ones(2), frames=1)),
    ("frames", ValueError, lambda: generation.interpolate_codes(np.zeros(2), np.ones(2), frames=0)),
    ("frames", ValueError, lambda: generation.interpolate_codes(np.zeros(2), np.ones(2), frames=2.5)),
    ("start", ValueError, lambda: generation.interpolate_codes(np.zeros((1, 2)), np.zeros((1, 2)))),
    # latent grids
    ("columns", ValueError, lambda: latent_space.tile_images(np.zeros((4, 28, 28)), 0)),
    ("images", ValueError, lambda: latent_space.tile_images(np.zeros((5, 28, 28)), 2)),
    ("images", ValueError, lambda: latent_space.tile_images(np.zeros((4, 28)), 2)),
    ("points", ValueError, lambda: latent_space.latent_grid_coverage(np.zeros((4, 3)))),
    ("points", ValueError, lambda: latent_space.latent_grid_coverage(np.full((4, 2), np.nan))),
    ("points_per_side", ValueError, lambda: latent_space.latent_grid_coverage(CODES, 0)),
    ("extent", ValueError, lambda: latent_space.latent_grid_coverage(CODES, 3, 0.0)),
    ("extent", ValueError, lambda: latent_space.latent_grid_coverage(CODES, 3, -1.0)),
    ("extent", ValueError, lambda: latent_space.latent_grid_coverage(CODES, 3, float("nan"))),
    ("grid_image", ValueError, lambda: latent_space.grid_neighbour_changes(np.zeros((28, 28)))),
    ("grid_image", ValueError, lambda: latent_space.grid_neighbour_changes(np.zeros((56, 84)))),
    ("grid_image", ValueError, lambda: latent_space.grid_neighbour_changes(np.zeros((60, 60)))),
    ("grid_image", ValueError, lambda: latent_space.grid_neighbour_changes(np.zeros((56, 56, 1)))),
    ("bounds", ValueError, lambda: latent_space.latent_grid_points(3, bounds=((0.0, 1.0),))),
    # figures
    ("sheets", ValueError, lambda: figures.plot_image_sheets({}, "empty")),
    ("columns", ValueError, lambda: figures.plot_image_sheets({"a": SHEET}, "t", columns=0)),
    ("grid_points", ValueError, lambda: figures.plot_image_sheets({"a": SHEET}, "t",
                                                                        grid_points={})),
    ("models", ValueError, lambda: figures.plot_codes_beside_grids({}, LABELS)),
    ("models['a']", ValueError, lambda: figures.plot_codes_beside_grids({"a": (np.zeros((6, 3)), None)},
                                                                    LABELS)),
    ("labels", ValueError, lambda: figures.plot_codes_beside_grids({"a": (CODES, None)}, LABELS[:4])),
    ("columns", ValueError, lambda: figures.plot_latent_means({"a": CODES}, LABELS, columns=0)),
    ("means_by_run['a']", ValueError, lambda: figures.plot_latent_means({"a": np.zeros((6, 3))},
                                                                             LABELS)),
    # reporting and run progress
    ("objects", TypeError, lambda: report.show_source()),
    ("objects", TypeError, lambda: report.show_source(42)),
    ("data", ValueError, lambda: storage.write_json_atomic(UNWRITTEN_JSON, {"a": [float("nan")]})),
    ("data", ValueError, lambda: storage.write_json_atomic(UNWRITTEN_JSON, [float("inf")])),
    ("planned", ValueError, lambda: progress.RunProgress({}, "full")),
    ("planned['vae_kl1']", ValueError, lambda: progress.RunProgress({"vae_kl1": 2.5}, "full")),
]


@pytest.mark.parametrize("argument, error, call",
                         [pytest.param(*case, id=f"{index:02d}-{case[0]}")
                          for index, case in enumerate(CASES)])
def test_bad_argument_names_the_argument(argument, error, call):
    # The message starts with the argument's name, not followed by more of a name.
    with pytest.raises(error, match=rf"^{re.escape(argument)}(?!\w)"):
        call()
