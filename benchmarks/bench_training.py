"""Training and latent-grid benchmark: the project's code against a straightforward port.

Run from the project root (`make bench`):

    .venv/bin/python benchmarks/bench_training.py [--images N] [--repeats R]

Training throughput (images/s) of the VAE (`build_vae(2, kl_weight=1.0)`) and of the Task 1
autoencoder (`build_autoencoder(10)`): the project side trains through `ca4.train_model`, the
baseline builds the same layers, compiles them with Keras' defaults and calls plain
`model.fit(x, x, batch_size=128, shuffle=True)` on NumPy arrays. Every repetition trains
a fresh model for two epochs and times only the second (steady state). The two sides
alternate (baseline, project, baseline, project, ...) and the medians are reported.

Latent grid: one batched decode of the 15x15 grid (`ca4.decode_latent_grid`) against
225 calls of `decoder.predict(point[None])`, alternating in the same way.

Writes build/bench.json (`ca4.build_dir()`) and prints a table. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

import keras  # noqa: E402  (ca4_helpers sets KERAS_BACKEND before this import matters)
import numpy as np  # noqa: E402

import ca4_helpers as ca4  # noqa: E402

BATCH_SIZE = 128  # the assignment's batch size for both models
EPOCHS = 2  # epoch 1 warms up (tracing, allocation); epoch 2 is timed
VALIDATION_IMAGES = 1000  # train_model requires validation data: one predict batch of test images
LATENT_DIM_VAE = 2
LATENT_DIM_AUTOENCODER = 10
GRID_SIDE = 15

# train_model passes a tf.data.Dataset to fit, whose default shuffle=True then warns every epoch.
warnings.filterwarnings("ignore", message=r"`shuffle=True` was passed")


# ---------------------------------------------------------------------------------------------
# Shared helpers (levers.py imports these)
# ---------------------------------------------------------------------------------------------


class EpochTimer(keras.callbacks.Callback):
    """Record the wall-clock seconds of every epoch of a `fit` call."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []
        self._started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.seconds.append(time.perf_counter() - self._started)


def cpu_model() -> str:
    """Return the CPU model name from /proc/cpuinfo, else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as stream:
            for line in stream:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_info() -> dict[str, Any]:
    """Describe the machine and the library versions a timing depends on."""
    versions = ca4.library_versions()
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": versions["python"],
        "tensorflow": versions["tensorflow"],
        "keras": versions["keras"],
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def load_images(count: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the first `count` training images and VALIDATION_IMAGES test images, normalised."""
    (x_train, _), (x_test, _) = ca4.load_mnist()
    if count > x_train.shape[0]:
        raise SystemExit(f"--images: at most {x_train.shape[0]} (MNIST's training set), got {count}")
    return ca4.normalize_images(x_train[:count]), ca4.normalize_images(x_test[:VALIDATION_IMAGES])


def build_plain_vae(steps_per_execution: int = 1, jit_compile: Any = "auto"
                    ) -> ca4.VariationalAutoencoder:
    """The assignment's VAE (same layers and seed as build_vae), compiled the straightforward way."""
    model = ca4.VariationalAutoencoder(ca4.build_vae_encoder(LATENT_DIM_VAE),
                                       ca4.build_decoder(LATENT_DIM_VAE), kl_weight=1.0,
                                       seed=ca4.DEFAULT_SEED, name="vae_plain")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), steps_per_execution=steps_per_execution,
                  jit_compile=jit_compile)
    return model


def build_plain_autoencoder(steps_per_execution: int = 1, jit_compile: Any = "auto"
                            ) -> ca4.Autoencoder:
    """The Task 1 autoencoder (same layers as build_autoencoder), compiled the straightforward way."""
    model = ca4.Autoencoder(ca4.build_autoencoder_encoder(LATENT_DIM_AUTOENCODER),
                            ca4.build_decoder(LATENT_DIM_AUTOENCODER), name="autoencoder_plain")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy",
                  steps_per_execution=steps_per_execution, jit_compile=jit_compile)
    return model


def fit_steady_epoch(model: keras.Model, data: Any, batch_size: int | None,
                     validation: np.ndarray | None = None) -> float:
    """Train `model` for EPOCHS epochs with plain `fit` and return the last epoch's seconds.

    `data` is a NumPy array of images (trained as fit(x, x)) or a tf.data.Dataset of pairs.
    With `validation`, each epoch also validates on (validation, validation), as the
    assignment's notebook does; the epoch timer then includes the validation pass.
    """
    timer = EpochTimer()
    if isinstance(data, np.ndarray):
        validation_data = None if validation is None else (validation, validation)
        model.fit(data, data, batch_size=batch_size, epochs=EPOCHS, shuffle=True, verbose=0,
                  validation_data=validation_data, callbacks=[timer])
    else:
        model.fit(data, epochs=EPOCHS, verbose=0, callbacks=[timer])
    return timer.seconds[-1]


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


# ---------------------------------------------------------------------------------------------
# The two sides
# ---------------------------------------------------------------------------------------------


def baseline_epoch_seconds(build: Callable[[], keras.Model], images: np.ndarray,
                           validation: np.ndarray) -> float:
    """Baseline: a freshly built, default-compiled model trained with fit on NumPy, validated
    on the same images as the project side."""
    keras.utils.clear_session()
    ca4.set_seed(ca4.DEFAULT_SEED)
    return fit_steady_epoch(build(), images, BATCH_SIZE, validation)


def project_epoch_seconds(build: Callable[[], keras.Model], name: str, images: np.ndarray,
                          validation: np.ndarray) -> tuple[float, keras.Model]:
    """Project: ca4.train_model (retrain, empty temporary cache); its last epoch's seconds."""
    keras.utils.clear_session()
    with tempfile.TemporaryDirectory(prefix="ca4-bench-") as cache_dir:
        result = ca4.train_model(build, images, validation, name=name, epochs=EPOCHS,
                                 batch_size=BATCH_SIZE, cache_dir=cache_dir, retrain=True, log=None)
    return result.epoch_seconds[-1], result.model


def per_point_decode_seconds(decoder: keras.Model, points: np.ndarray) -> float:
    """Baseline grid: one `decoder.predict` call per latent point."""
    started = time.perf_counter()
    for point in points:
        decoder.predict(point[None], verbose=0)
    return time.perf_counter() - started


def batched_decode_seconds(decoder: keras.Model) -> float:
    """Project grid: one batched decode of the whole grid (ca4.decode_latent_grid)."""
    started = time.perf_counter()
    ca4.decode_latent_grid(decoder, GRID_SIDE)
    return time.perf_counter() - started


def training_section(baseline_s: list[float], project_s: list[float], images: int) -> dict[str, Any]:
    baseline = [images / s for s in baseline_s]
    project = [images / s for s in project_s]
    return {
        "baseline_img_per_s": median(baseline),
        "project_img_per_s": median(project),
        "ratio": median(project) / median(baseline),
        "baseline_samples": baseline,
        "project_samples": project,
        "baseline_epoch_s_samples": baseline_s,
        "project_epoch_s_samples": project_s,
    }


def run(images: int, repeats: int, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every measurement, alternating baseline and project; return bench.json's content."""
    train, validation = load_images(images)
    models = {
        "vae": (build_plain_vae, lambda: ca4.build_vae(LATENT_DIM_VAE, kl_weight=1.0), "bench_vae"),
        "autoencoder": (build_plain_autoencoder, lambda: ca4.build_autoencoder(LATENT_DIM_AUTOENCODER),
                        "bench_autoencoder"),
    }
    samples: dict[str, dict[str, list[float]]] = {key: {"baseline": [], "project": []} for key in models}
    decoder = None
    for repetition in range(repeats):
        for key, (baseline_build, project_build, name) in models.items():
            samples[key]["baseline"].append(baseline_epoch_seconds(baseline_build, train, validation))
            seconds, model = project_epoch_seconds(project_build, name, train, validation)
            samples[key]["project"].append(seconds)
            if key == "vae":
                decoder = model.decoder
            say(f"  repetition {repetition + 1}/{repeats} {key:<12} epoch 2: baseline "
                f"{samples[key]['baseline'][-1]:.2f} s, project {samples[key]['project'][-1]:.2f} s")

    # The latent grid uses the last trained VAE's decoder; each side runs once untimed first,
    # so that neither pays for tracing its function.
    points = ca4.latent_grid_points(GRID_SIDE)
    per_point_decode_seconds(decoder, points[:1])
    batched_decode_seconds(decoder)
    per_point, batched = [], []
    for _ in range(repeats):
        per_point.append(per_point_decode_seconds(decoder, points))
        batched.append(batched_decode_seconds(decoder))
    say(f"  latent grid: per point {median(per_point):.3f} s, batched {median(batched):.4f} s")

    return {
        "vae": training_section(samples["vae"]["baseline"], samples["vae"]["project"], images),
        "autoencoder": training_section(samples["autoencoder"]["baseline"],
                                        samples["autoencoder"]["project"], images),
        "latent_grid": {
            "per_point_s": median(per_point),
            "batched_s": median(batched),
            "ratio": median(per_point) / median(batched),
            "per_point_samples": per_point,
            "batched_samples": batched,
        },
        "machine": machine_info(),
        "settings": {"images": images, "repeats": repeats, "batch_size": BATCH_SIZE},
    }


def format_table(results: dict[str, Any]) -> str:
    """Render the medians as an aligned plain-text table."""
    rows = [("measurement", "baseline", "project", "speed-up")]
    for key, label in (("vae", "VAE training (img/s)"), ("autoencoder", "autoencoder training (img/s)")):
        section = results[key]
        rows.append((label, f"{section['baseline_img_per_s']:.0f}", f"{section['project_img_per_s']:.0f}",
                     f"{section['ratio']:.2f}x"))
    grid = results["latent_grid"]
    rows.append((f"latent grid {GRID_SIDE}x{GRID_SIDE} (s)", f"{grid['per_point_s']:.3f}",
                 f"{grid['batched_s']:.4f}", f"{grid['ratio']:.1f}x"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for index, row in enumerate(rows):
        lines.append("  ".join([row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]))
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    settings, machine = results["settings"], results["machine"]
    lines.append(f"medians of {settings['repeats']} repetitions; {settings['images']} images, batch "
                 f"{settings['batch_size']}, second epoch timed; {machine['cpu']}, {machine['cores']} "
                 f"cores, TF {machine['tensorflow']}, Keras {machine['keras']}")
    return "\n".join(lines)


def main(arguments: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=12800,
                        help="training images per epoch (default 12800 = 100 batches of 128)")
    parser.add_argument("--repeats", type=int, default=3, help="repetitions per side (default 3)")
    parser.add_argument("--output", type=Path, default=None,
                        help="result file (default: build/bench.json in ca4.build_dir())")
    options = parser.parse_args(arguments)
    ca4.check_positive_int(options.images, "--images")
    ca4.check_positive_int(options.repeats, "--repeats")
    output = options.output or ca4.build_dir() / "bench.json"
    print(f"bench: {options.images} images, {options.repeats} repetitions, batch {BATCH_SIZE}")
    started = time.perf_counter()
    results = run(options.images, options.repeats)
    ca4.write_json_atomic(output, results)
    print(format_table(results))
    print(f"wrote {output} in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
