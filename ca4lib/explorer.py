"""The latent-space explorer: sliders over a trained VAE's 2-D code, in JupyterLab (notebook:
*The latent space, interactively*). In the PDF it is one line, EXPLORER_NOTE.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import ipywidgets as widgets
import matplotlib
import matplotlib.figure
import matplotlib.lines
import matplotlib.patches
import matplotlib.ticker
import numpy as np

from ca4lib.backend import keras
from ca4lib.checks import check_codes, check_labels
from ca4lib.figures import INK, REPORT_STYLE, add_digit_legend, scatter_latent_codes
from ca4lib.settings import DIGITS, IMAGE_SHAPE

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
        self.means, self.labels = dict(means), labels
        self.scatters: dict[str, LatentScatter] = {}  # each drawn when first shown
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
        if name not in self.scatters:
            self.scatters[name] = LatentScatter(name, self.means[name], self.labels,
                                                self.ranges[name])
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
