"""Tables, the title block, the run record and printed source (ca4lib.report): Markdown tables
read back cell by cell (`table_records`, which test_vae_analyses.py imports), the tables of
the analyses on constructed rows, layer tables with parameters counted by hand, and the run
record against git and the installed versions."""

from __future__ import annotations

import doctest
import platform
import re
import subprocess
from datetime import UTC, datetime
from importlib import metadata

import keras
import numpy as np
import pytest

import ca4_helpers as ca4
from ca4lib import latent_space, progress, report, settings


def table_records(text: str) -> list[list[dict[str, str]]]:
    """Each Markdown table in `text` (tables apart by a blank line) as rows keyed by header."""
    tables = []
    for block in text.strip().split("\n\n"):
        lines = block.splitlines()
        assert re.fullmatch(r"\|(-{3,}\|)+", lines[1]), block  # the dashes under the headers
        header, *body = ([cell.strip() for cell in line[1:-1].split(" | ")]
                         for line in (lines[0], *lines[2:]))
        assert all(len(cells) == len(header) for cells in body), block
        tables.append([dict(zip(header, cells)) for cells in body])
    return tables


# ---------------------------------------------------------------------------------------------
# markdown_table
# ---------------------------------------------------------------------------------------------


def test_markdown_table():
    rows = [{"name": "ae", "loss": 0.123456, "parameters": 1234567},
            {"name": "vae", "loss": 2.5, "parameters": 12}]
    table = report.markdown_table(rows, {"name": "Model", "loss": "Loss|.3f",
                                      "parameters": "Parameters|,"})
    # The dashes under a header: the widest cell and a space, or the header's longest word
    # (headers wrap), at least 3; 'M' of 'Model' and 'm' of 'Parameters' print wider than a
    # digit.
    assert table.splitlines() == [
        "| Model | Loss | Parameters |",
        "|------|------|-----------|",
        "| ae | 0.123 | 1,234,567 |",
        "| vae | 2.500 | 12 |",
    ]


@pytest.mark.parametrize("text, width", [
    ("0.123", 5), ("12.5%", 6), ("71.8% ± 0.4%", 14), ("$-\\log p(x)$", 9),
    ("Mean $\\sigma$", 7), ("Var$_x(\\mu_d)$", 8), ("–", 1)])
def test_shown_width_counts_what_prints(text, width):
    assert report.shown_width(text) == width


def test_a_column_of_percentages_gets_room_for_its_wide_characters():
    # Same number of characters, but '%' and '±' print wider than digits: the old widths
    # (characters alone) wrapped '71.8% ± 0.4%' in the PDF.
    table = report.markdown_table(
        [{"share": 0.718, "share_se": 0.004, "loss": 1234567.8912}],
        {"share": "Share|±.1%", "loss": "Loss|.4f"})
    dashes = [len(part) for part in table.splitlines()[1][1:-1].split("|")]
    cells = table.splitlines()[2][2:-2].split(" | ")
    assert len(cells[0]) == len(cells[1]) == 12 and dashes[0] > dashes[1]


def test_markdown_table_doctest():
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(verbose=False)
    (test,) = finder.find(report.markdown_table, "markdown_table", globs={
        "markdown_table": report.markdown_table})
    result = runner.run(test)
    assert result.attempted == 1 and result.failed == 0


def test_markdown_table_with_standard_errors_and_missing_values():
    rows = [{"kl_weight": 0.1, "loss": 148.93, "loss_se": 0.31, "share": 0.973,
             "share_se": 0.0021, "note": "first"},
            {"kl_weight": 5.0, "loss": None, "share": 0.5, "share_se": 0.012},
            {"kl_weight": 1.0, "loss": -0.001, "loss_se": 0.0004, "share": 1.0, "share_se": 0.0,
             "note": "last"}]
    table = report.markdown_table(rows, {"kl_weight": "Weight|g", "loss": "Loss|±.1f",
                                      "share": "Share|±.1%", "note": "Note"})
    lines = table.splitlines()
    assert len(lines) == 5
    assert lines[0] == "| Weight | Loss | Share | Note |"
    assert lines[2] == "| 0.1 | 148.9 ± 0.3 | 97.3% ± 0.2% | first |"
    # A missing key or None prints '–'.
    assert lines[3] == "| 5 | – | 50.0% ± 1.2% | – |"
    # Never '-0.0'; an SE too small for the format keeps one significant digit.
    assert lines[4] == "| 1 | 0.0 ± 0.0004 | 100.0% ± 0.0% | last |"
    # The dashes under each header: its widest cell (as printed) and a space, or the header.
    cells = [line[2:-2].split(" | ") for line in lines[2:]]
    widths = [len(part) for part in lines[1][1:-1].split("|")]
    assert widths == [max(3, report.shown_width(header),
                          *(report.shown_width(row[i]) + 1 for row in cells))
                      for i, header in enumerate(("Weight", "Loss", "Share", "Note"))]


def test_markdown_table_small_standard_error_of_a_percentage_stays_a_percentage():
    table = report.markdown_table([{"share": 0.5, "share_se": 0.00004}], {"share": "Share|±.1%"})
    assert table.splitlines()[2] == "| 50.0% ± 0.004% |"


def test_markdown_table_thousands_and_plain_columns():
    table = report.markdown_table([{"name": "dense", "count": 1234567}],
                               {"name": "Layer", "count": "Parameters|,"})
    assert table.splitlines() == ["| Layer | Parameters |", "|------|-----------|",
                                  "| dense | 1,234,567 |"]


def test_a_transposed_table_puts_the_first_column_on_top():
    rows = [{"w": 0.1, "loss": 148.93, "loss_se": 0.31, "share": 0.5},
            {"w": 1.0, "loss": 140.0, "loss_se": 0.3, "share": 0.25}]
    table = report.markdown_table(rows, {"w": "KL weight|g", "loss": "Loss per image|±.1f",
                                         "share": "Share|.0%"}, transpose=True)
    lines = table.splitlines()
    assert lines[0] == "| KL weight | 0.1 | 1 |"
    assert lines[2:] == ["| Loss per image | 148.9 ± 0.3 | 140.0 ± 0.3 |",
                         "| Share | 50% | 25% |"]
    # The labels' column is as wide as its longest word (labels wrap), the others their cells.
    widths = [len(part) for part in lines[1][1:-1].split("|")]
    assert widths == [max(report.shown_width("weight"), report.shown_width("image") + 1),
                      report.shown_width("148.9 ± 0.3") + 1,
                      report.shown_width("140.0 ± 0.3") + 1]


def test_markdown_table_needs_rows():
    with pytest.raises(ValueError, match="rows: expected at least one row"):
        report.markdown_table([], {"a": "A"})


# ---------------------------------------------------------------------------------------------
# Tables of the analyses
# ---------------------------------------------------------------------------------------------


def test_dimension_table_of_constructed_rows():
    rows = [{"kl_weight": 0.1, "reconstruction": 141.04, "reconstruction_se": 0.31, "kl": 12.004,
             "kl_se": 0.052, "neg_elbo": 153.04, "neg_elbo_se": 0.3,
             "mean_code_reconstruction": 135.0, "mean_code_reconstruction_se": 0.29,
             "kl_per_dimension": [6.0, 6.004], "mean_variance": [1.0, 0.5],
             "active_dimensions": 2, "aggregate_variance": [1.2, 0.9]},
            {"kl_weight": 5.0, "reconstruction": 170.0, "reconstruction_se": 0.3, "kl": 2.0,
             "kl_se": 0.02, "neg_elbo": 172.0, "neg_elbo_se": 0.3,
             "mean_code_reconstruction": 165.0, "mean_code_reconstruction_se": 0.3,
             "kl_per_dimension": [1.997, 0.003], "mean_variance": [0.9, 0.0042],
             "active_dimensions": 1, "aggregate_variance": [0.9, 0.104]}]
    (dimensions,) = table_records(report.markdown_table(report.dimension_rows(rows),
                                                        report.DIMENSION_COLUMNS))
    assert [row["KL weight"] for row in dimensions] == ["0.1", "5"]
    assert [row["KL per dimension"] for row in dimensions] == ["6.00 / 6.00", "2.00 / 0.00"]
    assert [row["Active"] for row in dimensions] == ["2", "1"]
    assert "0.9 / 0.0042" in [value for row in dimensions for value in row.values()]


def test_latent_space_table_leaves_the_prior_rows_grid_columns_empty():
    rows = [{"model": "prior N(0, I)", "kl_weight": None, "coverage": 0.95, "coverage_se": 0.012},
            {"model": "KL weight 5", "active_dimensions": 1, "coverage": 0.754,
             "coverage_se": 0.021, "active_coverage": 0.4, "active_coverage_se": 0.01,
             "prior_active_coverage": 1.0, "prior_active_coverage_se": 0.001,
             "own_neighbour_change": 0.0201, "own_neighbour_change_se": 0.0015,
             "own_active_neighbour_change": 0.0401, "own_active_neighbour_change_se": 0.0015,
             "knn": 0.8123, "knn_se": 0.0039}]
    (table,) = table_records(report.markdown_table(rows, report.LATENT_SPACE_COLUMNS))
    assert [list(row.values()) for row in table] == [
        ["prior N(0, I)", "–", "95% ± 1%", "–", "–", "–", "–"],
        ["KL weight 5", "1", "75% ± 2%", "40% ± 1%", "100% ± 0.1%", "0.040 ± 0.002",
         "81.2% ± 0.4%"]]


def test_latent_space_table_small_coverage_se_stays_a_percentage():
    rows = [{"model": "prior N(0, I)", "coverage": 0.95, "coverage_se": 0.003}]
    assert table_records(report.markdown_table(rows, report.LATENT_SPACE_COLUMNS))[0][0][
        "Coverage, all dimensions"] == "95% ± 0.3%"


def test_generation_and_interpolation_tables():
    generation = [{"model": "MNIST test images", "samples": 10000, "confident_share": 0.9712,
                   "confident_share_se": 0.0017, "digit_entropy": 0.99812,
                   "digit_entropy_se": 0.0004, "least_digit_share": 0.0892,
                   "least_digit_share_se": 0.0028}]
    assert table_records(report.markdown_table(generation, report.GENERATION_COLUMNS)) == [[
        {"Images": "MNIST test images", "Count": "10,000", "Confident": "97.1% ± 0.2%",
         "Digit entropy": "0.998 ± 0.0004", "Least digit": "8.9% ± 0.3%"}]]
    interpolation = [{"model": "baseline, weight 0", "n": 200, "smoothness": 0.3012,
                      "smoothness_se": 0.0101, "unclear": 0.4, "unclear_se": 0.021}]
    assert table_records(report.markdown_table(interpolation, report.INTERPOLATION_COLUMNS)) == [[
        {"Model": "baseline, weight 0", "Paths": "200", "Largest step / total": "0.301 ± 0.010",
         "Unclear interior frames": "40.0% ± 2.1%"}]]


def test_layer_tables_list_the_layers():
    ca4.set_seed(0)
    model = ca4.build_autoencoder(2)
    text = "\n".join(report.markdown_table(report.layer_rows(part), report.LAYER_COLUMNS)
                     for part in (model.encoder, model.decoder))
    rows = [line for line in text.splitlines() if line.startswith("| ") and "Layer" not in line]
    # (type, output shape, parameters), counted by hand: a 3x3 convolution from c to k
    # channels has 9ck + k parameters, a dense layer from n to m has nm + m.
    expected = [
        ("Rescaling", "(None, 28, 28, 1)", 0),
        ("Conv2D", "(None, 28, 28, 32)", 9 * 32 + 32),
        ("MaxPooling2D", "(None, 14, 14, 32)", 0),
        ("Conv2D", "(None, 14, 14, 64)", 9 * 32 * 64 + 64),
        ("MaxPooling2D", "(None, 7, 7, 64)", 0), ("Flatten", "(None, 3136)", 0),
        ("Dense", "(None, 128)", 3136 * 128 + 128), ("Dense", "(None, 2)", 128 * 2 + 2),
        ("Dense", "(None, 3136)", 2 * 3136 + 3136),
        ("Reshape", "(None, 7, 7, 64)", 0),
        ("Conv2DTranspose", "(None, 14, 14, 32)", 9 * 64 * 32 + 32),
        ("Conv2DTranspose", "(None, 28, 28, 16)", 9 * 32 * 16 + 16),
        ("Conv2D", "(None, 28, 28, 1)", 9 * 16 + 1),
    ]
    cells = [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]
    assert [(kind, shape, int(count.replace(",", ""))) for _, kind, shape, count in cells] == \
        expected
    # The names the code gives are printed as given.
    assert [cells[i][0] for i in (0, 7, 12)] == ["input_scale", "code", "pixels"]
    assert "| code | Dense | (None, 2) | 258 |" in text
    assert "| pixels | Conv2D | (None, 28, 28, 1) | 145 |" in text
    # The caption's parameter count is the model's: the layers' counts added up by hand.
    assert model.encoder.count_params() == sum(count for *_, count in expected[:8])
    assert text.count("| Layer | Type | Output shape | Parameters |") == 2


# ---------------------------------------------------------------------------------------------
# title_block, start_run_record
# ---------------------------------------------------------------------------------------------


def test_title_block_of_the_full_profile_has_no_banner_and_prints_the_given_values():
    block = report.title_block("  Group 7 ", "Ada Lovelace (123), Alan Turing (456)", "full")
    assert block.startswith(f"# {report.TITLE}\n")
    assert "Smoke run" not in block
    assert "| **Group** | Group 7 |" in block
    assert "| **Members** | Ada Lovelace (123), Alan Turing (456) |" in block
    assert "not set" not in block


@pytest.mark.parametrize("profile", ["fast", "smoke"])
def test_title_block_of_another_profile_starts_with_the_banner(profile):
    block = report.title_block("7", "Ada", profile)
    assert block.startswith(f"> **Smoke run (profile `{profile}`): not the assignment.**")
    assert block.index("Smoke run") < block.index(f"# {report.TITLE}")


@pytest.mark.parametrize("group, members", [(None, None), ("", "  "), (" ", "")])
def test_title_block_notes_a_missing_group_and_members(group, members):
    block = report.title_block(group, members, "full")
    assert ("| **Group** | **not set** (set GROUP in the parameters cell, or CA4_GROUP in the "
            "environment) |") in block
    assert ("| **Members** | **not set** (set MEMBERS in the parameters cell, or CA4_MEMBERS in "
            "the environment) |") in block


def test_short_commit_keeps_12_digits_of_a_full_hash_and_the_rest():
    full = "0123456789abcdef0123456789abcdef01234567"
    assert report.short_commit(full) == "0123456789ab"
    assert report.short_commit(f"{full} (with uncommitted changes)") == (
        "0123456789ab (with uncommitted changes)")
    assert report.short_commit("unknown (not a git checkout)") == "unknown (not a git checkout)"
    assert report.short_commit("0123abc") == "0123abc"  # not a full hash: as it is


def test_start_run_record_removes_the_last_metrics_and_records_the_provenance():
    metrics = settings.build_dir() / "metrics.json"
    metrics.parent.mkdir(parents=True, exist_ok=True)
    metrics.write_text('{"old": true}')
    before = datetime.now(UTC)
    record = report.start_run_record("FAST", 7)
    assert not metrics.exists()
    assert set(record) == {"commit", "date", "profile", "seed", "versions"}
    assert record["profile"] == "fast" and record["seed"] == 7
    date = datetime.fromisoformat(record["date"])  # ISO 8601 with a UTC offset
    assert date.tzinfo is not None
    assert abs((date - before).total_seconds()) < 60
    assert record["versions"] == {"python": platform.python_version(),
                                  "tensorflow": metadata.version("tensorflow"),
                                  "keras": keras.__version__, "numpy": np.__version__}
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=settings.PROJECT_DIR, capture_output=True,
                          text=True)
    if head.returncode == 0:
        assert record["commit"].split()[0] == head.stdout.strip()
    # Without a file to remove it works too.
    assert report.start_run_record("full", 0)["profile"] == "full"


def test_start_run_record_outside_a_git_checkout(tmp_path, patch_lookup):
    patch_lookup(report.provenance, "PROJECT_DIR", tmp_path)
    assert report.start_run_record("full", 1)["commit"] == "unknown (not a git checkout)"


@pytest.mark.parametrize("profile, seed, message", [
    ("huge", 1, "profile: expected one of"), ("full", -1, "seed: expected a non-negative"),
])
def test_start_run_record_rejects_bad_settings(profile, seed, message):
    with pytest.raises(ValueError, match=message):
        report.start_run_record(profile, seed)


# ---------------------------------------------------------------------------------------------
# show_source
# ---------------------------------------------------------------------------------------------


def test_show_source_joins_the_sources_as_python():
    code = report.show_source(latent_space.tile_images, progress.RunProgress)
    assert code.language == "python"
    assert code.data.startswith("def tile_images(images: np.ndarray, columns: int) -> np.ndarray:")
    assert "\n\nclass RunProgress:\n" in code.data
    assert "def seconds_left(self) -> float:" in code.data
    # Highlighted for the PDF: LaTeX with Pygments' \PY macros, keywords marked as such.
    assert r"\PY{k}{def}" in code._repr_latex_()
