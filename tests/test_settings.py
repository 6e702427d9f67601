"""The project's settings (ca4lib.settings): `check_environment` against constructed
requirements files, pinned to the installed versions or to versions that cannot be."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest

from ca4lib import settings

# ---------------------------------------------------------------------------------------------
# check_environment
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def strict_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CA4_ALLOW_OTHER_VERSIONS", raising=False)


def pins(tmp_path: Path, tensorflow: str, keras_version: str) -> Path:
    path = tmp_path / "requirements.txt"
    path.write_text(f"# pins\ntensorflow=={tensorflow}\nkeras=={keras_version}\nnumpy==0.0.1\n")
    return path


def test_check_environment_passes_with_matching_pins(tmp_path, strict_versions):
    assert settings.check_environment(pins(tmp_path, metadata.version("tensorflow"),
                                      metadata.version("keras"))) is None


@pytest.mark.parametrize("package", ["tensorflow", "keras"])
def test_check_environment_names_a_wrong_pin_and_make_lab(tmp_path, strict_versions, package):
    versions = {"tensorflow": metadata.version("tensorflow"), "keras": metadata.version("keras")}
    versions[package] = "0.0.1"
    requirements = pins(tmp_path, versions["tensorflow"], versions["keras"])
    with pytest.raises(ImportError, match=rf"{package} .*needs {package}==0\.0\.1") as error:
        settings.check_environment(requirements)
    assert "make lab" in str(error.value)
    assert "CA4_ALLOW_OTHER_VERSIONS=1" in str(error.value)


def test_check_environment_lets_other_versions_through_when_allowed(tmp_path, monkeypatch):
    monkeypatch.setenv("CA4_ALLOW_OTHER_VERSIONS", "1")
    assert settings.check_environment(pins(tmp_path, "0.0.1", "0.0.1")) is None


def test_check_environment_without_a_requirements_file(tmp_path, strict_versions):
    assert settings.check_environment(tmp_path / "missing.txt") is None
