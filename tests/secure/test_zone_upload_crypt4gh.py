"""Files uploaded already encrypted to the shared disk's public key: the server takes the header
off, checks that the disk's key opens it, stores the body as sent, and learns the plaintext's size
and checksums by opening every segment in memory; anything else is refused with nothing stored."""

from __future__ import annotations

import hashlib
import io
import os

from fastapi.testclient import TestClient
from sqlalchemy import select

from levere.context import Context
from levere.crypt4gh import PrivateKey, PublicKey, encrypt_stream, make_header
from levere.db.models import FileHeader, StoredFile, Upload
from levere.services import zone_files
from levere.transfer.wire import encode_metadata
from tests.crypt4gh import spec_c4gh
from tests.helpers import auth, provisioned_project, token_for
from tests.secure.upload_support import Zone, has_window, make_zone, stepped_up, stored_bytes


def _encrypted(data: bytes, recipient: PublicKey) -> tuple[bytes, bytes]:
    """A Crypt4GH file of ``data`` for ``recipient``: (header, body)."""
    body = io.BytesIO()
    made = encrypt_stream(io.BytesIO(data), body, checksums=False)
    return make_header(made.data_key, recipient), body.getvalue()


def _disk_key(zone: Zone) -> PublicKey:
    return PublicKey.from_pem(zone.disk_row().public_key)


def _sent(zone: Zone, client: TestClient, path: str, content: bytes, first: int | None = None) -> object:
    created = zone.create(client, "RUN1", path, len(content), format="crypt4gh")
    assert created.status_code == 201, created.text
    url = created.headers["Location"]
    if first is None:
        return zone.patch(client, url, 0, content)
    answer = zone.patch(client, url, 0, content[:first])
    assert answer.status_code == 204, answer.text
    assert answer.headers["Upload-Offset"] == str(first)
    return zone.patch(client, url, first, content[first:])


def _recorded_as_plaintext(file: StoredFile, data: bytes) -> None:
    """The file's size and checksums are the plaintext's (checked against the run's checksum file),
    not its body's."""
    assert (file.size, file.md5, file.sha256) == (
        len(data),
        hashlib.md5(data).hexdigest(),
        hashlib.sha256(data).hexdigest(),
    )


def test_a_file_encrypted_to_the_disk_is_stored_as_its_body_with_its_header_apart(
    ctx: Context, client: TestClient
) -> None:
    zone = make_zone(ctx)
    assert zone.open_delivery(client).status_code == 201
    data = os.urandom(150_000)
    header, body = _encrypted(data, _disk_key(zone))
    done = _sent(zone, client, "s1.fastq.gz", header + body, first=len(header) + 70_001)
    assert done.status_code == 204, done.text  # type: ignore[attr-defined]
    (file,) = zone.files()
    _recorded_as_plaintext(file, data)
    assert file.body_size == len(body) and file.body_sha256 == hashlib.sha256(body).hexdigest()
    disk = zone.disk_row()
    with ctx.tx() as session:
        assert zone_files.open_plaintext(ctx, session, file, disk).read() == data
        (row,) = session.execute(select(FileHeader).where(FileHeader.file_id == file.id)).scalars()
        assert row.header != header  # made anew for the disk; the client's header is not kept
        assert session.execute(select(Upload.wrapped_data_key)).scalar_one()
    # the body is stored as sent; the disk's quota counts the plaintext
    assert [content for _, content in stored_bytes(ctx)] == [body]
    assert disk.used_bytes == len(data)


def test_a_file_that_is_not_crypt4gh_or_is_encrypted_to_another_key_is_refused_with_nothing_stored(
    ctx: Context, client: TestClient
) -> None:
    zone = make_zone(ctx)
    assert zone.open_delivery(client).status_code == 201
    data = os.urandom(50_000)
    refused = _sent(zone, client, "plain.fastq", data)
    assert refused.status_code == 422 and refused.json()["error"] == "not_crypt4gh", refused.text  # type: ignore[attr-defined]
    other = PrivateKey.generate().public_key
    header, body = _encrypted(data, other)
    refused = _sent(zone, client, "other.fastq", header + body)
    assert refused.status_code == 422 and refused.json()["error"] == "encrypted_to_another_key"  # type: ignore[attr-defined]
    assert zone.files() == [] and stored_bytes(ctx) == []
    assert zone.disk_row().used_bytes == 0
    with ctx.tx() as session:
        assert sorted(session.execute(select(Upload.state)).scalars()) == ["failed", "failed"]
    # a body damaged after a good header: the upload fails and the stored body is deleted
    header, body = _encrypted(data, _disk_key(zone))
    damaged = body[:100] + bytes([body[100] ^ 1]) + body[101:]
    refused = _sent(zone, client, "damaged.fastq", header + damaged)
    assert refused.status_code == 422, refused.text  # type: ignore[attr-defined]
    assert zone.files() == [] and stored_bytes(ctx) == [] and zone.disk_row().used_bytes == 0
    assert not has_window(b"".join(c for _, c in stored_bytes(ctx)), data)


def test_a_crypt4gh_upload_is_taken_only_on_a_shared_disk(ctx: Context, client: TestClient) -> None:
    zone = make_zone(ctx)
    ordinary = provisioned_project(ctx, zone.world)
    assert (
        client.post(
            f"/api/projects/{ordinary}/deliveries", json={"name": "RUN1"}, headers=zone.staff
        ).status_code
        == 201
    )
    refused = client.post(
        "/api/tus/",
        headers={
            **zone.staff, "Tus-Resumable": "1.0.0", "Upload-Length": "100",
            "Upload-Metadata": encode_metadata(
                {"project": ordinary, "delivery": "RUN1", "path": "a.c4gh", "format": "crypt4gh"}
            ),
        },
    )  # fmt: skip
    assert refused.status_code == 422 and "shared disk" in refused.text, refused.text


def test_a_file_encrypted_by_the_specification_writer_is_taken_released_and_read_back_by_its_reader(
    ctx: Context, client: TestClient
) -> None:
    """Encrypted to the disk's key by an implementation that is neither levere's nor the stock tool's."""
    zone = make_zone(ctx)
    assert zone.open_delivery(client).status_code == 201
    pem = client.get(f"/api/secure/disks/{zone.disk}/pubkey", headers=zone.staff).json()["pem"]
    data = b"@read1\nACGTTTGA\n+\nIIIIIIII\n" * 5000 + os.urandom(7)  # three segments, the last short
    encrypted = spec_c4gh.encrypt(data, spec_c4gh.read_public_key_file(pem))
    done = _sent(zone, client, "s1.fastq.c4gh", encrypted)
    assert done.status_code == 204, done.text  # type: ignore[attr-defined]
    (file,) = zone.files()
    _recorded_as_plaintext(file, data)
    body = encrypted[16 + 108 :]  # after the magic, version, count and the one header packet
    assert (file.body_size, file.body_sha256) == (len(body), hashlib.sha256(body).hexdigest())
    # the run's checksum file lists the plaintext's MD5 under the name without .c4gh
    md5sum = f"{hashlib.md5(data).hexdigest()}  s1.fastq\n".encode()
    created = zone.create(client, "RUN1", "md5sum.txt", len(md5sum))
    assert zone.patch(client, created.headers["Location"], 0, md5sum).status_code == 204
    seal = f"/api/projects/{zone.project}/deliveries/RUN1/seal"
    sealed = client.post(seal, json={"checksum_file": "md5sum.txt"}, headers=zone.staff)
    assert sealed.status_code == 200 and sealed.json()["state"] == "sealed", sealed.text
    assert sealed.json()["checksum_coverage"]["verified"] == 1, sealed.text
    released = client.post(f"/api/secure/disks/{zone.disk}/deliveries/RUN1/release", headers=zone.staff)
    assert released.status_code == 202 and released.json()["kind"] == "release", released.text
    job = client.get(f"/api/projects/{zone.project}/jobs/{released.json()['id']}", headers=zone.staff)
    assert job.json()["state"] == "done", job.text  # the job ran at once (tests' queue)
    member = auth(stepped_up(ctx, token_for(ctx, zone.world.pi)))
    secret = spec_c4gh.new_secret_key()
    url = "/api/secure/projects/p1234/deliveries/RUN1/data/s1.fastq.c4gh"
    answer = client.get(
        url, params={"pubkey": spec_c4gh.public_key_file(spec_c4gh.public_key(secret))}, headers=member
    )
    assert answer.status_code == 200, answer.text
    assert spec_c4gh.decrypt(answer.content, secret) == data
