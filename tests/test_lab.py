"""`make lab`: JupyterLab from the project's environment serves ca4.ipynb."""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import pytest

import ca4_helpers as ca4

NOTEBOOK = ca4.PROJECT_DIR / "ca4.ipynb"
STARTUP_SECONDS = 60


def make_target(name: str) -> tuple[str, list[str]]:
    """Return a Makefile target's prerequisites line and its recipe lines."""
    text = (ca4.PROJECT_DIR / "Makefile").read_text()
    match = re.search(rf"^{re.escape(name)}:(.*)\n((?:\t.*\n?)*)", text, re.MULTILINE)
    assert match, f"the Makefile has no '{name}' target"
    return match[1].strip(), [line.strip() for line in match[2].splitlines() if line.strip()]


def test_make_lab_opens_the_notebook_with_the_environments_jupyter():
    text = (ca4.PROJECT_DIR / "Makefile").read_text()
    assert re.search(r"^VENV := \.venv$", text, re.MULTILINE)
    prerequisites, recipe = make_target("lab")
    assert prerequisites.split() == ["venv"]  # sets up .venv first on a fresh machine
    assert recipe == ["$(VENV)/bin/jupyter lab ca4.ipynb"]
    assert re.search(r"^\.PHONY:.*\blab\b", text, re.MULTILINE)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get(url: str, timeout: float = 10.0) -> tuple[int, str, str]:
    """GET `url`; return the status, the content type and the body."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return (response.status, response.headers.get("Content-Type", ""),
                    response.read().decode())
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Content-Type", ""), error.read().decode(errors="replace")


def tail(path: Path, characters: int = 3000) -> str:
    return path.read_text(errors="replace")[-characters:] if path.exists() else ""


@pytest.mark.slow
def test_jupyter_lab_serves_the_notebook(tmp_path):
    port, token = free_port(), secrets.token_hex(16)
    base = f"http://127.0.0.1:{port}"
    # Every Jupyter folder in tmp_path: the server writes nothing into the home folder.
    folders = {name: tmp_path / name for name in ("config", "data", "runtime", "home")}
    for folder in folders.values():
        folder.mkdir()
    environment = {**os.environ, "JUPYTER_PLATFORM_DIRS": "1",
                   "JUPYTER_CONFIG_DIR": str(folders["config"]),
                   "JUPYTER_DATA_DIR": str(folders["data"]),
                   "JUPYTER_RUNTIME_DIR": str(folders["runtime"]),
                   "IPYTHONDIR": str(folders["home"] / ".ipython"),
                   "HOME": str(folders["home"])}
    command = [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}",
               "--ServerApp.port_retries=0", f"--ServerApp.token={token}",
               "--ServerApp.ip=127.0.0.1", f"--ServerApp.root_dir={ca4.PROJECT_DIR}",
               "--allow-root"]
    log = tmp_path / "jupyter.log"
    with log.open("w") as output:
        server = subprocess.Popen(command, cwd=ca4.PROJECT_DIR, env=environment,
                                  stdin=subprocess.DEVNULL, stdout=output,
                                  stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            assert server.poll() is None, f"jupyter lab exited early:\n{tail(log)}"
            try:
                status, _, _ = get(f"{base}/api/status?token={token}", timeout=2.0)
            except OSError:  # not listening yet
                status = None
            if status == 200:
                break
            assert time.monotonic() < deadline, (
                f"jupyter lab did not answer within {STARTUP_SECONDS} s:\n{tail(log)}")
            time.sleep(0.5)

        status, content_type, body = get(f"{base}/api/contents/ca4.ipynb?token={token}")
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
            status, content_type, body = get(f"{base}/{page}?token={token}")
            assert status == 200, f"/{page}: HTTP {status}"
            assert content_type.startswith("text/html")
            assert "<html" in body.lower() and "JupyterLab" in body

        # Without the token the contents are not served.
        status, _, _ = get(f"{base}/api/contents/ca4.ipynb")
        assert status == 403
    finally:
        try:
            request = urllib.request.Request(f"{base}/api/shutdown?token={token}", method="POST")
            urllib.request.urlopen(request, timeout=5).close()
        except OSError:
            server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
    assert server.returncode is not None
