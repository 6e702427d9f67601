"""Training and latent-grid benchmark: the project's code against a straightforward port.

Run from the project root (`make bench`):

    .venv/bin/python benchmarks/bench_training.py [--images N] [--repeats R]

Training throughput (images/s) of the VAE (`build_vae(2, kl_weight=1.0)`) and of the Task 1
autoencoder (`build_autoencoder(10)`): the project side trains through `ca4.train_model`, the
baseline (`build_port`) takes the model from the same builder, compiles it again with Keras'
defaults and calls plain `model.fit(x, x, batch_size=128, shuffle=True)` on NumPy arrays.
Every repetition trains a fresh model for two epochs and times only the second (steady state).
The two sides alternate (baseline, project, baseline, project, ...) and the medians are reported.

Latent grid: one batched decode of the 15x15 grid (`latent_space.decode_latent_grid`) against
225 calls of `decoder.predict(point[None])`, alternating in the same way.

Epoch distribution: whole epochs (60,000 images and validation on 10,000 by default) of each
model, the sides alternating epoch by epoch in one process: by default the straightforward port
(`fit` on NumPy arrays, which builds Keras' own autotuned tf.data pipeline) and the project's
pipeline (`ca4.make_dataset` with `ca4.pipeline_options`); `--sides` adds the project's
pipeline with other tf.data options (PIPELINES: `before` = tf.data's defaults, as before the
fix). Reports every epoch's seconds and CPU share (process CPU time / wall time) and, per
side, the count of slow epochs (a CPU share below SLOW_CPU_FRACTION of a typical fast epoch's),
the median and the maximum.

Writes build/bench.json (`settings.build_dir()`) and prints a table. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
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

import numpy as np  # noqa: E402
from bench_common import aligned_table, median

import ca4_helpers as ca4
from ca4lib import cache_key, checks, latent_space, settings, storage
from ca4lib.backend import keras, tf  # imported quietly, as the project does

EPOCHS = 2  # epoch 1 warms up (tracing, allocation); epoch 2 is timed
VALIDATION_IMAGES = 1000  # train_model requires validation data: one predict batch of test images
LATENT_DIM_VAE = 2
LATENT_DIM_AUTOENCODER = 10
GRID_SIDE = 15
# An epoch whose CPU share (process CPU time / wall time) falls below this fraction of a typical
# fast epoch's (the upper quartile of all epochs of the model) ran in the slow mode, in which
# the compute threads wait: the share drops from about 175-180 % to 96-160 % on the project's
# 2-core VMs, while its wall time grows by 1.13-2x depending on the VM.
SLOW_CPU_FRACTION = 0.93

# train_model passes a tf.data.Dataset to fit, whose default shuffle=True then warns every epoch.
warnings.filterwarnings("ignore", message=r"`shuffle=True` was passed")


# ---------------------------------------------------------------------------------------------
# Shared helpers (levers.py and op_profile.py import these in their workers)
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
    versions = cache_key.library_versions()
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


# The models every benchmark times, by kind, as the project builds and compiles them.
PROJECT_BUILDERS: dict[str, Callable[[], keras.Model]] = {
    "vae": lambda: ca4.build_vae(LATENT_DIM_VAE, kl_weight=1.0),
    "autoencoder": lambda: ca4.build_autoencoder(LATENT_DIM_AUTOENCODER),
}


def build_port(kind: str, steps_per_execution: int = 1, jit_compile: Any = "auto"
               ) -> keras.Model:
    """The straightforward port of model `kind`: the project's builder (same layers, seed and
    loss), compiled again the way a tutorial does, with Adam at Keras' default learning rate
    and Keras' defaults otherwise. Only this compile step differs from the project's model."""
    model = PROJECT_BUILDERS[kind]()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=model.loss,
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


# ---------------------------------------------------------------------------------------------
# The two sides
# ---------------------------------------------------------------------------------------------


def baseline_epoch_seconds(kind: str, images: np.ndarray, validation: np.ndarray) -> float:
    """Baseline: a freshly built port (`build_port`) trained with fit on NumPy, validated on
    the same images as the project side."""
    keras.utils.clear_session()
    ca4.set_seed(settings.DEFAULT_SEED)
    return fit_steady_epoch(build_port(kind), images, settings.BATCH_SIZE, validation)


def project_epoch_seconds(build: Callable[[], keras.Model], name: str, images: np.ndarray,
                          validation: np.ndarray) -> tuple[float, keras.Model]:
    """Project: ca4.train_model (retrain, empty temporary cache); its last epoch's seconds."""
    keras.utils.clear_session()
    with tempfile.TemporaryDirectory(prefix="ca4-bench-") as cache_dir:
        result = ca4.train_model(build, images, validation, name=name, epochs=EPOCHS,
                                 batch_size=settings.BATCH_SIZE, cache_dir=cache_dir,
                                 retrain=True, log=None)
    return result.epoch_seconds[-1], result.model


def per_point_decode_seconds(decoder: keras.Model, points: np.ndarray) -> float:
    """Baseline grid: one `decoder.predict` call per latent point."""
    started = time.perf_counter()
    for point in points:
        decoder.predict(point[None], verbose=0)
    return time.perf_counter() - started


def batched_decode_seconds(decoder: keras.Model) -> float:
    """Project grid: one batched decode of the whole grid (latent_space.decode_latent_grid)."""
    started = time.perf_counter()
    latent_space.decode_latent_grid(decoder, GRID_SIDE)
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


def tf_data_options(autotune: bool, own_thread: bool) -> Callable[[], tf.data.Options]:
    """Return a factory of tf.data options: autotuning on or off, one private thread or not."""

    def options() -> tf.data.Options:
        chosen = tf.data.Options()
        chosen.autotune.enabled = autotune
        if own_thread:
            chosen.threading.private_threadpool_size = 1
            chosen.threading.max_intra_op_parallelism = 1
        return chosen

    return options


# The pipelines an epoch can run on: the port's (Keras' own, from NumPy arrays) or the project's
# ca4.make_dataset with the given tf.data options. "project" is the project as it is.
PIPELINES: dict[str, Callable[[], tf.data.Options] | None] = {
    "port": None,
    "project": ca4.pipeline_options,
    "before": tf.data.Options,  # tf.data's defaults: the project before the fix
    "autotune_off": tf_data_options(autotune=False, own_thread=False),
    "own_thread": tf_data_options(autotune=True, own_thread=True),
}


def one_epoch_seconds(model: keras.Model, side: str, train: np.ndarray,
                      validation: np.ndarray, epoch: int) -> tuple[float, float]:
    """Train `model` one epoch on `side`'s pipeline; return (wall seconds, CPU share)."""
    started, cpu_started = time.perf_counter(), time.process_time()
    if PIPELINES[side] is None:
        model.fit(train, train, batch_size=settings.BATCH_SIZE, epochs=1, shuffle=True, verbose=0,
                  validation_data=(validation, validation))
    else:
        project_options = ca4.pipeline_options
        ca4.pipeline_options = PIPELINES[side]  # make_dataset reads it by name
        try:
            order = ca4.epoch_orders(len(train), settings.DEFAULT_SEED, range(epoch, epoch + 1))
            model.fit(ca4.make_dataset(train, train, settings.BATCH_SIZE, order),
                      validation_data=ca4.make_dataset(validation, validation,
                                                       settings.PREDICT_BATCH_SIZE),
                      epochs=1, shuffle=False, verbose=0)
        finally:
            ca4.pipeline_options = project_options
    seconds = time.perf_counter() - started
    return seconds, (time.process_time() - cpu_started) / seconds


def epoch_distribution(epochs: int, images: int, sides: Sequence[str],
                       say: Callable[[str], None] = print) -> dict[str, Any]:
    """Time whole epochs of each model, the sides alternating epoch by epoch."""
    (x_train, _), (x_test, _) = ca4.load_mnist()
    train, validation = ca4.normalize_images(x_train[:images]), ca4.normalize_images(x_test)
    results: dict[str, Any] = {}
    for kind, build in PROJECT_BUILDERS.items():
        models = {}
        for side in sides:
            keras.utils.clear_session()
            ca4.set_seed(settings.DEFAULT_SEED)
            models[side] = build_port(kind) if side == "port" else build()
        # One untimed epoch each first: tracing and allocation are not the steady state.
        samples: dict[str, list[tuple[float, float]]] = {side: [] for side in sides}
        for epoch in range(epochs + 1):
            for side in sides:
                seconds, cpu = one_epoch_seconds(models[side], side, train, validation, epoch)
                if epoch:
                    samples[side].append((seconds, cpu))
                    say(f"  {kind:<11} epoch {epoch:2d}/{epochs} {side:<12} {seconds:6.2f} s "
                        f"CPU {cpu:4.0%}")
        typical = float(np.percentile([cpu for side in sides for _, cpu in samples[side]], 75))
        results[kind] = {side: distribution(samples[side], typical) for side in sides}
    return results


def distribution(samples: Sequence[tuple[float, float]], typical_cpu: float
                 ) -> dict[str, Any]:
    """Summarise (seconds, CPU share) epochs: slow-epoch count, median, maximum, samples."""
    seconds = [s for s, _ in samples]
    return {"epochs": len(seconds),
            "slow_epochs": sum(c < SLOW_CPU_FRACTION * typical_cpu for _, c in samples),
            "median_s": median(seconds), "max_s": max(seconds), "min_s": min(seconds),
            "median_cpu": median([c for _, c in samples]),
            "min_cpu": min(c for _, c in samples),
            "epoch_s": seconds, "cpu": [c for _, c in samples]}


def run(images: int, repeats: int, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every measurement, alternating baseline and project; return bench.json's content."""
    train, validation = load_images(images)
    samples: dict[str, dict[str, list[float]]] = {key: {"baseline": [], "project": []}
                                                  for key in PROJECT_BUILDERS}
    decoder = None
    for repetition in range(repeats):
        for key, build in PROJECT_BUILDERS.items():
            samples[key]["baseline"].append(baseline_epoch_seconds(key, train, validation))
            seconds, model = project_epoch_seconds(build, f"bench_{key}", train, validation)
            samples[key]["project"].append(seconds)
            if key == "vae":
                decoder = model.decoder
            say(f"  repetition {repetition + 1}/{repeats} {key:<12} epoch 2: baseline "
                f"{samples[key]['baseline'][-1]:.2f} s, project {samples[key]['project'][-1]:.2f} s")

    # The latent grid uses the last trained VAE's decoder; each side runs once untimed first,
    # so that neither pays for tracing its function.
    points = latent_space.latent_grid_points(GRID_SIDE)
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
        "settings": {"images": images, "repeats": repeats, "batch_size": settings.BATCH_SIZE},
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
    lines = aligned_table(rows)
    if "epochs" in results:
        lines.append("")
        lines.append(f"whole epochs, sides alternating; slow = CPU share below "
                     f"{SLOW_CPU_FRACTION:.0%} of the model's upper-quartile share")
        lines.append(f"{'model':<12}{'side':<16}{'epochs':>7}{'slow':>6}{'median s':>10}"
                     f"{'max s':>8}{'median CPU':>12}")
        for kind, sides in results["epochs"].items():
            for side, row in sides.items():
                lines.append(f"{kind:<12}{side:<16}{row['epochs']:>7}{row['slow_epochs']:>6}"
                             f"{row['median_s']:>10.2f}{row['max_s']:>8.2f}"
                             f"{row['median_cpu']:>12.0%}")
    run_settings, machine = results["settings"], results["machine"]
    lines.append(f"medians of {run_settings['repeats']} repetitions; {run_settings['images']} images, "
                 f"batch {run_settings['batch_size']}, second epoch timed; {machine['cpu']}, "
                 f"{machine['cores']} cores, TF {machine['tensorflow']}, Keras {machine['keras']}")
    return "\n".join(lines)


def main(arguments: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=12800,
                        help="training images per epoch (default 12800 = 100 batches of 128)")
    parser.add_argument("--repeats", type=int, default=3, help="repetitions per side (default 3)")
    parser.add_argument("--epochs", type=int, default=10,
                        help="whole epochs per side and model for the epoch distribution "
                             "(default 10; 0 skips it)")
    parser.add_argument("--epoch-images", type=int, default=60000,
                        help="training images per whole epoch (default 60000, all of MNIST)")
    parser.add_argument("--sides", default="port,project",
                        help=f"pipelines to alternate, from {', '.join(PIPELINES)} "
                             "(default port,project)")
    parser.add_argument("--output", type=Path, default=None,
                        help="result file (default: build/bench.json in settings.build_dir())")
    options = parser.parse_args(arguments)
    checks.check_positive_int(options.images, "--images")
    checks.check_positive_int(options.repeats, "--repeats")
    output = options.output or settings.build_dir() / "bench.json"
    print(f"bench: {options.images} images, {options.repeats} repetitions, "
          f"batch {settings.BATCH_SIZE}")
    started = time.perf_counter()
    results = run(options.images, options.repeats)
    if options.epochs:
        print(f"epoch distribution: {options.epochs} epochs per side, "
              f"{options.epoch_images} images")
        sides = options.sides.split(",")
        unknown = sorted(set(sides) - set(PIPELINES))
        if unknown:
            raise SystemExit(f"--sides: unknown {unknown}; choose from {list(PIPELINES)}")
        results["epochs"] = epoch_distribution(options.epochs, options.epoch_images, sides)
    results["settings"].update(epochs=options.epochs, epoch_images=options.epoch_images,
                               sides=options.sides)
    storage.write_json_atomic(output, results)
    print(format_table(results))
    print(f"wrote {output} in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
