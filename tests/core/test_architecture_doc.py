"""docs/architecture.md speaks of modules that exist, and its runner table lists every runner module."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "architecture.md"
CORE = ROOT / "packages" / "lgvq-core" / "src" / "lgvq_core"
SOURCES = [
    ROOT / "packages" / name / "src" for name in ("lgvq-core", "lgvq-backbones", "lgvq-text-encoders", "lgvq-tasks")
]

#: `runner/x.py`, `config/walker.py`, `api.py`, ... in backquotes.
MODULE = re.compile(r"`((?:[a-z_]+/)*[a-z_]+\.py)`")


def named_modules(text: str) -> set[str]:
    found = set(MODULE.findall(text))
    # a table cell like `runner/compare.py`, `compare_seeds.py`: the second lives beside the first
    for row in re.findall(r"^\| `runner/[^|]*\|", text, re.M):
        found |= {f"runner/{name}" for name in re.findall(r"`([a-z_]+\.py)`", row) if "/" not in name}
    return found


ALL_FILES = [p.as_posix() for source in SOURCES for p in source.rglob("*.py")] + [
    p.relative_to(ROOT).as_posix() for p in (ROOT / "tests").rglob("*.py")
]


def exists(module: str) -> bool:
    """A file of that name (a bare ``loader.py`` is read in the context the page gives it)."""
    return any(path == module or path.endswith("/" + module) for path in ALL_FILES)


def test_every_module_the_page_names_exists():
    text = DOC.read_text(encoding="utf-8")
    names = named_modules(text)
    assert "runner/kinds.py" in names and "api.py" in names  # the scan sees the tables
    missing = sorted(name for name in names if not exists(name))
    assert missing == [], f"{DOC.name} names modules that do not exist: {missing}"


def test_the_runner_table_lists_every_runner_module():
    text = DOC.read_text(encoding="utf-8")
    table = text[text.index("## The runner") : text.index("## The hook flow")]
    listed = {name for name in named_modules(table) if name.startswith("runner/")}
    present = {f"runner/{p.name}" for p in (CORE / "runner").glob("*.py") if p.name != "__init__.py"}
    assert present - listed == set(), "runner modules missing from docs/architecture.md's runner table"
