"""Relative paths inside a delivery, checked before any byte is stored."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from levere.domain.errors import InvalidPath

MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4096
#: exactly the characters of Unicode category Cc: C0 controls, DEL and C1 controls
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def readable(name: str) -> str:
    """``name`` as it can be shown: bytes that are not UTF-8 (which Python keeps as lone surrogates,
    as in the names ``os.listdir`` returns) escaped as ``\\xff``, the rest as it is."""
    try:
        raw = name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that no undecodable byte made
        return name.encode("utf-8", "backslashreplace").decode("ascii", "strict")
    return raw.decode("utf-8", "backslashreplace")


def check_relative_path(path: str) -> str:
    """Return ``path`` normalised (NFC, forward slashes) or raise :class:`InvalidPath` naming why."""
    if not path:
        raise InvalidPath("the path is empty")
    if not path.isascii():
        try:
            path.encode()
        except UnicodeEncodeError:
            raise InvalidPath(
                f"{readable(path)} is not valid UTF-8 (\\xNN marks each byte that is not): rename it"
            ) from None
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


@dataclass(frozen=True)
class KeyLimits:
    """How long a key may be where it is stored, in UTF-8 bytes: the whole key and each name between
    its slashes. ``where`` names the storage in the user's words (``name_where``, if given, the one
    the name limit comes from)."""

    key_bytes: int
    name_bytes: int
    where: str
    name_where: str = ""

    def tighter(self, other: KeyLimits) -> KeyLimits:
        """The limits a key must keep to be stored in both places, each named by where it comes from."""
        key_from = self if self.key_bytes <= other.key_bytes else other
        rest = other if key_from is self else self
        name_from = key_from if key_from.name_bytes <= rest.name_bytes else rest
        name_where = "" if name_from is key_from else name_from.names_in
        return KeyLimits(key_from.key_bytes, name_from.name_bytes, key_from.where, name_where)

    @property
    def names_in(self) -> str:
        return self.name_where or self.where


def _shown(text: str, most: int) -> str:
    return text if len(text) <= most else f"{text[: most - 20]}...{text[-12:]}"


def check_key_fits(path: str, key: str, limits: KeyLimits) -> None:
    """Refuse ``path`` (as the user named it) whose stored key ``key`` is longer than the storage
    can hold, saying the limit, before anything of it is stored."""
    size = len(key.encode())
    if size > limits.key_bytes:
        raise _too_long(
            f"{_shown(path, 80)!r} is too long to store: with its project and delivery it takes {size} "
            f"bytes, and {limits.where} holds paths",
            limits.key_bytes,
            size,
        )
    for name in key.split("/"):
        size = len(name.encode())
        if size > limits.name_bytes:
            raise _too_long(
                f"the name {_shown(name, 60)!r} in {_shown(path, 80)!r} is {size} bytes long, and "
                f"{limits.names_in} holds names",
                limits.name_bytes,
                size,
            )


def _too_long(what: str, limit: int, size: int) -> InvalidPath:
    return InvalidPath(f"{what} of at most {limit} bytes", limit_bytes=limit, size_bytes=size)
