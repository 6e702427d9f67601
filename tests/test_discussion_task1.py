"""The answers of Task 1 (ca4lib.discussion_task1) on constructed rows: each opens with a plain
answer, cites its figure or table by number, and words every comparison from an interval."""

from __future__ import annotations

import pytest

from ca4lib import discussion_task1 as answers


def autoencoder_row(**changes):
    row = {"latent_dim": 10, "epochs": 20, "n": 10000, "bce": 0.0970, "bce_se": 0.0003,
           "copy_bce": 0.0632, "recognised": 0.962, "recognised_se": 0.002,
           "recognised_change": -0.028, "recognised_change_se": 0.0017,
           "originals_recognised": 0.99, "grey": 0.21, "grey_se": 0.001,
           "grey_change": 0.08, "grey_change_se": 0.0008, "originals_grey": 0.13,
           "shown": [{"digit": d, "read": d} for d in range(10)],
           "pca_explained_variance": [0.32, 0.21]}
    return with_values(row, changes)


def with_values(row: dict, values: dict) -> dict:
    """Set each of `values` in `row`; a (value, se) pair sets the field and its `_se` field.
    test_discussion_task2.py builds its rows with it too."""
    for name, value in values.items():
        if isinstance(value, tuple):
            row[name], row[f"{name}_se"] = value
        else:
            row[name] = value
    return row


def test_reconstructions_named_blurrier_with_the_digits_the_classifier_swaps():
    shown = [{"digit": d, "read": {4: 9, 5: 3}.get(d, d)} for d in range(10)]
    text = answers.reconstruction_answer(autoencoder_row(shown=shown))
    assert text.startswith("**Originals against reconstructions.** The reconstructions are "
                           "blurrier than the originals and lose the digit of some images")
    assert "21.0% of their pixels are grey" in text and "13.0% in the originals" in text
    assert "the classifier reads the 4 as a 9 and the 5 as a 3 in the reconstruction" in text
    assert "Figure 2" in text and "Figure 1" in text


@pytest.mark.parametrize("grey_change, recognised_change, words", [
    ((0.0001, 0.001), (0.0, 0.001), "not clearly blurrier than the originals and keep the digit "
                                    "as often as the originals show it"),
    ((-0.05, 0.001), (0.01, 0.001), "sharper than the originals and are read as their digit "
                                    "even more often"),
])
def test_reconstruction_answer_branches(grey_change, recognised_change, words):
    text = answers.reconstruction_answer(autoencoder_row(grey_change=grey_change,
                                                         recognised_change=recognised_change))
    assert words in text
    assert "each of the 10 reconstructions in Figure 2 as its digit" in text


def test_the_pca_answer_names_the_separate_and_the_overlapping_digits():
    purity = [0.95, 0.98, 0.7, 0.6, 0.5, 0.55, 0.9, 0.8, 0.6, 0.52]
    pairs = [{"digits": [4, 9], "share": 0.31}, {"digits": [3, 5], "share": 0.2},
             {"digits": [7, 9], "share": 0.12}, {"digits": [0, 6], "share": 0.01}]
    text = answers.pca_answer(autoencoder_row(), {"purity": purity, "pairs": pairs})
    assert "the digits 1, 0 and 6 stand most apart (98%, 95% and 90%" in text
    assert "4 and 9, 3 and 5 and 7 and 9 overlap most" in text
    assert "The plane holds 53% of the codes' variance" in text and "other 8 dimensions" in text


def latent_rows(bce=((0.16, 0.001), (0.097, 0.0005), (0.09, 0.0005)),
                changes=((-0.063, 0.0007), (-0.007, 0.0002)), shrink=(0.056, 0.0007)):
    rows = []
    for index, (size, (value, se)) in enumerate(zip((2, 10, 32), bce)):
        row = {"latent_dim": size, "epochs": 2, "n": 10000, "bce": value, "bce_se": se,
               "recognised": (0.7, 0.96, 0.97)[index], "recognised_se": 0.004,
               "knn": (0.72, 0.95, 0.95)[index], "knn_se": 0.004}
        if index:
            row.update({"bce_change": changes[index - 1][0],
                        "bce_change_se": changes[index - 1][1],
                        "recognised_change": row["recognised"] - rows[-1]["recognised"],
                        "recognised_change_se": 0.004,
                        "knn_change": row["knn"] - rows[-1]["knn"], "knn_change_se": 0.004})
        if index == 2:
            row["gain_shrink"], row["gain_shrink_se"] = shrink
        rows.append(row)
    return rows


def test_latent_size_answer_with_diminishing_returns():
    text = answers.latent_size_answer(latent_rows())
    assert text.startswith("**Q2: How does the size of the latent space change the "
                           "reconstructions?** A larger latent space reconstructs better, with "
                           "diminishing returns: after 2 epochs of the same training, the test "
                           "BCE per pixel fell at each step (Table 3)")
    assert "by less at each step (0.0630 and 0.0070)" in text
    assert "The smallest code loses digits: the classifier recognises 70.0% of the latent-2 " \
           "reconstructions against 96.0% at latent 10" in text
    assert "the codes separate the digits best at size 10, not clearly better than at 32" in text


def test_latent_size_answer_when_a_step_does_not_help():
    text = answers.latent_size_answer(latent_rows(changes=((-0.063, 0.0007), (0.0001, 0.0002))))
    assert "A larger latent space does not reconstruct better at every step" in text
    assert "fell from 2 to 10, then did not change clearly from 10 to 32" in text


# ---------------------------------------------------------------------------------------------
# Q1: normalisation. Paired differences raw - normalised over 3 seeds (t quantile 4.30 with 2
# degrees of freedom): built clear or not clear, so that each branch is chosen by construction.
# ---------------------------------------------------------------------------------------------


def seed_rows(raw_bce, normalised_bce, raw_dead, normalised_dead, seeds=(42, 43, 44),
              epochs=1) -> list[dict]:
    rows = []
    for inputs, bces, deads in (("[0, 1]", normalised_bce, normalised_dead),
                                ("raw 0-255", raw_bce, raw_dead)):
        rows += [{"inputs": inputs, "seed": seed, "epochs": epochs, "test_bce": bce, "dead": dead}
                 for seed, bce, dead in zip(seeds, bces, deads)]
    return rows


NORMALISED_BCE, NORMALISED_DEAD = [0.10, 0.11, 0.12], [0.05, 0.06, 0.05]
WORSE = [0.20, 0.22, 0.21]  # +0.10, +0.11, +0.09: mean 0.1, SE 0.0058, clear
SAME = [0.11, 0.10, 0.125]  # +0.01, -0.01, +0.005: mean 0.0017, SE 0.006, not clear
BETTER = [0.00, 0.00, 0.03]  # -0.10, -0.11, -0.09: clear
MORE_DEAD = [0.30, 0.32, 0.30]  # +0.25, +0.26, +0.25: clear
SAME_DEAD = [0.06, 0.05, 0.055]  # +0.01, -0.01, +0.005: not clear


def test_normalisation_answer_opens_with_the_reason_and_cites_its_tables():
    text = answers.normalisation_answer(-3509.2, seed_rows(WORSE, NORMALISED_BCE, MORE_DEAD,
                                                           NORMALISED_DEAD))
    assert text.startswith("**Q1: Why normalise the images?** Because binary cross-entropy "
                           "reads every target pixel as a probability of ink")
    assert "at $p = 0.999999$ it is -3,509" in text and "(Table 1)" in text
    assert "once for each of 3 seeds (Table 2)" in text
    # differences 0.10, 0.11, 0.09: mean 0.1, sd 0.01, SE 0.01 / sqrt(3) = 0.0058
    assert "test BCE is higher by 0.1000 ± 0.0058" in text
    assert "1 epochs" not in text


@pytest.mark.parametrize("raw, dead, present, absent", [
    (WORSE, MORE_DEAD, ["Raw inputs learn clearly slower.", "switch more units off for good"],
     []),
    (WORSE, SAME_DEAD, ["Raw inputs learn clearly slower."], ["switch more units off"]),
    (SAME, MORE_DEAD, ["is not clearly worse after this short run, but it has clearly more "
                       "dead units"], ["learn clearly slower"]),
    (BETTER, SAME_DEAD, ["raw inputs even reach a lower loss",
                         "units is not clearly different (0.2% ± 0.6%)"],
     ["learn clearly slower", "more dead units"]),
    (SAME, SAME_DEAD, ["Within the spread over seeds, raw inputs cost nothing measurable"],
     ["clearly slower", "lower loss"]),
])
def test_normalisation_answer_branches(raw, dead, present, absent):
    text = answers.normalisation_answer(-3509.2, seed_rows(raw, NORMALISED_BCE, dead,
                                                           NORMALISED_DEAD))
    assert all(words in text for words in present), text
    assert not any(words in text for words in absent), text


def test_normalisation_answer_of_one_seed():
    text = answers.normalisation_answer(-3509.2, seed_rows([0.3], [0.1], [0.4], [0.05],
                                                           seeds=(42,), epochs=2))
    assert "Trained for 2 epochs on raw and on normalised pixels, with one seed" in text
    assert "reached a test BCE of 0.3000 against 0.1000, with 40.0% dead ReLU units" in text
    assert "One seed gives no spread to judge the difference by." in text
    assert "± inf" not in text


def test_normalisation_answer_rejects_mismatched_seeds():
    rows = seed_rows(WORSE, NORMALISED_BCE, MORE_DEAD, NORMALISED_DEAD)
    rows[-1] = {**rows[-1], "seed": 99}
    with pytest.raises(ValueError, match="seed_rows: expected the same seeds for both inputs"):
        answers.normalisation_answer(-3509.2, rows)


# ---------------------------------------------------------------------------------------------
# Q3: denoising
# ---------------------------------------------------------------------------------------------


def row_with(base: dict, **fields) -> dict:
    row = dict(base)
    for name, value in fields.items():
        row[name], row[f"{name}_se"] = value
    return row


def denoising_rows(denoised_change=(-0.08, 0.0005), bottleneck_change=(-0.05, 0.0005),
                   versus_plain=(-0.03, 0.0003), blur=(0.07, 0.001)) -> list[dict]:
    n = 10_000
    noisy = row_with({"images": "noisy inputs", "n": n}, mse=(0.1, 0.0005), grey=(0.4, 0.001))
    denoiser = row_with({"images": "denoiser", "n": n, "clean_grey": 0.05}, mse=(0.02, 0.0002),
                        mse_change=denoised_change, mse_vs_plain=versus_plain,
                        grey=(0.12, 0.001), grey_vs_clean=blur)
    plain = row_with({"images": "clean-trained autoencoder", "n": n}, mse=(0.05, 0.0003),
                     mse_change=bottleneck_change, grey=(0.2, 0.001))
    return [noisy, denoiser, plain]


def test_denoising_answer_clearly_closer_and_blurrier():
    text = answers.denoising_answer(denoising_rows(), 0.5)
    assert text.startswith("**Q3: Can autoencoders remove noise?** Yes, when trained for it.")
    assert "standard deviation 0.5 (Figure 5)" in text
    assert ("a mean squared error of 0.1000 ± 0.0005 per pixel and the denoising "
            "autoencoder's outputs by 0.0200 ± 0.0002 (Table 4), 5.0 times closer") in text
    assert ("its outputs are blurrier than the clean digits: 12.0% of their pixels are grey "
            "(between 0.1 and 0.9) against 5.0% in the clean images") in text


def test_denoising_answer_not_clearly_closer_nor_blurrier():
    text = answers.denoising_answer(denoising_rows(denoised_change=(0.0001, 0.0005),
                                                   blur=(0.0005, 0.001)), 0.3)
    assert "Not in this run: the denoiser's output is not clearly closer than its input." in text
    assert "times closer" not in text and "blurrier" not in text


@pytest.mark.parametrize("change, words", [
    ((-0.05, 0.0005), "closer than the inputs, so the bottleneck alone removes some noise"),
    ((0.0001, 0.0005), "not clearly closer than the inputs, so the bottleneck alone does not "
                       "denoise"),
    ((0.02, 0.0005), "further from the clean images than the inputs themselves"),
])
def test_denoising_answer_bottleneck_alone(change, words):
    text = answers.denoising_answer(denoising_rows(bottleneck_change=change), 0.5)
    assert f"on the same noisy inputs: {words};" in text


@pytest.mark.parametrize("versus, words", [
    ((-0.03, 0.0003), "training on noisy inputs with clean targets improves on it clearly"),
    ((0.0001, 0.0003), "training on noisy inputs does not clearly improve on it"),
    ((0.01, 0.0003), "here the clean-trained autoencoder is even closer than the denoiser"),
])
def test_denoising_answer_denoiser_against_the_clean_trained_model(versus, words):
    text = answers.denoising_answer(denoising_rows(versus_plain=versus), 0.5)
    assert f"; {words} (denoiser minus clean-trained: " in text
