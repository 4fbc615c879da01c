"""docs/writing-a-plugin.md runs as shown: its file snippets are the example plugin, and build it alone."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "writing-a-plugin.md"
EXAMPLE = ROOT / "examples" / "plugins" / "lgvq-example-backbone"

#: A fenced block whose first line names a file: ```python\n# src/pkg/config.py\n...```
FILE_SNIPPET = re.compile(r"^```(?:python|toml)\n# ([\w./-]+)\n(.*?)^```", re.S | re.M)


def file_snippets() -> dict[str, str]:
    found: dict[str, str] = {}
    for path, body in FILE_SNIPPET.findall(DOC.read_text(encoding="utf-8")):
        assert path not in found, f"{DOC.name} shows {path} twice"
        found[path] = body
    return found


def example_files() -> set[str]:
    """The example's source files: not its README, nor what building or testing it leaves behind."""
    generated = ("__pycache__", "build", "dist")
    return {
        str(p.relative_to(EXAMPLE))
        for p in EXAMPLE.rglob("*")
        if p.is_file()
        and p.name != "README.md"
        and not any(part.startswith(".") or part in generated or part.endswith(".egg-info") for part in p.parts)
    }


def test_the_tutorial_shows_every_file_of_the_example_plugin():
    assert set(file_snippets()) == example_files()


@pytest.mark.parametrize("path", sorted(file_snippets()))
def test_each_file_snippet_is_the_example_file_verbatim(path):
    assert file_snippets()[path] == (EXAMPLE / path).read_text(encoding="utf-8"), (
        f"{DOC.name}'s snippet of {path} differs from {EXAMPLE.name}/{path}; copy the file into the snippet"
    )


def test_no_snippet_is_abridged():
    text = DOC.read_text(encoding="utf-8")

    assert "(abridged)" not in text
    assert not re.search(r"^\s*\.\.\.\s*$", "\n".join(file_snippets().values()), re.M)


@pytest.mark.slow
def test_a_plugin_built_from_the_snippets_alone_passes_its_own_tests(install_plugin, tmp_path):
    project = tmp_path / "from-the-tutorial"
    for path, body in file_snippets().items():
        (project / path).parent.mkdir(parents=True, exist_ok=True)
        (project / path).write_text(body, encoding="utf-8")
    install_plugin(project)

    result = subprocess.run(
        [sys.executable, "-m", "pytest", "tests", "-q", "-p", "no:cacheprovider"],
        capture_output=True,
        text=True,
        cwd=project,
        timeout=600,
    )

    last = result.stdout.splitlines()[-1]
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in last and "failed" not in last and "error" not in last
