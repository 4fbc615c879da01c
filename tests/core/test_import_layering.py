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


# ------------------------------------------------------------------------------------------
# the whole graph of lgvq-core: no cycle, no plugin package
# ------------------------------------------------------------------------------------------
CORE = PACKAGES / "lgvq-core" / "src"


def _runtime_imports(path: Path, module: str, known: set[str]) -> Iterator[tuple[int, str]]:
    """(line, module of lgvq-core) of every import that can run: module level and in functions,
    relative ones resolved; not those under ``if TYPE_CHECKING:`` (type checkers read them, Python
    never runs them). ``from package import submodule`` counts as importing the submodule alone."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    typing_only = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for node in ast.walk(block)
    }
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            submodules = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known]
            found = submodules if len(submodules) == len(node.names) else [base, *submodules]
        else:
            continue
        for target in found:
            if target in known and target != module:
                yield node.lineno, target


def core_graph(root: Path = CORE) -> dict[str, dict[str, int]]:
    """Module -> {imported lgvq-core module: line}."""
    modules = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    known = set(modules)
    return {name: dict((t, line) for line, t in _runtime_imports(path, name, known)) for name, path in modules.items()}


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, {}):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_sees_a_function_level_cycle_and_ignores_typing_imports(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg import b\n")
    (package / "b.py").write_text("def late():\n    from pkg.c import x\n")
    (package / "c.py").write_text("from . import a\nx = 1\n")
    (package / "d.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import e\n")
    (package / "e.py").write_text("import pkg.d\n")

    assert cycles(core_graph(tmp_path)) == [["pkg.a", "pkg.b", "pkg.c"]]


def test_lgvq_core_has_no_import_cycle():
    graph = core_graph()
    found = cycles(graph)
    described = [
        " ; ".join(f"{a} -> {b} (line {graph[a][b]})" for a in component for b in graph[a] if b in component)
        for component in found
    ]
    assert described == [], "import cycles in lgvq-core (function-level imports count):\n" + "\n".join(described)


def test_lgvq_core_never_imports_a_plugin_package():
    offenders = [
        line
        for plugin in ("lgvq_backbones", "lgvq_text_encoders", "lgvq_tasks", "lgvq_example_backbone")
        for line in offending_imports(PACKAGES / "lgvq-core" / "src" / "lgvq_core", plugin)
    ]
    assert offenders == []


def test_the_config_loader_and_the_registry_stay_apart():
    """config is handed a registry; registry knows nothing of run files (lgvq_core.run_file joins them)."""
    graph = core_graph()
    reach = {"lgvq_core.registry"}
    frontier = ["lgvq_core.registry"]
    while frontier:
        for target in graph[frontier.pop()]:
            if target not in reach:
                reach.add(target)
                frontier.append(target)
    # Registry.build validates a component table with the generic walker; the run file's rules are not its business
    assert {"lgvq_core.config.loader", "lgvq_core.config.overrides", "lgvq_core.config.downstream"}.isdisjoint(reach)


# ------------------------------------------------------------------------------------------
# lazy imports: only to keep a torch-free module torch-free (or pytest out), each with its reason
# ------------------------------------------------------------------------------------------
HEAVY = {"torch", "torchvision", "safetensors", "numpy", "PIL", "open_clip", "transformers", "timm", "torchmetrics"}


def _module_paths(root: Path = CORE) -> dict[str, Path]:
    modules = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _eager_imports(path: Path, module: str) -> set[str]:
    """Modules imported when ``module`` is imported: its module-level statements (under ``if`` and
    ``try`` too, not under ``if TYPE_CHECKING:``), relative imports resolved."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, (ast.If, ast.Try)):
                visit(node.body)
                visit(node.orelse)
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
                visit(getattr(node, "finalbody", []))
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names)

    visit(ast.parse(path.read_text(encoding="utf-8")).body)
    return found


def torch_at_import(modules: dict[str, Path]) -> set[str]:
    """The lgvq-core modules whose import imports torch (or another heavy library), transitively."""
    eager = {name: _eager_imports(path, name) for name, path in modules.items()}
    heavy = {name for name, found in eager.items() if any(target.split(".")[0] in HEAVY for target in found)}
    changed = True
    while changed:
        changed = False
        for name, found in eager.items():
            if name not in heavy and any(target in heavy for target in found):
                heavy.add(name)
                changed = True
    return heavy


def lazy_imports(modules: dict[str, Path]) -> list[tuple[str, int, list[str], bool]]:
    """(module, line, lgvq-core targets, has a ``# lazy:`` reason) of every import inside a function."""
    found = []
    for name, path in modules.items():
        source = path.read_text(encoding="utf-8")
        lines = source.splitlines()
        tree = ast.parse(source)
        typing_only = {
            id(node)
            for block in ast.walk(tree)
            if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
            for node in ast.walk(block)
        }
        for function in ast.walk(tree):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                if not isinstance(node, (ast.Import, ast.ImportFrom)) or id(node) in typing_only:
                    continue
                if isinstance(node, ast.ImportFrom):
                    targets = [node.module or ""] if not node.level else [f"relative:{node.module}"]
                else:
                    targets = [alias.name for alias in node.names]
                targets = [t for t in targets if t.startswith(("lgvq_core", "relative:"))]
                if targets:
                    span = lines[node.lineno - 2 : node.end_lineno]
                    found.append((name, node.lineno, targets, any("# lazy:" in line for line in span)))
    return found


def test_lazy_imports_keep_a_torch_free_module_torch_free_and_say_why():
    modules = _module_paths()
    heavy = torch_at_import(modules)
    assert "lgvq_core.runner.loop" in heavy and "lgvq_core.cli" not in heavy  # the classification works
    found = lazy_imports(modules)
    assert any(module == "lgvq_core.cli" for module, *_ in found)  # the scan sees the CLI's lazy imports
    problems = []
    for module, line, targets, reasoned in found:
        where = f"{module}:{line} imports {', '.join(targets)} inside a function"
        if module in heavy:
            problems.append(f"{where}, but {module} imports torch anyway: import it at module level")
        elif not reasoned:
            problems.append(f"{where} without a `# lazy: <reason>` comment")
    assert problems == [], "\n".join(problems)


def test_config_never_reaches_the_process_registry_even_through_data():
    """config is handed its registry: no config module imports the registry, directly or through
    another module (a missing-annotation problem is completed by the check that holds the registry)."""
    graph = core_graph()

    def reach(start: str) -> set[str]:
        seen, frontier = {start}, [start]
        while frontier:
            for target in graph[frontier.pop()]:
                if target not in seen:
                    seen.add(target)
                    frontier.append(target)
        return seen

    offenders = [name for name in graph if name.startswith("lgvq_core.config") and "lgvq_core.registry" in reach(name)]
    assert offenders == []
