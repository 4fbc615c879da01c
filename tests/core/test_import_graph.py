"""The direction of imports: CLI -> runner -> registry/config -> plugins -> specs, never back."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "packages" / "lgvq-core" / "src" / "lgvq_core"


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth of the file (function-level imports included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def offenders(files: list[Path], forbidden: str) -> list[str]:
    return [
        f"{path.relative_to(CORE)} imports {name}"
        for path in files
        for name in sorted(imported_modules(path))
        if name == forbidden or name.startswith(forbidden + ".")
    ]


def test_no_runner_module_imports_the_cli():
    assert offenders(sorted((CORE / "runner").glob("*.py")), "lgvq_core.cli") == []


@pytest.mark.parametrize("package", ["config", "quantizers", "alignment", "data", "callbacks"])
def test_lower_layers_import_neither_the_runner_nor_the_cli(package):
    files = sorted((CORE / package).glob("*.py"))
    assert offenders(files, "lgvq_core.cli") == []
    assert offenders(files, "lgvq_core.runner") == []


def test_the_run_file_loader_takes_its_registry_and_never_reaches_for_the_global_one():
    files = sorted((CORE / "config").glob("*.py"))
    assert offenders(files, "lgvq_core.registry") == []


def test_plugin_loading_knows_nothing_of_the_registry_built_on_it():
    assert offenders([CORE / "plugins.py", CORE / "specs.py", CORE / "hookspecs.py"], "lgvq_core.registry") == []
