"""lgvq_core.api is what plugins import: lgvq's own plugins and the example reach lgvq-core through it only."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import lgvq_core.api as api

ROOT = Path(__file__).resolve().parents[2]
PLUGIN_SOURCES = {
    "lgvq_backbones": ROOT / "packages" / "lgvq-backbones" / "src" / "lgvq_backbones",
    "lgvq_text_encoders": ROOT / "packages" / "lgvq-text-encoders" / "src" / "lgvq_text_encoders",
    "lgvq_tasks": ROOT / "packages" / "lgvq-tasks" / "src" / "lgvq_tasks",
    "lgvq_example_backbone": ROOT / "examples" / "plugins" / "lgvq-example-backbone" / "src" / "lgvq_example_backbone",
}
IMPORT_FUNCTIONS = {"import_module", "__import__"}


def module_name(package: str, folder: Path, path: Path) -> str:
    parts = path.relative_to(folder).with_suffix("").parts
    return ".".join((package, *parts[:-1])) if parts[-1] == "__init__" else ".".join((package, *parts))


def imports_of(path: Path, module: str) -> list[tuple[str, list[str], int]]:
    """Every import of ``path`` (module level, in functions, under ``if``): (module, names, line),
    relative imports resolved, and modules named in ``importlib.import_module("...")`` calls."""
    found = []
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((base, [alias.name for alias in node.names], node.lineno))
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) in IMPORT_FUNCTIONS
        ):
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                found.append((node.args[0].value, [], node.lineno))
    return found


def import_graph(package: str, folder: Path) -> dict[str, list[tuple[str, list[str], int]]]:
    return {
        module_name(package, folder, p): imports_of(p, module_name(package, folder, p)) for p in folder.rglob("*.py")
    }


def reachable_core_imports(package: str, folder: Path) -> list[str]:
    """From every module of the package, follow its own imports transitively and collect each import
    of lgvq-core met on the way: (module, line, target, names)."""
    graph = import_graph(package, folder)
    seen, stack, found = set(), list(graph), []
    while stack:
        current = stack.pop()
        if current in seen or current not in graph:
            continue
        seen.add(current)
        for target, names, line in graph[current]:
            if target == "lgvq_core" or target.startswith("lgvq_core."):
                found.append((current, line, target, names))
            elif target.split(".")[0] == package:
                stack += [target] + [f"{target}.{name}" for name in names]
    return found


@pytest.mark.parametrize("package", sorted(PLUGIN_SOURCES))
def test_a_plugin_package_imports_lgvq_core_only_through_the_public_api(package):
    found = reachable_core_imports(package, PLUGIN_SOURCES[package])

    outside = [f"{module}:{line} imports {target}" for module, line, target, _ in found if target != "lgvq_core.api"]
    assert found, f"{package} imports nothing of lgvq-core: the walk found no import"
    assert not outside, "import from lgvq_core.api instead:\n" + "\n".join(outside)
    unknown = [
        f"{module}:{line} {name}" for module, line, _, names in found for name in names if name not in api.__all__
    ]
    assert not unknown, "not in lgvq_core.api.__all__:\n" + "\n".join(unknown)


def test_the_walk_sees_function_level_and_dynamic_imports(tmp_path):
    folder = tmp_path / "plugin"
    folder.mkdir()
    (folder / "__init__.py").write_text("from . import helpers\n")
    (folder / "helpers.py").write_text(
        "import importlib\n"
        "def late():\n"
        "    from lgvq_core.runner.checkpoint import load_checkpoint\n"
        "    return importlib.import_module('lgvq_core.registry')\n"
    )

    found = reachable_core_imports("plugin", folder)

    assert {(module, target) for module, _, target, _ in found} == {
        ("plugin.helpers", "lgvq_core.runner.checkpoint"),
        ("plugin.helpers", "lgvq_core.registry"),
    }


def test_every_public_name_resolves_and_the_typing_imports_match_the_table():
    for name in api.__all__:
        assert getattr(api, name) is not None, name
    tree = ast.parse(Path(api.__file__).read_text(encoding="utf-8"))
    typing_block = next(
        node for node in tree.body if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
    )
    typed = {
        alias.asname or alias.name: (node.module, alias.name)
        for node in typing_block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert typed == api._EXPORTS


def test_importing_the_registration_names_does_not_import_torch():
    code = (
        "import sys\n"
        "from lgvq_core.api import (hookimpl, option, positive, ComponentSpec, BackboneSpec, TaskSpec, Problem,\n"
        "    ConfigError, BuildContext, TextEncoderConfig)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'Registry'"):
        api.Registry  # noqa: B018
