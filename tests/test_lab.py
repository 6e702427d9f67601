"""`make lab`: JupyterLab from the project's environment serves ca4.ipynb, as root too."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.request

import nbformat
import pytest
from conftest import free_port, http_get, tail

from ca4lib import settings

NOTEBOOK = settings.PROJECT_DIR / "ca4.ipynb"
STARTUP_SECONDS = 60


def make_target(name: str) -> tuple[str, list[str]]:
    """Return a Makefile target's prerequisites line and its recipe lines."""
    text = (settings.PROJECT_DIR / "Makefile").read_text()
    match = re.search(rf"^{re.escape(name)}:(.*)\n((?:\t.*\n?)*)", text, re.MULTILINE)
    assert match, f"the Makefile has no '{name}' target"
    return match[1].strip(), [line.strip() for line in match[2].splitlines() if line.strip()]


def test_make_lab_opens_the_notebook_with_the_environments_jupyter():
    text = (settings.PROJECT_DIR / "Makefile").read_text()
    assert re.search(r"^VENV := \.venv$", text, re.MULTILINE)
    prerequisites, recipe = make_target("lab")
    assert prerequisites.split() == ["venv"]  # sets up .venv first on a fresh machine
    assert recipe[-1] == "exec $(VENV)/bin/jupyter lab ca4.ipynb $$allow_root $(LAB_ARGS)"
    # --allow-root only for root, and the user is told why.
    body = "\n".join(recipe)
    assert re.search(r'if \[ "\$\$\(id -u\)" = 0 \]; then .*\n.*running as root.*\n'
                     r'\s*allow_root=--allow-root; else allow_root=; fi', body)
    assert re.search(r"^\.PHONY:.*\blab\b", text, re.MULTILINE)


@pytest.mark.slow
def test_jupyter_lab_serves_the_notebook(jupyter_lab):
    server = jupyter_lab()
    status, content_type, body = http_get(server.url("api/contents/ca4.ipynb"))
    assert status == 200, body[:500]
    assert content_type.startswith("application/json")
    model = json.loads(body)
    assert model["type"] == "notebook" and model["name"] == "ca4.ipynb"
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    cells = model["content"]["cells"]
    assert len(cells) == len(notebook.cells)
    assert [cell["cell_type"] for cell in cells] == [cell.cell_type for cell in notebook.cells]
    assert cells[0]["source"] == notebook.cells[0].source

    for page in ("lab", "lab/tree/ca4.ipynb"):
        status, content_type, body = http_get(server.url(page))
        assert status == 200, f"/{page}: HTTP {status}"
        assert content_type.startswith("text/html")
        assert "<html" in body.lower() and "JupyterLab" in body

    # Without the token the contents are not served.
    status, _, _ = http_get(f"{server.base}/api/contents/ca4.ipynb")
    assert status == 403


@pytest.mark.slow
def test_make_lab_starts_and_says_where_to_open_it(tmp_path):
    """`make lab` itself, as this user (root in CI): it starts, says why, prints the URL."""
    port = free_port()
    folders = {name: tmp_path / name for name in ("config", "data", "runtime", "home")}
    for folder in folders.values():
        folder.mkdir()
    environment = {**os.environ, "JUPYTER_PLATFORM_DIRS": "1",
                   "JUPYTER_CONFIG_DIR": str(folders["config"]),
                   "JUPYTER_DATA_DIR": str(folders["data"]),
                   "JUPYTER_RUNTIME_DIR": str(folders["runtime"]),
                   "IPYTHONDIR": str(folders["home"] / ".ipython"),
                   "HOME": str(folders["home"]), "MAKEFLAGS": ""}
    log = tmp_path / "make-lab.log"
    with log.open("w") as output:
        make = subprocess.Popen(
            ["make", "--no-print-directory", "lab",
             f"LAB_ARGS=--no-browser --port={port} --ServerApp.port_retries=0"],
            cwd=settings.PROJECT_DIR, env=environment, stdin=subprocess.DEVNULL, stdout=output,
            stderr=subprocess.STDOUT)
    url = None
    try:
        # The first start may install the environment (venv); allow for pip's check.
        deadline = time.monotonic() + STARTUP_SECONDS + 120
        while url is None:
            assert make.poll() is None, f"make lab stopped (exit {make.returncode}):\n{tail(log)}"
            assert time.monotonic() < deadline, f"make lab printed no URL:\n{tail(log)}"
            found = re.search(rf"http://127\.0\.0\.1:{port}/lab\?token=(\w+)", log.read_text())
            url = found and found[0]
            time.sleep(0.5)
        status, _, _ = http_get(url.replace("/lab?", "/api/status?"), timeout=5.0)
        assert status == 200
    finally:
        token = url.rsplit("=", 1)[1] if url else ""
        try:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/api/shutdown?token={token}", method="POST")
            urllib.request.urlopen(request, timeout=5).close()
        except OSError:
            make.terminate()
        make.wait(timeout=60)
    text = log.read_text()
    assert "make lab: the notebook kernel 'Python 3 (ipykernel)' runs " in text, text[:2000]
    assert "not this environment's Python" not in text, text[:2000]
    assert "open the http://... URL" in text
    assert ("running as root" in text) == (os.getuid() == 0), text[:2000]
    assert "Running as root is not recommended" not in text
    assert "Or copy and paste one of these URLs" in text  # JupyterLab's own banner is visible
    assert make.returncode == 0, tail(log)
