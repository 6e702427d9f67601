"""Task 1's analyses: the rows behind the reconstruction figure and the three discussion
questions (notebook: *Task 1 > Originals against reconstructions* and *Evidence*).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ca4lib.backend import keras
from ca4lib.checks import check_codes, check_labels
from ca4lib.estimates import compared_rows, mean_estimate, paired_estimate, share_estimate
from ca4lib.inference import predict
from ca4lib.measures import (
    classify,
    grey_share,
    knn_correct,
    mean_binary_cross_entropy,
    per_image_bce,
    per_image_squared_error,
    recognised,
)
from ca4lib.settings import DIGITS


def reconstruction_evidence(model: keras.Model, encoder: keras.Model, images: np.ndarray,
                            labels: np.ndarray, classifier: keras.Model,
                            reference: tuple[np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
    """Per test image: reconstruction BCE, whether the classifier recognises the
    reconstruction's digit, and whether a 5-NN on the `reference` images' codes labels the
    image's code correctly."""
    reconstructions = predict(model, images)
    codes = np.asarray(predict(encoder, images))
    reference_codes = np.asarray(predict(encoder, reference[0]))
    return {"bce": per_image_bce(images, reconstructions),
            "recognised": recognised(classifier, reconstructions, labels),
            "knn": knn_correct(reference_codes, reference[1], codes, labels)}


def autoencoder_row(images: np.ndarray, reconstructions: np.ndarray, labels: np.ndarray,
                    classifier: keras.Model, *, latent_dim: int, epochs: int,
                    pca_ratios: Sequence[float], shown: Sequence[int] = ()) -> dict[str, Any]:
    """Summarise the Task 1 autoencoder on the test images: BCE per pixel with its SE, the
    BCE of an exact copy, the shares of originals and reconstructions the classifier reads
    as their digit (and the paired change), the share of grey pixels (blur) in both with the
    paired change, the digit the classifier reads in each reconstruction of the figure's
    images (`shown`, indices), and the PCA plot's explained variances."""
    evidence = {"originals": {"recognised": recognised(classifier, images, labels),
                              "grey": grey_share(images)},
                "reconstructions": {"recognised": recognised(classifier, reconstructions,
                                                             labels),
                                    "grey": grey_share(reconstructions)}}
    originals, rebuilt = compared_rows(evidence, "images", {"recognised": share_estimate,
                                                            "grey": mean_estimate})
    bce = mean_estimate(per_image_bce(images, reconstructions))
    shown = np.asarray(shown, dtype=np.int64)
    read = classify(classifier, reconstructions[shown])[0] if len(shown) else []
    return {"latent_dim": int(latent_dim), "epochs": int(epochs), "n": bce.n,
            "bce": bce.value, "bce_se": bce.se,
            "copy_bce": mean_binary_cross_entropy(images, images),
            **{f"{name}{suffix}": rebuilt[f"{name}{suffix}"] for name in ("recognised", "grey")
               for suffix in ("", "_se", "_change", "_change_se")},
            "originals_recognised": originals["recognised"],
            "originals_grey": originals["grey"],
            "shown": [{"digit": int(labels[i]), "read": int(r)} for i, r in zip(shown, read)],
            "pca_explained_variance": [float(ratio) for ratio in pca_ratios]}


def pca_overlap(points: np.ndarray, labels: np.ndarray, neighbours: int = 10
                ) -> dict[str, Any]:
    """How the digits sit in a 2-D projection: per digit, the share of its points' nearest
    `neighbours` in the plane that are the same digit (`purity`, 1 = a cluster of its own),
    and per pair of digits the share of neighbours they lend each other (`pairs`, largest
    first: the digits that overlap)."""
    from sklearn.neighbors import NearestNeighbors

    points = check_codes(points, "points", dimensions=2)
    labels = check_labels(labels, len(points))
    index = NearestNeighbors(n_neighbors=neighbours + 1).fit(points).kneighbors(
        points, return_distance=False)[:, 1:]  # without the point itself
    lent = np.zeros((len(DIGITS), len(DIGITS)))
    np.add.at(lent, (np.repeat(labels, neighbours), labels[index].ravel()), 1.0)
    shares = lent / lent.sum(axis=1, keepdims=True)
    pairs = sorted(((float(shares[a, b] + shares[b, a]) / 2, a, b)
                    for a in DIGITS for b in DIGITS if a < b), reverse=True)
    return {"purity": np.diag(shares).tolist(),
            "pairs": [{"digits": [a, b], "share": share} for share, a, b in pairs]}


def latent_size_rows(evidence: Mapping[int, Mapping[str, np.ndarray]],
                     epochs: Mapping[int, int]) -> list[dict[str, Any]]:
    """Rows of the latent-size sweep: test BCE, recognised reconstructions and 5-NN accuracy
    of the codes per size, each change against the next smaller size (paired over the test
    images), and whether the BCE gain shrinks from one step to the next (`gain_shrink`: the
    earlier step's gain minus this step's, paired)."""
    rows = compared_rows(evidence, "latent_dim", {"bce": mean_estimate,
                                                  "recognised": share_estimate,
                                                  "knn": share_estimate})
    sizes = list(evidence)
    for index, row in enumerate(rows):
        row["epochs"] = int(epochs[row["latent_dim"]])
        if index >= 2:
            earlier, middle, later = (np.asarray(evidence[sizes[i]]["bce"])
                                      for i in (index - 2, index - 1, index))
            shrink = paired_estimate(earlier - middle, middle - later)
            row["gain_shrink"], row["gain_shrink_se"] = shrink.value, shrink.se
    return rows


def denoising_rows(clean: np.ndarray, noisy: np.ndarray, denoised: np.ndarray,
                   plain: np.ndarray) -> list[dict[str, Any]]:
    """Rows comparing images with the clean test images: the noisy inputs, the denoiser's
    output and a clean-trained autoencoder's output on the same noisy inputs. Each row has
    its MSE with SE, its paired change against the noisy inputs, and its grey-pixel share;
    the denoiser's row also its MSE change against the clean-trained model's output."""
    evidence = {name: {"mse": per_image_squared_error(clean, images),
                       "grey": grey_share(images)}
                for name, images in (("noisy inputs", noisy), ("denoiser", denoised),
                                     ("clean-trained autoencoder", plain))}
    rows = compared_rows(evidence, "images", {"mse": mean_estimate, "grey": mean_estimate},
                         against="first")
    versus_plain = paired_estimate(evidence["denoiser"]["mse"],
                                   evidence["clean-trained autoencoder"]["mse"])
    rows[1]["mse_vs_plain"], rows[1]["mse_vs_plain_se"] = versus_plain.value, versus_plain.se
    clean_grey = mean_estimate(grey_share(clean))
    blur = paired_estimate(evidence["denoiser"]["grey"], grey_share(clean))
    rows[1].update({"clean_grey": clean_grey.value, "grey_vs_clean": blur.value,
                    "grey_vs_clean_se": blur.se})
    return rows
