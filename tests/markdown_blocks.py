"""The fenced code blocks of the project's Markdown files, for the tests that run the docs."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class Block:
    document: Path
    line: int  # of the opening fence, for messages
    language: str
    text: str

    @property
    def where(self) -> str:
        return f"{self.document.relative_to(ROOT)}:{self.line}"


def blocks(document: Path, *languages: str) -> list[Block]:
    """The fenced blocks of ``document`` in order, only those in ``languages`` if given."""
    text = document.read_text()
    found = []
    for match in _FENCE.finditer(text):
        language = match.group(1)
        if languages and language not in languages:
            continue
        line = text.count("\n", 0, match.start()) + 1
        found.append(Block(document, line, language, match.group(2)))
    return found


def shell_lines(block: Block) -> list[tuple[int, str]]:
    """(line number, command) for each command of a shell block: comments after ``#`` dropped,
    lines continued with a backslash joined."""
    out: list[tuple[int, str]] = []
    pending = ""
    start = 0
    for offset, raw in enumerate(block.text.splitlines(), start=1):
        line = raw.rstrip()
        if not pending:
            start = block.line + offset
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = _drop_comment(pending + line).strip()
        pending = ""
        if line:
            out.append((start, line))
    return out


def _drop_comment(line: str) -> str:
    """The line without a trailing ``# comment`` (a ``#`` inside quotes is kept)."""
    quote = ""
    for i, char in enumerate(line):
        if quote:
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i]
    return line
