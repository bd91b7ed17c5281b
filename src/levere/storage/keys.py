"""Key checks every backend shares, so that a key valid on one backend is valid on all (copies
move between tiers), and the names of the helper folders no key may start with."""

from __future__ import annotations

from levere.domain.errors import InvalidPath, ValidationFailed

#: whole-object writes in flight (local folder)
TMP_DIR = ".levere-tmp"
#: resumable sessions (local folder), staging tails and probes (S3)
STAGING_DIR = ".levere-staging"
RESERVED = frozenset({TMP_DIR, STAGING_DIR})


def check_key(key: str) -> str:
    """Refuse keys that could escape the backend's root."""
    if not key or key.startswith("/") or "\\" in key or "\x00" in key:
        raise InvalidPath(f"invalid storage key {key!r}")
    parts = key.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise InvalidPath(f"invalid storage key {key!r}")
    return key


def check_user_key(key: str) -> str:
    """:func:`check_key` plus refusal of the helper folders."""
    check_key(key)
    if key.split("/", 1)[0] in RESERVED:
        raise InvalidPath(f"invalid storage key {key!r}: {key.split('/', 1)[0]} is reserved")
    return key


def check_prefix(prefix: str) -> str:
    """A listing prefix may be empty or end in ``/``; otherwise it must be a valid key start."""
    if prefix:
        check_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


def check_range(start: int, end: int | None) -> None:
    if start < 0 or (end is not None and end < start):
        raise ValidationFailed({"range": f"invalid byte range [{start}, {end})"})
