"""The Task 1 autoencoder against a leaner one: epoch time on both ISAs, and test BCE.

Run from the project root (about 15 minutes on a quiet 2-core AVX-512 VM):

    .venv/bin/python benchmarks/lean_autoencoder.py [--rounds 2] [--epochs 2] [--train]
    .venv/bin/python benchmarks/lean_autoencoder.py --paired   (after --train and a full run)

The project's encoder is the assignment's trunk: Conv2D 32 and 64 at full resolution, each
followed by max-pooling. The lean encoder gets to the same 7x7x64 map with stride-2
convolutions instead, a quarter of the encoder's convolution work; the decoder, the code and the
training are the project's. Each side trains in its own process (oneDNN fixes the ISA when
TensorFlow starts), one untimed epoch and then EPOCHS timed ones on the 60,000 training images
with the project's pipeline; the sides and the ISAs alternate within each round, and the
medians are reported. `--train` then trains the lean model as the notebook trains the Task 1
autoencoder (`ca4.train_model`, 20 epochs, the same seed) and reports its test BCE per pixel with
the standard error over the test images, beside the project model's from the notebook's last
full run (build/metrics.json). `--paired` then compares the two trained models image by image
on the test set (the difference's standard error is the paired one).

Writes build/lean_autoencoder.json (and build/lean_autoencoder_paired.json) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from ca4lib import settings, storage  # noqa: E402  (no TensorFlow in this driver)

SIDES = ("project", "lean")
ISAS = {"native": None, "avx2": "AVX2"}


def build_lean_autoencoder(latent_dim: int = 10) -> Any:
    """The project's autoencoder with the lean encoder: stride-2 convolutions, no pooling."""
    import ca4_helpers as ca4
    from ca4lib.backend import keras, layers, ops

    images = keras.Input(shape=settings.IMAGE_SHAPE, name="images")
    hidden = layers.Rescaling(1.0, name="input_scale")(images)
    hidden = layers.Conv2D(32, 3, strides=2, activation="relu", padding="same")(hidden)
    hidden = layers.Conv2D(64, 3, strides=2, activation="relu", padding="same")(hidden)
    hidden = layers.Dense(128, activation="relu")(layers.Flatten()(hidden))
    encoder = keras.Model(images, layers.Dense(latent_dim, name="code")(hidden), name="encoder")
    model = ca4.Autoencoder(encoder, ca4.build_decoder(latent_dim),
                            name=f"lean_autoencoder_latent{latent_dim}")
    model(ops.zeros((1, *settings.IMAGE_SHAPE)))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    return model


def worker(side: str, epochs: int) -> dict[str, Any]:
    """Train one fresh model for 1 + EPOCHS epochs; return the timed epochs' seconds."""
    import ca4_helpers as ca4

    (x_train_raw, _), _ = ca4.load_mnist()
    train = ca4.normalize_images(x_train_raw)
    ca4.set_seed(settings.DEFAULT_SEED)
    model = ca4.build_autoencoder(10) if side == "project" else build_lean_autoencoder(10)
    seconds = []
    for epoch in range(1 + epochs):
        order = ca4.epoch_orders(len(train), settings.DEFAULT_SEED, range(epoch, epoch + 1))
        started = time.perf_counter()
        model.fit(ca4.make_dataset(train, train, settings.BATCH_SIZE, order), epochs=1,
                  shuffle=False, verbose=0)
        seconds.append(time.perf_counter() - started)
    return {"side": side, "seconds": seconds[1:], "parameters": model.count_params()}


def run_worker(side: str, isa: str, epochs: int) -> dict[str, Any]:
    environment = {**os.environ}
    if ISAS[isa]:
        environment["ONEDNN_MAX_CPU_ISA"] = ISAS[isa]
    completed = subprocess.run(
        [sys.executable, __file__, "--worker", side, "--epochs", str(epochs)],
        capture_output=True, text=True, env=environment, cwd=PROJECT_ROOT, check=True)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def train_and_score() -> dict[str, Any]:
    """Train the lean model as the notebook trains the Task 1 autoencoder and score its test BCE;
    the project model's comes from the notebook's build/metrics.json."""
    import ca4_helpers as ca4
    from ca4lib import estimates, inference, measures

    (x_train_raw, _), (x_test_raw, _) = ca4.load_mnist()
    x_train, x_test = ca4.normalize_images(x_train_raw), ca4.normalize_images(x_test_raw)
    run = ca4.train_model(build_lean_autoencoder, x_train, x_test,
                          name="lean_autoencoder_latent10",
                          epochs=settings.get_profile("full").autoencoder_epochs,
                          seed=settings.DEFAULT_SEED)
    bce = estimates.mean_estimate(measures.per_image_bce(
        x_test, inference.predict(run.model, x_test)))
    result = {"lean": {"bce": bce.value, "bce_se": bce.se, "epochs": run.epochs,
                       "training_seconds": run.seconds}}
    metrics = settings.build_dir() / "metrics.json"
    if metrics.is_file():
        found = json.loads(metrics.read_text())
        if found.get("profile") == "full":
            autoencoder = found["autoencoder"]
            result["project"] = {"bce": autoencoder["bce"], "bce_se": autoencoder["bce_se"],
                                 "epochs": autoencoder["epochs"],
                                 "training_seconds": found["training"][
                                     "autoencoder_latent10"]["seconds"]}
    return result


def cached_model(name: str, build: Any) -> Any:
    """The full profile's trained `name` from the model cache (build/cache/index.json), loaded
    into a freshly built model; None when the cache does not hold it. The entry stores the
    model's weights first, then the optimiser's state (`checkpoints.training_state`), which
    this model, compiled afresh, does not have: only the weights are assigned."""
    import numpy as np

    cache = settings.build_dir() / "cache"
    index_path = cache / "index.json"
    entry = json.loads(index_path.read_text()).get("full", {}).get(name) \
        if index_path.is_file() else None
    # A model trained outside a notebook run (the lean one) is not indexed: its newest entry.
    found = [cache / entry] if entry else sorted(cache.glob(f"{name}-*.npz"),
                                                 key=lambda path: path.stat().st_mtime)
    if not found:
        return None
    path = found[-1]
    model = build()
    with np.load(path, allow_pickle=False) as archive:
        for index, variable in enumerate(model.weights):
            value = archive[f"variable_{index:04d}"]
            if tuple(variable.shape) != value.shape:
                raise ValueError(f"{path.name}: variable {index} has shape {value.shape}, "
                                 f"the model's {variable.path} {tuple(variable.shape)}")
            variable.assign(value)
    return model


def paired_test_bce() -> dict[str, Any]:
    """Both trained models (the notebook's, and the lean one that `--train` trained) on the
    same test images: each one's test BCE per pixel and the lean minus the project's, paired
    image by image (the per-image losses of two such models move together, so the paired
    standard error is far smaller than either model's own)."""
    import numpy as np

    import ca4_helpers as ca4
    from ca4lib import estimates, inference, measures

    models = {"project": cached_model("autoencoder_latent10", lambda: ca4.build_autoencoder(10)),
              "lean": cached_model("lean_autoencoder_latent10", build_lean_autoencoder)}
    if any(model is None for model in models.values()):
        raise SystemExit("paired: run the full-profile notebook and --train first (the cache "
                         "holds neither model otherwise)")
    _, (x_test_raw, _) = ca4.load_mnist()
    x_test = ca4.normalize_images(x_test_raw)
    bce = {side: measures.per_image_bce(x_test, inference.predict(model, x_test))
           for side, model in models.items()}
    metrics = settings.build_dir() / "metrics.json"
    if metrics.is_file() and json.loads(metrics.read_text()).get("profile") == "full":
        # The weights went in right only if the notebook's own number comes out again.
        reported = json.loads(metrics.read_text())["autoencoder"]["bce"]
        if abs(float(np.mean(bce["project"])) - reported) > 1e-6:
            raise SystemExit(f"paired: the cached project model scores "
                             f"{np.mean(bce['project']):.6f}, the notebook reported {reported:.6f}")
    difference = estimates.paired_estimate(bce["lean"], bce["project"])
    return {**{side: {"bce": estimates.mean_estimate(values).value,
                      "bce_se": estimates.mean_estimate(values).se}
               for side, values in bce.items()},
            "lean_minus_project": difference.value, "lean_minus_project_se": difference.se,
            "clear": difference.sign != 0}


def main(arguments: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per process")
    parser.add_argument("--train", action="store_true", help="also train both for 20 epochs")
    parser.add_argument("--paired", action="store_true",
                        help="only compare the two cached trained models, image by image")
    parser.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    options = parser.parse_args(arguments)
    if options.worker:
        print(json.dumps(worker(options.worker, options.epochs)))
        return 0
    if options.paired:
        found = paired_test_bce()
        output = settings.build_dir() / "lean_autoencoder_paired.json"
        storage.write_json_atomic(output, found)
        for side in ("project", "lean"):
            print(f"{side}: test BCE {found[side]['bce']:.5f} ± {found[side]['bce_se']:.5f}")
        print(f"lean minus project, paired over the test images: "
              f"{found['lean_minus_project']:.5f} ± {found['lean_minus_project_se']:.5f} "
              f"({'clear' if found['clear'] else 'not clear'}); wrote {output}")
        return 0
    times: dict[str, dict[str, list[float]]] = {isa: {side: [] for side in SIDES} for isa in ISAS}
    parameters = {}
    for round_number in range(options.rounds):
        for isa in ISAS:
            for side in SIDES if round_number % 2 == 0 else SIDES[::-1]:
                found = run_worker(side, isa, options.epochs)
                times[isa][side] += found["seconds"]
                parameters[side] = found["parameters"]
                print(f"round {round_number + 1}, {isa}, {side}: "
                      f"{', '.join(f'{s:.1f} s' for s in found['seconds'])}", flush=True)
    results: dict[str, Any] = {"epochs": times, "parameters": parameters,
                               "medians": {isa: {side: statistics.median(values)
                                                 for side, values in sides.items()}
                                           for isa, sides in times.items()}}
    if options.train:
        results["test_bce"] = train_and_score()
    output = settings.build_dir() / "lean_autoencoder.json"
    storage.write_json_atomic(output, results)
    for isa, sides in results["medians"].items():
        print(f"{isa}: project {sides['project']:.1f} s, lean {sides['lean']:.1f} s per epoch "
              f"(median of {len(times[isa]['project'])})")
    for side, found in results.get("test_bce", {}).items():
        print(f"{side}: test BCE {found['bce']:.4f} ± {found['bce_se']:.4f}")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
