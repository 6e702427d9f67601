"""The run machinery (tools/build.py) on constructed inputs: the section titles of a constructed
notebook's code cells, and the build folder found where ca4lib.settings finds it (the run
log: test_run_log.py)."""

from __future__ import annotations

import nbformat
import pytest

from ca4lib import settings
from tools import build


def test_section_titles_map_code_cells_to_their_headings():
    v4 = nbformat.v4
    cells = [
        v4.new_code_cell("PROFILE = 'full'"),
        v4.new_markdown_cell("# CA4 report\n\nIntroduction text with a # that is no heading."),
        v4.new_code_cell("import ca4_helpers"),
        v4.new_markdown_cell("## Task 1\n\nText.\n\n### Training\n"),
        v4.new_code_cell("train()"),
        v4.new_markdown_cell("#### Detail below level three\n"),
        v4.new_code_cell("# ## a comment, not a heading\nplot()"),
        v4.new_markdown_cell("## Task 2"),
        v4.new_code_cell("vae()"),
        v4.new_markdown_cell("### Sampling"),
        v4.new_code_cell("sample()"),
    ]
    notebook = v4.new_notebook(cells=cells)
    code = [cell.id for cell in cells if cell.cell_type == "code"]
    assert build.section_titles(notebook) == {
        code[0]: "",
        code[1]: "CA4 report",
        code[2]: "CA4 report > Task 1 > Training",
        code[3]: "CA4 report > Task 1 > Training",
        code[4]: "CA4 report > Task 2",
        code[5]: "CA4 report > Task 2 > Sampling",
    }


@pytest.mark.parametrize("folder", [None, "elsewhere/out"])
def test_the_build_tools_find_the_build_folder_where_ca4_does(folder, monkeypatch, tmp_path):
    # tools.build keeps its own copy of the rule so as not to import TensorFlow.
    monkeypatch.chdir(tmp_path)
    if folder is None:
        monkeypatch.delenv("CA4_BUILD_DIR", raising=False)
    else:
        monkeypatch.setenv("CA4_BUILD_DIR", folder)
    assert build.build_dir() == settings.build_dir()
    assert build.build_dir() == (settings.PROJECT_DIR / "build" if folder is None
                                 else tmp_path / folder)


# The start-up path of `make run` in fresh processes: the runner, papermill and a kernel that
# imports what the notebook's first cells import (IPython, ipywidgets through the explorer).
# A second thread importing the project while jupyter_client imported IPython once made 1 run
# in 7 fail; by design nothing imports from a second thread now, and this runs it 8 times.
START_UP_RUNS = 8
START_UP_SCRIPT = """
import sys
from tools import build
build.execute_notebook(sys.argv[1], sys.argv[2], profile="fast", timeout=120)
"""


@pytest.mark.slow
def test_the_start_up_path_never_fails_by_chance(tmp_path):
    import subprocess
    import sys

    notebook = nbformat.v4.new_notebook(metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"}})
    notebook.cells = [
        nbformat.v4.new_code_cell("PROFILE = 'fast'", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("import IPython, ipywidgets\nfrom IPython.display import "
                                  "Markdown, display\nprint('started')")]
    source = tmp_path / "start.ipynb"
    nbformat.write(notebook, source)
    failures = []
    for run in range(START_UP_RUNS):
        target = tmp_path / f"run{run}" / "start.ipynb"
        completed = subprocess.run([sys.executable, "-c", START_UP_SCRIPT, str(source),
                                    str(target)], cwd=settings.PROJECT_DIR, capture_output=True,
                                   text=True, timeout=300, check=False)
        if completed.returncode != 0 or "started" not in completed.stdout:
            failures.append(f"run {run + 1}: exit {completed.returncode}\n"
                            f"{completed.stdout[-800:]}{completed.stderr[-800:]}")
    assert not failures, f"{len(failures)} of {START_UP_RUNS} start-ups failed:\n" + \
        "\n".join(failures)
