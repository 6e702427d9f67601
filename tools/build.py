"""Run the ca4 notebook headlessly and export its PDF: the build, not the coursework.

`make run`, `make execute`, `make pdf` and the tests use this module:

    python -m tools.build run [--profile P]      execute, then pdf, in one process
    python -m tools.build preflight [--no-pdf]   check MNIST and the PDF tools before a run
    python -m tools.build execute [--profile P]  preflight --no-pdf, then papermill:
                                                 build/ca4.ipynb, its progress streamed
    python -m tools.build pdf                    nbconvert: build/ca4.pdf from build/ca4.ipynb

This process never imports TensorFlow or the coursework module: what it needs (the build folder,
the MNIST check, the epoch-line pattern, durations) comes from rooms of `ca4lib` that import no
TensorFlow, and it starts no thread. The kernel alone imports the coursework, so nothing here
can race the kernel's start-up imports.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ca4lib.mnist import MnistFileError, load_mnist
from ca4lib.progress import EPOCH_LINE, TICKER_LINE, format_duration
from ca4lib.settings import PROJECT_DIR, build_dir

PDF_TOOLS = {"xelatex": "texlive-xetex", "pandoc": "pandoc"}
PDF_PACKAGES = "texlive-xetex texlive-fonts-recommended texlive-plain-generic pandoc"
# nbconvert's LaTeX template ("latex"), changed for the report: no LaTeX title (the notebook's
# title block is), unnumbered headings (they read as in the notebook), code in \small so that
# lines of up to 88 characters fit without wrapping, and a character missing from the fonts
# stops the export (\tracinglostchars=3) instead of silently dropping out.
PDF_TEMPLATE = r"""((*- extends 'index.tex.j2' -*))
((* block commands *))
((( super() )))
\setcounter{secnumdepth}{0}
\tracinglostchars=3
\fvset{fontsize=\small}
((* endblock commands *))
((* block maketitle *))((* endblock maketitle *))
"""
# The cell that prints the title block (group, members, smoke-run banner) is tagged so; the
# PDF puts it first, above the parameters cell that must precede it in the notebook.
TITLE_TAG = "title"


def clock(seconds: float) -> str:
    """Format the time since a run started for its progress lines: '0:12:40'."""
    return str(datetime.timedelta(seconds=round(seconds)))


def missing_pdf_tools() -> list[str]:
    """Return the PDF tools (xelatex, pandoc) not on PATH."""
    return [tool for tool in PDF_TOOLS if shutil.which(tool) is None]


def pdf_tools_message() -> str:
    """Return how to install the missing PDF tools, or an empty string when none is missing."""
    missing = missing_pdf_tools()
    if not missing:
        return ""
    return (f"PDF export needs {', '.join(missing)}, which is not installed. On Debian/Ubuntu: "
            f"sudo apt-get install --no-install-recommends {PDF_PACKAGES}")


def section_titles(notebook: Any) -> dict[str, str]:
    """Map each code cell's id to the headings it sits under ('Task 1 > Training')."""
    titles: dict[str, str] = {}
    headings: dict[int, str] = {}
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            for match in re.finditer(r"^(#{1,3})\s+(.+)$", cell.source, re.MULTILINE):
                level = len(match[1])
                headings = {k: v for k, v in headings.items() if k < level}
                headings[level] = match[2].strip()
        elif cell.cell_type == "code":
            titles[cell.id] = " > ".join(headings[level] for level in sorted(headings))
    return titles


def execute_notebook(source: str | os.PathLike, target: str | os.PathLike, profile: str,
                     timeout: int = 4 * 3600, stream: Any = sys.stdout) -> Path:
    """Execute a notebook headlessly with papermill, PROFILE injected as a parameter.

    With a `stream`, what the notebook prints reaches it as it happens, each section's
    heading when the run gets there, and the time since the start.
    """
    import nbformat
    import papermill
    from traitlets.config import Config

    titles = section_titles(nbformat.read(source, as_version=4))
    started, shown = time.perf_counter(), [""]

    def announce(cell: Any, **_: Any) -> None:
        title = titles.get(cell.get("id"), "")
        if stream is not None and title and title != shown[0]:
            shown[0] = title
            stream.write(f"[{clock(time.perf_counter() - started)}] {title}\n")
            stream.flush()

    Path(target).parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(
        str(source), str(target), parameters={"PROFILE": profile}, kernel_name="python3",
        cwd=str(PROJECT_DIR), progress_bar=False, stdout_file=stream, stderr_file=stream,
        execution_timeout=timeout, on_cell_start=announce,
        # Unix sockets between runner and kernel: nothing on TCP, and no warning about it.
        config=Config({"KernelManager": {"transport": "ipc"}}))
    return Path(target)


def export_pdf(notebook_path: str | os.PathLike, pdf_path: str | os.PathLike) -> Path:
    """Export an executed notebook to the report PDF with nbconvert.

    Cells tagged `hide-input` show their output only; the cell tagged TITLE_TAG comes first;
    progress lines (epochs, long computations) are dropped, each model's one-line record
    stays; the LaTeX template is PDF_TEMPLATE.
    """
    import jinja2
    import nbconvert
    import nbformat
    from traitlets.config import Config

    class ReportLayout(nbconvert.preprocessors.Preprocessor):
        """Put the title cell first; remove TrainingLog's epoch lines from printed output."""

        def preprocess(self, notebook: Any, resources: Any) -> tuple[Any, Any]:
            titles = [cell for cell in notebook.cells
                      if TITLE_TAG in cell.metadata.get("tags", [])]
            notebook.cells = titles + [cell for cell in notebook.cells if cell not in titles]
            return super().preprocess(notebook, resources)

        def preprocess_cell(self, cell: Any, resources: Any, index: int) -> tuple[Any, Any]:
            for output in cell.get("outputs", []):
                if output.get("output_type") == "stream":
                    lines = output.text.splitlines(keepends=True)
                    output.text = "".join(line for line in lines
                                          if not (EPOCH_LINE.match(line)
                                                  or TICKER_LINE.match(line)))
            return cell, resources

    message = pdf_tools_message()
    if message:
        raise RuntimeError(message)
    config = Config()
    config.TagRemovePreprocessor.enabled = True
    config.TagRemovePreprocessor.remove_input_tags = ("hide-input",)
    # papermill's copy of the parameters repeats the first cell; the title block names the profile.
    config.TagRemovePreprocessor.remove_cell_tags = ("injected-parameters",)
    # Two xelatex passes settle the PDF's bookmarks; nbconvert's default third changes nothing.
    exporter = nbconvert.PDFExporter(
        config=config, template_file="ca4_report.tex.j2", latex_count=2,
        extra_loaders=[jinja2.DictLoader({"ca4_report.tex.j2": PDF_TEMPLATE})])
    exporter.register_preprocessor(ReportLayout, enabled=True)
    notebook = nbformat.read(Path(notebook_path), as_version=4)
    body, _ = exporter.from_notebook_node(notebook, resources={"metadata": {"name": "ca4"}})
    pdf_path = Path(pdf_path)
    pdf_path.parent.mkdir(parents=True, exist_ok=True)
    pdf_path.write_bytes(body)
    return pdf_path


def preflight(need_pdf: bool = True) -> None:
    """Fail fast, before any training: MNIST must be found and checked, the PDF tools present."""
    load_mnist()
    if need_pdf and missing_pdf_tools():
        raise SystemExit(pdf_tools_message())


def run(profile: str, notebook: Path, pdf: Path) -> None:
    """Execute and export, printing the time of each step and of the whole.

    The PDF tools are checked first; MNIST and the profile are checked by the notebook's
    first cells, seconds into the run.
    """
    started = time.perf_counter()
    message = pdf_tools_message()
    if message:
        raise SystemExit(message)
    print(f"executing ca4.ipynb, profile {profile!r} -> {notebook}")
    execute_notebook(PROJECT_DIR / "ca4.ipynb", notebook, profile)
    executed = time.perf_counter()
    print(f"executed in {format_duration(executed - started)}")
    export_pdf(notebook, pdf)
    print(f"wrote {pdf} in {format_duration(time.perf_counter() - executed)}")
    print(f"make run ({profile}) took {format_duration(time.perf_counter() - started)}: "
          f"{notebook}, {pdf}, {notebook.parent / 'metrics.json'}")


def main(arguments: Sequence[str] | None = None) -> int:
    """Command line: `run`, `preflight`, `execute` and `pdf` for the Makefile."""
    parser = argparse.ArgumentParser(prog="python -m tools.build", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    everything = commands.add_parser("run", help="execute the notebook and export the PDF")
    check = commands.add_parser("preflight", help="check MNIST and the PDF tools before a run")
    check.add_argument("--no-pdf", action="store_true", help="do not require the PDF tools")
    execute = commands.add_parser("execute", help="execute the notebook headlessly")
    for command in (everything, execute):
        command.add_argument("--profile", default=os.environ.get("CA4_PROFILE", "full"))
    execute.add_argument("--source", default=str(PROJECT_DIR / "ca4.ipynb"))
    execute.add_argument("--target", default=str(build_dir() / "ca4.ipynb"))
    pdf = commands.add_parser("pdf", help="export the executed notebook to PDF")
    pdf.add_argument("--source", default=str(build_dir() / "ca4.ipynb"))
    pdf.add_argument("--target", default=str(build_dir() / "ca4.pdf"))
    options = parser.parse_args(arguments)
    import papermill

    try:
        if options.command == "run":
            run(options.profile, build_dir() / "ca4.ipynb", build_dir() / "ca4.pdf")
        elif options.command == "preflight":
            preflight(need_pdf=not options.no_pdf)
            print("preflight: MNIST found and checked"
                  + ("" if options.no_pdf else "; PDF tools present"))
        elif options.command == "execute":
            started = time.perf_counter()
            preflight(need_pdf=False)
            print(f"executing ca4.ipynb, profile {options.profile!r} -> {options.target}")
            execute_notebook(options.source, options.target, options.profile)
            print(f"executed in {format_duration(time.perf_counter() - started)}")
        else:
            export_pdf(options.source, options.target)
            print(f"wrote {options.target}")
    except papermill.PapermillExecutionError as error:
        # The notebook stopped: its own message (a missing MNIST, a wrong CA4_PROFILE), not
        # papermill's traceback; the executed notebook keeps the whole traceback.
        print(f"error: {error.ename}: {error.evalue}", file=sys.stderr)
        return 2
    except MnistFileError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
