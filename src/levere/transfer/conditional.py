"""Entity-tag comparison for conditional requests (RFC 9110 sections 8.8.3 and 13.1).

``If-None-Match`` uses the weak comparison: ``W/"x"`` and ``"x"`` match, and the header may list
several tags (``"a", W/"b"``) or be ``*``. ``If-Range`` uses the strong comparison: a weak tag never
matches, so a resumed download cannot splice bytes of two different files.
"""

from __future__ import annotations


def _tags(header: str) -> list[tuple[bool, str]] | None:
    """The (weak, opaque-tag) pairs of an entity-tag list, or ``None`` if the header is malformed.

    A tag's quoted part may itself contain commas, so the list is scanned rather than split.
    """
    tags: list[tuple[bool, str]] = []
    i, n = 0, len(header)
    while i < n:
        while i < n and header[i] in " \t,":
            i += 1
        if i >= n:
            break
        weak = header.startswith("W/", i)
        if weak:
            i += 2
        if i >= n or header[i] != '"':
            return None
        end = header.find('"', i + 1)
        if end < 0:
            return None
        tags.append((weak, header[i : end + 1]))
        i = end + 1
        while i < n and header[i] in " \t":
            i += 1
        if i < n and header[i] != ",":
            return None
    return tags


def none_match(header: str | None, etag: str) -> bool:
    """Whether ``If-None-Match`` matches the current ``etag`` (so a GET or HEAD answers 304).

    A malformed header matches nothing: the full answer is always a safe reply.
    """
    if header is None or not header.strip():
        return False
    if header.strip() == "*":
        return True
    wanted = etag.removeprefix("W/")
    return any(tag == wanted for _weak, tag in _tags(header) or [])


def strong_match(header: str, etag: str) -> bool:
    """Whether ``If-Range`` names exactly this strong ``etag`` (weak tags never match)."""
    tags = _tags(header.strip())
    return etag.startswith('"') and tags == [(False, etag)]
