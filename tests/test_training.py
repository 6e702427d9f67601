"""train_model: learning, determinism, the trained-model cache, divergence, interrupt and resume."""

from __future__ import annotations

import os
import shutil

import keras
import numpy as np
import pytest

import ca4_helpers as ca4

EPOCHS = 4
BATCH_SIZE = 64


@pytest.fixture(autouse=True)
def no_inherited_retrain(monkeypatch: pytest.MonkeyPatch):
    """The cache tests need the cache: ignore a CA4_RETRAIN=1 set by whoever runs the suite."""
    monkeypatch.delenv("CA4_RETRAIN", raising=False)


class FitCalled(Exception):
    """Raised by a patched keras.Model.fit: proves that training was attempted."""


def forbid_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    def fit(self, *args, **kwargs):
        raise FitCalled(self.name)

    monkeypatch.setattr(keras.Model, "fit", fit)


def train(data, cache_dir, *, latent_dim=2, learning_rate=1e-3, log=None, **options):
    """Train the Task 1 autoencoder on the small real data set with the suite's defaults."""
    settings = {"name": "ae", "epochs": EPOCHS, "batch_size": BATCH_SIZE, "seed": 0}
    settings.update(options)
    return ca4.train_model(lambda: ca4.build_autoencoder(latent_dim, learning_rate=learning_rate),
                           data["train_images"], data["validation_images"],
                           cache_dir=cache_dir, log=log, **settings)


def weights(model) -> list[np.ndarray]:
    return [v.numpy() for v in model.weights]


def assert_same_weights(first, second) -> None:
    a, b = weights(first), weights(second)
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def baseline(mnist_small, tmp_path_factory):
    """One uninterrupted 4-epoch run; several tests compare against it."""
    cache_dir = tmp_path_factory.mktemp("baseline_cache")
    return train(mnist_small, cache_dir)


def test_training_lowers_the_loss(baseline):
    loss = baseline.history["loss"]
    assert loss[-1] < loss[0]
    assert baseline.history["val_loss"][-1] < baseline.history["val_loss"][0]


def test_history_has_loss_and_val_loss_per_epoch(baseline):
    assert set(baseline.history) == {"loss", "val_loss"}
    assert all(len(values) == EPOCHS for values in baseline.history.values())
    assert all(np.isfinite(v) for values in baseline.history.values() for v in values)
    assert baseline.epochs == EPOCHS
    assert baseline.final("val_loss") == baseline.history["val_loss"][-1]
    assert baseline.source == "trained"
    assert len(baseline.epoch_seconds) == EPOCHS
    assert baseline.cache_path.is_file()
    assert not list(baseline.cache_path.parent.glob("*.partial.npz"))  # checkpoint cleaned up


def test_training_is_deterministic(baseline, mnist_small, cache_dir):
    again = train(mnist_small, cache_dir, retrain=True)
    assert again.source == "trained"
    assert again.history == baseline.history
    assert_same_weights(again.model, baseline.model)


def test_same_key_is_served_from_the_cache(baseline, mnist_small, monkeypatch):
    forbid_fit(monkeypatch)
    modified = baseline.cache_path.stat().st_mtime_ns
    messages = []
    cached = train(mnist_small, baseline.cache_path.parent, log=messages.append)
    assert cached.source == "cache"
    assert cached.cache_path == baseline.cache_path
    assert cached.history == baseline.history
    assert cached.epoch_seconds == [] and cached.seconds == 0.0
    assert_same_weights(cached.model, baseline.model)
    assert baseline.cache_path.stat().st_mtime_ns == modified
    assert any("loaded from the cache" in message for message in messages)


@pytest.mark.parametrize("change", [{"epochs": 3}, {"seed": 1}, {"latent_dim": 3},
                                    {"learning_rate": 5e-4},
                                    {"final_learning_rate_fraction": 0.5}])
def test_changed_setting_is_not_served_from_the_cache(change, baseline, mnist_small, monkeypatch):
    forbid_fit(monkeypatch)
    with pytest.raises(FitCalled):
        train(mnist_small, baseline.cache_path.parent, **change)


def test_changed_data_is_not_served_from_the_cache(baseline, mnist_small, monkeypatch):
    forbid_fit(monkeypatch)
    data = dict(mnist_small, train_images=mnist_small["train_images"][:-1])
    with pytest.raises(FitCalled):
        train(data, baseline.cache_path.parent)


def test_shorter_run_retrains(baseline, mnist_small, cache_dir):
    short = train(mnist_small, cache_dir, epochs=2)
    assert short.source == "trained"
    assert short.cache_path.name != baseline.cache_path.name
    assert len(short.epoch_seconds) == 2 and short.epochs == 2
    # Same seed, data order and starting learning rate: the first epoch is the baseline's.
    assert {k: v[0] for k, v in short.history.items()} == {
        k: v[0] for k, v in baseline.history.items()}


def test_retrain_ignores_the_cache(baseline, mnist_small, monkeypatch):
    forbid_fit(monkeypatch)
    with pytest.raises(FitCalled):
        train(mnist_small, baseline.cache_path.parent, retrain=True)


@pytest.mark.parametrize("value", ["1", "yes"])
def test_ca4_retrain_environment_forces_training(value, baseline, mnist_small, monkeypatch):
    forbid_fit(monkeypatch)
    monkeypatch.setenv("CA4_RETRAIN", value)
    with pytest.raises(FitCalled):
        train(mnist_small, baseline.cache_path.parent)


@pytest.mark.parametrize("value", ["0"])
def test_ca4_retrain_off_uses_the_cache(value, baseline, mnist_small, monkeypatch):
    forbid_fit(monkeypatch)
    monkeypatch.setenv("CA4_RETRAIN", value)
    assert train(mnist_small, baseline.cache_path.parent).source == "cache"


def test_truncated_cache_file_is_retrained(baseline, mnist_small, cache_dir, monkeypatch):
    damaged = cache_dir / baseline.cache_path.name
    data = baseline.cache_path.read_bytes()
    damaged.write_bytes(data[: len(data) // 2])
    messages = []
    result = train(mnist_small, cache_dir, log=messages.append)
    assert result.source == "trained"
    assert result.cache_path == damaged
    assert result.history == baseline.history
    assert any("damaged cache entry" in message for message in messages)
    # The rewritten entry is whole again.
    forbid_fit(monkeypatch)
    assert train(mnist_small, cache_dir).source == "cache"


def test_cache_entry_of_another_key_is_not_trusted(baseline, mnist_small, cache_dir, monkeypatch):
    forbid_fit(monkeypatch)
    shutil.copy(baseline.cache_path, cache_dir / baseline.cache_path.name)
    # Same file name, but the stored key belongs to another model: must not be loaded.
    model = ca4.build_autoencoder(2)
    with pytest.raises(ValueError, match="another training key"):
        ca4.load_training_state(cache_dir / baseline.cache_path.name, model, "not-the-key")


@pytest.mark.parametrize("where", ["train_images", "validation_images"])
def test_nan_input_is_rejected_before_training(where, mnist_small, cache_dir):
    data = dict(mnist_small)
    data[where] = data[where].copy()
    data[where][3, 10, 10, 0] = np.nan
    built = []

    def build():
        built.append(1)
        return ca4.build_autoencoder(2)

    with pytest.raises(ValueError, match=f"{where}.*NaN"):
        ca4.train_model(build, data["train_images"], data["validation_images"], name="ae",
                        epochs=1, cache_dir=cache_dir, log=None)
    assert built == []
    assert list(cache_dir.iterdir()) == []


def test_diverging_run_raises(mnist_small, cache_dir):
    data = {"train_images": mnist_small["train_images"][:128],
            "validation_images": mnist_small["validation_images"][:32]}
    with pytest.raises(ca4.TrainingDivergedError, match="diverging") as caught:
        train(data, cache_dir, name="diverging", epochs=1, learning_rate=1e30)
    message = str(caught.value)
    assert "epoch 1 of 1" in message
    assert "non-finite" in message
    assert not list(cache_dir.glob("diverging-*[0-9a-f].npz"))  # nothing cached as finished


def test_interrupted_run_resumes(baseline, mnist_small, cache_dir, monkeypatch):
    checkpoints = []
    original = ca4.save_training_state

    def interrupt_after_second_checkpoint(path, *args, **kwargs):
        original(path, *args, **kwargs)
        if path.name.endswith(".partial.npz"):
            checkpoints.append(path)
            if len(checkpoints) == 2:
                raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(ca4, "save_training_state", interrupt_after_second_checkpoint)
        with pytest.raises(KeyboardInterrupt):
            train(mnist_small, cache_dir)
    assert len(checkpoints) == 2 and checkpoints[-1].is_file()
    assert not (cache_dir / baseline.cache_path.name).exists()

    messages = []
    resumed = train(mnist_small, cache_dir, log=messages.append)
    assert resumed.source == "resumed"
    assert len(resumed.epoch_seconds) == EPOCHS - 2
    assert any(f"resuming after epoch 2 of {EPOCHS}" in message for message in messages)
    assert resumed.history == baseline.history
    assert_same_weights(resumed.model, baseline.model)
    assert not checkpoints[-1].exists()  # the checkpoint is removed once the run finishes
    assert resumed.cache_path.is_file()


def test_damaged_checkpoint_is_ignored(baseline, mnist_small, cache_dir, monkeypatch):
    # A checkpoint has the cache entry's name with `.partial` before the suffix.
    checkpoint = cache_dir / baseline.cache_path.name.replace(".npz", ".partial.npz")
    checkpoint.write_bytes(b"not an archive")
    forbid_fit(monkeypatch)
    messages = []
    with pytest.raises(FitCalled):  # training starts instead of crashing on the checkpoint
        train(mnist_small, cache_dir, log=messages.append)
    assert any("damaged checkpoint ignored" in message for message in messages)
    assert not any("resuming" in message for message in messages)


def test_finished_checkpoint_resumes_with_nothing_left(baseline, mnist_small, cache_dir,
                                                      monkeypatch):
    # A checkpoint written after the last epoch (the process died before the cache write).
    checkpoint = cache_dir / baseline.cache_path.name.replace(".npz", ".partial.npz")
    shutil.copy(baseline.cache_path, checkpoint)
    forbid_fit(monkeypatch)
    result = train(mnist_small, cache_dir)
    assert result.source == "resumed"
    assert result.epoch_seconds == []
    assert result.history == baseline.history
    assert_same_weights(result.model, baseline.model)
    assert result.cache_path.is_file() and not checkpoint.exists()


def test_kl_sweep(mnist_small, cache_dir):
    train_images = mnist_small["train_images"][:128]
    validation_images = mnist_small["validation_images"][:64]
    results = ca4.run_kl_sweep(train_images, validation_images, kl_weights=(0.5, 2.0), epochs=1,
                               batch_size=BATCH_SIZE, seed=0, cache_dir=cache_dir, log=None)
    assert list(results) == [0.5, 2.0]
    for weight, result in results.items():
        assert isinstance(result.model, ca4.VariationalAutoencoder)
        assert result.model.kl_weight == weight
        assert {"loss", "reconstruction_loss", "kl_loss", "val_loss", "val_reconstruction_loss",
                "val_kl_loss"} <= set(result.history)
    assert len(list(cache_dir.glob("*.npz"))) == 2  # one cache entry per weight
    rows = ca4.vae_sweep_table(results)
    assert [row["kl_weight"] for row in rows] == [0.5, 2.0]
    for row, (weight, result) in zip(rows, results.items()):
        assert row["epochs"] == 1
        assert row["val_elbo"] == row["val_reconstruction_loss"] + row["val_kl_loss"]
        assert row["val_reconstruction_loss"] == result.final("val_reconstruction_loss")
        # One validation batch: the weighted total is exactly reconstruction + weight * KL.
        assert row["val_loss"] == pytest.approx(
            row["val_reconstruction_loss"] + weight * row["val_kl_loss"], rel=1e-5)


def test_default_cache_lives_in_the_build_dir(private_build_dir):
    assert ca4.build_dir() == private_build_dir.resolve()
    assert os.environ["CA4_BUILD_DIR"] == str(private_build_dir)
