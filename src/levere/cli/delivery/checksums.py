"""Checksum files as sequencing facilities ship them (``md5sum``/``sha256sum`` output).

Design notes
------------
The parser accepts what GNU coreutils writes and ``md5sum -c`` reads: ``<hex>  <name>`` (text mode),
``<hex> *<name>`` (binary marker), lines starting with ``\\`` whose name escapes ``\\\\``, ``\\n`` and
``\\r``, the BSD ``--tag`` form ``MD5 (<name>) = <hex>``, plus what hand-made files contain: CRLF line
ends, ``#`` comments, blank lines and ``./`` prefixes. Anything else is refused with the line number,
because a silently skipped line is a file that was never verified.

Names are relative to the folder that holds the checksum file, as for ``md5sum -c`` run there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from levere.domain.errors import InvalidPath, LevereError, ValidationFailed
from levere.domain.paths import check_relative_path

#: Names looked for at the top of a run folder when no checksum file is given, in this order.
DEFAULT_NAMES = ("md5sum.txt", "MD5SUMS", "checksums.md5", "md5sums.txt", "MD5SUM", "md5.txt")
MAX_CHECKSUM_FILE_BYTES = 256 * 1024 * 1024

_ALGORITHMS = {32: "md5", 64: "sha256"}
# Two spaces (text mode) or " *" (binary); one space as some other tools write it.
_GNU = re.compile(r"^([0-9a-fA-F]{32}|[0-9a-fA-F]{64})[ \t]([ *]?)(.+)$")
_BSD = re.compile(r"^(MD5|SHA256) ?\((.+)\) ?= ?([0-9a-fA-F]{32}|[0-9a-fA-F]{64})$")
_ESCAPES = {"\\": "\\", "n": "\n", "r": "\r"}


@dataclass(frozen=True)
class Expected:
    """What a checksum file says about one file."""

    path: str
    algorithm: str  # "md5" or "sha256"
    digest: str  # lower-case hex
    line: int


@dataclass
class ChecksumFile:
    name: str  # as the user knows it (for messages)
    entries: dict[str, Expected] = field(default_factory=dict)
    #: plain ``md5sum`` output (MD5 only, GNU form, no byte-order mark): the service can verify the
    #: delivery against it again when sealing; other forms are verified by this client only
    plain_md5sum: bool = True

    def md5(self, path: str) -> str | None:
        entry = self.entries.get(path)
        return entry.digest if entry and entry.algorithm == "md5" else None

    def sha256(self, path: str) -> str | None:
        entry = self.entries.get(path)
        return entry.digest if entry and entry.algorithm == "sha256" else None


def _unescape(name: str, where: str) -> str:
    out: list[str] = []
    chars = iter(name)
    for char in chars:
        if char != "\\":
            out.append(char)
            continue
        escaped = next(chars, "")
        if escaped not in _ESCAPES:
            raise ValidationFailed({"checksum file": f"{where} has an unknown escape '\\{escaped}'"})
        out.append(_ESCAPES[escaped])
    return "".join(out)


def parse_line(raw: str, where: str) -> tuple[str, str, str, bool] | None:
    """``(algorithm, digest, name, bsd_form)`` for one line, ``None`` for blank and comment lines."""
    line = raw.removesuffix("\r")
    if not line.strip() or line.lstrip().startswith("#"):
        return None
    escaped = line.startswith("\\")
    body = line[1:] if escaped else line
    bsd = False
    if match := _GNU.match(body):
        digest, _marker, name = match.groups()
    elif match := _BSD.match(body):
        _tag, name, digest = match.groups()
        bsd = True
    else:
        raise ValidationFailed(
            {"checksum file": f"{where} is not '<md5>  <file name>' as md5sum writes it: {line[:80]!r}"}
        )
    if escaped:
        name = _unescape(name, where)
    return _ALGORITHMS[len(digest)], digest.lower(), name, bsd


def normalise_name(name: str, prefix: str, where: str) -> str:
    """The delivery path of a name read from a checksum file that lives in folder ``prefix``."""
    while name.startswith("./"):
        name = name[2:]
    try:
        return check_relative_path(f"{prefix}/{name}" if prefix else name)
    except InvalidPath as exc:
        raise InvalidPath(f"{where}: {exc.message}") from None


def parse(text: str, name: str, prefix: str = "") -> ChecksumFile:
    """Parse checksum-file ``text``; ``prefix`` is the folder (inside the delivery) it lives in."""
    parsed = ChecksumFile(name)
    for number, raw in enumerate(text.split("\n"), start=1):
        where = f"{name} line {number}"
        found = parse_line(raw, where)
        if found is None:
            continue
        algorithm, digest, listed, bsd = found
        if bsd or algorithm != "md5":
            parsed.plain_md5sum = False
        path = normalise_name(listed, prefix, where)
        earlier = parsed.entries.get(path)
        if earlier and (earlier.algorithm, earlier.digest) != (algorithm, digest):
            raise ValidationFailed(
                {"checksum file": f"{name} lists {path} twice with different checksums "
                 f"(lines {earlier.line} and {number})"}
            )  # fmt: skip
        parsed.entries[path] = Expected(path, algorithm, digest, number)
    return parsed


def read(path: Path, prefix: str = "") -> ChecksumFile:
    """Read and parse a checksum file from disk (UTF-8; a name that is not UTF-8 is refused)."""
    try:
        size = path.stat().st_size
        if size > MAX_CHECKSUM_FILE_BYTES:
            raise ValidationFailed(
                {"checksum file": f"{path} is {size} bytes: too large to be a checksum file"}
            )
        data = path.read_bytes()
    except OSError as exc:
        raise ValidationFailed({"checksum file": f"cannot read {path}: {exc.strerror}"}) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ValidationFailed({"checksum file": f"{path.name} line {line} is not UTF-8 text"}) from None
    parsed = parse(text.removeprefix("\ufeff"), path.name, prefix)
    if text.startswith("\ufeff"):
        parsed.plain_md5sum = False
    return parsed


def detect(folder: Path) -> Path | None:
    """The checksum file at the top of ``folder``: a well-known name, else the only ``*.md5`` file."""
    for name in DEFAULT_NAMES:
        candidate = folder / name
        if candidate.is_file() and not candidate.is_symlink():
            return candidate
    found = sorted(p for p in folder.glob("*.md5") if p.is_file() and not p.is_symlink())
    if len(found) > 1:
        listed = ", ".join(p.name for p in found[:5]) + (" ..." if len(found) > 5 else "")
        raise LevereError(
            f"{folder.name} holds several checksum files ({listed}): choose one with --checksum-file, "
            "or pass --no-checksum-file"
        )
    return found[0] if found else None
