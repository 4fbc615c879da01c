"""Import layering between the packages, checked on the source (AST) so lazy imports count too."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGES = Path(__file__).resolve().parents[2] / "packages"


def imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) of every import in a file, at any depth, plus ``importlib.import_module("...")`` calls."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
            for alias in node.names:  # `from lgvq_core import cli` imports lgvq_core.cli
                yield node.lineno, f"{node.module}.{alias.name}"
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.lineno, node.args[0].value


def offending_imports(source_root: Path, forbidden: str) -> list[str]:
    found = []
    for path in [source_root] if source_root.is_file() else sorted(source_root.rglob("*.py")):
        for line, module in imported_modules(path):
            if module == forbidden or module.startswith(forbidden + "."):
                found.append(f"{path.relative_to(PACKAGES)}:{line} imports {module}")
    return found


def test_the_scanner_sees_lazy_and_dynamic_imports(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text(
        "import os\n"
        "def f():\n"
        "    from lgvq_backbones.vqgan import model\n"
        "    import lgvq_backbones\n"
        "    importlib.import_module('lgvq_backbones.cvq')\n"
        "from . import sibling\n"
    )
    assert [m for _, m in imported_modules(source)] == [
        "os",
        "lgvq_backbones.vqgan",
        "lgvq_backbones.vqgan.model",
        "lgvq_backbones",
        "lgvq_backbones.cvq",
    ]


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        # tasks evaluate any tokenizer through the core contracts; LPIPS and every shared piece is in core
        ("lgvq-tasks/src/lgvq_tasks", "lgvq_backbones"),
        # arrows run one way: cli -> runner -> registry / config -> plugins -> specs
        ("lgvq-core/src/lgvq_core/runner", "lgvq_core.cli"),
        *[
            (f"lgvq-core/src/lgvq_core/{lower}", upper)
            for lower in ("config", "quantizers", "alignment", "data", "callbacks")
            for upper in ("lgvq_core.cli", "lgvq_core.runner")
        ],
        # the run-file loader is handed its registry; it never reaches for the process-wide one
        ("lgvq-core/src/lgvq_core/config", "lgvq_core.registry"),
        # plugin loading knows nothing of the registry built on it
        ("lgvq-core/src/lgvq_core/plugins.py", "lgvq_core.registry"),
        ("lgvq-core/src/lgvq_core/specs.py", "lgvq_core.registry"),
        ("lgvq-core/src/lgvq_core/hookspecs.py", "lgvq_core.registry"),
    ],
)
def test_package_does_not_import(package, forbidden):
    root = PACKAGES / package
    assert root.exists(), root
    assert offending_imports(root, forbidden) == []
