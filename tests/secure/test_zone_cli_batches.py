"""``levere deliver --disk`` of a run with many small files: the small plaintext files go in tar
batches (which the service encrypts file by file), the large one and a Crypt4GH file each by tus,
and the delivery seals against the run's checksum file."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest
from sqlalchemy import select

from levere.crypt4gh import BodyEncryptor, PublicKey, make_header
from levere.db.models import AuditEvent, Delivery, StoredFile, Upload
from levere.domain.roles import UserKind
from levere.services import zone_files
from tests.cli_live import Cli
from tests.conftest import LiveServer
from tests.helpers import make_user
from tests.secure.upload_support import has_window, make_zone, sign_in_with_totp, stored_bytes

MiB = 1024 * 1024


@pytest.fixture
def cli(live_server: LiveServer, tmp_path: Path) -> Cli:
    return Cli(url=live_server.url, home=tmp_path / "cli")


def _crypt4gh(plaintext: bytes, public_key: str) -> bytes:
    """A Crypt4GH file for the disk's key, as the facility would make it."""
    body = io.BytesIO()
    with BodyEncryptor(body) as encryptor:
        encryptor.write(plaintext)
        done = encryptor.finish()
    return make_header(done.data_key, PublicKey.from_pem(public_key)) + body.getvalue()


def test_levere_deliver_with_a_disk_sends_small_files_in_batches_and_seals(
    cli: Cli, live_server: LiveServer, tmp_path: Path
) -> None:
    ctx = live_server.ctx
    zone = make_zone(ctx)
    staff = make_user(ctx, "tech@norseq.example.org", UserKind.FACILITY, zone.world.facility)
    sign_in_with_totp(ctx, cli, "tech", staff)
    run = tmp_path / "RUN5"
    files = {f"lane{n % 4}/s{n:03d}.txt": os.urandom(100 + n * 7) for n in range(500)}
    files["big.fastq"] = os.urandom(2 * MiB + 5)
    sealed_plain = os.urandom(3000)
    for path, data in files.items():
        (run / path).parent.mkdir(parents=True, exist_ok=True)
        (run / path).write_bytes(data)
    (run / "small.bam.c4gh").write_bytes(_crypt4gh(sealed_plain, zone.disk_row().public_key))
    listed = {**files, "small.bam": sealed_plain}
    (run / "md5sum.txt").write_text(
        "".join(f"{hashlib.md5(d).hexdigest()}  {p}\n" for p, d in listed.items())
    )

    receipt = cli.json("tech", "deliver", zone.project, str(run), "--disk", zone.disk)
    assert receipt["state"] == "sealed" and receipt["checked_by_service"], receipt
    coverage = receipt["checksum_coverage"]
    assert (coverage["files"], coverage["verified"]) == (len(files) + 1, len(files) + 1)

    disk = zone.disk_row()
    with ctx.tx() as session:
        delivery = session.execute(select(Delivery).where(Delivery.name == "RUN5")).scalar_one()
        assert delivery.state == "sealed"
        kinds = {(u.kind, u.path) for u in session.execute(select(Upload)).scalars()}
        # the large file and the Crypt4GH one by tus, each on its own; everything else in batches
        assert {path for kind, path in kinds if kind == "tus"} == {"big.fastq", "small.bam.c4gh"}
        assert any(kind == "batch" for kind, _ in kinds)
        batched = session.execute(
            select(AuditEvent).where(AuditEvent.action == "zone.files_stored")
        ).scalars()
        assert sum(e.after["files"] for e in batched) == 500 + 1  # the small files and md5sum.txt
        stored = {f.path: f for f in session.execute(select(StoredFile)).scalars()}
        assert set(stored) == {*files, "small.bam.c4gh", "md5sum.txt"}
        for path, data in files.items():
            file = stored[path]
            assert file.body_size and file.body_sha256
            assert zone_files.open_plaintext(ctx, session, file, disk).read() == data
        assert zone_files.open_plaintext(ctx, session, stored["small.bam.c4gh"], disk).read() == sealed_plain
    everything = b"".join(content for _, content in stored_bytes(ctx))
    assert not has_window(everything, b"".join(files.values()) + sealed_plain)
