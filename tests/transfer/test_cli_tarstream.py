"""The client's tar stream, byte for byte: its fast header templates against a plain implementation of
the format, against Python's :mod:`tarfile` and against the service's own reader."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from levere.cli.delivery import tarstream
from levere.cli.delivery.batch import BatchSender
from levere.cli.delivery.progress import Quiet
from levere.cli.delivery.retry import Retry
from levere.cli.delivery.scan import LocalFile, scan_folder
from levere.cli.delivery.tus import Expected
from levere.domain.errors import StorageUnavailable
from levere.transfer.pipe import ListSource
from levere.transfer.tarstream import ArchiveTruncated, TarReader

MAX_OCTAL = 8**11 - 1


# --- a plain implementation of the format, written for clarity, not speed ------------------------


def plain_record(key: str, value: str) -> bytes:
    payload = f" {key}={value}\n".encode()
    length = len(payload) + 1
    while length != len(payload) + len(str(length)):
        length = len(payload) + len(str(length))
    return str(length).encode() + payload


def plain_ustar(name: bytes, size: int, mtime: int, typeflag: bytes) -> bytes:
    header = bytearray(512)
    header[0 : len(name)] = name
    header[100:108] = b"0000644\0"
    header[108:116] = b"0000000\0"
    header[116:124] = b"0000000\0"
    header[124:136] = b"%011o\0" % size
    header[136:148] = b"%011o\0" % max(0, min(mtime, MAX_OCTAL))
    header[148:156] = b" " * 8
    header[156:157] = typeflag
    header[257:265] = b"ustar\x0000"
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header)


def plain_member_header(path: str, size: int, mtime: int, md5: str | None, sha256: str) -> bytes:
    fits = path.isascii() and len(path) <= 100
    records = b"" if fits else plain_record("path", path)
    if md5:
        records += plain_record("LEVERE.md5", md5)
    records += plain_record("LEVERE.sha256", sha256)
    name = path.encode() if fits else path.encode("ascii", "replace")[:100]
    return (
        plain_ustar(b"././@PaxHeader", len(records), mtime, b"x")
        + records
        + b"\0" * (-len(records) % 512)
        + plain_ustar(name, size, mtime, b"0")
    )


# --- inputs ----------------------------------------------------------------------------------------

hex32 = st.text(alphabet="0123456789abcdef", min_size=32, max_size=32)
hex64 = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
# delivery paths: "/"-separated names of any Unicode but controls, short and long (ustar holds 100 bytes)
names = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\"),
    min_size=1,
    max_size=70,
)
paths = st.lists(names, min_size=1, max_size=5).map("/".join)
sizes = st.one_of(st.sampled_from([0, 1, 511, 512, 513, 4096, MAX_OCTAL]), st.integers(0, MAX_OCTAL))
mtimes = st.one_of(st.sampled_from([0, -1, MAX_OCTAL, MAX_OCTAL + 1]), st.integers(-(2**40), 2**70))


@given(
    path=st.one_of(paths, st.text(min_size=1, max_size=300)),
    size=sizes,
    mtime=mtimes,
    md5=st.one_of(st.none(), st.just(""), hex32, st.text(max_size=80)),
    sha256=st.one_of(hex64, st.text(max_size=120)),
)
def test_member_header_is_the_plain_implementations(
    path: str, size: int, mtime: int, md5: str | None, sha256: str
) -> None:
    assert tarstream.member_header(path, size, mtime, md5, sha256) == plain_member_header(
        path, size, mtime, md5, sha256
    )


@given(name=st.binary(max_size=100), size=sizes, mtime=mtimes, typeflag=st.sampled_from([b"0", b"x", b"5"]))
def test_ustar_header_is_the_plain_implementations(
    name: bytes, size: int, mtime: int, typeflag: bytes
) -> None:
    assert tarstream.ustar_header(name, size, mtime, typeflag) == plain_ustar(name, size, mtime, typeflag)


@given(key=st.text(min_size=1, max_size=20), value=st.text(max_size=2000))
def test_a_pax_record_counts_its_own_length(key: str, value: str) -> None:
    record = tarstream.pax_record(key, value)
    assert record == plain_record(key, value)
    assert len(record) == int(record.split(b" ", 1)[0])


@given(path=paths, size=sizes, mtime=mtimes, md5=st.one_of(st.none(), hex32), sha256=hex64)
def test_member_size_is_known_before_the_digests(
    path: str, size: int, mtime: int, md5: str | None, sha256: str
) -> None:
    header = tarstream.member_header(path, size, mtime, md5, sha256)
    assert tarstream.member_size(path, size, md5 is not None) == len(header) + -(-size // 512) * 512


@given(path=paths, data=st.binary(max_size=2000), mtime=mtimes, md5=st.one_of(st.none(), hex32))
def test_pythons_tarfile_reads_a_member_as_written(
    path: str, data: bytes, mtime: int, md5: str | None
) -> None:
    sha256 = hashlib.sha256(data).hexdigest()
    member = tarstream.member_header(path, len(data), mtime, md5, sha256) + data + bytes(-len(data) % 512)
    with tarfile.open(fileobj=io.BytesIO(member + tarstream.END_OF_ARCHIVE), mode="r:") as archive:
        [info] = archive.getmembers()
        assert (info.name, info.size, info.mtime, info.mode, info.type) == (
            path,
            len(data),
            max(0, min(mtime, MAX_OCTAL)),
            0o644,
            tarfile.REGTYPE,
        )
        assert info.pax_headers.get("LEVERE.md5") == md5
        assert info.pax_headers["LEVERE.sha256"] == sha256
        assert archive.extractfile(info).read() == data  # type: ignore[union-attr]


def test_the_service_reads_the_stream_as_sent(tmp_path: Path) -> None:
    run = tmp_path / "RUN1"
    contents = {
        "empty": b"",
        "a.txt": b"hello",
        "block.bin": os.urandom(512),
        "x" * 100: os.urandom(4096),
        "deep/" + "n" * 120 + ".fq": os.urandom(3000),
        "ünï/cödé.txt": os.urandom(513),
    }
    for name, data in contents.items():
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_bytes(data)
    files = scan_folder(run)
    listed = {"a.txt": "0" * 32}
    sent: list[tarstream.Sent] = []
    # a small flush size, so that members straddle the chunks the service receives
    chunks = list(tarstream.stream(files, listed.get, lambda p: None, sent.append, flush_bytes=700))
    assert sum(map(len, chunks)) == tarstream.archive_size(files, listed.get)
    assert [s.path for s in sent] == [f.path for f in files]

    reader = TarReader(ListSource(chunks))
    seen = {}
    while (member := reader.next()) is not None:
        data = reader.read_all()
        seen[member.name] = data
        assert member.kind == "file" and member.size == len(data)
        assert member.pax["LEVERE.sha256"] == hashlib.sha256(data).hexdigest()
        assert member.pax.get("LEVERE.md5") == listed.get(member.name)
    assert seen == contents and reader.ended


def test_a_file_that_shrank_since_the_scan_stops_the_stream(tmp_path: Path) -> None:
    source = tmp_path / "a.txt"
    source.write_bytes(b"12345")
    file = LocalFile("a.txt", str(source), 5, 0)
    assert tarstream.read_small(file) == b"12345"
    source.write_bytes(b"1234")
    with pytest.raises(
        tarstream.FileChanged, match=r"a\.txt changed while it was being delivered \(it had 5"
    ):
        tarstream.read_small(file)


# --- the batch sender's progress, which hears of the stream once per chunk --------------------------


class BreakingService:
    """Answers a batch as the service does, but breaks the first stream before its ``cut``-th chunk,
    keeping the members that arrived whole."""

    def __init__(self, contents: dict[str, bytes], cut: int) -> None:
        self.contents, self.cut, self.stored, self.calls = contents, cut, set[str](), 0

    def _entry(self, path: str) -> dict[str, Any]:
        data = self.contents[path]
        return {
            "path": path,
            "md5": hashlib.md5(data).hexdigest(),
            "sha256": hashlib.sha256(data).hexdigest(),
        }

    def _members(self, chunks: list[bytes]) -> list[str]:
        reader, names = TarReader(ListSource(chunks)), []
        with contextlib.suppress(ArchiveTruncated):
            while (member := reader.next()) is not None:
                reader.read_all()
                names.append(member.name)
        return names

    def send(
        self, method: str, path: str, content: Iterator[bytes], headers: dict[str, str], **_: Any
    ) -> Any:
        self.calls += 1
        chunks: list[bytes] = []
        for chunk in content:
            if self.calls == 1 and len(chunks) == self.cut:
                self.stored.update(self._members(chunks))
                raise StorageUnavailable("the connection broke")
            chunks.append(chunk)
        assert sum(map(len, chunks)) == int(headers["Content-Length"])
        answer = {"stored": [self._entry(name) for name in self._members(chunks)]}
        return SimpleNamespace(json=lambda: answer)

    def get(self, path: str) -> Any:
        return {"files": [self._entry(name) for name in self.stored]}


@pytest.mark.parametrize("cut", [0, 1, 2, 50])
def test_a_broken_batch_adds_up_to_every_byte_and_file_once(tmp_path: Path, cut: int) -> None:
    contents = {f"f{i:04d}.txt": os.urandom(i * 7 % 3000) for i in range(800)}
    for name, data in contents.items():
        (tmp_path / name).write_bytes(data)
    files = scan_folder(tmp_path)
    service = BreakingService(contents, cut)
    progress = Quiet()
    sender = BatchSender(service, Retry(first_delay=0), progress, "P", "D", lambda _p: Expected())
    outcome = sender.send(files)
    assert service.calls == (2 if cut < 50 else 1) and not outcome.failures
    assert set(outcome.computed) == set(contents)
    assert (progress.bytes, progress.files) == (sum(map(len, contents.values())), len(contents))
