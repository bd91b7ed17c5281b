"""The wire protocol of levere's own: each format as the client writes it, read back as the service
reads it (and the reverse for what the service sends)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from levere.cli.delivery import tarstream
from levere.cli.delivery.hashing import Checksums, parse_header
from levere.cli.delivery.progress import Quiet
from levere.cli.delivery.scan import scan_folder
from levere.cli.delivery.tus import Expected, TusUpload
from levere.domain.errors import ValidationFailed
from levere.transfer import wire
from levere.transfer.hashing import Digests
from levere.transfer.pipe import ListSource
from levere.transfer.tarstream import TarReader

MD5 = hashlib.md5(b"ACGT", usedforsecurity=False).hexdigest()
SHA256 = hashlib.sha256(b"ACGT").hexdigest()


def test_the_client_imports_the_wire_module_without_the_server() -> None:
    code = (
        "import sys, levere.transfer.wire, levere.cli.delivery.tus, levere.cli.delivery.tarstream;"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('fastapi', 'sqlalchemy', 'huey')"
        " or m.startswith(('levere.services', 'levere.db', 'levere.api'))];"
        "print(','.join(sorted(bad)))"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == ""


# --- Levere-Checksum ------------------------------------------------------------------------------------


@pytest.mark.parametrize("md5", [MD5, None])
def test_the_clients_checksum_header_is_what_the_service_parses(md5: str | None) -> None:
    header = Checksums(md5, SHA256).header()
    expected = {"md5": MD5, "sha256": SHA256} if md5 else {"sha256": SHA256}
    assert wire.parse_checksums(header) == expected
    assert (
        wire.parse_checksums(header.upper().replace("MD5=", "md5=").replace("SHA256=", "sha256=")) == expected
    )


def test_the_services_checksum_header_is_what_the_client_reads() -> None:
    assert parse_header(Digests(MD5, SHA256).header()) == Checksums(MD5, SHA256)
    assert wire.format_checksums(MD5, SHA256) == f"md5={MD5},sha256={SHA256}"


@pytest.mark.parametrize(
    "header",
    [f"md5={MD5},sha1={SHA256}", f"md5={MD5[:-1]},sha256={SHA256}", f"md5={MD5},sha256=not-hex", "sha256"],
)
def test_a_malformed_checksum_header_is_refused_by_the_service_and_ignored_by_the_client(header: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        wire.parse_checksums(header)
    assert wire.CHECKSUM_HEADER in refused.value.fields
    assert parse_header(header) is None
    assert parse_header(f"sha256={SHA256}") is None  # a download needs both


# --- tus Upload-Metadata ----------------------------------------------------------------------------------


class _Recording:
    """Stands in for the client's HTTP session: records the creation request."""

    def __init__(self) -> None:
        self.headers: dict[str, str] = {}

    def send(self, method: str, path: str, headers: dict[str, str], **_: Any) -> Any:
        assert (method, path) == ("POST", "/tus/")
        self.headers = headers
        return SimpleNamespace(headers={"Location": "/api/tus/abc"})


@pytest.mark.parametrize("expected", [Expected(MD5, SHA256), Expected()])
def test_the_clients_upload_metadata_is_what_the_service_parses(tmp_path: Path, expected: Expected) -> None:
    folder = tmp_path / "RUN1"
    (folder / "odd, names").mkdir(parents=True)
    (folder / "odd, names" / "ü 1.fq").write_bytes(b"ACGT")
    (file,) = scan_folder(folder)
    api = _Recording()
    upload = TusUpload(api, None, Quiet(), "LEV-2026-0001", "RUN 1", file, expected)  # type: ignore[arg-type]
    upload._create()
    meta = wire.parse_metadata(api.headers["Upload-Metadata"])
    assert all(meta.get(key) for key in wire.META_REQUIRED)
    assert meta[wire.META_PROJECT] == "LEV-2026-0001" and meta[wire.META_DELIVERY] == "RUN 1"
    assert meta[wire.META_PATH] == "odd, names/ü 1.fq"
    assert meta.get(wire.META_MD5) == expected.md5 and meta.get(wire.META_SHA256) == expected.sha256


@pytest.mark.parametrize("header", ["path aGk=,path aGk=", "path !!!", "path //4="])
def test_malformed_upload_metadata_is_refused(header: str) -> None:
    with pytest.raises(ValidationFailed, match="Upload-Metadata"):
        wire.parse_metadata(header)


# --- PAX records of a tar batch -------------------------------------------------------------------------


def test_the_clients_pax_records_are_what_the_services_reader_finds(tmp_path: Path) -> None:
    folder = tmp_path / "RUN1"
    folder.mkdir()
    (folder / "listed.fq").write_bytes(b"ACGT")
    (folder / ("n" * 120 + ".fq")).write_bytes(b"TTGA" * 300)
    files = scan_folder(folder)
    listed = {"listed.fq": MD5}
    chunks = list(tarstream.stream(files, listed.get, lambda _p: None, lambda _s: None))
    reader = TarReader(ListSource(chunks))
    seen = {}
    while (member := reader.next()) is not None:
        data = reader.read_all()
        seen[member.name] = (member.pax.get(wire.PAX_MD5), member.pax[wire.PAX_SHA256])
        assert member.pax[wire.PAX_SHA256] == hashlib.sha256(data).hexdigest()
    assert seen["listed.fq"] == (MD5, SHA256)
    assert seen["n" * 120 + ".fq"][0] is None  # no MD5 where the checksum file lists none
