"""Relative paths inside a delivery, checked before any byte is stored."""

from __future__ import annotations

import re
import unicodedata

from levere.domain.errors import InvalidPath

MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4096
#: exactly the characters of Unicode category Cc: C0 controls, DEL and C1 controls
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def check_relative_path(path: str) -> str:
    """Return ``path`` normalised (NFC, forward slashes) or raise :class:`InvalidPath` naming why."""
    if not path:
        raise InvalidPath("the path is empty")
    if _CONTROL.search(path):
        raise InvalidPath(f"{path!r} contains a NUL or control character")
    if "\\" in path:
        raise InvalidPath(f"{path!r} contains a backslash; use / between folders")
    if path.startswith("/"):
        raise InvalidPath(f"{path!r} is absolute; give a path relative to the run folder")
    ascii_only = path.isascii()  # then characters are bytes, and NFC changes nothing
    if not ascii_only:
        path = unicodedata.normalize("NFC", path)
    for part in path.split("/"):
        if part in ("", "."):
            raise InvalidPath(f"{path!r} has an empty or '.' component")
        if part == "..":
            raise InvalidPath(f"{path!r} climbs out of its folder with '..'")
        if (len(part) if ascii_only else len(part.encode())) > MAX_NAME_BYTES:
            raise InvalidPath(f"a name in {path!r} is longer than {MAX_NAME_BYTES} bytes")
    if (len(path) if ascii_only else len(path.encode())) > MAX_PATH_BYTES:
        raise InvalidPath(f"{path[:60]!r}... is longer than {MAX_PATH_BYTES} bytes")
    return path


def check_name(name: str, what: str = "name") -> str:
    """A single path component such as a delivery (run) name."""
    checked = check_relative_path(name)
    if "/" in checked:
        raise InvalidPath(f"the {what} {name!r} must not contain '/'")
    return checked
