"""Choose the VAE's learning rate and re-examine its decoder width on a validation split.

Run from the project root (about 4 x 20 epochs of the VAE per seed; ~25 minutes on a quiet
AVX-512 VM, over an hour on an AVX2 one):

    .venv/bin/python experiments/validation_split.py [--seeds 42 43] [--epochs 20]

The last 5,000 of the 60,000 training images are held out; every model trains on the other
55,000 with the project's entry point (`ca4.train_model`: batch 128, cosine decay to a tenth)
at KL weight 1, and is scored on the held-out images by its negative ELBO per image (one
z ~ q(z|x) per image with a fixed seed, the same draw for every model). Differences are paired
over the 5,000 images; the standard error is that of the paired mean. The test set is not used.

Compared, one factor at a time from the project's VAE (`ca4.build_vae`):
- learning rate 1e-3 against 2e-3 (the project's);
- the decoder's last transposed convolution with 32 channels (wide) against 16 (the project's).

Writes build/experiments/validation_split.json and prints a table that the notebook's training
section quotes. Trained models are cached under build/experiments/cache.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

import ca4_helpers as ca4
from ca4lib import cache_key, estimates, settings, storage
from ca4lib.backend import keras, ops

HELD_OUT = 5000
# The project's decoder channels (16 in the last transposed convolution), widened to 32.
WIDE_CHANNELS = (32, 32)


def build_wide_vae(seed: int, learning_rate: float = 2e-3) -> ca4.VariationalAutoencoder:
    """The project's VAE (`ca4.build_vae` at latent 2, KL weight 1) with the wide decoder.

    The model is wired, built and compiled as `ca4.build_vae` does it; only the decoder's
    channels differ (`ca4.build_decoder(2, channels=WIDE_CHANNELS)`).
    """
    model = ca4.VariationalAutoencoder(ca4.build_vae_encoder(2),
                                       ca4.build_decoder(2, channels=WIDE_CHANNELS),
                                       kl_weight=1.0, seed=seed, name="vae_kl1_wide")
    model(ops.zeros((1, *settings.IMAGE_SHAPE)))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate))
    return model


# label -> (cache name, builder for a seed); the first is the project's VAE.
VARIANTS = {
    "project (lr 2e-3, decoder 16)": (
        "project", lambda seed: partial(ca4.build_vae, 2, 1.0, seed, learning_rate=2e-3)),
    "lr 1e-3": ("lr1e-3", lambda seed: partial(ca4.build_vae, 2, 1.0, seed, learning_rate=1e-3)),
    "wide decoder (32)": ("wide", lambda seed: partial(build_wide_vae, seed)),
}
PROJECT = next(iter(VARIANTS))


def negative_elbo(model: ca4.VariationalAutoencoder, images: Any) -> Any:
    terms = ca4.vae_test_terms(model, images, seed=0)
    return terms["reconstruction"] + terms["kl"]


def run(seeds: Sequence[int], epochs: int) -> dict[str, Any]:
    (x_train_raw, _), _ = ca4.load_mnist()
    x_all = ca4.normalize_images(x_train_raw)
    x_fit, x_held_out = x_all[:-HELD_OUT], x_all[-HELD_OUT:]
    cache = settings.build_dir() / "experiments" / "cache"
    results: dict[str, Any] = {"held_out": HELD_OUT, "epochs": epochs, "seeds": list(seeds),
                               "versions": cache_key.library_versions(), "by_seed": {}}
    for seed in seeds:
        scores = {}
        for label, (name, builder) in VARIANTS.items():
            trained = ca4.train_model(builder(seed), x_fit, x_held_out,
                                      name=f"validation_{name}_seed{seed}", epochs=epochs,
                                      seed=seed, cache_dir=cache)
            scores[label] = negative_elbo(trained.model, x_held_out)
        reference = scores[PROJECT]
        results["by_seed"][seed] = {
            label: {"neg_elbo": float(values.mean()),
                    "minus_project": dataclasses.asdict(estimates.paired_estimate(values, reference))}
            for label, values in scores.items()}
    return results


def main(arguments: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42])
    parser.add_argument("--epochs", type=int, default=20)
    options = parser.parse_args(arguments)
    results = run(options.seeds, options.epochs)
    output = storage.write_json_atomic(
        settings.build_dir() / "experiments" / "validation_split.json", results)
    print("| seed | variant | validation negative ELBO | minus the project's (paired) |")
    print("|---|---|---|---|")
    for seed, rows in results["by_seed"].items():
        for label, row in rows.items():
            difference = row["minus_project"]
            print(f"| {seed} | {label} | {row['neg_elbo']:.2f} | "
                  f"{difference['value']:+.2f} ± {difference['se']:.2f} |")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
