"""train_model: learning, determinism, the learning-rate schedule, the trained-model cache and its
key, divergence, interrupt and resume, the KL sweep and its table."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
from test_models import MeanSampling

import ca4_helpers as ca4
from ca4lib import checkpoints, inference, storage, vae_analyses

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


def builder(kind: str, latent_dim: int, learning_rate: float | None):
    """Return the build_model callable of train_model; it calls the module's builder itself,
    as the notebook does (the cache key follows the names that the callable uses)."""
    if kind == "vae":
        return lambda: ca4.build_vae(latent_dim, kl_weight=1.0, seed=0,
                                     learning_rate=learning_rate or 2e-3)
    return lambda: ca4.build_autoencoder(latent_dim, learning_rate=learning_rate or 1e-3)


def train(data, cache_dir, *, kind="ae", latent_dim=2, learning_rate=None, log=None, **options):
    """Train the Task 1 autoencoder (or the VAE) on the small real data set, suite defaults."""
    settings = {"name": kind, "epochs": EPOCHS, "batch_size": BATCH_SIZE, "seed": 0}
    settings.update(options)
    return ca4.train_model(builder(kind, latent_dim, learning_rate),
                           data["train_images"], data["validation_images"],
                           cache_dir=cache_dir, log=log, **settings)


def weights(model) -> list[np.ndarray]:
    return [v.numpy() for v in model.weights]


def assert_same_weights(first, second) -> None:
    a, b = weights(first), weights(second)
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def checkpoint_of(cache_path: Path) -> Path:
    """A checkpoint has the cache entry's name with `.partial` before the suffix."""
    return cache_path.with_name(cache_path.name.replace(".npz", ".partial.npz"))


@pytest.fixture(scope="module")
def baseline(mnist_small, tmp_path_factory):
    """One uninterrupted 4-epoch autoencoder run; several tests compare against it."""
    cache_dir = tmp_path_factory.mktemp("baseline_cache")
    return train(mnist_small, cache_dir)


@pytest.fixture(scope="module")
def vae_baseline(mnist_small, tmp_path_factory):
    """One uninterrupted 4-epoch VAE run."""
    cache_dir = tmp_path_factory.mktemp("vae_baseline_cache")
    return train(mnist_small, cache_dir, kind="vae")


# --- learning -------------------------------------------------------------------------------------


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
    # The model's training time covers at least its epochs.
    assert baseline.seconds >= sum(baseline.epoch_seconds) > 0
    assert baseline.cache_path.is_file()
    assert not list(baseline.cache_path.parent.glob("*.partial.npz"))  # checkpoint cleaned up


def test_val_loss_is_the_loss_of_the_trained_model(baseline, mnist_small):
    # Recomputed outside Keras' metrics: the mean pixel BCE of the final model's predictions.
    images = mnist_small["validation_images"]
    p = np.clip(inference.predict(baseline.model, images), np.float32(1e-7), np.float32(1 - 1e-7))
    p, t = p.astype(np.float64), images.astype(np.float64)
    expected = float(np.mean(-(t * np.log(p) + (1 - t) * np.log(1 - p))))
    assert baseline.final("val_loss") == pytest.approx(expected, rel=1e-4)


def test_training_is_deterministic(baseline, mnist_small, cache_dir):
    again = train(mnist_small, cache_dir, retrain=True)
    assert again.source == "trained"
    assert again.history == baseline.history
    assert_same_weights(again.model, baseline.model)


def test_classifier_trains_on_digit_labels(mnist_small, cache_dir, monkeypatch):
    def classify(labels):
        return ca4.train_model(lambda: ca4.build_digit_classifier(), mnist_small["train_images"],
                               mnist_small["validation_images"], name="classifier", epochs=2,
                               batch_size=BATCH_SIZE, seed=0, train_targets=labels,
                               validation_targets=mnist_small["validation_labels"],
                               cache_dir=cache_dir, log=None)

    result = classify(mnist_small["train_labels"])
    assert result.source == "trained"
    assert set(result.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(values) == 2 for values in result.history.values())
    assert result.history["loss"][-1] < result.history["loss"][0]
    # The validation metrics are those of the final model on the validation labels.
    labels = mnist_small["validation_labels"]
    probabilities = np.asarray(inference.predict(result.model, mnist_small["validation_images"]))
    accuracy = float(np.mean(probabilities.argmax(axis=1) == labels))
    assert result.final("val_accuracy") == pytest.approx(accuracy, abs=1e-6)
    assert accuracy > 0.2  # above the 0.1 of guessing
    expected_loss = -np.mean(np.log(probabilities[np.arange(len(labels)), labels]
                                    .astype(np.float64)))
    assert result.final("val_loss") == pytest.approx(expected_loss, rel=1e-4)
    # The labels are part of the cache key.
    forbid_fit(monkeypatch)
    assert classify(mnist_small["train_labels"]).source == "cache"
    with pytest.raises(FitCalled):
        classify(np.roll(mnist_small["train_labels"], 1))


# --- the learning-rate schedule -------------------------------------------------------------------


def test_cosine_schedule_endpoints(mnist_small, cache_dir, monkeypatch):
    initial, fraction = 2e-3, 0.25
    data = {"train_images": mnist_small["train_images"][:160],
            "validation_images": mnist_small["validation_images"][:32]}
    epochs = 2
    steps_per_epoch = math.ceil(160 / BATCH_SIZE)  # the last batch is a short one
    result = train(data, cache_dir, epochs=epochs, learning_rate=initial,
                   final_learning_rate_fraction=fraction)
    optimizer = result.model.optimizer
    total = epochs * steps_per_epoch
    assert int(optimizer.iterations.numpy()) == total
    # learning_rate is the schedule at the optimiser's step count: the end of the decay.
    assert float(optimizer.learning_rate) == pytest.approx(initial * fraction, rel=1e-6)
    # A cached model is restored at the same point of the schedule.
    with monkeypatch.context() as patch:
        forbid_fit(patch)
        cached = train(data, cache_dir, epochs=epochs, learning_rate=initial,
                       final_learning_rate_fraction=fraction)
    assert cached.source == "cache"
    assert int(cached.model.optimizer.iterations.numpy()) == total
    assert float(cached.model.optimizer.learning_rate) == pytest.approx(initial * fraction,
                                                                        rel=1e-6)
    # The schedule itself, step by step: a half cosine from `initial` to `initial * fraction`.
    expected = {0: initial, total // 2: initial * (1 + fraction) / 2,
                1: initial * (fraction + (1 - fraction) * (1 + math.cos(math.pi / total)) / 2),
                total: initial * fraction}
    for step, value in expected.items():
        optimizer.iterations.assign(step)
        assert float(optimizer.learning_rate) == pytest.approx(value, rel=1e-6), step


# --- the cache ------------------------------------------------------------------------------------


def test_same_key_is_served_from_the_cache(baseline, mnist_small, monkeypatch):
    forbid_fit(monkeypatch)
    modified = baseline.cache_path.stat().st_mtime_ns
    messages = []
    cached = train(mnist_small, baseline.cache_path.parent, log=messages.append)
    assert cached.source == "cache"
    assert cached.cache_path == baseline.cache_path
    assert cached.history == baseline.history
    # The training time is stored with the model: a cache hit reports the original run's.
    assert cached.epoch_seconds == []
    assert cached.seconds == baseline.seconds > 0
    assert_same_weights(cached.model, baseline.model)
    assert baseline.cache_path.stat().st_mtime_ns == modified
    assert len(messages) == 1 and "from the cache" in messages[0]
    assert messages[0].startswith("ae")  # the run's name
    # The record is for a person: it names no cache file.
    assert baseline.cache_path.stem not in messages[0]
    assert baseline.cache_path.name.split("-")[-1].removesuffix(".npz") not in messages[0]


@pytest.mark.parametrize("change", [{"epochs": 3}, {"seed": 1}, {"latent_dim": 3},
                                    {"learning_rate": 5e-4}, {"batch_size": 32},
                                    {"final_learning_rate_fraction": 0.5}])
def test_changed_setting_is_not_served_from_the_cache(change, baseline, mnist_small, monkeypatch):
    forbid_fit(monkeypatch)
    with pytest.raises(FitCalled):
        train(mnist_small, baseline.cache_path.parent, **change)


@pytest.mark.parametrize("change", ["train_images", "validation_images", "train_targets"])
def test_changed_data_is_not_served_from_the_cache(change, baseline, mnist_small, monkeypatch):
    forbid_fit(monkeypatch)
    data = dict(mnist_small)
    options = {}
    if change == "train_targets":  # targets other than the inputs, as a denoiser has
        options["train_targets"] = ca4.add_gaussian_noise(data["train_images"], 0.1, seed=0)
    else:
        data[change] = data[change][:-1]
    with pytest.raises(FitCalled):
        train(data, baseline.cache_path.parent, **options)


def test_shorter_run_retrains(baseline, mnist_small, cache_dir):
    short = train(mnist_small, cache_dir, epochs=2)
    assert short.source == "trained"
    assert short.cache_path.name != baseline.cache_path.name
    assert short.cache_path.is_file()
    assert len(short.epoch_seconds) == 2 and short.epochs == 2
    assert all(len(values) == 2 for values in short.history.values())


def test_retrain_ignores_the_cache(baseline, mnist_small, monkeypatch):
    forbid_fit(monkeypatch)
    with pytest.raises(FitCalled):
        train(mnist_small, baseline.cache_path.parent, retrain=True)


@pytest.mark.parametrize("value", ["1", "yes", "TRUE", " On "])
def test_ca4_retrain_environment_forces_training(value, baseline, mnist_small, monkeypatch):
    forbid_fit(monkeypatch)
    monkeypatch.setenv("CA4_RETRAIN", value)
    with pytest.raises(FitCalled):
        train(mnist_small, baseline.cache_path.parent)


@pytest.mark.parametrize("value", ["0", "", "false", "No", "OFF"])
def test_ca4_retrain_off_uses_the_cache(value, baseline, mnist_small, monkeypatch):
    forbid_fit(monkeypatch)
    monkeypatch.setenv("CA4_RETRAIN", value)
    assert train(mnist_small, baseline.cache_path.parent).source == "cache"


@pytest.mark.parametrize("value", ["2", "maybe", "yes please"])
def test_ca4_retrain_other_values_are_refused(value, baseline, mnist_small, monkeypatch):
    forbid_fit(monkeypatch)
    monkeypatch.setenv("CA4_RETRAIN", value)
    with pytest.raises(ValueError, match=f"CA4_RETRAIN: .*got {value!r}"):
        train(mnist_small, baseline.cache_path.parent)


@pytest.mark.parametrize("retrain", ["1", 1, 0, np.True_, "True"])
def test_retrain_accepts_only_booleans(retrain, mnist_small, cache_dir):
    with pytest.raises(ValueError, match="retrain: expected True, False or None"):
        train(mnist_small, cache_dir, retrain=retrain)
    assert list(cache_dir.iterdir()) == []


@pytest.mark.parametrize("fraction", [float("nan"), -0.1, 1.5, float("inf"), "0.1"])
def test_final_learning_rate_fraction_is_checked(fraction, mnist_small, cache_dir):
    with pytest.raises(ValueError, match="final_learning_rate_fraction"):
        train(mnist_small, cache_dir, final_learning_rate_fraction=fraction)


def test_a_schedule_the_builder_set_is_kept_and_said(mnist_small, cache_dir):
    schedule = keras.optimizers.schedules.ExponentialDecay(4e-3, decay_steps=1, decay_rate=0.5)

    def build():
        model = ca4.build_autoencoder(2)
        model.compile(optimizer=keras.optimizers.Adam(schedule), loss="binary_crossentropy")
        return model

    messages = []
    data = {"train_images": mnist_small["train_images"][:128],
            "validation_images": mnist_small["validation_images"][:32]}
    result = ca4.train_model(build, data["train_images"], data["validation_images"],
                             name="own_schedule", epochs=1, batch_size=BATCH_SIZE, seed=0,
                             cache_dir=cache_dir, log=messages.append)
    assert any("keeps the learning-rate schedule its builder set" in m for m in messages)
    # Two steps of 64 images: the builder's schedule halves the rate at each step.
    assert int(result.model.optimizer.iterations.numpy()) == 2
    assert float(result.model.optimizer.learning_rate) == pytest.approx(4e-3 / 4, rel=1e-6)


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


def rewrite_without(source: Path, target: Path, entry: str) -> None:
    """Copy a cache archive, leaving out one of its entries."""
    with np.load(source) as archive:
        arrays = {name: archive[name] for name in archive.files if name != entry}
    assert len(arrays) == len(np.load(source).files) - 1, f"{entry} is not in the archive"
    with target.open("wb") as stream:
        np.savez(stream, **arrays)


@pytest.mark.parametrize("entry", ["history_json", "variable_0003", "training_seconds", "key"])
def test_cache_entry_missing_a_part_is_retrained(entry, baseline, mnist_small, cache_dir):
    rewrite_without(baseline.cache_path, cache_dir / baseline.cache_path.name, entry)
    messages = []
    result = train(mnist_small, cache_dir, log=messages.append)
    assert result.source == "trained"
    assert any("damaged cache entry" in message and entry in message for message in messages)
    assert result.history == baseline.history
    assert_same_weights(result.model, baseline.model)


def test_interrupted_writes_are_removed(baseline, mnist_small, cache_dir, monkeypatch):
    shutil.copy(baseline.cache_path, cache_dir / baseline.cache_path.name)
    # What a run killed inside atomic_file leaves: .NAME-KEY.npz.RANDOM.tmp, half written.
    stale = [cache_dir / f".{baseline.cache_path.name}.x1y2z3.tmp",
             cache_dir / f".{checkpoint_of(baseline.cache_path).name}.abc_12.tmp"]
    for path in stale:
        path.write_bytes(b"PK\x03\x04 half an archive")
    other = cache_dir / ".other-0123456789abcdef.npz.abcdef.tmp"  # another model's
    other.write_bytes(b"")
    forbid_fit(monkeypatch)
    assert train(mnist_small, cache_dir).source == "cache"
    assert not any(path.exists() for path in stale)
    assert other.exists()


def test_cache_files_are_readable_like_other_outputs(mnist_small, cache_dir):
    previous = os.umask(0o022)
    try:
        data = {"train_images": mnist_small["train_images"][:64],
                "validation_images": mnist_small["validation_images"][:32]}
        result = train(data, cache_dir, name="permissions", epochs=1)
        written = storage.write_json_atomic(cache_dir / "metrics.json", {"a": 1})
    finally:
        os.umask(previous)
    for path in (result.cache_path, written):
        assert path.stat().st_mode & 0o777 == 0o644, oct(path.stat().st_mode)


def test_cache_entry_of_another_key_is_not_trusted(baseline, mnist_small, tmp_path, monkeypatch):
    # Training B (another seed) once elsewhere tells the file name B's cache entry has.
    other = train(mnist_small, tmp_path / "reference", seed=1, epochs=1)
    assert other.cache_path.name != baseline.cache_path.name
    # Put A's entry (the baseline: same architecture, so its variables would fit) under B's name.
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    planted = cache_dir / other.cache_path.name
    planted.write_bytes(baseline.cache_path.read_bytes())
    messages = []
    result = train(mnist_small, cache_dir, seed=1, epochs=1, log=messages.append)
    assert result.source == "trained"
    assert any("damaged cache entry" in message and "another training key" in message
               for message in messages)
    assert result.history == other.history
    assert_same_weights(result.model, other.model)
    assert not all(np.array_equal(a, b) for a, b in zip(weights(result.model),
                                                        weights(baseline.model)))
    # B's own entry has replaced A's.
    assert result.cache_path == planted
    forbid_fit(monkeypatch)
    again = train(mnist_small, cache_dir, seed=1, epochs=1)
    assert again.source == "cache"
    assert_same_weights(again.model, other.model)


def test_default_cache_lives_in_the_build_dir(private_build_dir, mnist_small, tmp_path,
                                              monkeypatch):
    data = {"train_images": mnist_small["train_images"][:64],
            "validation_images": mnist_small["validation_images"][:32]}
    first = train(data, None, name="default_cache", epochs=1)
    assert first.cache_path.parent == private_build_dir.resolve() / "cache"
    assert first.cache_path.is_file()
    # Another build folder: another cache, trained afresh.
    elsewhere = tmp_path / "elsewhere"
    monkeypatch.setenv("CA4_BUILD_DIR", str(elsewhere))
    second = train(data, None, name="default_cache", epochs=1)
    assert second.source == "trained"
    assert second.cache_path == elsewhere.resolve() / "cache" / first.cache_path.name
    assert second.cache_path.is_file() and first.cache_path.is_file()


# --- bad inputs and divergence --------------------------------------------------------------------


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
    with pytest.raises(checkpoints.TrainingDivergedError, match="diverging") as caught:
        train(data, cache_dir, name="diverging", epochs=1, learning_rate=1e30)
    message = str(caught.value)
    assert "epoch 1 of 1" in message
    assert "non-finite" in message
    assert not list(cache_dir.glob("diverging-*[0-9a-f].npz"))  # nothing cached as finished


# --- interrupt and resume -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ae", "vae"])
def test_interrupted_run_resumes(kind, mnist_small, cache_dir, request):
    baseline = request.getfixturevalue("baseline" if kind == "ae" else "vae_baseline")
    checkpoint = cache_dir / checkpoint_of(baseline.cache_path).name

    # Interrupt after epoch 2's checkpoint is written. Not by patching checkpoints.save_training_state:
    # a stand-in defined here is not part of the module's code, so the run would get another
    # training key (and checkpoint file) than the resumed one. ProgressLog reports each epoch
    # after EpochCheckpoint has saved it, and ProgressLog is not in the key.
    def interrupt_after_epoch_2(message):
        if "epoch 2/" in message:
            assert checkpoint.is_file()
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(mnist_small, cache_dir, kind=kind, log=interrupt_after_epoch_2)
    assert checkpoint.is_file()
    assert not (cache_dir / baseline.cache_path.name).exists()

    messages = []
    resumed = train(mnist_small, cache_dir, kind=kind, log=messages.append)
    assert resumed.source == "resumed"
    assert len(resumed.epoch_seconds) == EPOCHS - 2
    assert any(f"resuming after epoch 2 of {EPOCHS}" in message for message in messages)
    assert resumed.history == baseline.history
    assert_same_weights(resumed.model, baseline.model)
    # The training time includes the interrupted run's two epochs.
    assert resumed.seconds > sum(resumed.epoch_seconds)
    assert not checkpoint.exists()  # the checkpoint is removed once the run finishes
    assert resumed.cache_path == cache_dir / baseline.cache_path.name
    assert resumed.cache_path.is_file()


def test_damaged_checkpoint_is_ignored(baseline, mnist_small, cache_dir, monkeypatch):
    checkpoint = cache_dir / checkpoint_of(baseline.cache_path).name
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
    checkpoint = cache_dir / checkpoint_of(baseline.cache_path).name
    shutil.copy(baseline.cache_path, checkpoint)
    forbid_fit(monkeypatch)
    result = train(mnist_small, cache_dir)
    assert result.source == "resumed"
    assert result.epoch_seconds == []
    assert result.seconds == baseline.seconds
    assert result.history == baseline.history
    assert_same_weights(result.model, baseline.model)
    assert result.cache_path.is_file() and not checkpoint.exists()


# --- the KL sweep and its table -------------------------------------------------------------------


def numpy_vae_terms(model, images) -> tuple[float, np.ndarray]:
    """Reconstruction term (z = z_mean) and per-dimension KL, recomputed in NumPy float64."""
    z_mean, z_log_var = (np.asarray(t) for t in model.encoder.predict(images, verbose=0))
    p = np.clip(np.asarray(model.decoder.predict(z_mean, verbose=0)), np.float32(1e-7),
                np.float32(1 - 1e-7)).astype(np.float64)
    t = images.astype(np.float64)
    reconstruction = -(t * np.log(p) + (1 - t) * np.log(1 - p)).reshape(len(images), -1).sum(1)
    m, lv = z_mean.astype(np.float64), z_log_var.astype(np.float64)
    kl = 0.5 * (np.exp(lv) + m**2 - 1.0 - lv)
    return float(reconstruction.mean()), kl.mean(axis=0)


@pytest.fixture(scope="module")
def kl_sweep(mnist_small, tmp_path_factory):
    """A two-weight sweep of one epoch, with z = z_mean: the validation history is then a
    function of the final weights alone, which NumPy can recompute."""
    cache_dir = tmp_path_factory.mktemp("kl_sweep_cache")
    validation_images = mnist_small["validation_images"][:64]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ca4, "Sampling", MeanSampling)
        results = ca4.run_kl_sweep(mnist_small["train_images"][:128], validation_images,
                                   kl_weights=(0.5, 2.0), epochs=1, batch_size=BATCH_SIZE,
                                   seed=0, cache_dir=cache_dir, log=None)
    terms = {weight: ca4.vae_test_terms(result.model, validation_images)
             for weight, result in results.items()}
    rows = vae_analyses.vae_sweep_rows(terms, {weight: r.epochs for weight, r in results.items()})
    expected = [numpy_vae_terms(result.model, validation_images) for result in results.values()]
    return {"results": results, "rows": rows, "terms": terms, "expected": expected,
            "cache_dir": cache_dir}


def test_kl_sweep(kl_sweep, mnist_small):
    results, rows = kl_sweep["results"], kl_sweep["rows"]
    assert list(results) == [0.5, 2.0]
    for weight, result in results.items():
        assert isinstance(result.model, ca4.VariationalAutoencoder)
        assert result.model.kl_weight == weight
        assert {"loss", "reconstruction_loss", "kl_loss", "val_loss", "val_reconstruction_loss",
                "val_kl_loss"} <= set(result.history)
    assert len(list(kl_sweep["cache_dir"].glob("*.npz"))) == 2  # one cache entry per weight
    assert [row["kl_weight"] for row in rows] == [0.5, 2.0]
    images = mnist_small["validation_images"][:64]
    for row, result, (_, kl_per_dimension) in zip(rows, results.values(), kl_sweep["expected"]):
        assert row["epochs"] == 1
        assert row["kl_per_dimension"] == pytest.approx(kl_per_dimension.tolist(),
                                                        rel=1e-4, abs=1e-7)
        # Active by Burda et al.'s definition: the mean code moves with the image.
        z_mean = np.asarray(result.model.encoder.predict(images, verbose=0)[0], np.float64)
        assert row["active_dimensions"] == int(np.sum(z_mean.var(axis=0)
                                                      > vae_analyses.ACTIVE_VARIANCE))


def test_kl_sweep_validation_terms_are_those_of_the_final_models(kl_sweep):
    # Also guards the validation pipeline: a dataset of unknown length made Keras run one
    # more (failing) test step whose count the VAE's Mean trackers kept, halving every val_*.
    for row, (weight, result), (reconstruction, kl_per_dimension) in zip(
            kl_sweep["rows"], kl_sweep["results"].items(), kl_sweep["expected"]):
        kl = float(kl_per_dimension.sum())
        # The analytic KL of the encoder's outputs is the KL that test_step tracked.
        assert row["kl"] == pytest.approx(result.final("val_kl_loss"), rel=1e-5)
        assert result.final("val_kl_loss") == pytest.approx(kl, rel=1e-4)
        # With z = z_mean in training, the history's reconstruction is the mean code's.
        assert row["mean_code_reconstruction"] == pytest.approx(
            result.final("val_reconstruction_loss"), rel=1e-4)
        assert result.final("val_reconstruction_loss") == pytest.approx(reconstruction,
                                                                        rel=1e-4)
        assert result.final("val_loss") == pytest.approx(reconstruction + weight * kl, rel=1e-4)
