"""Every `lgvq ...` command in a shell block of the README and docs/ parses with the CLI's own parser:
a command, flag or argument the docs show exists as shown (paths are placeholders and not opened)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from lgvq_core.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
OPTIONAL = re.compile(r"\[([^\[\]]*)\]")


def shell_blocks(text: str) -> list[str]:
    """The contents of the fenced blocks marked bash, sh or console, or not marked."""
    blocks, current, language = [], None, ""
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith("```"):
            if current is None:
                current, language = [], line.strip()[3:].strip()
            else:
                if language in ("", "bash", "sh", "console"):
                    blocks.append("".join(current))
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def documented_commands() -> list[tuple[str, list[str]]]:
    found = []
    for document in DOCUMENTS:
        for block in shell_blocks(document.read_text(encoding="utf-8")):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.strip().removeprefix("$ ")
                if not line.startswith("lgvq ") and "&& lgvq " not in line:
                    continue
                line = OPTIONAL.sub(r"\1", line.split("  #")[0])  # usage brackets: [--seed 0] -> --seed 0
                try:
                    words = shlex.split(line, comments=True)
                except ValueError:
                    continue
                command: list[str] = []
                for word in [*words, "&&"]:
                    if word in ("&&", "|", ";"):
                        if command[:1] == ["lgvq"]:
                            found.append((f"{document.name}: {line}", command[1:]))
                        command = []
                    else:
                        command.append(word)
    return found


COMMANDS = documented_commands()


def test_the_docs_show_the_new_commands():
    shown = {args[0] for _, args in COMMANDS if args}
    assert {"run", "eval", "compare", "plot", "import", "export", "check"} <= shown


@pytest.mark.parametrize(("where", "args"), COMMANDS, ids=[where[:80] for where, _ in COMMANDS])
def test_a_documented_command_parses(where, args):
    try:
        build_parser().parse_args(args)
    except SystemExit as exc:
        pytest.fail(f"{where}: the CLI refuses {args} (exit {exc.code})")
