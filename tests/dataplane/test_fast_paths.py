"""The shortcuts taken on the hot paths of a delivery agree with the plain definitions they replace."""

from __future__ import annotations

import asyncio
import ctypes
import errno
import hashlib
import os
import time
import unicodedata
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import literal, select

from levere.context import Context
from levere.db.bulk import new_ids_sql
from levere.db.models import ID_STEM, new_id, new_ids
from levere.domain.errors import InvalidPath
from levere.domain.paths import check_relative_path
from levere.storage import local_small, posix
from levere.storage.local import LocalBackend
from levere.transfer.pipe import BodyPipe


@given(st.text(max_size=40))
def test_control_characters_are_exactly_unicodes_cc_category(text: str) -> None:
    has_control = any(unicodedata.category(c) == "Cc" for c in text)
    try:
        check_relative_path(text)
        refused = ""
    except InvalidPath as exc:
        refused = exc.message
    assert refused.endswith("contains a NUL or control character") == has_control


@given(
    st.lists(
        st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), min_size=1, max_size=8),
        min_size=1,
        max_size=4,
    )
)
def test_ascii_and_unicode_paths_are_measured_in_bytes(parts: list[str]) -> None:
    path = "/".join(parts)
    try:
        checked = check_relative_path(path)
    except InvalidPath:
        return
    assert checked == unicodedata.normalize("NFC", path)
    assert all(len(p.encode()) <= 255 for p in checked.split("/"))


def test_a_name_of_255_bytes_passes_and_256_do_not_in_ascii_and_utf8() -> None:
    check_relative_path("a" * 255)
    check_relative_path("é" * 127 + "a")  # 255 bytes
    for too_long in ("a" * 256, "é" * 128):
        with pytest.raises(InvalidPath, match="longer than 255 bytes"):
            check_relative_path(too_long)


def _unix_ms(parsed: uuid.UUID) -> int:
    return parsed.int >> 80  # a version 7 UUID starts with the time in milliseconds


def test_ids_are_distinct_time_ordered_version_7_uuids() -> None:
    before = time.time_ns() // 1_000_000
    first = new_ids(5000)
    second = new_ids(5000)
    single = new_id()
    after = time.time_ns() // 1_000_000
    everything = [*first, *second, single]
    assert len(set(everything)) == 10_001
    for text in everything:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (7, uuid.RFC_4122, text)
        assert before <= _unix_ms(parsed) <= after
    # one call's ids are in order, so a chunk of rows is appended to the end of every index; they
    # share a stem and count up, so a range of them is exactly one call's
    assert first == sorted(first) and second == sorted(second)
    assert {i[:ID_STEM] for i in first} == {first[0][:ID_STEM]} != {second[0][:ID_STEM]}
    counters = [int(i[ID_STEM:], 16) for i in first]
    assert counters == list(range(counters[0], counters[0] + 5000))
    assert new_ids(0) == []


def test_ids_the_database_numbers_are_distinct_time_ordered_version_7_uuids(ctx: Context) -> None:
    numbers = select(literal(1).label("i")).cte("numbers", recursive=True)
    numbers = numbers.union_all(select(numbers.c.i + 1).where(numbers.c.i < 3000))
    earlier = new_id()
    time.sleep(0.003)
    before = time.time_ns() // 1_000_000
    with ctx.tx() as session:
        made = new_ids_sql(session.get_bind().dialect.name)
        ids = session.execute(select(made).select_from(numbers)).scalars().all()
    after = time.time_ns() // 1_000_000
    assert len(set(ids)) == 3000
    for text in ids:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (7, uuid.RFC_4122, text)
        assert before <= _unix_ms(parsed) <= after
    # as one new_ids call's: one stem, consecutive counters; after ids made earlier
    assert {i[:ID_STEM] for i in ids} == {ids[0][:ID_STEM]}
    counters = sorted(int(i[ID_STEM:], 16) for i in ids)
    assert counters == list(range(counters[0], counters[0] + 3000))
    assert min(ids) > earlier


def test_the_body_pipe_fills_given_back_buffers_again_and_keeps_every_byte() -> None:
    pieces = [os.urandom(n) for n in (70_000, 1, 300_000, 65_536, 5, 1_000_000, 123_457)]

    async def stream() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece

    async def main() -> tuple[bytes, int, int]:
        pipe = BodyPipe(stream(), buffer_size=256 * 1024, depth=2)
        got = bytearray()
        owners: list[int] = []

        def consume() -> None:
            while (buf := pipe.next_buffer()) is not None:
                got.extend(buf)
                owners.append(id(buf.obj) if isinstance(buf, memoryview) else id(buf))
                pipe.recycle(buf)

        await asyncio.to_thread(consume)
        await pipe.stop()
        return bytes(got), len(owners), len(set(owners))

    data, handed, distinct = asyncio.run(main())
    assert data == b"".join(pieces)
    assert handed == -(-len(data) // (256 * 1024))  # full buffers, then the rest
    assert distinct < handed  # buffers given back were filled again


def test_paced_writes_keep_every_byte(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path, "t")
    step = posix.WriteBack.STEP
    block = os.urandom(1024 * 1024)
    size = 3 * step + 12345
    with backend.open_writer("big.bin", size_hint=size) as writer:
        written = 0
        while written < size:
            piece = block[: min(len(block), size - written)]
            writer.write(piece)
            written += len(piece)
        writer.commit()
    expected = hashlib.sha256()
    left = size
    while left:
        piece = block[: min(len(block), left)]
        expected.update(piece)
        left -= len(piece)
    assert hashlib.sha256((tmp_path / "big.bin").read_bytes()).hexdigest() == expected.hexdigest()


@pytest.mark.parametrize("refusal", [errno.ENOENT, errno.EPERM, errno.EINVAL])
def test_small_files_are_named_through_proc_where_links_from_a_descriptor_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refusal: int
) -> None:
    """Older kernels refuse ``linkat(fd, "", ..., AT_EMPTY_PATH)`` to a process that may not read
    every folder (ENOENT; a security module may say EPERM): the first refusal is learnt and every
    file is named through ``/proc/self/fd`` instead, none lost or left unnamed."""
    real = posix.linkat()
    assert real is not None
    calls: list[int] = []

    def refusing(olddir: int, old: bytes, newdir: int, new: bytes, flags: int) -> int:
        calls.append(flags)
        if flags & posix.AT_EMPTY_PATH:
            ctypes.set_errno(refusal)
            return -1
        return int(real(olddir, old, newdir, new, flags))

    monkeypatch.setattr(posix, "linkat", lambda: refusing)
    monkeypatch.setattr(local_small.SmallFiles, "empty_path_links", True)
    root = tmp_path / "area"
    root.mkdir()
    backend = LocalBackend(root, "area")
    files = {f"p/d/lane{i % 2}/r{i}": os.urandom(100 + i) for i in range(10)}
    with backend.small_writes() as write:
        for key, data in files.items():
            write(key, data)
    assert calls == [posix.AT_EMPTY_PATH] + [posix.AT_SYMLINK_FOLLOW] * 10  # learnt at once
    assert local_small.SmallFiles.empty_path_links is False
    for key, data in files.items():
        assert (root / key).read_bytes() == data
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) == sorted(files)


def test_small_files_are_named_from_their_descriptor_where_the_system_allows_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = posix.linkat()
    assert real is not None
    flags_seen: list[int] = []

    def watching(olddir: int, old: bytes, newdir: int, new: bytes, flags: int) -> int:
        flags_seen.append(flags)
        return int(real(olddir, old, newdir, new, flags))

    monkeypatch.setattr(posix, "linkat", lambda: watching)
    monkeypatch.setattr(local_small.SmallFiles, "empty_path_links", True)
    backend = LocalBackend(tmp_path, "area")
    with backend.small_writes() as write:
        write("p/d/a", b"a")
        write("p/d/b", b"b")
    assert (tmp_path / "p/d/a").read_bytes() == b"a" and (tmp_path / "p/d/b").read_bytes() == b"b"
    if local_small.SmallFiles.empty_path_links:  # Linux 6.10 or newer, or a process that may read any folder
        assert flags_seen == [posix.AT_EMPTY_PATH] * 2
    else:
        assert flags_seen == [posix.AT_EMPTY_PATH, posix.AT_SYMLINK_FOLLOW, posix.AT_SYMLINK_FOLLOW]
