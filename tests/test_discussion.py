"""The discussion's sentence builders on constructed rows: every branch, its decisive words and
the numbers it prints.

A difference is built clear (value 1.0, SE 0.1 over 1,000 items: the 95 % interval is about
1 +- 0.2) or not clear (value 0.05, SE 0.1: the interval contains 0), so that each branch is
chosen by construction, not by the numbers an implementation happens to produce.
"""

from __future__ import annotations

import re

import pytest

from ca4lib import discussion_task1, discussion_task2, estimates, vae_analyses, wording

N = 10_000
NEGATIVE_ZERO = re.compile(r"-0(\.0+)?(?![\d.])")


def assert_no_negative_zero(text: str) -> None:
    found = NEGATIVE_ZERO.search(text)
    if found is not None:
        context = text[max(0, found.start() - 80):found.end() + 20]
        pytest.fail(f"negative zero {found.group()!r} in: {context!r}")


def row_with(base: dict | None = None, **fields) -> dict:
    """A row: `name=(value, se)` becomes `name` and `name_se`; other fields stay as given."""
    row = dict(base or {})
    for name, value in fields.items():
        if isinstance(value, tuple):
            row[name], row[f"{name}_se"] = value
        else:
            row[name] = value
    return row


def bullet_verdicts(text: str) -> dict[str, str]:
    """The expectations paragraph's bullets: claim -> 'consistent' or 'not borne out'."""
    return dict(re.findall(r"^- \*(.+?)\*: \*\*(consistent|not borne out)\*\*", text, re.M))


# ---------------------------------------------------------------------------------------------
# Task 1: reconstruction
# ---------------------------------------------------------------------------------------------


def autoencoder_row(**fields) -> dict:
    base = row_with({"latent_dim": 10, "epochs": 20, "n": N, "copy_bce": 0.0621,
                     "originals_recognised": 0.987, "pca_explained_variance": [0.3, 0.2]},
                    bce=(0.0712, 0.0004), recognised=(0.962, 0.002),
                    recognised_change=(-0.025, 0.002))
    return row_with(base, **fields)


def test_reconstruction_paragraph_numbers_and_a_clear_loss_of_digits():
    text = discussion_task1.reconstruction_paragraph(autoencoder_row())
    assert "With a 10-number code" in text
    assert "**0.0712 ± 0.0004** per pixel after 20 epochs" in text
    assert "over the 10,000 test images" in text
    assert "an exact copy would score 0.0621" in text
    assert "reads 96.2% of the reconstructions" in text and "against 98.7% of the originals" in text
    assert "loses the digit of 2.5% of the test images (± 0.2%)" in text
    assert "no clear difference" not in text


def test_reconstruction_paragraph_without_a_clear_loss():
    text = discussion_task1.reconstruction_paragraph(autoencoder_row(recognised_change=(-0.001, 0.002)))
    assert "keeps the digit as often as the originals show it (no clear difference)" in text
    assert "loses the digit" not in text


def test_reconstruction_paragraph_when_reconstructions_are_clearly_recognised_more_often():
    text = discussion_task1.reconstruction_paragraph(autoencoder_row(recognised_change=(0.02, 0.002)))
    assert "no clear difference" not in text


@pytest.mark.parametrize("ratios, shown", [
    ([0.6, 0.35], "nearly all of the code's variance"),
    ([0.9, 0.05], "nearly all of the code's variance"),  # exactly 95 %
    ([0.3, 0.2], "50% of it, a part of the code space only"),
])
def test_reconstruction_paragraph_pca_share(ratios, shown):
    text = discussion_task1.reconstruction_paragraph(autoencoder_row(pca_explained_variance=ratios))
    assert f"PCA plot shows {shown}" in text
    assert f"explain {ratios[0]:.0%} and {ratios[1]:.0%} of the code variance" in text


def test_reconstruction_paragraph_of_one_epoch():
    text = discussion_task1.reconstruction_paragraph(autoencoder_row(epochs=1))
    assert "after 1 epoch (" in text and "1 epochs" not in text


# ---------------------------------------------------------------------------------------------
# Task 1, Q1: normalisation
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
# Paired differences raw - normalised, over 3 seeds (t quantile 4.30 with 2 degrees of freedom):
WORSE = [0.20, 0.22, 0.21]  # +0.10, +0.11, +0.09: mean 0.1, SE 0.0058, clear
SAME = [0.11, 0.10, 0.125]  # +0.01, -0.01, +0.005: mean 0.0017, SE 0.006, not clear
BETTER = [0.00, 0.00, 0.03]  # -0.10, -0.11, -0.09: clear
MORE_DEAD = [0.30, 0.32, 0.30]  # +0.25, +0.26, +0.25: clear
SAME_DEAD = [0.06, 0.05, 0.055]  # +0.01, -0.01, +0.005: not clear


def test_normalisation_paragraph_numbers():
    text = discussion_task1.normalisation_paragraph(-3509.2, seed_rows(WORSE, NORMALISED_BCE, MORE_DEAD,
                                                          NORMALISED_DEAD))
    assert "at $p = 0.999999$ it is -3509" in text
    assert "Over 3 seeds, after 1 epoch of the same training" in text
    assert ("reached a test BCE of 0.2100 (seeds 0.2000, 0.2200, 0.2100) against 0.1100 (seeds "
            "0.1000, 0.1100, 0.1200)") in text
    # differences 0.10, 0.11, 0.09: mean 0.1, sd 0.01, SE 0.01 / sqrt(3) = 0.0058
    assert "a paired difference of 0.1000 ± 0.0058" in text
    assert "its encoder had 30.7% dead ReLU units against 5.3%" in text
    assert "1 epochs" not in text


def test_normalisation_paragraph_raw_clearly_worse_with_more_dead_units():
    text = discussion_task1.normalisation_paragraph(-3509.2, seed_rows(WORSE, NORMALISED_BCE, MORE_DEAD,
                                                          NORMALISED_DEAD))
    assert "Raw inputs learn clearly slower." in text
    assert "They also switch more units off for good" in text


def test_normalisation_paragraph_raw_clearly_worse_without_more_dead_units():
    text = discussion_task1.normalisation_paragraph(-3509.2, seed_rows(WORSE, NORMALISED_BCE, SAME_DEAD,
                                                          NORMALISED_DEAD))
    assert "Raw inputs learn clearly slower." in text
    assert "switch more units off" not in text


def test_normalisation_paragraph_only_more_dead_units():
    text = discussion_task1.normalisation_paragraph(-3509.2, seed_rows(SAME, NORMALISED_BCE, MORE_DEAD,
                                                          NORMALISED_DEAD))
    assert "is not clearly worse after this short run, but it has clearly more dead units" in text
    assert "learn clearly slower" not in text


def test_normalisation_paragraph_raw_clearly_better():
    text = discussion_task1.normalisation_paragraph(-3509.2, seed_rows(BETTER, NORMALISED_BCE, SAME_DEAD,
                                                          NORMALISED_DEAD))
    assert "raw inputs even reach a lower loss" in text
    assert "learn clearly slower" not in text and "more dead units" not in text
    assert "dead ReLU units against" in text and "; no clear difference)." in text


def test_normalisation_paragraph_no_clear_difference():
    text = discussion_task1.normalisation_paragraph(-3509.2, seed_rows(SAME, NORMALISED_BCE, SAME_DEAD,
                                                          NORMALISED_DEAD))
    assert "Within the spread over seeds, raw inputs cost nothing measurable" in text
    assert "clearly slower" not in text and "lower loss" not in text


def test_normalisation_paragraph_of_one_seed():
    text = discussion_task1.normalisation_paragraph(-3509.2, seed_rows([0.3], [0.1], [0.4], [0.05],
                                                          seeds=(42,), epochs=2))
    assert "Over 1 seed, after 2 epochs" in text
    assert "One seed gives no spread to judge the difference by." in text
    assert "reached a test BCE of 0.3000 against 0.1000" in text  # no list of one seed
    assert "clearly" not in text.split("One seed")[1]


def test_normalisation_paragraph_rejects_mismatched_seeds():
    rows = seed_rows(WORSE, NORMALISED_BCE, MORE_DEAD, NORMALISED_DEAD)
    rows[-1] = {**rows[-1], "seed": 99}
    with pytest.raises(ValueError, match="seed_rows: expected the same seeds for both inputs"):
        discussion_task1.normalisation_paragraph(-3509.2, rows)


# ---------------------------------------------------------------------------------------------
# Task 1, Q2: latent size
# ---------------------------------------------------------------------------------------------

CLEAR_DROP, CLEAR_SMALL_DROP, NO_CHANGE = (-0.05, 0.001), (-0.01, 0.0005), (-0.0001, 0.0005)


def latent_rows(steps=(CLEAR_DROP, CLEAR_SMALL_DROP), shrink=(0.04, 0.001),
                recognised_first=(0.05, 0.005), knn=(0.70, 0.85, 0.95),
                knn_changes=((0.15, 0.005), (0.10, 0.005)), epochs=5) -> list[dict]:
    bces = [0.15, 0.10, 0.09]
    recognised = [0.80, 0.85, 0.95]
    rows = [row_with({"latent_dim": 2, "epochs": epochs, "n": N}, bce=(bces[0], 0.0005),
                     recognised=(recognised[0], 0.004), knn=(knn[0], 0.0045))]
    for index, size in ((1, 10), (2, 32)):
        rows.append(row_with(
            {"latent_dim": size, "epochs": epochs, "n": N}, bce=(bces[index], 0.0005),
            bce_change=steps[index - 1], recognised=(recognised[index], 0.003),
            recognised_change=recognised_first if index == 1 else (0.10, 0.004),
            knn=(knn[index], 0.0045), knn_change=knn_changes[index - 1]))
    rows[2] = row_with(rows[2], gain_shrink=shrink)
    return rows


def test_latent_size_paragraph_lists_the_bce_per_size():
    text = discussion_task1.latent_size_paragraph(latent_rows())
    assert ("Test BCE per pixel after 5 epochs each: latent 2: **0.1500 ± 0.0005**, latent 10: "
            "**0.1000 ± 0.0005**, latent 32: **0.0900 ± 0.0005**.") in text
    assert ("recognises the digit in 80.0% / 85.0% / 95.0% of the reconstructions for latent "
            "sizes 2 / 10 / 32") in text
    assert "labels 70.0% / 85.0% / 95.0% of the test digits correctly" in text


def test_latent_size_paragraph_all_clearly_better_with_shrinking_gains():
    text = discussion_task1.latent_size_paragraph(latent_rows())
    assert ("Each larger code reconstructs clearly better, and the gain clearly shrinks as the "
            "code grows (0.0500 from 2 to 10, 0.0100 from 10 to 32).") in text


def test_latent_size_paragraph_all_clearly_better_without_clear_shrinking():
    text = discussion_task1.latent_size_paragraph(latent_rows(shrink=(0.0005, 0.001)))
    assert "Each larger code reconstructs clearly better." in text
    assert "shrinks" not in text


def test_latent_size_paragraph_a_step_without_clear_difference():
    text = discussion_task1.latent_size_paragraph(latent_rows(steps=(CLEAR_DROP, NO_CHANGE)))
    assert "reconstructs clearly better" not in text
    assert ("From 2 to 10 the BCE is lower (-0.0500 ± 0.0010); from 10 to 32 the BCE is not "
            "clearly different (-0.0001 ± 0.0005).") in text


def test_latent_size_paragraph_a_step_clearly_worse():
    text = discussion_task1.latent_size_paragraph(latent_rows(steps=(CLEAR_DROP, (0.01, 0.0005))))
    assert "from 10 to 32 the BCE is higher (0.0100 ± 0.0005)" in text


def test_latent_size_paragraph_recognised_first_step_clear():
    text = discussion_task1.latent_size_paragraph(latent_rows())
    assert ("the smallest code returns 5.0% (± 0.5%) more test digits as another digit than "
            "latent 10 does") in text


def test_latent_size_paragraph_recognised_first_step_not_clear():
    text = discussion_task1.latent_size_paragraph(latent_rows(recognised_first=(0.002, 0.005)))
    assert "no clear difference between latent 2 and 10" in text
    assert "the smallest code returns" not in text


def test_latent_size_paragraph_recognised_first_step_clearly_worse():
    text = discussion_task1.latent_size_paragraph(latent_rows(recognised_first=(-0.05, 0.005)))
    assert "no clear difference" not in text


def test_latent_size_paragraph_knn_all_clearly_better():
    text = discussion_task1.latent_size_paragraph(latent_rows())
    assert "each larger code also separates the digits clearly better" in text


def test_latent_size_paragraph_knn_best_with_a_tie():
    # 0.86 against 0.85, each +- 0.0045: a difference of 0.01 +- 0.0064, not clear.
    text = discussion_task1.latent_size_paragraph(latent_rows(knn=(0.70, 0.85, 0.86),
                                                 knn_changes=((0.15, 0.005), (0.01, 0.007))))
    assert ("the codes separate the digits best at latent size 32, not clearly better than at "
            "10.") in text
    assert "each larger code also separates" not in text


def test_latent_size_paragraph_knn_best_with_two_ties():
    text = discussion_task1.latent_size_paragraph(latent_rows(knn=(0.851, 0.85, 0.855),
                                                 knn_changes=((-0.001, 0.006), (0.005, 0.006))))
    assert "best at latent size 32, not clearly better than at 2 and 10." in text


def test_latent_size_paragraph_knn_best_without_ties():
    text = discussion_task1.latent_size_paragraph(latent_rows(knn=(0.70, 0.90, 0.80),
                                                 knn_changes=((0.2, 0.006), (-0.1, 0.006))))
    assert text.endswith("the codes separate the digits best at latent size 10.")


def test_latent_size_paragraph_of_one_epoch():
    text = discussion_task1.latent_size_paragraph(latent_rows(epochs=1))
    assert "after 1 epoch each" in text and "1 epochs" not in text


def test_latent_size_paragraph_of_a_single_size_has_no_stray_full_stop():
    try:
        text = discussion_task1.latent_size_paragraph(latent_rows()[:1])
    except ValueError:  # refusing a sweep of one size is a fix too
        return
    assert " ." not in text


# ---------------------------------------------------------------------------------------------
# Task 1, Q3: denoising
# ---------------------------------------------------------------------------------------------


def denoising_rows(denoised_change=(-0.08, 0.0005), bottleneck_change=(-0.05, 0.0005),
                   versus_plain=(-0.03, 0.0003), blur=(0.07, 0.001)) -> list[dict]:
    noisy = row_with({"images": "noisy inputs", "n": N}, mse=(0.1, 0.0005), grey=(0.4, 0.001))
    denoiser = row_with({"images": "denoiser", "n": N, "clean_grey": 0.05}, mse=(0.02, 0.0002),
                        mse_change=denoised_change, mse_vs_plain=versus_plain,
                        grey=(0.12, 0.001), grey_vs_clean=blur)
    plain = row_with({"images": "clean-trained autoencoder", "n": N}, mse=(0.05, 0.0003),
                     mse_change=bottleneck_change, grey=(0.2, 0.001))
    return [noisy, denoiser, plain]


def test_denoising_paragraph_clearly_closer_and_blurrier():
    text = discussion_task1.denoising_paragraph(denoising_rows(), 0.5)
    assert "**Q3: Can autoencoders remove noise?** Yes, when trained for it." in text
    assert "Gaussian noise of standard deviation 0.5" in text
    assert "mean squared error of **0.1000 ± 0.0005** per pixel" in text
    assert "the denoising autoencoder's outputs by **0.0200 ± 0.0002**, **5.0 times closer**" in text
    assert ("its outputs are blurrier than the clean digits: 12.0% of their pixels are grey "
            "(between 0.1 and 0.9) against 5.0% in the clean images") in text
    assert "reaches 0.0500 ± 0.0003 on the same noisy inputs" in text


def test_denoising_paragraph_not_clearly_closer_nor_blurrier():
    text = discussion_task1.denoising_paragraph(denoising_rows(denoised_change=(0.0001, 0.0005),
                                                  blur=(0.0005, 0.001)), 0.3)
    assert ("Not in this run: the denoiser's output is not clearly closer than its input."
            in text)
    assert "times closer" not in text and "blurrier" not in text
    assert "standard deviation 0.3" in text


@pytest.mark.parametrize("change, words", [
    ((-0.05, 0.0005), "closer than the inputs, so the bottleneck alone removes some noise"),
    ((0.0001, 0.0005), "not clearly closer than the inputs, so the bottleneck alone does not "
                       "denoise"),
    ((0.02, 0.0005), "further from the clean images than the inputs themselves"),
])
def test_denoising_paragraph_bottleneck_alone(change, words):
    text = discussion_task1.denoising_paragraph(denoising_rows(bottleneck_change=change), 0.5)
    assert f"on the same noisy inputs: {words};" in text


@pytest.mark.parametrize("versus, words", [
    ((-0.03, 0.0003), "training on noisy inputs with clean targets improves on it clearly"),
    ((0.0001, 0.0003), "training on noisy inputs does not clearly improve on it"),
    ((0.01, 0.0003), "here the clean-trained autoencoder is even closer than the denoiser"),
])
def test_denoising_paragraph_denoiser_against_the_clean_trained_model(versus, words):
    text = discussion_task1.denoising_paragraph(denoising_rows(versus_plain=versus), 0.5)
    expected = estimates.Estimate(*versus, N).text(".4f")
    assert f"; {words} (denoiser minus clean-trained: {expected})." in text


def test_task1_discussion_joins_its_paragraphs():
    arguments = (autoencoder_row(), -3509.2,
                 seed_rows(WORSE, NORMALISED_BCE, MORE_DEAD, NORMALISED_DEAD), latent_rows(),
                 denoising_rows(), 0.5)
    text = discussion_task1.task1_discussion(*arguments)
    paragraphs = text.split("\n\n")
    assert paragraphs == [discussion_task1.reconstruction_paragraph(arguments[0]),
                          discussion_task1.normalisation_paragraph(*arguments[1:3]),
                          discussion_task1.latent_size_paragraph(arguments[3]),
                          discussion_task1.denoising_paragraph(*arguments[4:])]
    assert [p[:12] for p in paragraphs] == ["**Reconstruc", "**Q1: Why no", "**Q2: Latent",
                                            "**Q3: Can au"]


def test_task1_discussion_never_prints_a_negative_zero():
    tiny = (-0.00001, 0.0005)
    text = discussion_task1.task1_discussion(
        autoencoder_row(recognised_change=(-0.00001, 0.002)), -3509.2,
        seed_rows([0.1, 0.11, 0.12], NORMALISED_BCE, [0.05, 0.06, 0.05], NORMALISED_DEAD),
        latent_rows(steps=(tiny, tiny), shrink=tiny, recognised_first=(-0.00001, 0.005),
                    knn_changes=(tiny, tiny)),
        denoising_rows(denoised_change=tiny, bottleneck_change=tiny, versus_plain=tiny,
                       blur=tiny), 0.5)
    assert_no_negative_zero(text)
    assert "1 epochs" not in text


# ---------------------------------------------------------------------------------------------
# Task 2: the sweep's rows
# ---------------------------------------------------------------------------------------------

WEIGHTS = (0.1, 1.0, 5.0)


def sweep_rows(epochs: int = 20, **by_field) -> list[dict]:
    """A sweep in which every expectation holds; `by_field[name]` replaces a field's values
    (one per weight) to build another case."""
    fields = {
        "reconstruction": [(141.0, 0.3), (144.0, 0.3), (170.0, 0.3)],
        "reconstruction_change": [None, (3.0, 0.1), (26.0, 0.1)],
        "kl": [(12.0, 0.05), (7.0, 0.05), (2.0, 0.02)],
        "kl_change": [None, (-5.0, 0.05), (-5.0, 0.05)],
        "neg_elbo": [(153.0, 0.3), (151.0, 0.3), (172.0, 0.3)],
        "neg_elbo_above_best": [(2.0, 0.1), (0.0, 0.0), (21.0, 0.2)],
        "mean_code_reconstruction": [(135.0, 0.3), (140.0, 0.3), (165.0, 0.3)],
        "mean_code_reconstruction_change": [None, (5.0, 0.1), (25.0, 0.1)],
        "recognised": [(0.90, 0.003), (0.85, 0.0035), (0.60, 0.005)],
        "recognised_change": [None, (-0.05, 0.003), (-0.25, 0.005)],
        "prior_mismatch": [(1.5, 0.05), (0.6, 0.04), (0.2, 0.03)],
        "prior_mismatch_change": [None, (-0.9, 0.05), (-0.4, 0.04)],
        "mean_variance": [[1.2, 0.9], [0.95, 0.8], [0.9, 0.004]],
        "kl_per_dimension": [[6.0, 6.0], [3.5, 3.5], [1.997, 0.003]],
        "prior_like_share": [[0.0, 0.0], [0.0, 0.01], [0.0, 0.97]],
        "kl_weight": list(WEIGHTS),
    }
    fields.update(by_field)
    rows = []
    for index in range(len(fields["kl_weight"])):
        row = {"epochs": epochs, "n": N}
        for name, values in fields.items():
            if values[index] is not None:
                row = row_with(row, **{name: values[index]})
        row["active_dimensions"] = sum(v > vae_analyses.ACTIVE_VARIANCE for v in row["mean_variance"])
        rows.append(row)
    return rows


def test_losses_paragraph_clear_trade_off_and_best_elbo_at_weight_1():
    text = discussion_task2.losses_paragraph(sweep_rows(), 102.34)
    assert "**Losses.** After 20 epochs, the test-set terms per image" in text
    assert "(mean ± SE over 10,000 images, one sample of $z$ each) for weights 0.1 / 1 / 5" in text
    assert ("reconstruction 141.0 ± 0.3, 144.0 ± 0.3, 170.0 ± 0.3; KL 12.00 ± 0.05, "
            "7.00 ± 0.05, 2.00 ± 0.02; negative ELBO 153.0 ± 0.3, 151.0 ± 0.3, 172.0 ± 0.3") in text
    assert "The weight sets a clear trade-off" in text
    assert ("lowest at weight **1** (151.0 ± 0.3), the one setting whose objective is the ELBO "
            "itself") in text
    assert "not clearly below" not in text
    assert "No model can go below 102.3 nats per image" in text


@pytest.mark.parametrize("field, rises, falls", [
    ("reconstruction_change", "does not rise clearly at every step", "falls clearly"),
    ("kl_change", "rises clearly", "does not fall clearly at every step"),
])
def test_losses_paragraph_partial_trade_off(field, rises, falls):
    changes = {"reconstruction_change": [None, (0.01, 0.1), (26.0, 0.1)],
               "kl_change": [None, (-5.0, 0.05), (0.002, 0.05)]}
    text = discussion_task2.losses_paragraph(sweep_rows(**{field: changes[field]}), 102.3)
    assert (f"The reconstruction loss {rises} with the weight and the KL {falls}, so the "
            f"expected trade-off shows only in part here.") in text
    assert "clear trade-off" not in text


def test_losses_paragraph_best_elbo_elsewhere():
    text = discussion_task2.losses_paragraph(sweep_rows(
        neg_elbo=[(150.0, 0.3), (151.0, 0.3), (172.0, 0.3)],
        neg_elbo_above_best=[(0.0, 0.0), (1.0, 0.1), (22.0, 0.2)]), 102.3)
    assert "lowest at weight **0.1** (150.0 ± 0.3); weight 1 is the setting that maximises" in text
    assert "stopped short of its own optimum" in text
    assert "not clearly below" not in text


def test_losses_paragraph_best_elbo_with_ties():
    text = discussion_task2.losses_paragraph(sweep_rows(
        neg_elbo_above_best=[(0.01, 0.1), (0.0, 0.0), (0.02, 0.2)]), 102.3)
    assert "lowest at weight **1** (151.0 ± 0.3), not clearly below weight 0.1 / 5, the one" in text


def test_losses_paragraph_does_not_conclude_from_a_tie_with_weight_1():
    text = discussion_task2.losses_paragraph(sweep_rows(
        neg_elbo=[(150.9, 0.3), (151.0, 0.3), (172.0, 0.3)],
        neg_elbo_above_best=[(0.0, 0.0), (0.1, 0.1), (21.1, 0.2)]), 102.3)
    assert "not clearly below weight 1" in text
    assert "stopped short" not in text


def test_losses_paragraph_without_weight_1():
    rows = sweep_rows(kl_weight=[0.1, 2.0, 5.0])
    text = discussion_task2.losses_paragraph(rows, 102.3)
    assert "lowest at weight **2** (151.0 ± 0.3)." in text
    assert "weight 1" not in text and "ELBO itself" not in text


def test_losses_paragraph_of_one_epoch():
    text = discussion_task2.losses_paragraph(sweep_rows(epochs=1), 102.3)
    assert "After 1 epoch," in text and "1 epochs" not in text


# ---------------------------------------------------------------------------------------------
# Task 2: likelihood
# ---------------------------------------------------------------------------------------------


def likelihood_rows(differences=((0.05, 0.01), (0.02, 0.01), (-0.03, 0.01)),
                    agree=("within",) * 3, nll=((145.0, 0.3), (140.0, 0.3), (160.0, 0.3)),
                    above=((5.0, 0.1), (0.0, 0.0), (20.0, 0.2)), steps=(0.02, 0.015, 0.03)
                    ) -> list[dict]:
    rows = []
    for weight, difference, agreed, (value, se), gap, step in zip(WEIGHTS, differences, agree,
                                                                  nll, above, steps):
        row = row_with({"kl_weight": weight, "likelihood_images": 1000, "quadrature_step": step,
                        "resolved_share": 0.98, "neg_elbo_importance": value + 3},
                       test_log_likelihood=(-value, se), variational_gap=(3.0, 0.05),
                       nll_above_best=gap)
        if difference is not None:
            row = row_with(row, quadrature_log_likelihood=(-value, se),
                           quadrature_minus_importance=difference)
            row["agreement"] = agreed
        rows.append(row)
    return rows


def test_likelihood_paragraph_numbers_and_agreement():
    text = discussion_task2.likelihood_paragraph(likelihood_rows(), 1000)
    assert "K = 1,000 samples" in text and "first 1,000 test images" in text
    assert "at 145.0 ± 0.3, 140.0 ± 0.3, 160.0 ± 0.3 nats for weights 0.1 / 1 / 5" in text
    assert "lowest at weight 1." in text
    assert "is 3.00 ± 0.05, 3.00 ± 0.05, 3.00 ± 0.05 nats" in text
    assert "(step 0.015)" in text  # the finest grid of the three
    assert ("0.05 ± 0.01 nats at weight 0.1 (98% of the images resolved), 0.02 ± 0.01 nats at "
            "weight 1 (98% of the images resolved), -0.03 ± 0.01 nats at weight 5 (98% of the "
            "images resolved): within the 0.1-nat tolerance.") in text
    assert "beyond" not in text and "not available" not in text


def test_likelihood_paragraph_ties_in_the_best():
    text = discussion_task2.likelihood_paragraph(likelihood_rows(above=((0.1, 0.1), (0.0, 0.0), (0.1, 0.2))),
                                    1000)
    assert "lowest at weight 1, not clearly below weight 0.1 / 5." in text


def test_likelihood_paragraph_quadrature_higher():
    text = discussion_task2.likelihood_paragraph(likelihood_rows(
        differences=((0.5, 0.02), (0.02, 0.01), (0.03, 0.01)), agree=("beyond", "within", "within")), 1000)
    assert ("0.50 ± 0.02 nats at weight 0.1 (98% of the images resolved): beyond the 0.1-nat "
            "tolerance") in text
    assert "quadrature is the better estimate" in text
    assert "within the 0.1-nat tolerance" in text  # the other two


def test_likelihood_paragraph_quadrature_lower():
    text = discussion_task2.likelihood_paragraph(likelihood_rows(
        differences=((0.05, 0.01), (-0.4, 0.02), (0.03, 0.01)), agree=("within", "beyond", "within")), 1000)
    assert ("-0.40 ± 0.02 nats at weight 1 (98% of the images resolved): below importance "
            "sampling, which bounds $\\log p(x)$ from below, so there the grid misses "
            "probability mass") in text
    assert "beyond" not in text


def test_likelihood_paragraph_unclear_agreement():
    text = discussion_task2.likelihood_paragraph(likelihood_rows(
        differences=((0.09, 0.05), (0.02, 0.01), (0.03, 0.01)),
        agree=("unclear", "within", "within")), 1000)
    assert ("0.09 ± 0.05 nats at weight 0.1 (98% of the images resolved): too uncertain to say "
            "whether it is within the 0.1-nat tolerance") in text
    assert "beyond" not in text and "better estimate" not in text


def test_likelihood_paragraph_unresolved():
    text = discussion_task2.likelihood_paragraph(likelihood_rows(
        differences=((0.05, 0.01), (0.02, 0.01), None)), 1000)
    assert text.endswith("; not available at weight 5, whose posteriors the grid does not "
                         "resolve.")
    text = discussion_task2.likelihood_paragraph(likelihood_rows(differences=(None, None, None)), 100)
    assert ("quadrature minus importance sampling is not available at weight 0.1, 1, 5, whose "
            "posteriors the grid does not resolve.") in text
    assert "K = 100 samples" in text


# ---------------------------------------------------------------------------------------------
# Task 2: collapsed dimensions
# ---------------------------------------------------------------------------------------------


def test_collapse_paragraph_all_active():
    rows = sweep_rows(mean_variance=[[1.2, 0.9], [0.95, 0.8], [0.9, 0.0101]])
    text = discussion_task2.collapse_paragraph(rows)
    assert text.startswith("**Collapsed dimensions.** Every dimension of every model is active "
                           "(Var$_x(\\mu_d)$ > 0.01")
    assert "inactive" not in text and "no dimension is active" not in text


def test_collapse_paragraph_one_dimension_collapsed():
    text = discussion_task2.collapse_paragraph(sweep_rows())
    assert ("At weight 5, z[1] is inactive (z[1]: Var$_x(\\mu)$ = 0.004, KL 0.003 nats, "
            "prior-like posterior for 97% of the images), so the model is effectively "
            "1-dimensional") in text
    assert "weight 0.1" not in text and "weight 1," not in text
    assert "no dimension is active" not in text


def test_collapse_paragraph_both_dimensions_collapsed():
    text = discussion_task2.collapse_paragraph(sweep_rows(
        mean_variance=[[1.2, 0.9], [0.95, 0.8], [0.002, 0.01]],
        prior_like_share=[[0.0, 0.0], [0.0, 0.0], [0.99, 0.9]]))
    assert ("At weight 5 **no dimension is active** (z[0]: Var$_x(\\mu)$ = 0.002, KL 2 nats, "
            "prior-like posterior for 99% of the images, z[1]: Var$_x(\\mu)$ = 0.01, KL 0.003 "
            "nats, prior-like posterior for 90% of the images)") in text
    assert "effectively" not in text


def test_collapse_paragraph_two_of_three_dimensions_collapsed_at_two_weights():
    rows = [row_with({"kl_weight": 1.0, "mean_variance": [0.001, 0.5, 0.0],
                      "kl_per_dimension": [0.0, 2.0, 0.0], "prior_like_share": [1.0, 0.0, 1.0]}),
            row_with({"kl_weight": 5.0, "mean_variance": [0.0, 0.0, 0.3],
                      "kl_per_dimension": [0.0, 0.0, 1.0], "prior_like_share": [1.0, 1.0, 0.0]})]
    text = discussion_task2.collapse_paragraph(rows)
    assert "At weight 1, z[0] and z[2] are inactive (" in text
    assert "At weight 5, z[0] and z[1] are inactive (" in text
    assert text.count("effectively 1-dimensional") == 2
    assert_no_negative_zero(text)


# ---------------------------------------------------------------------------------------------
# Task 2: reconstructions
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("changes, words", [
    ([None, (5.0, 0.1), (25.0, 0.1)], "rises clearly with the weight"),
    ([None, (-5.0, 0.1), (-25.0, 0.1)], "falls clearly with the weight"),
    ([None, (5.0, 0.1), (0.01, 0.1)], "does not change clearly at every step of the weight"),
    ([None, (5.0, 0.1), (-5.0, 0.1)], "does not change clearly at every step of the weight"),
])
def test_vae_reconstruction_paragraph_trend_of_the_mean_code(changes, words):
    text = discussion_task2.vae_reconstruction_paragraph(sweep_rows(mean_code_reconstruction_change=changes))
    assert ("The reconstruction term of a sampled code is 141.0 ± 0.3, 144.0 ± 0.3, 170.0 ± 0.3 "
            "nats and that of the mean code 135.0 ± 0.3, 140.0 ± 0.3, 165.0 ± 0.3 nats for "
            f"weights 0.1 / 1 / 5; the latter {words}.") in text


def test_vae_reconstruction_paragraph_recognised_digits():
    text = discussion_task2.vae_reconstruction_paragraph(sweep_rows())
    assert ("recognises the original digit in 90.0% / 85.0% / 60.0% of the mean "
            "reconstructions; that share falls clearly with the weight.") in text
    rows = [{k: v for k, v in row.items() if not k.startswith("recognised")}
            for row in sweep_rows()]
    assert "recognises" not in discussion_task2.vae_reconstruction_paragraph(rows)
    # 1 - 0.90 = 10% and 1 - 0.60 = 40% come back as another digit.
    assert text.endswith("10.0% to 40.0% of the mean reconstructions come back as another digit "
                         "(see the figure).")


# ---------------------------------------------------------------------------------------------
# Task 2: continuity of the latent space
# ---------------------------------------------------------------------------------------------


def space_rows(coverage=((0.40, 0.005), (0.75, 0.005), (0.94, 0.005)),
               own=((0.08, 0.002), (0.05, 0.002), (0.02, 0.002)),
               knn=((0.90, 0.004), (0.80, 0.004), (0.50, 0.004))) -> list[dict]:
    rows = [row_with({"model": "prior N(0, I)", "kl_weight": None, "n": N},
                     coverage=(0.95, 0.005))]
    for weight, covered, change, accuracy in zip(WEIGHTS, coverage, own, knn):
        rows.append(row_with({"model": f"KL weight {weight:g}", "kl_weight": weight, "n": N},
                             coverage=covered, own_neighbour_change=change,
                             neighbour_change=change, knn=accuracy))
    return rows


def interpolation_rows(smoothness_change=(-0.10, 0.01), unclear_change=(-0.15, 0.02),
                       frames=10) -> list[dict]:
    baseline = row_with({"model": "baseline, weight 0", "n": 200, "frames": frames},
                        smoothness=(0.30, 0.01), unclear=(0.40, 0.02))
    vae = row_with({"model": "VAE KL weight 1", "n": 200, "frames": frames},
                   smoothness=(0.30 + smoothness_change[0], 0.01),
                   unclear=(0.40 + unclear_change[0], 0.02),
                   smoothness_change=smoothness_change, unclear_change=unclear_change)
    return [baseline, vae]


def test_continuity_paragraph_coverage_against_the_prior():
    text = discussion_task2.continuity_paragraph(space_rows(coverage=((0.40, 0.005), (0.9505, 0.005),
                                                         (0.97, 0.005))),
                                    interpolation_rows(), 2.0)
    assert ("reach 40% at weight 0.1 (below the prior's by 55%), 95% at weight 1 (as the prior), "
            "97% at weight 5 (above the prior's by 2%) of the grid's cells over $[-2, 2]^2$, "
            "against 95% for as many samples of the prior") in text


def test_continuity_paragraph_smoothness_and_knn_with_clear_bests():
    text = discussion_task2.continuity_paragraph(space_rows(), interpolation_rows(), 2.0)
    assert "the mean pixel change is 0.080 ± 0.002, 0.050 ± 0.002, 0.020 ± 0.002" in text
    assert "smoothest at weight 5." in text
    assert "The kNN accuracy of the mean codes is 90.0% / 80.0% / 50.0%: best at weight 0.1." in text
    assert "not clearly" not in text.split("Along straight paths")[0]


def test_continuity_paragraph_says_when_the_smoothest_grid_repeats():
    rows = space_rows()
    rows[3].update(active_dimensions=1, z_std=[1.1, 0.004])  # weight 5: one dimension inactive
    text = discussion_task2.continuity_paragraph(rows, interpolation_rows(), 2.0)
    assert ("smoothest at weight 5 (partly because its grid repeats along an inactive "
            "dimension).") in text
    rows[3].update(active_dimensions=2)
    assert "repeats" not in discussion_task2.continuity_paragraph(rows, interpolation_rows(), 2.0)


def test_continuity_paragraph_ties_in_smoothness_and_knn():
    text = discussion_task2.continuity_paragraph(
        space_rows(own=((0.05, 0.002), (0.051, 0.002), (0.08, 0.002)),
                   knn=((0.80, 0.004), (0.805, 0.004), (0.80, 0.004))),
        interpolation_rows(), 2.0)
    assert "smoothest at weight 0.1, not clearly smoother than at 1." in text
    assert "best at weight 1, not clearly better than 0.1 / 5." in text


@pytest.mark.parametrize("smooth, words", [
    ((-0.10, 0.01), "smoother (-0.100 ± 0.010)"),
    ((0.10, 0.01), "jumpier (0.100 ± 0.010)"),
    ((0.005, 0.01), "not clearly different (0.005 ± 0.010)"),
])
def test_continuity_paragraph_interpolation_smoothness(smooth, words):
    text = discussion_task2.continuity_paragraph(space_rows(), interpolation_rows(smoothness_change=smooth),
                                    2.0)
    assert ("Along straight paths between 200 random pairs of test digits, decoded at 10 "
            "points, the largest step takes") in text
    assert "of a path's total change for the VAE KL weight 1 against 0.300 ± 0.010 for the " \
           "baseline, weight 0 (an even path scores 0.111)" in text
    assert f": {words};" in text


@pytest.mark.parametrize("unclear, words", [
    ((-0.15, 0.02), "25% against 40% of the interior frames are read as neither end digit with "
                    "confidence: fewer (-0.15 ± 0.02)."),
    ((0.15, 0.02), "55% against 40% of the interior frames are read as neither end digit with "
                   "confidence: more (0.15 ± 0.02)."),
    ((-0.01, 0.02), "39% against 40% of the interior frames are read as neither end digit with "
                    "confidence: not clearly different (-0.01 ± 0.02)."),
])
def test_continuity_paragraph_interpolation_unclear_frames(unclear, words):
    text = discussion_task2.continuity_paragraph(
        space_rows(), interpolation_rows(unclear_change=unclear), 2.0)
    assert text.endswith(words)


def test_continuity_paragraph_even_path_of_other_lengths():
    text = discussion_task2.continuity_paragraph(space_rows(), interpolation_rows(frames=5), 3.0)
    assert "decoded at 5 points" in text and "(an even path scores 0.250)" in text
    assert "$[-3, 3]^2$" in text


# ---------------------------------------------------------------------------------------------
# Task 2: generation
# ---------------------------------------------------------------------------------------------


def generation_rows(confident=((0.40, 0.015), (0.60, 0.015), (0.80, 0.013), (0.50, 0.016)),
                    entropy=((0.95, 0.003), (0.99, 0.002), (0.999, 0.001), (0.90, 0.004))
                    ) -> list[dict]:
    rows = [row_with({"model": "MNIST test images", "n": N, "least_digit_share": 0.0892},
                     confident_share=(0.97, 0.002), digit_entropy=(0.998, 0.001))]
    names = [f"VAE KL weight {w:g}" for w in WEIGHTS] + ["baseline, weight 0 (fitted Gaussian)"]
    for name, weight, share, even in zip(names, [*WEIGHTS, None], confident, entropy):
        rows.append(row_with({"model": name, "kl_weight": weight, "n": 1000,
                              "least_digit_share": 0.05}, confident_share=share,
                             digit_entropy=even))
    return rows


def test_generation_paragraph_reference_and_comparisons():
    text = discussion_task2.generation_paragraph(generation_rows())
    assert ("The classifier reads 97.0% of the real test images with confidence (probability at "
            "least 0.9), with digit entropy 0.998 and the least frequent digit at 8.9%") in text
    assert ("VAE KL weight 0.1: 40% confident (fewer), digit entropy 0.95 (less even), least "
            "digit 5.0%") in text
    # 0.999 +- 0.001 against the real images' 0.998 +- 0.001: not clearly different
    assert "VAE KL weight 5: 80% confident (fewer), digit entropy 1.00 (as the real images)" in text
    assert "The most recognisable samples come from the VAE KL weight 5." in text
    assert "not clearly ahead" not in text


def test_generation_paragraph_best_with_ties_and_more_confident_than_real_images():
    text = discussion_task2.generation_paragraph(generation_rows(
        confident=((0.40, 0.015), (0.972, 0.005), (0.975, 0.004), (0.97, 0.005))))
    assert "VAE KL weight 5: 98% confident (as the real images)" in text
    assert ("The most recognisable samples come from the VAE KL weight 5, not clearly ahead of "
            "VAE KL weight 1 and baseline, weight 0 (fitted Gaussian).") in text
    text = discussion_task2.generation_paragraph(generation_rows(
        confident=((0.40, 0.015), (0.60, 0.015), (0.995, 0.001), (0.5, 0.016))))
    assert "VAE KL weight 5: 100% confident (more)" in text


def test_generation_paragraph_most_confident_but_narrow():
    # The most confident generator (weight 0.1 here) draws fewer kinds of digit: entropy 0.60
    # +- 0.017 is clearly below weight 1's 0.95 and the baseline's 0.87, not below weight 5's 0.55.
    text = discussion_task2.generation_paragraph(generation_rows(
        confident=((0.76, 0.014), (0.58, 0.016), (0.23, 0.013), (0.56, 0.016)),
        entropy=((0.60, 0.017), (0.95, 0.006), (0.55, 0.02), (0.87, 0.008))))
    assert text.endswith(
        "The most recognisable samples come from the VAE KL weight 0.1; but its digits are less "
        "evenly spread than those of VAE KL weight 1 and baseline, weight 0 (fitted Gaussian) "
        "(digit entropy 0.60 against 0.95, 0.87): a generator that draws a few easy digits is "
        "read with confidence more often.")
    assert "less evenly spread" not in discussion_task2.generation_paragraph(generation_rows())


@pytest.mark.parametrize("names, text", [
    (["a"], "a"), (["a", "b"], "a and b"), (["a", "b", "c"], "a, b and c")])
def test_listed_names(names, text):
    assert wording.listed(names) == text


def test_generation_paragraph_all_tied():
    text = discussion_task2.generation_paragraph(generation_rows(
        confident=((0.50, 0.015), (0.51, 0.015), (0.52, 0.015), (0.505, 0.015))))
    assert text.endswith("No generator's samples are clearly more recognisable than the others'.")
    assert "most recognisable" not in text


def test_generation_paragraph_all_shares_zero():
    zero = (0.0, 0.002)
    text = discussion_task2.generation_paragraph(generation_rows(confident=(zero, zero, zero, zero)))
    assert text.endswith("No generator's samples are clearly more recognisable than the others'.")
    assert "VAE KL weight 0.1: 0% confident (fewer)" in text
    assert_no_negative_zero(text)


# ---------------------------------------------------------------------------------------------
# Task 2: were the effects as expected?
# ---------------------------------------------------------------------------------------------

TRADE_OFF = "a larger weight trades reconstruction for a smaller KL"
BEST_ELBO = "weight 1, whose objective is the ELBO, reaches the best ELBO"
PRIOR = "a larger weight brings the aggregate posterior closer to the prior"
SMOOTH = "a larger weight makes the decoded space smoother"
SAMPLES = "samples from the prior become more recognisable as the weight grows"
COLLAPSE = "the largest weight switches a dimension off (posterior collapse)"
CLAIMS = [TRADE_OFF, BEST_ELBO, PRIOR, SMOOTH, SAMPLES, COLLAPSE]


def expectations(sweep=None, space=None, generation=None) -> str:
    return discussion_task2.expectations_paragraph(sweep or sweep_rows(), space or space_rows(),
                                      generation or generation_rows())


def test_expectations_paragraph_all_consistent():
    text = expectations()
    assert bullet_verdicts(text) == dict.fromkeys(CLAIMS, "consistent")
    assert "Measured against each expectation (6 of 6 consistent):" in text
    assert ("every step of the weight raised the reconstruction loss and lowered the KL" in text)
    assert ("(reconstruction 141.0 / 144.0 / 170.0 and KL 12.0 / 7.0 / 2.0 nats for weights "
            "0.1 / 1 / 5)") in text
    assert "the lowest negative ELBO is at weight 1 (151.0 ± 0.3 nats)." in text
    assert ("the summed distance of Var(z_d) from the prior's 1 is 1.50 ± 0.05, 0.60 ± 0.04, "
            "0.20 ± 0.03 for weights 0.1 / 1 / 5.") in text
    assert "the mean change between neighbouring tiles fell clearly at every step (" in text
    assert "40% / 60% / 80% of them are read with confidence." in text
    assert "inactive dimensions at weight 5." in text
    assert "what 20 epochs of Adam reached" in text
    assert text.endswith("they leave out the spread between training runs, which Q1's seeds "
                         "show can be larger.")


@pytest.mark.parametrize("claim, sweep, space, generation, words", [
    (TRADE_OFF, dict(reconstruction_change=[None, (0.01, 0.1), (26.0, 0.1)]), None, None,
     "not every step moved both terms clearly"),
    (BEST_ELBO, dict(neg_elbo=[(150.0, 0.3), (151.0, 0.3), (172.0, 0.3)],
                     neg_elbo_above_best=[(0.0, 0.0), (1.0, 0.1), (22.0, 0.2)]), None, None,
     "the lowest negative ELBO is at weight 0.1"),
    (PRIOR, dict(prior_mismatch_change=[None, (-0.9, 0.05), (-0.01, 0.04)]), None, None,
     "the summed distance of Var(z_d)"),
    (SMOOTH, None, dict(own=((0.08, 0.002), (0.05, 0.002), (0.049, 0.002))), None,
     "it did not fall clearly at every step"),
    (SAMPLES, None, None, dict(confident=((0.40, 0.015), (0.80, 0.013), (0.60, 0.015),
                                          (0.5, 0.016))),
     "40% / 80% / 60% of them are read with confidence"),
    (SAMPLES, None, None, dict(confident=((0.60, 0.015), (0.61, 0.015), (0.62, 0.015),
                                          (0.5, 0.016))),
     "60% / 61% / 62% of them are read with confidence"),
    (COLLAPSE, dict(mean_variance=[[1.2, 0.9], [0.95, 0.8], [0.9, 0.5]]), None, None,
     "every dimension stayed active at every weight"),
    (COLLAPSE, dict(mean_variance=[[1.2, 0.001], [0.95, 0.8], [0.9, 0.5]]), None, None,
     "inactive dimensions at weight 0.1"),
])
def test_expectations_paragraph_each_check_not_borne_out(claim, sweep, space, generation, words):
    text = expectations(sweep_rows(**(sweep or {})), space_rows(**(space or {})),
                        generation_rows(**(generation or {})))
    verdicts = bullet_verdicts(text)
    assert verdicts == {name: "not borne out" if name == claim else "consistent"
                        for name in CLAIMS}
    assert "(5 of 6 consistent)" in text
    line = next(line for line in text.splitlines() if line.startswith(f"- *{claim}*"))
    assert words in line


def test_expectations_paragraph_best_elbo_tied_with_weight_1_is_consistent():
    text = expectations(sweep_rows(neg_elbo=[(150.9, 0.3), (151.0, 0.3), (172.0, 0.3)],
                                   neg_elbo_above_best=[(0.0, 0.0), (0.1, 0.1), (21.1, 0.2)]))
    assert bullet_verdicts(text)[BEST_ELBO] == "consistent"


def test_expectations_paragraph_collapse_at_two_weights_including_the_largest():
    text = expectations(sweep_rows(mean_variance=[[1.2, 0.001], [0.95, 0.8], [0.9, 0.004]]))
    assert bullet_verdicts(text)[COLLAPSE] == "consistent"
    assert "inactive dimensions at weight 0.1 / 5." in text


def test_expectations_paragraph_counts_what_holds():
    text = expectations(
        sweep_rows(reconstruction_change=[None, (0.01, 0.1), (26.0, 0.1)],
                   prior_mismatch_change=[None, (0.1, 0.05), (-0.4, 0.04)],
                   mean_variance=[[1.2, 0.9], [0.95, 0.8], [0.9, 0.5]]),
        space_rows(own=((0.08, 0.002), (0.09, 0.002), (0.02, 0.002))),
        generation_rows(confident=((0.6, 0.015), (0.6, 0.015), (0.6, 0.015), (0.5, 0.016))))
    assert "(1 of 6 consistent)" in text
    assert bullet_verdicts(text) == {**dict.fromkeys(CLAIMS, "not borne out"),
                                     BEST_ELBO: "consistent"}


def test_expectations_paragraph_of_one_epoch():
    text = expectations(sweep_rows(epochs=1))
    assert "what 1 epoch of Adam reached" in text and "1 epochs" not in text


# ---------------------------------------------------------------------------------------------
# Task 2 as a whole
# ---------------------------------------------------------------------------------------------


def test_task2_discussion_joins_its_paragraphs():
    sweep, space, interpolation = sweep_rows(), space_rows(), interpolation_rows()
    likelihood, generation = likelihood_rows(), generation_rows()
    text = discussion_task2.task2_discussion(sweep, 102.3, likelihood, 1000, space, interpolation,
                                generation, 2.0)
    assert text.split("\n\n", 6)[:6] == [
        discussion_task2.losses_paragraph(sweep, 102.3),
        discussion_task2.likelihood_paragraph(likelihood, 1000),
        discussion_task2.collapse_paragraph(sweep), discussion_task2.vae_reconstruction_paragraph(sweep),
        discussion_task2.continuity_paragraph(space, interpolation, 2.0),
        discussion_task2.generation_paragraph(generation)]
    assert text.endswith(discussion_task2.expectations_paragraph(sweep, space, generation))
    assert [part[:8] for part in text.split("\n\n")[:7]] == [
        "**Losses", "**Likeli", "**Collap", "**Recons", "**Contin", "**Genera", "**Were t"]


def test_task2_discussion_never_prints_a_negative_zero():
    tiny = (-0.00001, 0.01)
    sweep = sweep_rows(reconstruction_change=[None, tiny, tiny], kl_change=[None, tiny, tiny],
                       neg_elbo_above_best=[(0.0, 0.0), tiny, tiny],
                       mean_code_reconstruction_change=[None, tiny, tiny],
                       recognised_change=[None, tiny, tiny],
                       prior_mismatch=[(-0.00001, 0.01)] * 3,
                       prior_mismatch_change=[None, tiny, tiny],
                       mean_variance=[[0.9, -0.0], [0.9, 0.8], [0.9, 0.8]],
                       kl_per_dimension=[[1.0, -0.00001], [1.0, 1.0], [1.0, 1.0]])
    likelihood = likelihood_rows(differences=(tiny, tiny, tiny), above=(tiny, (0.0, 0.0), tiny))
    space = space_rows(coverage=((0.95001, 0.005),) * 3)
    text = discussion_task2.task2_discussion(sweep, 102.3, likelihood, 1000, space,
                                interpolation_rows(smoothness_change=tiny, unclear_change=tiny),
                                generation_rows(), 2.0)
    assert_no_negative_zero(text)
