"""The notebook end to end: headless execution in the fast profile, its outputs, and the PDF."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest

import ca4_helpers as ca4

NOTEBOOK = ca4.PROJECT_DIR / "ca4.ipynb"
# Figures the notebook draws: loss curves, reconstructions, PCA, latent sizes, denoising
# (Task 1); loss terms, two latent grids, z_mean scatter, reconstructions (Task 2).
EXPECTED_FIGURES = 10

pytestmark = pytest.mark.slow


def test_committed_notebook_is_clean_and_parameterised() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code_cells, "the notebook has no code cells"
    for cell in code_cells:
        assert cell.outputs == [] and cell.execution_count is None, "commit the notebook without outputs"
    parameter_cells = [cell for cell in code_cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(parameter_cells) == 1
    assert "CA4_PROFILE" in parameter_cells[0].source
    assert code_cells.index(parameter_cells[0]) == 0, "the parameters cell comes first"


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> tuple[nbformat.NotebookNode, Path]:
    """Execute the notebook once in the fast profile, with its own build folder and cache."""
    build = tmp_path_factory.mktemp("notebook-build")
    saved = os.environ.get("CA4_BUILD_DIR")
    os.environ["CA4_BUILD_DIR"] = str(build)
    try:
        target = ca4.execute_notebook(NOTEBOOK, build / "ca4.ipynb", profile="fast", timeout=900,
                                      echo=None)
    finally:
        if saved is None:
            os.environ.pop("CA4_BUILD_DIR", None)
        else:
            os.environ["CA4_BUILD_DIR"] = saved
    return nbformat.read(target, as_version=4), build


def outputs_of(notebook: nbformat.NotebookNode) -> list[dict]:
    return [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]


def test_notebook_runs_without_errors_or_warnings(executed) -> None:
    notebook, _ = executed
    outputs = outputs_of(notebook)
    assert not [o for o in outputs if o.output_type == "error"]
    stderr = "".join(o.get("text", "") for o in outputs if o.get("name") == "stderr")
    assert "Traceback" not in stderr
    assert "I0000" not in stderr, "TensorFlow's native start-up log leaked into the notebook"


def test_notebook_draws_every_figure(executed) -> None:
    notebook, _ = executed
    images = [o for o in outputs_of(notebook) if "image/png" in o.get("data", {})]
    assert len(images) == EXPECTED_FIGURES


def test_notebook_shows_result_tables_and_numeric_answers(executed) -> None:
    notebook, _ = executed
    markdown = "\n".join(o["data"]["text/markdown"] for o in outputs_of(notebook)
                         if "text/markdown" in o.get("data", {}))
    for header in ("| Latent size |", "| KL weight |", "MSE per pixel", "Grid coverage"):
        assert header in markdown
    answers = {"Q1: Why normalise?", "Q2: Latent size.", "Q3: Can autoencoders remove noise?",
               "Continuity of the latent space."}
    for answer in answers:
        paragraph = markdown.split(answer, 1)[1].split("\n\n", 1)[0]
        assert re.search(r"\d+\.\d+", paragraph), f"the answer {answer!r} quotes no number"
    assert not re.search(r"\{\w+[\[}]", markdown), "an f-string placeholder was left unformatted"


def test_notebook_writes_metrics_for_every_section(executed) -> None:
    _, build = executed
    metrics = json.loads((build / "metrics.json").read_text())
    assert metrics["profile"] == "fast"
    assert metrics["seed"] == 42
    assert set(metrics["versions"]) >= {"tensorflow", "keras", "numpy", "python"}
    autoencoder = metrics["autoencoder"]
    assert autoencoder["latent_dim"] == 10
    assert autoencoder["epochs"] == ca4.PROFILES["fast"].autoencoder_epochs
    assert 0 < autoencoder["val_bce"] < 0.7
    assert [row["latent_dim"] for row in metrics["latent_size_sweep"]] == [2, 10, 32]
    assert all(0 < row["val_bce"] < 0.7 for row in metrics["latent_size_sweep"])
    denoising = metrics["denoising"]
    assert denoising["noisy_mse"] > 0 and denoising["denoised_mse"] > 0
    assert math.isclose(denoising["mse_ratio"], denoising["noisy_mse"] / denoising["denoised_mse"])
    sweep = metrics["vae_sweep"]
    assert [row["kl_weight"] for row in sweep] == [0.1, 1.0, 5.0]
    for row in sweep:
        assert row["epochs"] == ca4.PROFILES["fast"].vae_epochs
        assert math.isclose(row["val_elbo"], row["val_reconstruction_loss"] + row["val_kl_loss"])
        assert math.isclose(row["val_loss"],
                            row["val_reconstruction_loss"] + row["kl_weight"] * row["val_kl_loss"],
                            rel_tol=1e-4)
    assert set(metrics["training"]) >= {"autoencoder_latent10", "denoiser_latent10", "vae_kl1"}


def test_pdf_export_holds_the_report(executed, tmp_path: Path) -> None:
    missing = ca4.missing_pdf_tools() + ([] if shutil.which("pdftotext") else ["pdftotext"])
    if missing:
        if os.environ.get("CA4_REQUIRE_PDF") == "1":
            pytest.fail(f"CA4_REQUIRE_PDF=1 but {missing} are not installed")
        pytest.skip(f"PDF tools missing: {missing}")
    notebook, build = executed
    pdf = ca4.export_pdf(build / "ca4.ipynb", tmp_path / "ca4.pdf")
    assert pdf.read_bytes().startswith(b"%PDF")
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], check=True, capture_output=True,
                          text=True).stdout
    text = re.sub(r"\s+", " ", text)
    for heading in ("Task 1: A convolutional autoencoder", "Task 2: A variational autoencoder",
                    "Discussion of Task 1", "Discussion of Task 2", "Q1: Why normalise?",
                    "Q2: Latent size.", "Q3: Can autoencoders remove noise?",
                    "Continuity of the latent space."):
        assert heading in text, f"{heading!r} is not in the PDF"
    # Discussion cells are tagged hide-input: the answers are in the PDF, their code is not.
    assert "display(Markdown(f'''" not in text
