"""The project's settings: folders, seeds, sizes and the run profiles. Imports no TensorFlow.

Every other room builds on this one, and the build tools (`tools/`), benchmarks and experiments
read `build_dir`, `BATCH_SIZE` and the profiles from here without starting TensorFlow. The
notebook's first code cell calls `check_environment` before it imports the coursework.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

# The project folder: ca4_helpers.py, the notebook and requirements.txt sit here.
PROJECT_DIR = Path(__file__).resolve().parent.parent
DEFAULT_SEED = 42
IMAGE_SHAPE = (28, 28, 1)
DIGITS = tuple(range(10))
KL_WEIGHTS = (0.1, 1.0, 5.0)
# The assignment's batch size, used for every model.
BATCH_SIZE = 128
# Predictions go through the network in large batches; the batch size does not change results.
PREDICT_BATCH_SIZE = 1000
# Bump when the cache file format changes (the key already covers the code: cache_key.py).
CACHE_FORMAT_VERSION = 2


@dataclasses.dataclass(frozen=True)
class Profile:
    """How much data, how many epochs and how large the analyses of one run of the notebook."""

    name: str
    train_size: int | None  # None: all 60,000 training images
    test_size: int | None  # None: all 10,000 test images
    autoencoder_epochs: int
    latent_sweep_epochs: int
    denoising_epochs: int
    vae_epochs: int  # each VAE of the sweep, and the deterministic baseline
    classifier_epochs: int
    normalisation_epochs: int  # each model of question 1, per seed
    likelihood_images: int  # test images whose log p(x) is estimated
    # log p(x) where experiments/results/likelihood_checks.json has no settings for the profile:
    importance_samples: tuple[int, ...]  # nested samples of q(z|x) per image
    quadrature_points: tuple[int, ...]  # local grid points per side (two: the step check)
    interpolation_pairs: int  # random pairs of test digits joined by latent paths

    def planned_models(self, latent_dim: int, latent_sizes: Sequence[int],
                       kl_weights: Sequence[float], seeds: Sequence[int]) -> dict[str, int]:
        """Return every model one notebook run trains, by the name train_model gets, with its
        epochs: for the estimate of the time left (progress.RunProgress).

        `kl_weights` are the sweep's; the baseline (weight 0) is one more VAE.
        """
        models = {f"autoencoder_latent{latent_dim}": self.autoencoder_epochs,
                  "digit_classifier": self.classifier_epochs}
        models |= {f"autoencoder_inputs_x{scale:g}_seed{seed}": self.normalisation_epochs
                   for scale in (1, 255) for seed in seeds}
        models |= {f"autoencoder_latent{size}_sweep": self.latent_sweep_epochs
                   for size in latent_sizes}
        models[f"denoiser_latent{latent_dim}"] = self.denoising_epochs
        models |= {vae_name(weight): self.vae_epochs for weight in (0.0, *kl_weights)}
        return models

PROFILES = {
    # The extra models' epochs are cut to what their conclusions need (benchmarks/README.md):
    # the latent sizes' order and the denoiser's lead hold from the first epochs on.
    "full": Profile("full", None, None, autoencoder_epochs=20, latent_sweep_epochs=2,
                    denoising_epochs=2, vae_epochs=20, classifier_epochs=2,
                    normalisation_epochs=1, likelihood_images=1000,
                    importance_samples=(100, 300, 1000), quadrature_points=(16, 32),
                    interpolation_pairs=200),
    "fast": Profile("fast", 4000, 1000, autoencoder_epochs=2, latent_sweep_epochs=1,
                    denoising_epochs=1, vae_epochs=2, classifier_epochs=1,
                    normalisation_epochs=1, likelihood_images=100,
                    importance_samples=(30, 100), quadrature_points=(8, 16),
                    interpolation_pairs=50),
}


def vae_name(kl_weight: float, seed: int = DEFAULT_SEED) -> str:
    """The name train_model gives the VAE of a KL weight: 'vae_kl0p1', 'vae_kl5', and with
    another seed than the notebook's 'vae_kl5_seed43'."""
    name = f"vae_kl{kl_weight:g}".replace(".", "p")
    return name if seed == DEFAULT_SEED else f"{name}_seed{seed}"


def get_profile(name: str | None = None) -> Profile:
    """Return the named profile, else the one in $CA4_PROFILE, else `full`."""
    chosen = name if name is not None else os.environ.get("CA4_PROFILE", "full")
    chosen = chosen.strip().lower()
    if chosen not in PROFILES:
        raise ValueError(f"profile: expected one of {sorted(PROFILES)}, got {chosen!r} "
                         "(set CA4_PROFILE=full or CA4_PROFILE=fast)")
    return PROFILES[chosen]


def build_dir() -> Path:
    """Return the folder for generated files: $CA4_BUILD_DIR, else `build/` in the project."""
    return Path(os.environ.get("CA4_BUILD_DIR", PROJECT_DIR / "build")).resolve()


def check_environment(requirements: Path | None = None) -> None:
    """Stop with a clear message in a Python that is not the project's environment.

    A kernel with another TensorFlow or Keras (or none) would otherwise fail deep inside
    keras.ops. CA4_ALLOW_OTHER_VERSIONS=1 lets a run try anyway.
    """
    from importlib import metadata

    requirements = requirements or PROJECT_DIR / "requirements.txt"
    if not requirements.is_file() or os.environ.get("CA4_ALLOW_OTHER_VERSIONS") == "1":
        return
    pins = dict(re.findall(r"^(tensorflow|keras)==(\S+)", requirements.read_text(), re.M))
    for package, pinned in pins.items():
        try:
            installed = metadata.version(package)
        except metadata.PackageNotFoundError:
            installed = "not installed"
        if installed != pinned:
            raise ImportError(
                f"{package} {installed} in {sys.executable}; ca4 needs {package}=={pinned}. "
                f"This is not the project's environment: open the notebook with `make lab` "
                f"(JupyterLab from .venv), or choose the .venv kernel, or run `make venv`. "
                f"CA4_ALLOW_OTHER_VERSIONS=1 tries anyway.")
