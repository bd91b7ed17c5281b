"""Files the facility encrypted itself, from the command line: ``levere deliver --disk`` sends a
``.c4gh`` file encrypted with the stock ``crypt4gh`` tool to the disk's key (``levere secure
pubkey``) as Crypt4GH, compares the service's plaintext checksums with the run's checksum file
(written over the plaintext), and refuses a ``.c4gh`` file that is not Crypt4GH before sending."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from levere.db.models import Delivery, StoredFile
from levere.domain.roles import UserKind
from levere.services import zone_files
from tests.cli_live import Cli
from tests.conftest import LiveServer
from tests.helpers import make_user
from tests.secure.upload_support import Zone, has_window, make_zone, sign_in_with_totp, stored_bytes

CRYPT4GH = str(Path(sys.executable).with_name("crypt4gh"))


@pytest.fixture
def cli(live_server: LiveServer, tmp_path: Path) -> Cli:
    return Cli(url=live_server.url, home=tmp_path / "cli")


def _signed_in(cli: Cli, live_server: LiveServer) -> Zone:
    zone = make_zone(live_server.ctx)
    staff = make_user(live_server.ctx, "tech@norseq.example.org", UserKind.FACILITY, zone.world.facility)
    sign_in_with_totp(live_server.ctx, cli, "tech", staff)
    return zone


def _encrypt(cli: Cli, zone: Zone, plaintext: bytes, out: Path, tmp_path: Path) -> None:
    """``out`` made by the stock tool, for the key ``levere secure pubkey`` prints."""
    pubkey = tmp_path / "disk.pub"
    pubkey.write_text(cli.ok("tech", "secure", "pubkey", zone.disk))
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as sink:
        subprocess.run(
            [CRYPT4GH, "encrypt", "--recipient_pk", str(pubkey)],
            input=plaintext, stdout=sink, check=True, env={k: v for k, v in os.environ.items() if k != "C4GH_SECRET_KEY"},
        )  # fmt: skip


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def test_a_c4gh_file_is_sent_as_crypt4gh_and_checked_against_the_plaintext_entry(
    cli: Cli, live_server: LiveServer, tmp_path: Path
) -> None:
    ctx = live_server.ctx
    zone = _signed_in(cli, live_server)
    run = tmp_path / "RUN7"
    secret = b"@r1\n" + os.urandom(100_000).hex().encode() + b"\n"  # four segments
    plain = os.urandom(5000)
    _encrypt(cli, zone, secret, run / "s1_R1.fastq.gz.c4gh", tmp_path)
    (run / "s1_R2.fastq").write_bytes(plain)
    # the sequencer's checksums, written before the facility encrypted s1_R1
    (run / "md5sum.txt").write_text(f"{_md5(secret)}  s1_R1.fastq.gz\n{_md5(plain)}  s1_R2.fastq\n")
    receipt = cli.json("tech", "deliver", zone.project, str(run), "--disk", zone.disk)
    assert receipt["state"] == "sealed" and receipt["checked_by_service"]
    coverage = receipt["checksum_coverage"]
    assert (coverage["files"], coverage["verified"], coverage["encrypted_only"]) == (2, 2, [])
    disk = zone.disk_row()
    with ctx.tx() as session:
        rows = {f.path: f for f in session.execute(select(StoredFile)).scalars()}
        file = rows["s1_R1.fastq.gz.c4gh"]
        assert (file.size, file.md5, file.sha256) == (
            len(secret), _md5(secret), hashlib.sha256(secret).hexdigest(),
        )  # fmt: skip
        assert zone_files.open_plaintext(ctx, session, file, disk).read() == secret
    everything = b"".join(content for _, content in stored_bytes(ctx))
    assert not has_window(everything, secret) and not has_window(everything, plain)
    # run again: the stored plaintext's size and MD5 agree with the folder, nothing is sent
    again = cli.json("tech", "deliver", zone.project, str(run), "--disk", zone.disk)
    assert again["sent_files"] == 0 and again["state"] == "sealed"


def test_an_entry_naming_the_encrypted_file_is_checked_on_arrival_but_reported_as_not_covered(
    cli: Cli, live_server: LiveServer, tmp_path: Path
) -> None:
    zone = _signed_in(cli, live_server)
    run = tmp_path / "RUN8"
    secret = os.urandom(70_000)
    encrypted = run / "a.bam.c4gh"
    _encrypt(cli, zone, secret, encrypted, tmp_path)
    # a wrong MD5 for the file as sent: refused on arrival, nothing stored
    (run / "md5sum.txt").write_text(f"{'0' * 32}  a.bam.c4gh\n")
    refused = cli.fails("tech", "deliver", zone.project, str(run), "--disk", zone.disk)
    assert "a.bam.c4gh" in refused and "MD5" in refused
    with live_server.ctx.tx() as session:
        assert session.execute(select(StoredFile).where(StoredFile.path == "a.bam.c4gh")).first() is None
    # the right one: stored, but the disk holds no such bytes, so the seal does not count it
    (run / "md5sum.txt").write_text(f"{_md5(encrypted.read_bytes())}  a.bam.c4gh\n")
    shown = cli.ok("tech", "deliver", zone.project, str(run), "--disk", zone.disk)
    assert "0 of 1 file verified against md5sum.txt" in " ".join(shown.split())
    assert "MD5 of the encrypted file" in " ".join(shown.split())
    with live_server.ctx.tx() as session:
        delivery = session.execute(select(Delivery).where(Delivery.name == "RUN8")).scalar_one()
        assert delivery.state == "sealed"
        assert delivery.checksum_coverage["encrypted_only"] == ["a.bam.c4gh"]
        assert delivery.checksum_coverage["verified"] == 0


def test_a_sha256sum_file_the_client_checks_covers_c4gh_files_the_same_way(
    cli: Cli, live_server: LiveServer, tmp_path: Path
) -> None:
    zone = _signed_in(cli, live_server)
    run = tmp_path / "RUN11"
    first, second = os.urandom(9000), os.urandom(7000)
    _encrypt(cli, zone, first, run / "x.fastq.c4gh", tmp_path)
    _encrypt(cli, zone, second, run / "y.fastq.c4gh", tmp_path)
    sums = tmp_path / "sha256sum.txt"
    sums.write_text(
        f"{hashlib.sha256(first).hexdigest()}  x.fastq\n"
        f"{hashlib.sha256((run / 'y.fastq.c4gh').read_bytes()).hexdigest()}  y.fastq.c4gh\n"
    )
    receipt = cli.json(
        "tech", "deliver", zone.project, str(run), "--disk", zone.disk, "--checksum-file", str(sums)
    )
    coverage = receipt["checksum_coverage"]
    assert receipt["state"] == "sealed" and coverage["checked_by"] == "client"
    assert (coverage["files"], coverage["verified"], coverage["encrypted_only"]) == (2, 1, ["y.fastq.c4gh"])


def test_a_wrong_plaintext_entry_stops_the_seal(cli: Cli, live_server: LiveServer, tmp_path: Path) -> None:
    zone = _signed_in(cli, live_server)
    run = tmp_path / "RUN9"
    _encrypt(cli, zone, os.urandom(10_000), run / "x.fastq.c4gh", tmp_path)
    (run / "md5sum.txt").write_text(f"{'1' * 32}  x.fastq\n")
    refused = cli.fails("tech", "deliver", zone.project, str(run), "--disk", zone.disk)
    assert "x.fastq.c4gh" in refused and "plaintext" in refused
    with live_server.ctx.tx() as session:
        assert session.execute(select(Delivery.state).where(Delivery.name == "RUN9")).scalar_one() == "open"


def test_a_c4gh_file_that_is_not_crypt4gh_is_refused_before_anything_is_sent(
    cli: Cli, live_server: LiveServer, tmp_path: Path
) -> None:
    zone = _signed_in(cli, live_server)
    run = tmp_path / "RUN10"
    run.mkdir()
    (run / "s1.fastq.gz.c4gh").write_bytes(b"@r1\nACGT\n+\nIIII\n")
    (run / "s2.fastq").write_bytes(b"@r2\nACGT\n+\nIIII\n")
    refused = cli.fails("tech", "deliver", zone.project, str(run), "--disk", zone.disk)
    assert "s1.fastq.gz.c4gh" in refused and "not a Crypt4GH file" in refused
    with live_server.ctx.tx() as session:
        assert session.execute(select(Delivery)).first() is None
