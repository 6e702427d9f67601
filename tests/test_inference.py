"""Models run in large batches and the analysis cache (ca4lib.inference): `cached_analysis`
computes once and loads after, and recomputes for other arguments, an edited function, a
changed weight or a damaged file; `cache_predictions` keeps large predictions, checked against
the model's output computed by hand and by counting the model runs."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import ca4_helpers as ca4
from ca4lib import inference, measures, settings

# ---------------------------------------------------------------------------------------------
# cached_analysis
# ---------------------------------------------------------------------------------------------


class Calls:
    """Counts calls. An object, not a dict: the cache key describes a dict that a function
    reads by its contents, and a count in it would change the key at every call."""

    count = 0


CALLS = Calls()


def counted_analysis(values: np.ndarray, scale: float = 1.0) -> dict:
    CALLS.count += 1
    return {"total": float(np.sum(values) * scale), "doubled": 2 * np.asarray(values),
            "name": "sum"}


def counted_analysis_edited(values: np.ndarray, scale: float = 1.0) -> dict:
    CALLS.count += 1
    return {"total": float(np.sum(values) * scale) + 1.0, "doubled": 2 * np.asarray(values),
            "name": "sum"}


def model_analysis(model: keras.Model) -> dict:
    CALLS.count += 1
    return {"total": float(sum(np.sum(w) for w in model.get_weights()))}


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CA4_BUILD_DIR", str(tmp_path))
    CALLS.count = 0
    return tmp_path / "cache" / "analyses"


def test_cached_analysis_computes_once_then_loads(private_cache):
    values = np.arange(5.0)
    first = inference.cached_analysis(counted_analysis, values, scale=2.0)
    second = inference.cached_analysis(counted_analysis, values, scale=2.0)
    assert CALLS.count == 1
    assert first["total"] == second["total"] == 20.0
    assert isinstance(second["total"], float) and second["name"] == "sum"
    np.testing.assert_array_equal(second["doubled"], 2 * values)
    assert len(list(private_cache.glob("counted_analysis-*.npz"))) == 1


def test_cached_analysis_recomputes_for_other_arguments(private_cache):
    values = np.arange(5.0)
    inference.cached_analysis(counted_analysis, values, scale=2.0)
    assert inference.cached_analysis(counted_analysis, values, scale=3.0)["total"] == 30.0
    assert inference.cached_analysis(counted_analysis, values + 1, scale=2.0)["total"] == 30.0
    assert inference.cached_analysis(counted_analysis, values.astype(np.float32), scale=2.0)[
        "total"] == 20.0
    assert CALLS.count == 4
    inference.cached_analysis(counted_analysis, values, scale=3.0)
    assert CALLS.count == 4


def test_cached_analysis_recomputes_for_an_edited_function(private_cache, monkeypatch):
    values = np.arange(5.0)
    assert inference.cached_analysis(counted_analysis, values)["total"] == 10.0
    # The same function, its code replaced (as an edit with %autoreload would).
    monkeypatch.setattr(counted_analysis, "__code__", counted_analysis_edited.__code__)
    assert inference.cached_analysis(counted_analysis, values)["total"] == 11.0
    assert CALLS.count == 2


def test_cached_analysis_recomputes_for_a_changed_model_weight(private_cache):
    ca4.set_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    before = inference.cached_analysis(model_analysis, model)["total"]
    inference.cached_analysis(model_analysis, model)
    assert CALLS.count == 1
    kernel = model.layers[0].kernel
    original = kernel.numpy()
    kernel.assign(original + 1.0)
    assert inference.cached_analysis(model_analysis, model)["total"] == pytest.approx(before + 6.0)
    assert CALLS.count == 2
    kernel.assign(original)
    assert inference.cached_analysis(model_analysis, model)["total"] == pytest.approx(before)
    assert CALLS.count == 2  # the first result, from the cache


@pytest.mark.parametrize("damage", [b"", b"not a zip archive", b"PK\x03\x04broken"])
def test_cached_analysis_recomputes_a_damaged_cache_file(private_cache, damage):
    values = np.arange(3.0)
    inference.cached_analysis(counted_analysis, values)
    (path,) = private_cache.glob("counted_analysis-*.npz")
    path.write_bytes(damage)
    assert inference.cached_analysis(counted_analysis, values)["total"] == 3.0
    assert CALLS.count == 2
    assert inference.cached_analysis(counted_analysis, values)["total"] == 3.0
    assert CALLS.count == 2  # the file was written again, whole


# ---------------------------------------------------------------------------------------------
# cache_predictions: predict and decode_codes through the analysis cache
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def counted_batches(private_cache, monkeypatch, patch_lookup):
    """Count the model runs of run_in_batches; the prediction cache on for this test only."""
    real = inference.run_in_batches

    def counted(model, inputs, batch_size):
        CALLS.count += 1
        return real(model, inputs, batch_size)

    patch_lookup(inference.outputs_of, "run_in_batches", counted)
    patch_lookup(measures.unit_activity, "run_in_batches", counted)
    monkeypatch.setattr(inference.PREDICTION_CACHE, "enabled", False)
    return private_cache


def pixel_sums_model(outputs: int = 1) -> keras.Model:
    ca4.set_seed(0)
    images = keras.Input(settings.IMAGE_SHAPE)
    flat = keras.layers.Flatten()(images)
    heads = [keras.layers.Dense(2, name=f"head_{i}")(flat) for i in range(outputs)]
    return keras.Model(images, heads if outputs > 1 else heads[0])


def test_cached_predictions_run_the_model_once_and_return_its_outputs(counted_batches):
    model = pixel_sums_model()
    images = np.random.default_rng(0).random((inference.CACHED_PREDICTION_MIN, 28, 28, 1),
                                             dtype=np.float32)
    kernel, bias = (np.asarray(w, np.float64) for w in model.get_weights())
    expected = images.reshape(len(images), -1) @ kernel + bias  # the Dense layer by hand
    inference.cache_predictions()
    first, second = inference.predict(model, images), inference.predict(model, images)
    assert CALLS.count == 1
    np.testing.assert_allclose(first, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(second, first)
    assert len(list(counted_batches.glob("model_outputs-*.npz"))) == 1
    model.layers[-1].bias.assign(np.ones(2, np.float32))
    np.testing.assert_allclose(inference.predict(model, images), first + 1.0, rtol=1e-5)
    assert CALLS.count == 2  # new weights: run again


def test_cached_predictions_keep_a_list_of_outputs_a_list(counted_batches):
    model = pixel_sums_model(outputs=2)
    images = np.zeros((inference.CACHED_PREDICTION_MIN, 28, 28, 1), np.float32)
    inference.cache_predictions()
    computed, loaded = inference.predict(model, images), inference.predict(model, images)
    assert CALLS.count == 1
    assert isinstance(loaded, list) and len(loaded) == 2
    for fresh, stored in zip(computed, loaded):
        np.testing.assert_array_equal(stored, fresh)


def test_predictions_are_not_kept_when_off_few_or_inside_a_cached_analysis(counted_batches):
    model = pixel_sums_model()
    many = np.zeros((inference.CACHED_PREDICTION_MIN, 28, 28, 1), np.float32)
    inference.predict(model, many), inference.predict(model, many)
    assert CALLS.count == 2  # off by default
    inference.cache_predictions()
    few = many[:inference.CACHED_PREDICTION_MIN - 1]
    inference.predict(model, few), inference.predict(model, few)
    assert CALLS.count == 4
    assert not list(counted_batches.glob("model_outputs-*.npz"))
    inference.cached_analysis(model_analysis_of_images, model, many)
    # The analysis is kept as a whole, its predictions not on their own.
    assert [path.name.split("-")[0] for path in counted_batches.glob("*.npz")] == [
        "model_analysis_of_images"]


def model_analysis_of_images(model: keras.Model, images: np.ndarray) -> dict:
    return {"total": float(np.sum(inference.predict(model, images)))}


class Scaling(keras.layers.Layer):
    """A layer without weights: an edit of its call changes outputs, never the variables."""

    def call(self, inputs):
        return 2.0 * inputs


def tripled(self, inputs):
    return 3.0 * inputs


def test_cached_predictions_recompute_when_a_layer_s_code_changes(counted_batches, monkeypatch):
    images = np.full((inference.CACHED_PREDICTION_MIN, 28, 28, 1), 0.5, np.float32)
    model = keras.Sequential([keras.Input(settings.IMAGE_SHAPE), Scaling()])
    inference.cache_predictions()
    np.testing.assert_array_equal(inference.predict(model, images), 2.0 * images)
    # As an edit with %autoreload would: the same class, its method's code replaced.
    monkeypatch.setattr(Scaling.call, "__code__", tripled.__code__)
    np.testing.assert_array_equal(inference.predict(model, images), 3.0 * images)
    assert CALLS.count == 2


def test_dead_unit_share_is_read_back_once_cached(counted_batches):
    ca4.set_seed(0)
    images_in = keras.Input(settings.IMAGE_SHAPE)
    encoder = keras.Model(images_in, keras.layers.Dense(4, activation="relu")(
        keras.layers.Flatten()(images_in)))
    # Units 0 and 1 see the pixel sum, units 2 and 3 its negative: on positive images the
    # last two stay 0 whatever the image, half the units are dead.
    kernel = np.zeros((28 * 28, 4), np.float32)
    kernel[:, :2], kernel[:, 2:] = 1.0, -1.0
    encoder.layers[-1].set_weights([kernel, np.zeros(4, np.float32)])
    images = np.full((20, 28, 28, 1), 0.5, np.float32)
    inference.cache_predictions()
    assert measures.dead_unit_share(encoder, images) == measures.dead_unit_share(encoder, images) == 0.5
    assert CALLS.count == 1


def test_cache_predictions_names_a_wrong_argument():
    with pytest.raises(ValueError, match="enabled: expected True or False"):
        inference.cache_predictions("yes")
