"""The service's tar reader against Python's :mod:`tarfile`: every format tarfile writes, cut into
buffers anywhere, reads back as the same members with the same bytes; damage is refused."""

from __future__ import annotations

import io
import itertools
import tarfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from levere.domain.errors import ValidationFailed
from levere.transfer.pipe import ListSource
from levere.transfer.tarstream import TarReader

names = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\"),
    min_size=1,
    max_size=40,
)
paths = st.lists(names, min_size=1, max_size=4).map("/".join).filter(lambda p: len(p.encode()) < 250)
members = st.lists(
    st.tuples(
        paths, st.binary(max_size=3000), st.dictionaries(st.sampled_from(["LEVERE.md5", "x.y"]), names)
    ),
    min_size=1,
    max_size=12,
    unique_by=lambda m: m[0],
)


def _archive(entries: list[tuple[str, bytes, dict[str, str]]], fmt: int) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for path, data, records in entries:
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mtime = 1_700_000_000
            if fmt == tarfile.PAX_FORMAT:
                info.pax_headers = records
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _read(body: bytes, cuts: list[int]) -> list[tuple[str, bytes, dict[str, str]]]:
    edges = sorted({0, len(body), *(c % (len(body) + 1) for c in cuts)})
    reader = TarReader(ListSource([body[a:b] for a, b in itertools.pairwise(edges)]))
    found = []
    while (m := reader.next()) is not None:
        assert m.kind == "file"
        found.append((m.name, reader.read_all(), m.pax))
    return found


@settings(max_examples=150, deadline=None)
@given(members, st.sampled_from([tarfile.PAX_FORMAT, tarfile.GNU_FORMAT]), st.lists(st.integers(0, 10**6)))
def test_every_member_reads_back_as_written_wherever_the_buffers_break(
    entries: list[tuple[str, bytes, dict[str, str]]], fmt: int, cuts: list[int]
) -> None:
    body = _archive(entries, fmt)
    found = _read(body, cuts)
    assert [(p, d) for p, d, _ in found] == [(p, d) for p, d, _ in entries]
    if fmt == tarfile.PAX_FORMAT:
        for (_, _, records), (_, _, got) in zip(entries, found, strict=True):
            assert {k: v for k, v in got.items() if k in records} == records


@settings(max_examples=100, deadline=None)
@given(members, st.integers(0, 10**6), st.integers(1, 255), st.lists(st.integers(0, 10**6), max_size=3))
def test_a_damaged_header_is_refused_not_misread(
    entries: list[tuple[str, bytes, dict[str, str]]], where: int, change: int, cuts: list[int]
) -> None:
    body = bytearray(_archive(entries, tarfile.PAX_FORMAT))
    with tarfile.open(fileobj=io.BytesIO(bytes(body))) as tar:
        # each member's PAX header block and its own header block, less their checksum fields
        spots = [
            start + i
            for info in tar.getmembers()
            for start in (info.offset, info.offset_data - 512)
            for i in range(512)
            if not 148 <= i < 156
        ]
    spot = spots[where % len(spots)]
    body[spot] = (body[spot] + change) % 256
    with pytest.raises(ValidationFailed, match="damaged"):
        _read(bytes(body), cuts)


def test_a_negative_size_is_refused() -> None:
    body = bytearray(_archive([("a.txt", b"abc", {})], tarfile.USTAR_FORMAT))
    body[124:136] = b"-0000000003\0"
    body[148:156] = b" " * 8
    body[148:156] = b"%06o\0 " % sum(body[:512])
    with pytest.raises(ValidationFailed, match="negative"):
        _read(bytes(body), [])
