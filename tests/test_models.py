"""ca4_helpers.py's models: the builders, the VAE's loss terms and sampling, its training steps
and `vae_test_terms`, each against an independent NumPy computation (binary cross-entropy,
the closed-form KL, Bernoulli log-likelihoods) or a constructed model whose posterior is
known.

The NumPy formulas and the constructed models (`constant_posterior_vae`, `fitted_encoder`,
`linear_decoder`) live here; the room tests that need them import them from this file.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

import ca4_helpers as ca4
from ca4lib import vae_analyses


def to_numpy(value) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(value))


class MeanSampling(keras.layers.Layer):
    """Stands in for ca4.Sampling and returns z_mean: the VAE's loss terms become deterministic."""

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)

    def call(self, inputs):
        return inputs[0]


def numpy_bce(targets, predictions) -> np.ndarray:
    """Per-pixel binary cross-entropy in float64, predictions clipped as Keras clips float32."""
    p = np.clip(np.asarray(predictions, np.float32), np.float32(1e-7), np.float32(1 - 1e-7))
    p, t = p.astype(np.float64), np.asarray(targets, np.float64)
    return -(t * np.log(p) + (1 - t) * np.log(1 - p))


def numpy_kl(z_mean, z_log_var) -> np.ndarray:
    """Closed-form KL(N(m, exp(lv)) || N(0, 1)) per image and dimension, in float64."""
    m, lv = np.asarray(z_mean, np.float64), np.asarray(z_log_var, np.float64)
    return 0.5 * (np.exp(lv) + m**2 - 1.0 - lv)


EPSILON = np.float32(1e-7)  # Keras' clipping of probabilities


def numpy_log_likelihood(images: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """log p(x|z) summed over the pixels, in float64, probabilities clipped as Keras does."""
    x = np.asarray(images, np.float64).reshape(len(images), -1)
    p = np.clip(np.asarray(probabilities, np.float32), EPSILON, np.float32(1) - EPSILON)
    p = p.astype(np.float64).reshape(len(images), -1, x.shape[1])
    return (x[:, None] * np.log(p) + (1 - x[:, None]) * np.log(1 - p)).sum(axis=-1)


def uniform_images(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(size=(count, 28, 28, 1)).astype(np.float32)


def numpy_vae_terms(model, images, targets) -> tuple[float, float]:
    """The VAE's reconstruction and KL terms recomputed from its encoder and decoder outputs.

    The reconstruction decodes z_mean: valid for a model built with MeanSampling.
    """
    z_mean, z_log_var = (to_numpy(t) for t in model.encoder(images))
    reconstructions = to_numpy(model.decoder(z_mean))
    reconstruction = numpy_bce(targets, reconstructions).reshape(len(images), -1).sum(axis=1)
    return float(reconstruction.mean()), float(numpy_kl(z_mean, z_log_var).sum(axis=1).mean())


def push_posterior_from_the_prior(model) -> None:
    """Shift the VAE encoder's outputs so that the KL term (about 2.8 nats) is not negligible
    next to the reconstruction term (about 543 nats untrained)."""
    model.encoder.get_layer("z_mean").bias.assign(np.array([1.0, -2.0], np.float32))
    model.encoder.get_layer("z_log_var").bias.assign(np.array([0.5, -1.0], np.float32))


def constant_posterior_vae(z_mean, z_log_var, kl_weight: float = 1.0) -> ca4.VariationalAutoencoder:
    """A VAE whose encoder ignores the image: z_mean and z_log_var are the given constants."""
    model = ca4.build_vae(2, kl_weight=kl_weight, seed=0)
    for name, bias in (("z_mean", z_mean), ("z_log_var", z_log_var)):
        dense = model.encoder.get_layer(name)
        dense.kernel.assign(np.zeros(dense.kernel.shape, np.float32))
        dense.bias.assign(np.asarray(bias, np.float32))
    return model


def linear_decoder(w0: np.ndarray, bias: np.ndarray, w1: np.ndarray | None = None
                   ) -> keras.Model:
    """Input(2) -> Dense(784, sigmoid) -> Reshape(28, 28, 1): p = sigmoid(w0 z0 + w1 z1 + b)."""
    latent = keras.Input((2,))
    dense = keras.layers.Dense(784, activation="sigmoid")
    model = keras.Model(latent, keras.layers.Reshape((28, 28, 1))(dense(latent)))
    kernel = np.zeros((2, 784), np.float32)
    kernel[0] = w0
    if w1 is not None:
        kernel[1] = w1
    dense.set_weights([kernel, np.asarray(bias, np.float32)])
    return model


def fitted_encoder(images: np.ndarray, z_mean: np.ndarray, z_log_var: np.ndarray) -> keras.Model:
    """An encoder (Flatten -> two Dense) that maps each given image to its given posterior."""
    pixels = keras.Input((28, 28, 1))
    flat = keras.layers.Flatten()(pixels)
    outputs = [keras.layers.Dense(2, name=name)(flat) for name in ("z_mean", "z_log_var")]
    encoder = keras.Model(pixels, outputs)
    # Least squares: a kernel K with x_i K = target_i for each (linearly independent) image;
    # an image of zeros gets its target from the bias.
    pixels = images.reshape(len(images), -1).astype(np.float64)
    for name, target in (("z_mean", z_mean), ("z_log_var", z_log_var)):
        target = np.asarray(target, np.float64)
        if not pixels.any():
            weights = [np.zeros((784, 2), np.float32), target[0].astype(np.float32)]
        else:
            weights = [(np.linalg.pinv(pixels) @ target).astype(np.float32),
                       np.zeros(2, np.float32)]
        encoder.get_layer(name).set_weights(weights)
    return encoder


# --- shapes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("latent_dim", [1, 2, 10, 32])
def test_autoencoder_shapes(latent_dim, mnist_small):
    images = mnist_small["train_images"][:4]
    model = ca4.build_autoencoder(latent_dim)
    codes = to_numpy(model.encoder(images))
    assert codes.shape == (4, latent_dim)
    decoded = to_numpy(model.decoder(codes))
    assert decoded.shape == (4, 28, 28, 1)
    reconstructions = to_numpy(model(images))
    np.testing.assert_allclose(reconstructions, decoded, rtol=1e-5, atol=1e-6)
    assert np.all(reconstructions > 0) and np.all(reconstructions < 1)


def test_autoencoder_is_compiled_as_the_assignment_asks(mnist_small):
    # Adam at the given rate, and Keras' binary cross-entropy between input and output:
    # evaluate() must equal the mean per-pixel BCE recomputed here in NumPy.
    model = ca4.build_autoencoder(2, learning_rate=3e-4)
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert float(model.optimizer.learning_rate) == pytest.approx(3e-4)
    images = mnist_small["train_images"][:8]
    p = np.clip(to_numpy(model(images)).astype(np.float64), 1e-7, 1 - 1e-7)
    t = images.astype(np.float64)
    expected = float(np.mean(-(t * np.log(p) + (1 - t) * np.log(1 - p))))
    assert model.evaluate(images, images, verbose=0) == pytest.approx(expected, rel=1e-4)


def test_vae_encoder_returns_mean_and_log_variance(mnist_small):
    images = mnist_small["train_images"][:5]
    model = ca4.build_vae(latent_dim=2)
    z_mean, z_log_var = model.encoder(images)
    assert to_numpy(z_mean).shape == (5, 2)
    assert to_numpy(z_log_var).shape == (5, 2)
    assert to_numpy(model(images)).shape == (5, 28, 28, 1)
    assert model.decoder.input_shape == (None, 2)


# --- loss terms -----------------------------------------------------------------------------------


def test_kl_of_standard_normal_is_zero():
    zeros = np.zeros((6, 3), dtype=np.float32)
    assert float(to_numpy(ca4.kl_divergence(zeros, zeros))) == 0.0


def test_kl_matches_closed_form():
    rng = np.random.default_rng(0)
    mean = rng.normal(size=(8, 4)).astype(np.float32)
    log_var = rng.normal(scale=0.7, size=(8, 4)).astype(np.float32)
    expected = numpy_kl(mean, log_var)
    np.testing.assert_allclose(to_numpy(ca4.kl_per_dimension(mean, log_var)), expected,
                               rtol=1e-5, atol=1e-7)
    # Summed over the dimensions, averaged over the batch.
    actual = float(to_numpy(ca4.kl_divergence(mean, log_var)))
    np.testing.assert_allclose(actual, expected.sum(axis=1).mean(), rtol=1e-5)
    assert actual > 0


def test_kl_per_dimension_of_a_known_case():
    # N(1, e^0.5) against N(0, 1): 0.5 * (e^0.5 + 1 - 1 - 0.5); the prior itself: 0.
    mean = np.array([[1.0, 0.0]], dtype=np.float32)
    log_var = np.array([[0.5, 0.0]], dtype=np.float32)
    expected = [0.5 * (math.exp(0.5) + 1.0**2 - 1.0 - 0.5), 0.0]
    np.testing.assert_allclose(to_numpy(ca4.kl_per_dimension(mean, log_var))[0], expected,
                               rtol=1e-6, atol=1e-7)


def test_kl_per_dimension_is_zero_for_the_prior_and_matches_the_closed_form():
    z_mean = np.array([[1.5, 0.0], [-0.3, 0.0], [0.0, 0.0]], np.float32)
    z_log_var = np.array([[0.2, 0.0], [-1.0, 0.0], [0.7, 0.0]], np.float32)
    kl = np.asarray(ca4.kl_per_dimension(z_mean, z_log_var))
    assert kl.shape == (3, 2)
    np.testing.assert_array_equal(kl[:, 1], 0.0)
    np.testing.assert_allclose(kl[:, 0], numpy_kl(z_mean[:, 0], z_log_var[:, 0]), rtol=1e-5)
    assert np.all(kl[:, 0] > 0)


def test_reconstruction_loss_is_summed_pixel_bce():
    rng = np.random.default_rng(1)
    targets = rng.uniform(size=(3, 28, 28, 1)).astype(np.float32)
    targets[0, :3] = 0.0
    targets[1, :3] = 1.0
    predictions = rng.uniform(0.01, 0.99, size=(3, 28, 28, 1)).astype(np.float32)
    predictions[2, 0, :5] = 0.0  # exercises the clipping at 1e-7
    predictions[2, 1, :5] = 1.0
    # Keras clips float32 predictions to [1e-7, 1 - 1e-7], both bounds rounded to float32.
    expected = numpy_bce(targets, predictions).reshape(3, 784).sum(axis=1).mean()
    actual = float(to_numpy(ca4.reconstruction_loss(targets, predictions)))
    np.testing.assert_allclose(actual, expected, rtol=1e-5)


# --- sampling -------------------------------------------------------------------------------------


def test_sampling_with_tiny_variance_returns_the_mean():
    mean = np.linspace(-3, 3, 20, dtype=np.float32).reshape(10, 2)
    log_var = np.full_like(mean, -30.0)
    z = to_numpy(ca4.Sampling(seed=0)([mean, log_var]))
    np.testing.assert_allclose(z, mean, atol=1e-5)


def test_sampling_has_requested_mean_and_variance():
    mean = np.full((20000, 1), 1.5, dtype=np.float32)
    log_var = np.full_like(mean, math.log(0.25))
    z = to_numpy(ca4.Sampling(seed=3)([mean, log_var]))[:, 0]
    assert z.mean() == pytest.approx(1.5, rel=0.01)
    assert z.var() == pytest.approx(0.25, rel=0.04)


def test_sampling_seed_fixes_the_draws():
    mean = np.zeros((50, 2), dtype=np.float32)
    log_var = np.zeros_like(mean)
    first = to_numpy(ca4.Sampling(seed=11)([mean, log_var]))
    again = to_numpy(ca4.Sampling(seed=11)([mean, log_var]))
    other = to_numpy(ca4.Sampling(seed=12)([mean, log_var]))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


# --- training steps -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vae_steps(mnist_small):
    """Ten train_on_batch steps of a VAE on one fixed batch of 32 images."""
    batch = mnist_small["train_images"][:32]
    ca4.set_seed(0)
    model = ca4.build_vae(latent_dim=2, kl_weight=1.0, seed=0)
    before = [v.numpy().copy() for v in model.trainable_weights]
    losses = [model.train_on_batch(batch, batch, return_dict=True)["loss"]]
    after_one = [v.numpy().copy() for v in model.trainable_weights]
    losses += [model.train_on_batch(batch, batch, return_dict=True)["loss"] for _ in range(9)]
    return {"model": model, "batch": batch, "before": before, "after_one": after_one,
            "losses": losses}


def test_one_vae_step_changes_every_weight(vae_steps):
    changed = [not np.array_equal(a, b) for a, b in zip(vae_steps["before"], vae_steps["after_one"])]
    assert len(changed) > 0 and all(changed)


def test_vae_steps_lower_the_loss(vae_steps):
    losses = vae_steps["losses"]
    assert all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < losses[0]


def test_vae_evaluate_reports_the_three_terms(mnist_small, monkeypatch):
    monkeypatch.setattr(ca4, "Sampling", MeanSampling)  # before the model is built
    batch = mnist_small["train_images"][:32]
    model = ca4.build_vae(latent_dim=2, kl_weight=2.0, seed=0)
    push_posterior_from_the_prior(model)
    logs = model.evaluate(batch, batch, batch_size=32, return_dict=True, verbose=0)
    assert set(logs) == {"loss", "reconstruction_loss", "kl_loss"}
    reconstruction, kl = numpy_vae_terms(model, batch, batch)
    assert kl > 1.0
    assert logs["reconstruction_loss"] == pytest.approx(reconstruction, rel=1e-4)
    assert logs["kl_loss"] == pytest.approx(kl, rel=1e-4)
    assert logs["loss"] == pytest.approx(reconstruction + 2.0 * kl, rel=1e-4)


def test_vae_evaluate_is_stochastic_with_the_real_sampling(mnist_small):
    batch = mnist_small["train_images"][:32]
    model = ca4.build_vae(latent_dim=2, seed=0)
    first = model.evaluate(batch, batch, batch_size=32, return_dict=True, verbose=0)
    second = model.evaluate(batch, batch, batch_size=32, return_dict=True, verbose=0)
    # New noise each call moves the reconstruction term; the KL term needs no sampling.
    assert first["reconstruction_loss"] != second["reconstruction_loss"]
    assert first["kl_loss"] == pytest.approx(second["kl_loss"], rel=1e-6)


def test_vae_targets_default_to_the_inputs(mnist_small, monkeypatch):
    monkeypatch.setattr(ca4, "Sampling", MeanSampling)
    batch = mnist_small["train_images"][:32]
    other = 1.0 - batch  # inverted digits
    model = ca4.build_vae(latent_dim=2, kl_weight=1.0, seed=0)
    # Untrained, the decoder predicts 1/2 everywhere, which costs ln 2 whatever the target:
    # bias it towards paper (0) so that ink-heavy targets cost more.
    model.decoder.get_layer("pixels").bias.assign(np.array([-3.0], np.float32))
    without_targets = model.evaluate(batch, batch_size=32, return_dict=True, verbose=0)
    own_targets = model.evaluate(batch, batch, batch_size=32, return_dict=True, verbose=0)
    other_targets = model.evaluate(batch, other, batch_size=32, return_dict=True, verbose=0)
    expected_own, kl = numpy_vae_terms(model, batch, batch)
    expected_other, _ = numpy_vae_terms(model, batch, other)
    assert expected_other > 2 * expected_own  # the targets matter
    assert without_targets["reconstruction_loss"] == pytest.approx(expected_own, rel=1e-4)
    assert own_targets["reconstruction_loss"] == pytest.approx(expected_own, rel=1e-4)
    assert other_targets["reconstruction_loss"] == pytest.approx(expected_other, rel=1e-4)
    assert without_targets["kl_loss"] == pytest.approx(kl, rel=1e-4)


@pytest.mark.parametrize("kl_weight", [0.0, 5.0])
def test_train_step_weights_the_kl_term(kl_weight, mnist_small, monkeypatch):
    monkeypatch.setattr(ca4, "Sampling", MeanSampling)
    batch = mnist_small["train_images"][:32]
    model = ca4.build_vae(latent_dim=2, kl_weight=kl_weight, seed=0)
    push_posterior_from_the_prior(model)
    z_log_var_layer = model.encoder.get_layer("z_log_var")
    reconstruction, kl = numpy_vae_terms(model, batch, batch)  # before the step
    assert kl > 1.0
    log_var_before = [v.numpy().copy() for v in z_log_var_layer.weights]
    logs = model.train_on_batch(batch, batch, return_dict=True)
    assert logs["reconstruction_loss"] == pytest.approx(reconstruction, rel=1e-4)
    assert logs["kl_loss"] == pytest.approx(kl, rel=1e-4)
    assert logs["loss"] == pytest.approx(reconstruction + kl_weight * kl, rel=1e-4)
    # With z = z_mean, z_log_var reaches the loss only through the weighted KL term: its
    # weights get a zero gradient (and Adam no update) exactly when the weight is 0.
    unchanged = [np.array_equal(a, b.numpy()) for a, b in
                 zip(log_var_before, z_log_var_layer.weights)]
    assert unchanged == [kl_weight == 0] * 2


# --- vae_test_terms: the loss terms per test image ------------------------------------------------


def test_vae_test_terms_of_a_dimension_that_is_the_prior(vae_with_collapsed_dimension):
    model, images = vae_with_collapsed_dimension
    terms = ca4.vae_test_terms(model, images, seed=0)
    z_mean, z_log_var = (np.asarray(t, np.float64) for t in model.encoder(images, training=False))
    np.testing.assert_array_equal(z_mean[:, 1], 0.0)  # the construction holds
    kl = terms["kl_per_dimension"]
    assert kl.shape == (16, 2)
    np.testing.assert_allclose(kl[:, 1], 0.0, atol=1e-7)
    np.testing.assert_allclose(kl[:, 0], numpy_kl(z_mean[:, 0], z_log_var[:, 0]),
                               rtol=1e-4)
    np.testing.assert_allclose(terms["kl"], kl.sum(axis=1), rtol=1e-12)
    assert np.all(kl[:, 0] > 10 * vae_analyses.PRIOR_LIKE_NATS)


def test_vae_test_terms_of_known_posteriors():
    mean, log_var = np.array([1.0, -0.5]), np.array([0.5, -1.0])
    model = constant_posterior_vae(mean, log_var)
    images = uniform_images(6)
    terms = ca4.vae_test_terms(model, images, seed=3)
    np.testing.assert_allclose(terms["z_mean"], np.tile(mean, (6, 1)), rtol=1e-6)
    np.testing.assert_allclose(terms["z_log_var"], np.tile(log_var, (6, 1)), rtol=1e-6)
    expected_kl = numpy_kl(mean, log_var)
    np.testing.assert_allclose(terms["kl_per_dimension"], np.tile(expected_kl, (6, 1)),
                               rtol=1e-6)
    np.testing.assert_allclose(terms["kl"], np.full(6, expected_kl.sum()), rtol=1e-6)
    decoded_mean = np.asarray(model.decoder(np.tile(mean, (6, 1)).astype(np.float32)))
    np.testing.assert_allclose(terms["mean_reconstruction"],
                               -numpy_log_likelihood(images, decoded_mean)[:, 0], rtol=1e-5)
    decoded_sample = np.asarray(model.decoder(terms["z"].astype(np.float32)))
    np.testing.assert_allclose(terms["reconstruction"],
                               -numpy_log_likelihood(images, decoded_sample)[:, 0], rtol=1e-5)
    # One sample per image from q(z|x), away from the mean, reproducible by its seed.
    assert terms["z"].shape == (6, 2) and not np.allclose(terms["z"], terms["z_mean"])
    np.testing.assert_array_equal(terms["z"], ca4.vae_test_terms(model, images, seed=3)["z"])
    assert not np.allclose(terms["z"], ca4.vae_test_terms(model, images, seed=4)["z"])


def test_vae_test_terms_samples_follow_the_posterior():
    mean, log_var = np.array([2.0, -1.0]), np.array([-2.0, 1.0])
    # A dense encoder and decoder are fast: 2,000 images and samples.
    images = np.zeros((2000, 28, 28, 1), np.float32)
    vae = ca4.VariationalAutoencoder(fitted_encoder(images[:1], mean[None], log_var[None]),
                                     linear_decoder(np.zeros(784), np.zeros(784)))
    z = ca4.vae_test_terms(vae, images, seed=0)["z"]
    standardised = (z - mean) / np.exp(0.5 * log_var)
    np.testing.assert_allclose(standardised.mean(axis=0), 0.0, atol=0.1)  # SE 0.022
    np.testing.assert_allclose(standardised.std(axis=0), 1.0, atol=0.06)  # SE 0.016
