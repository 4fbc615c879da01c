"""`nox -s combos contract -- --plugin PATH`: the noxfile finds the plugin project and its plugin names."""

from __future__ import annotations

import importlib.util
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
