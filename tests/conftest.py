"""Shared set-up for the ca4 tests: import path, a private build folder, small real MNIST, a
VAE with one latent dimension at the prior (test_models.py, test_vae_analyses.py), and a
JupyterLab server on the project."""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import types
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

# Before matplotlib or TensorFlow is imported anywhere: no windows, no C++ start-up chatter.
os.environ["MPLBACKEND"] = "Agg"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import ca4_helpers as ca4  # noqa: E402
from ca4lib import mnist

TRAIN_SIZE = 256
VALIDATION_SIZE = 128


@pytest.fixture(scope="session", autouse=True)
def private_build_dir(tmp_path_factory: pytest.TempPathFactory):
    """Point CA4_BUILD_DIR at a session temp folder so that no test writes into build/."""
    folder = tmp_path_factory.mktemp("ca4_build")
    previous = os.environ.get("CA4_BUILD_DIR")
    os.environ["CA4_BUILD_DIR"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("CA4_BUILD_DIR", None)
    else:
        os.environ["CA4_BUILD_DIR"] = previous


@pytest.fixture
def patch_lookup(monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable[..., object], str, object], None]:
    """`patch_lookup(function, name, value)`: replace `name` where `function` looks it up, in
    its own module's namespace, until the test ends.

    A name imported from another room is a binding of its own in each room that imports it, so
    patching the room that defines it would silently miss. This fails instead when `function`
    (or a function nested in it) does not look `name` up among its globals.
    """
    def patch(function: Callable[..., object], name: str, value: object) -> None:
        code = function.__code__
        looked_up = set(code.co_names).union(*(
            constant.co_names for constant in code.co_consts if isinstance(constant, types.CodeType)))
        assert name in looked_up, f"{function.__qualname__} does not look up {name!r}"
        assert name in function.__globals__, f"{name!r} is not a global of {function.__module__}"
        monkeypatch.setitem(function.__globals__, name, value)

    return patch


@pytest.fixture(autouse=True)
def close_figures():
    """Close the figures a test opened, so that they do not pile up over the session."""
    yield
    plt.close("all")


@pytest.fixture(scope="session")
def mnist_raw():
    """The real MNIST arrays `(x_train, y_train), (x_test, y_test)`.

    Without a local file the tests that need it skip, except where CA4_REQUIRE_MNIST=1 (CI):
    there a missing or damaged file fails them, so a broken data link cannot pass as a skip.
    """
    required = os.environ.get("CA4_REQUIRE_MNIST") == "1"
    if mnist.find_mnist() is None:  # never fall through to the Keras download in a test
        if required:
            pytest.fail("CA4_REQUIRE_MNIST=1 but no MNIST file was found (CA4_MNIST, data/)")
        pytest.skip("real MNIST not available: set CA4_MNIST or link data/mnist.npz")
    try:
        return ca4.load_mnist()
    except ca4.MnistFileError as error:
        if required:
            pytest.fail(f"CA4_REQUIRE_MNIST=1 and the MNIST file is unusable: {error}")
        pytest.skip(f"real MNIST not available: {error}")


@pytest.fixture(scope="session")
def mnist_small(mnist_raw):
    """A few hundred real normalised images: train, validation (test split) and their labels."""
    (x_train, y_train), (x_test, y_test) = mnist_raw
    return {
        "train_images": ca4.normalize_images(x_train[:TRAIN_SIZE]),
        "train_labels": y_train[:TRAIN_SIZE].astype(np.int64),
        "validation_images": ca4.normalize_images(x_test[:VALIDATION_SIZE]),
        "validation_labels": y_test[:VALIDATION_SIZE].astype(np.int64),
    }


@pytest.fixture(scope="module")
def vae_with_collapsed_dimension():
    """An untrained 2-D VAE whose dimension 1 is exactly the prior; dimension 0 is shifted."""
    ca4.set_seed(0)
    model = ca4.build_vae(2, kl_weight=1.0, seed=0)
    for name in ("z_mean", "z_log_var"):
        layer = model.encoder.get_layer(name)
        kernel, bias = (np.array(w) for w in layer.get_weights())
        kernel[:, 1] = 0.0
        bias[1] = 0.0
        if name == "z_mean":
            bias[0] = 1.0  # mean >= about 1 in dimension 0: KL about 0.5, clearly active
        layer.set_weights([kernel, bias])
    images = np.random.default_rng(0).uniform(size=(16, 28, 28, 1)).astype(np.float32)
    return model, images


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    """An empty folder for the trained-model cache of one test."""
    folder = tmp_path / "cache"
    folder.mkdir()
    return folder


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def http_get(url: str, timeout: float = 10.0) -> tuple[int, str, str]:
    """GET `url`; return the status, the content type and the body."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return (response.status, response.headers.get("Content-Type", ""),
                    response.read().decode())
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Content-Type", ""), error.read().decode(errors="replace")


def tail(path: Path, characters: int = 3000) -> str:
    return path.read_text(errors="replace")[-characters:] if path.exists() else ""


@dataclasses.dataclass
class LabServer:
    """A running JupyterLab: its address, token, log file and Jupyter folders."""

    base: str
    token: str
    log: Path
    folders: dict[str, Path]
    process: subprocess.Popen

    def url(self, path: str) -> str:
        return f"{self.base}/{path}?token={self.token}"

    def log_tail(self, characters: int = 3000) -> str:
        return tail(self.log, characters)


LAB_STARTUP_SECONDS = 60


@pytest.fixture
def jupyter_lab(tmp_path: Path) -> Iterator[Callable[..., LabServer]]:
    """Start JupyterLab on the project (free port, token, as root too); stopped at teardown.

    Every Jupyter folder is in tmp_path, so the server writes nothing into the home folder.
    `environment` is added to the server's (and so the kernel's) environment, a None value
    removes the variable; `settings`
    maps a JupyterLab plug-in ("@jupyterlab/docmanager-extension:plugin") to user settings.
    """
    servers: list[LabServer] = []

    def start(environment: Mapping[str, str | None] | None = None,
              settings: Mapping[str, Mapping] | None = None,
              arguments: Sequence[str] = ()) -> LabServer:
        port, token = free_port(), secrets.token_hex(16)
        folders = {name: tmp_path / f"jupyter-{name}" for name in ("config", "data", "runtime", "home")}
        for folder in folders.values():
            folder.mkdir()
        for plugin, values in (settings or {}).items():
            package, name = plugin.rsplit(":", 1)
            path = folders["config"] / "lab" / "user-settings" / package / f"{name}.jupyterlab-settings"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        env = {**os.environ, "JUPYTER_PLATFORM_DIRS": "1",
               "JUPYTER_CONFIG_DIR": str(folders["config"]),
               "JUPYTER_DATA_DIR": str(folders["data"]),
               "JUPYTER_RUNTIME_DIR": str(folders["runtime"]),
               "IPYTHONDIR": str(folders["home"] / ".ipython"),
               "HOME": str(folders["home"]), **(environment or {})}
        env = {name: value for name, value in env.items() if value is not None}
        command = [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}",
                   "--ServerApp.port_retries=0", f"--ServerApp.token={token}",
                   "--ServerApp.ip=127.0.0.1", f"--ServerApp.root_dir={PROJECT_ROOT}",
                   "--allow-root", *arguments]
        log = tmp_path / f"jupyter-{port}.log"
        with log.open("w") as output:
            process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env,
                                       stdin=subprocess.DEVNULL, stdout=output,
                                       stderr=subprocess.STDOUT)
        server = LabServer(f"http://127.0.0.1:{port}", token, log, folders, process)
        servers.append(server)
        deadline = time.monotonic() + LAB_STARTUP_SECONDS
        while True:
            assert process.poll() is None, f"jupyter lab exited early:\n{server.log_tail()}"
            try:
                status, _, _ = http_get(server.url("api/status"), timeout=2.0)
            except OSError:  # not listening yet
                status = None
            if status == 200:
                return server
            assert time.monotonic() < deadline, (
                f"jupyter lab did not answer within {LAB_STARTUP_SECONDS} s:\n{server.log_tail()}")
            time.sleep(0.5)

    yield start
    for server in servers:
        stop_jupyter_lab(server)


def stop_jupyter_lab(server: LabServer) -> None:
    """Shut the server down through its API (kernels too), else terminate it."""
    try:
        request = urllib.request.Request(server.url("api/shutdown"), method="POST")
        urllib.request.urlopen(request, timeout=5).close()
    except OSError:
        server.process.terminate()
    try:
        server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(timeout=10)
