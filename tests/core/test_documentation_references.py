"""Comments and docstrings point at docs/method.md or the paper, never at a document outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
METHOD = ROOT / "docs" / "method.md"
#: The word the old comments cited; spelled in two parts so this file does not match itself.
EXTERNAL_DOCUMENT = "SP" + "EC"
REFERENCE = re.compile(r"docs/method\.md:\s+(.+)")


def source_files() -> list[Path]:
    files = []
    for folder in ("packages", "examples", "bench", "docs", "tests"):
        files += [p for p in (ROOT / folder).rglob("*") if p.suffix in (".py", ".toml", ".md") and p.is_file()]
    return files + [ROOT / "README.md", ROOT / "noxfile.py"]


def method_sections() -> list[str]:
    """Heading texts of docs/method.md without their ``(`type`)`` suffix: "Masked text prediction"."""
    headings = re.findall(r"^#{2,3} (.+)$", METHOD.read_text(encoding="utf-8"), flags=re.MULTILINE)
    return [re.sub(r"\s*\(`[^`]+`\)$", "", heading) for heading in headings]


def test_no_file_of_the_project_cites_the_external_document():
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in source_files()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if re.search(rf"\b{EXTERNAL_DOCUMENT}\b", line)
    ]
    assert offenders == []


def test_every_method_reference_names_a_section_of_docs_method_md():
    sections = method_sections()
    assert {"Code ViT", "Masked text prediction", "CVQ", "Evaluation protocols"} <= set(sections)
    references = 0
    for path in source_files():
        text = path.read_text(encoding="utf-8")
        for match in REFERENCE.finditer(text):
            target = match.group(1)
            references += 1
            assert any(target.startswith(section) for section in sections), (
                f"{path.relative_to(ROOT)}: the reference to {target!r} names no section of docs/method.md"
            )
    assert references >= 50
