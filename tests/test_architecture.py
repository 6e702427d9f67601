"""The shape of the code: ca4_helpers.py is the coursework, the rest lives in rooms of ca4lib,
imports run one way, nothing is defined twice, and the build tools start no TensorFlow."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ca4lib import settings

ROOT = settings.PROJECT_DIR
HELPERS = ROOT / "ca4_helpers.py"
ROOMS = sorted((ROOT / "ca4lib").glob("*.py"))
# Every module of the project that is not a test.
MODULES = [HELPERS, *ROOMS, *sorted(ROOT.glob("tools/*.py")), *sorted(ROOT.glob("benchmarks/*.py")),
           *sorted(ROOT.glob("experiments/*.py"))]
# Rooms that must import without TensorFlow: what tools/, benchmarks/ and experiments/ read.
NO_TENSORFLOW = ("settings", "checks", "storage", "progress", "mnist", "estimates", "wording")
MAX_LINES = 700


def module_name(path: Path) -> str:
    return "ca4_helpers" if path == HELPERS else f"ca4lib.{path.stem}"


def project_imports(path: Path) -> set[str]:
    """The project modules a file imports, anywhere in it (`from ca4lib import x` names x)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names
                      if alias.name.split(".")[0] in ("ca4lib", "ca4_helpers")}
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "ca4lib":
                found |= {f"ca4lib.{alias.name}" for alias in node.names}
            elif node.module.split(".")[0] in ("ca4lib", "ca4_helpers"):
                found.add(node.module)
    return found - {"ca4lib"}


GRAPH = {module_name(path): project_imports(path) for path in [HELPERS, *ROOMS]}


@pytest.mark.parametrize("path", MODULES, ids=lambda path: str(path.relative_to(ROOT)))
def test_no_module_is_over_700_lines(path):
    assert len(path.read_text().splitlines()) <= MAX_LINES


def test_imports_run_one_way_with_settings_at_the_bottom_and_ca4_helpers_at_the_top():
    assert GRAPH["ca4lib.settings"] == set(), "settings imports nothing of the project"
    importers_of_helpers = sorted(name for name, imported in GRAPH.items()
                                  if "ca4_helpers" in imported)
    assert importers_of_helpers == [], "no room imports the coursework module"
    # Every room is below ca4_helpers: reached from it, or from the notebook only.
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in visiting, f"import cycle: {' -> '.join((*path, name))}"
        if name in order:
            return
        visiting.add(name)
        for imported in sorted(GRAPH[name]):
            visit(imported, (*path, name))
        visiting.discard(name)
        order.append(name)

    for name in sorted(GRAPH):
        visit(name, ())
    assert order[0] in ("ca4lib.settings", "ca4lib.backend", "ca4lib.storage")


def test_every_room_says_what_it_is_for():
    for path in ROOMS:
        docstring = ast.get_docstring(ast.parse(path.read_text()))
        assert docstring and len(docstring) > 40, f"{path.name} has no docstring worth the name"


def test_ca4_helpers_holds_the_graded_code_and_nothing_that_writes_prose_plots_or_hashes_code():
    tree = ast.parse(HELPERS.read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    for forbidden in ("matplotlib", "hashlib", "dis", "inspect", "IPython", "ipywidgets", "json"):
        assert forbidden not in imported, f"ca4_helpers imports {forbidden}"
    rooms = {name.removeprefix("ca4lib.") for name in GRAPH["ca4_helpers"]}
    for writer in ("figures", "report", "wording", "discussion_task1", "discussion_task2",
                   "explorer"):
        assert writer not in rooms, f"ca4_helpers imports the {writer} room"
    names = [node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))]
    for name in ("build_autoencoder", "build_vae_encoder", "Sampling", "reconstruction_loss",
                 "kl_divergence", "VariationalAutoencoder", "build_vae", "train_model",
                 "run_kl_sweep"):
        assert name in names
    # In the order a reader meets it: data, the models, the losses, training, the sweep.
    assert names.index("normalize_images") < names.index("build_decoder") < names.index(
        "Sampling") < names.index("reconstruction_loss") < names.index(
        "VariationalAutoencoder") < names.index("train_model") < names.index("run_kl_sweep")
    declared = next(node for node in tree.body if isinstance(node, ast.Assign)
                    and getattr(node.targets[0], "id", "") == "__all__")
    public = set(ast.literal_eval(declared.value))
    assert public >= {"build_vae", "train_model", "Sampling", "VariationalAutoencoder"}


@pytest.mark.parametrize("definition", ["def build_dir(", "def write_json_atomic(",
                                        "BATCH_SIZE =", "def build_decoder(",
                                        "def format_duration(", "def library_versions("])
def test_one_definition_of_each_shared_thing(definition):
    holders = [str(path.relative_to(ROOT)) for path in MODULES
               if any(line.lstrip().startswith(definition)
                      for line in path.read_text().splitlines())]
    assert len(holders) == 1, f"{definition!r} is defined in {holders}"


def imported_after(statement: str) -> dict[str, bool]:
    """Import modules in a fresh Python and say which of TensorFlow and ca4_helpers came too."""
    script = (f"import sys, json, threading\n{statement}\n"
              "print(json.dumps({'tensorflow': 'tensorflow' in sys.modules, "
              "'ca4_helpers': 'ca4_helpers' in sys.modules, "
              "'threads': threading.active_count()}))")
    completed = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                               text=True, timeout=120, check=True)
    return json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("room", NO_TENSORFLOW)
def test_rooms_the_tools_read_import_no_tensorflow(room):
    assert imported_after(f"import ca4lib.{room}") == {
        "tensorflow": False, "ca4_helpers": False, "threads": 1}


def test_the_build_runner_imports_no_tensorflow_and_starts_no_thread():
    found = imported_after("import tools.build; tools.build.main(['preflight', '--no-pdf'])")
    assert found == {"tensorflow": False, "ca4_helpers": False, "threads": 1}


def test_importing_the_coursework_defines_names_and_leaves_the_environment_alone():
    script = ("import os, sys; before = dict(os.environ)\n"
              "import ca4_helpers\n"
              "changed = {k for k in set(os.environ) | set(before) if os.environ.get(k) != before.get(k)}\n"
              "print(sorted(changed))")
    environment = {name: value for name, value in __import__("os").environ.items()
                   if name not in ("KERAS_BACKEND", "TF_CPP_MIN_LOG_LEVEL")}
    completed = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                               text=True, timeout=120, check=True, env=environment)
    # The backend room chooses TensorFlow for Keras and quiets its C++ log, where unset: the
    # only variables an import sets; nothing is printed.
    assert completed.stdout.strip() == "['KERAS_BACKEND', 'TF_CPP_MIN_LOG_LEVEL']"
    assert completed.stderr == ""
