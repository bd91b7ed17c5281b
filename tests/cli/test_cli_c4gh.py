"""What ``levere deliver --disk`` learns from a ``.c4gh`` file without its key: that it is Crypt4GH
(magic and version), and its plaintext's size from the layout; and how the run's checksum file
applies to such files on the client's side (the service's: tests/services/test_sealing_c4gh.py)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from levere.cli.delivery import c4gh
from levere.cli.delivery.checksums import parse
from levere.cli.delivery.scan import FolderRefused, LocalFile
from levere.crypt4gh import PrivateKey, encrypt_stream, make_header


def _c4gh_file(folder: Path, name: str, plaintext: bytes) -> LocalFile:
    body = io.BytesIO()
    made = encrypt_stream(io.BytesIO(plaintext), body, checksums=False)
    data = make_header(made.data_key, PrivateKey.generate().public_key) + body.getvalue()
    path = folder / name
    path.write_bytes(data)
    return LocalFile(name, str(path), len(data))


@pytest.mark.parametrize("size", [0, 1, 65_535, 65_536, 65_537, 3 * 65_536 + 100])
def test_the_plaintext_size_is_read_from_the_layout(tmp_path: Path, size: int) -> None:
    file = _c4gh_file(tmp_path, "x.c4gh", os.urandom(size))
    assert c4gh.encrypted_files([file]) == {"x.c4gh": size}


def test_a_c4gh_name_without_the_magic_or_cut_short_is_refused_with_every_file_named(tmp_path: Path) -> None:
    good = _c4gh_file(tmp_path, "good.c4gh", b"ACGT" * 1000)
    (tmp_path / "plain.c4gh").write_bytes(b"@r1\nACGT\n+\nIIII\n")
    short = tmp_path / "short.c4gh"
    short.write_bytes((tmp_path / "good.c4gh").read_bytes()[:20])
    files = [
        good,
        LocalFile("plain.c4gh", str(tmp_path / "plain.c4gh"), 17),
        LocalFile("short.c4gh", str(short), 20),
        LocalFile("other.fastq", str(tmp_path / "plain.c4gh"), 17),  # not .c4gh: not looked at
    ]
    with pytest.raises(FolderRefused) as refused:
        c4gh.encrypted_files(files)
    assert "plain.c4gh, short.c4gh end in .c4gh but are not a Crypt4GH file" in refused.value.message


def test_the_client_reads_the_plaintext_entry_for_the_c4gh_file_and_keeps_the_encrypted_one_apart() -> None:
    listing = parse(f"{'a' * 32}  x.fastq.gz\n{'b' * 32}  x.fastq.gz.c4gh\n{'c' * 32}  y.bam\n", "md5sum.txt")
    applied, sent = c4gh.apply_listing(listing, {"x.fastq.gz.c4gh": 10}, {"x.fastq.gz.c4gh", "y.bam"})
    assert applied.md5("x.fastq.gz.c4gh") == "a" * 32 and applied.md5("y.bam") == "c" * 32
    assert "x.fastq.gz" not in applied.entries
    assert sent["x.fastq.gz.c4gh"].digest == "b" * 32
