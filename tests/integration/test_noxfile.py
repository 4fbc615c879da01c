"""The noxfiles: `--plugin PATH` projects and their plugin names, a clean plugin set per run, one torch folder."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = str(ROOT / "examples" / "plugins" / "lgvq-example-backbone")


@pytest.fixture(scope="module")
def noxfile():
    spec = importlib.util.spec_from_file_location("lgvq_noxfile", ROOT / "noxfile.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_plugin_paths_are_taken_apart_from_the_other_arguments(noxfile):
    assert noxfile.plugin_projects(["--plugin", EXAMPLE, "--steps", "1", f"--plugin={EXAMPLE}"]) == (
        [EXAMPLE, EXAMPLE],
        ["--steps", "1"],
    )


def test_the_plugin_names_come_from_the_projects_entry_points(noxfile):
    assert noxfile.plugin_names(EXAMPLE) == ["example-backbone"]


def test_a_folder_without_pyproject_is_refused(noxfile, tmp_path):
    with pytest.raises(SystemExit, match=r"not a plugin project folder \(no pyproject.toml\)"):
        noxfile.plugin_projects(["--plugin", str(tmp_path)])


def test_a_plugin_project_of_an_earlier_run_is_uninstalled(noxfile):
    installed = [
        "lgvq-core",
        "lgvq_backbones",
        "lgvq-text-encoders",
        "lgvq-tasks",
        "lgvq-example-backbone",
        "Other.Plugin",
    ]
    keep = {"lgvq-core", "lgvq-backbones", "lgvq-text-encoders", "lgvq-tasks", "other-plugin"}

    assert noxfile.stale_plugins(installed, keep) == ["lgvq-example-backbone"]
    assert noxfile.project_name(EXAMPLE) == "lgvq-example-backbone"


def test_the_plugin_distributions_are_listed_from_their_entry_points(noxfile):
    result = subprocess.run([sys.executable, "-c", noxfile._LIST_PLUGIN_DISTRIBUTIONS], capture_output=True, text=True)

    assert {"lgvq-core", "lgvq-backbones", "lgvq-text-encoders", "lgvq-tasks"} <= set(json.loads(result.stdout))


@pytest.fixture(scope="module")
def example_noxfile():
    spec = importlib.util.spec_from_file_location("example_noxfile", Path(EXAMPLE) / "noxfile.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("env", [{}, {"XDG_CACHE_HOME": "/elsewhere"}, {"LGVQ_NOX_TORCH": "~/torch"}])
def test_lgvq_and_the_example_plugin_share_one_torch_folder(noxfile, example_noxfile, monkeypatch, env):
    for name in ("XDG_CACHE_HOME", "LGVQ_NOX_TORCH"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    folder = noxfile.torch_folder("311")

    assert folder == example_noxfile.torch_folder("311")
    assert folder.name.endswith("cp311") and "~" not in str(folder)
    assert example_noxfile.TORCH == noxfile.TORCH


def test_the_example_noxfile_installs_lgvq_from_wheels_or_a_checkout(example_noxfile, monkeypatch, tmp_path):
    example = example_noxfile
    monkeypatch.delenv("LGVQ_REPO", raising=False)
    monkeypatch.setenv("LGVQ_WHEELS", str(tmp_path))
    assert example.lgvq_requirements() == ["--find-links", str(tmp_path), *example.LGVQ]
    monkeypatch.delenv("LGVQ_WHEELS")
    monkeypatch.setenv("LGVQ_REPO", str(ROOT))
    assert example.lgvq_requirements()[0] == f"{ROOT}/packages/lgvq-core[testing]"
