"""The latent-space explorer (explorer_room.latent_explorer) without a browser: its widgets driven from
Python, checked against the models called independently."""

from __future__ import annotations

import io
import re
import statistics
import time

import numpy as np
import pytest
from IPython.core.formatters import DisplayFormatter
from PIL import Image

import ca4_helpers as ca4
from ca4lib import explorer as explorer_room
from ca4lib import figures

WEIGHTS = ("KL weight 0.1", "KL weight 5")
READING = re.compile(r"^classifier reads: digit (\d) \(p = (\d\.\d\d)\)$")


@pytest.fixture(scope="module")
def models():
    """Two small untrained VAEs, a classifier, and test means of different spreads."""
    vaes = {name: ca4.build_vae(2, kl_weight=weight, seed=0)
            for name, weight in zip(WEIGHTS, (0.1, 5.0))}
    rng = np.random.default_rng(0)
    # The second model's z[1] is collapsed: its means hardly move along it.
    means = {WEIGHTS[0]: rng.normal([0.5, -1.0], [2.0, 1.5], (400, 2)),
             WEIGHTS[1]: rng.normal(0.0, [0.4, 0.001], (400, 2))}
    labels = rng.integers(0, 10, 400)
    decoders = {name: vae.decoder for name, vae in vaes.items()}
    return decoders, means, labels, ca4.build_digit_classifier()


@pytest.fixture
def explorer(models):
    return explorer_room.latent_explorer(*models)


def decode(decoder, z) -> np.ndarray:
    """The decoder's image at z, computed apart from the explorer (predict, not a call)."""
    return decoder.predict(np.array([z], np.float32), verbose=0)[0, ..., 0]


def shown_digit(explorer) -> np.ndarray:
    """The digit the explorer's image widget holds, back in [0, 1] (INK: dark ink is 1)."""
    pixels = np.asarray(Image.open(io.BytesIO(explorer.digit.value)).convert("L"), np.float64)
    zoom = explorer_room.EXPLORER_ZOOM
    assert pixels.shape == (28 * zoom, 28 * zoom)
    return 1 - pixels[::zoom, ::zoom] / 255


def test_it_starts_at_a_typical_code_of_the_first_model(explorer, models):
    decoders, means, _, _ = models
    assert explorer.choice.options == WEIGHTS and explorer.choice.value == WEIGHTS[0]
    median = np.median(means[WEIGHTS[0]], axis=0)
    steps = [slider.step for slider in explorer.sliders]
    np.testing.assert_allclose(explorer.z, np.round(median / steps) * steps, atol=1e-9)
    assert explorer.updates == 1
    np.testing.assert_allclose(explorer.decoded, decode(decoders[WEIGHTS[0]], explorer.z),
                               atol=1e-5)
    np.testing.assert_allclose(shown_digit(explorer), explorer.decoded, atol=1 / 255 + 1e-6)


def test_moving_a_slider_decodes_one_image_at_the_new_point(explorer, models):
    decoders = models[0]
    digit, position, updates = explorer.digit.value, explorer.position.value, explorer.updates
    explorer.sliders[0].value = 2.5
    explorer.sliders[1].value = -1.5
    assert explorer.z == (2.5, -1.5)
    assert explorer.updates == updates + 2  # one decode per change
    assert explorer.digit.value != digit, "the decoded image did not change"
    assert explorer.position.value != position, "the marker on the scatter did not move"
    expected = decode(decoders[WEIGHTS[0]], [2.5, -1.5])
    np.testing.assert_allclose(explorer.decoded, expected, atol=1e-5)
    np.testing.assert_allclose(shown_digit(explorer), expected, atol=1 / 255 + 1e-6)


def test_the_classifier_line_is_the_classifiers_reading_of_the_decoded_digit(explorer, models):
    classifier = models[3]
    for z0 in (-3.0, 0.7, 4.0):
        explorer.sliders[0].value = z0
        probabilities = classifier.predict(decode(models[0][WEIGHTS[0]], explorer.z)
                                           [None, ..., None], verbose=0)[0]
        match = READING.match(explorer.reading.value)
        assert match, explorer.reading.value
        assert int(match[1]) == int(np.argmax(probabilities))
        assert float(match[2]) == pytest.approx(probabilities.max(), abs=0.006)


def test_switching_the_model_gives_the_sliders_that_models_range(explorer, models):
    decoders, means, _, _ = models
    explorer.sliders[0].value = 3.0
    scatter, updates = explorer.position.value, explorer.updates
    explorer.choice.value = WEIGHTS[1]
    assert explorer.updates == updates + 1  # one decode for the switch, not one per slider
    assert explorer.position.value != scatter
    for d, slider in enumerate(explorer.sliders):
        # Computed here: the 1st-99th percentile widened by a tenth of its span (at least
        # 0.005 for a collapsed coordinate), ends rounded out to the step.
        low, high = np.percentile(means[WEIGHTS[1]][:, d], [1, 99])
        margin = explorer_room.EXPLORER_MARGIN * max(high - low, 0.05)
        assert low - margin - slider.step < slider.min <= low - margin
        assert high + margin <= slider.max < high + margin + slider.step
        assert (slider.max - slider.min) / slider.step <= explorer_room.EXPLORER_STEPS + 1e-9
        assert slider.min <= slider.value <= slider.max
    assert explorer.z[0] == explorer.sliders[0].max  # 3.0 lies beyond: clipped to the end
    np.testing.assert_allclose(explorer.decoded, decode(decoders[WEIGHTS[1]], explorer.z),
                               atol=1e-5)
    explorer.choice.value = WEIGHTS[0]
    np.testing.assert_allclose([[s.min, s.max, s.step] for s in explorer.sliders],
                               explorer_room.explorer_ranges(means[WEIGHTS[0]]))


def test_the_scatter_is_drawn_once_per_model_then_only_the_marker_moves(models, patch_lookup):
    drawn = []
    original = figures.scatter_latent_codes
    patch_lookup(explorer_room.LatentScatter.__init__, "scatter_latent_codes",
                 lambda *args, **kwargs: drawn.append(args[-1]) or original(*args, **kwargs))
    explorer = explorer_room.latent_explorer(*models)
    seen = set()
    for z0 in np.linspace(-2, 2, 8):
        explorer.sliders[0].value = round(float(z0), 1)
        seen.add(explorer.position.value)
    explorer.choice.value = WEIGHTS[1]
    explorer.choice.value = WEIGHTS[0]
    assert len(drawn) == len(WEIGHTS)
    assert len(seen) == 8  # every position shows its own marker


def test_a_change_takes_milliseconds(explorer):
    seconds = []
    for z1 in np.linspace(-2, 2, 10):
        started = time.perf_counter()
        explorer.sliders[1].value = round(float(z1), 1)
        seconds.append(time.perf_counter() - started)
    # Typically 10-40 ms on two CPU cores; the bound only catches a batch predict per change.
    assert statistics.median(seconds) < 0.5, seconds


def test_outside_jupyterlab_it_is_a_one_line_note(explorer):
    data, _ = DisplayFormatter().format(explorer)
    assert data["text/plain"] == explorer_room.EXPLORER_NOTE
    assert explorer_room.EXPLORER_NOTE in data["text/markdown"]
    assert "\n" not in explorer_room.EXPLORER_NOTE and "make lab" in explorer_room.EXPLORER_NOTE
    view = data["application/vnd.jupyter.widget-view+json"]
    assert view["model_id"] == explorer.model_id
    assert not any(key.startswith("image/") for key in data)


def test_slider_ranges_are_round_and_hold_the_origin():
    rng = np.random.default_rng(1)
    means = np.column_stack([rng.normal(3.0, 2.0, 500), rng.normal(0.0, 1e-4, 500)])
    ranges = explorer_room.explorer_ranges(means)
    for low, high, step in ranges:
        mantissa = step / 10 ** np.floor(np.log10(step))
        assert round(mantissa, 9) in (1, 2, 5)
        assert abs(low / step - round(low / step)) < 1e-6
        assert abs(high / step - round(high / step)) < 1e-6
        assert low < high and (high - low) / step <= explorer_room.EXPLORER_STEPS + 1e-9
    assert ranges[1, 1] - ranges[1, 0] >= 2 * explorer_room.EXPLORER_MARGIN * 0.05 - 1e-12  # movable
    p1, p99 = np.percentile(means[:, 0], [1, 99])
    assert ranges[0, 0] < p1 and ranges[0, 1] > p99


def test_arguments_are_checked_by_name(models):
    decoders, means, labels, classifier = models
    other = {WEIGHTS[0]: means[WEIGHTS[0]]}
    cases = [
        (({}, means, labels, classifier), r"^decoders: expected a non-empty mapping"),
        (({"x": ca4.build_decoder(10)}, {"x": means[WEIGHTS[0]]}, labels, classifier),
         r"^decoders\['x'\]: expected a keras.Model from 2-D codes"),
        ((decoders, other, labels, classifier), r"^means: expected the test means of"),
        ((decoders, {**means, WEIGHTS[1]: np.zeros((400, 3))}, labels, classifier),
         r"^means\['KL weight 5'\]: expected an array of shape \(N, 2\)"),
        ((decoders, means, labels[:10], classifier),
         r"^means\['KL weight 0.1'\]: expected one mean per label \(10\), got 400"),
        ((decoders, means, list(labels), classifier), r"^labels: expected a NumPy array"),
        ((decoders, means, labels + 10, classifier), r"^labels: expected digits 0-9"),
        ((decoders, means, labels, decoders[WEIGHTS[0]]), r"^classifier: expected a keras.Model"),
    ]
    for arguments, message in cases:
        with pytest.raises(ValueError, match=message):
            explorer_room.latent_explorer(*arguments)
