"""One word per concept (docs/architecture.md, Words), held where a test can see it."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGES = Path(__file__).parents[2] / "packages"

#: Identifiers of classifier-free guidance, the one meaning "guidance" keeps.
CLASSIFIER_FREE = {"guidance_scale", "guided_logits", "guided"}


def _identifiers(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
    return names


def test_guidance_names_only_classifier_free_guidance():
    offenders = []
    for path in sorted(PACKAGES.glob("*/src/**/*.py")):
        for name in _identifiers(ast.parse(path.read_text(encoding="utf-8"))):
            if "guidance" in name.lower() and name not in CLASSIFIER_FREE:
                offenders.append(f"{path.relative_to(PACKAGES)}: {name}")
    assert offenders == [], "alignment is called alignment (docs/architecture.md, Words)"


def test_stage_one_and_two_appear_only_quoted_as_the_papers_words():
    """ "tokenizer run" and "downstream run" are the words; "stage 2" only as a quotation."""
    import re

    root = PACKAGES.parent
    files = [
        *PACKAGES.glob("*/src/**/*.py"),
        *root.glob("docs/*.md"),
        root / "README.md",
        *PACKAGES.glob("*/README.md"),
    ]
    offenders = []
    for path in sorted(files):
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(r"stage[- ][12]", text, re.IGNORECASE):
            quoted = text[match.start() - 1 : match.start()] == '"' and text[match.end() : match.end() + 1] == '"'
            if not quoted:
                line = text.count("\n", 0, match.start()) + 1
                offenders.append(f"{path.relative_to(root)}:{line}: {match.group()}")
    assert offenders == [], "say tokenizer run / downstream run (docs/architecture.md, Words)"
