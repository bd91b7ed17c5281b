"""Downloads from the secure zone: a Crypt4GH file made for the reader's public key (never
plaintext), decrypted by the stock ``crypt4gh`` tool or by ``levere download --seckey``; who may
read before and after release; invited staff until their end date; every read audited."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from levere.context import Context
from levere.crypt4gh import PrivateKey
from levere.db.models import ApiToken, AuditEvent, FederatedIdentity, SecureMember, User, utcnow
from levere.domain.roles import UserKind
from levere.services import secure, zone_release
from tests.cli_live import Cli
from tests.conftest import LiveServer
from tests.crypt4gh import oarepo_reader, spec_c4gh
from tests.helpers import auth, make_user, token_for
from tests.plaintext_scan import scan_paths
from tests.secure.zone_support import USERS, Zone, make_zone

FASTQ = b"@read1\nACGTACGTTTGAACGT\n+\nIIIIIIIIIIIIIIII\n" * 9000  # several 64 KiB segments
FILES = {"lane1/s1.fastq": FASTQ, "notes.txt": b"a note\n"}
CRYPT4GH = str(Path(sys.executable).parent / "crypt4gh")


def _zone_token(ctx: Context, user: User) -> dict[str, str]:
    """A token as a sign-in with a one-time code issues it (the zone's routes take no other)."""
    token = token_for(ctx, user)
    with ctx.tx() as session:
        session.execute(update(ApiToken).where(ApiToken.user_id == user.id).values(second_factor=True))
    return auth(token)


def _key_pair(folder: Path, name: str = "me") -> tuple[PrivateKey, Path, Path]:
    """A member's key pair in crypt4gh-keygen's files."""
    key = PrivateKey.generate()
    sec, pub = folder / f"{name}.sec", folder / f"{name}.pub"
    sec.write_text(key.to_crypt4gh())
    pub.write_text(key.public_key.to_pem())
    return key, sec, pub


def _stock_decrypt(encrypted: bytes, seckey: Path) -> bytes:
    return subprocess.run(
        [CRYPT4GH, "decrypt", "--sk", str(seckey)],
        input=encrypted,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout


def _reads(ctx: Context) -> int:
    with ctx.tx() as session:
        return session.execute(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "zone.file_read")
        ).scalar_one()


def _released_zone(ctx: Context) -> Zone:
    zone = make_zone(ctx, FILES)
    zone_release.release(ctx, zone.world.staff, zone.disk, zone.delivery)
    return zone


def _pi_at_the_command_line(live_server: LiveServer, tmp_path: Path) -> tuple[Zone, Cli, dict[str, str]]:
    """A released zone, and the command line with the PI's token (it passed a second factor)."""
    zone = _released_zone(live_server.ctx)
    cli = Cli(url=live_server.url, home=tmp_path / "cli")
    return (
        zone,
        cli,
        {"LEVERE_TOKEN": _zone_token(live_server.ctx, zone.world.pi)["Authorization"].split()[1]},
    )


def test_a_member_downloads_a_file_the_stock_crypt4gh_tool_decrypts_to_the_original(
    ctx: Context, client: TestClient, tmp_path: Path
) -> None:
    zone = _released_zone(ctx)
    _, sec, pub = _key_pair(tmp_path)
    headers = _zone_token(ctx, zone.world.pi)
    url = f"/api/secure/projects/{USERS}/deliveries/RUN1/data/lane1/s1.fastq"
    answer = client.get(url, params={"pubkey": pub.read_text()}, headers=headers)
    assert answer.status_code == 200, answer.text
    body = answer.content
    assert FASTQ[:32] not in body  # never plaintext on the wire
    assert int(answer.headers["content-length"]) == len(body)
    assert hashlib.sha256(FASTQ).hexdigest() in answer.headers["levere-plaintext-checksum"]
    assert _stock_decrypt(body, sec) == FASTQ
    listed = client.get(f"/api/secure/projects/{USERS}/files", headers=headers).json()
    assert {f["path"]: f["sha256"] for f in listed} == {
        f"RUN1/{p}": hashlib.sha256(d).hexdigest() for p, d in FILES.items()
    }
    assert _reads(ctx) == 1
    # another key, another header: the same body opens for it, and not for the first key's holder
    _, sec2, pub2 = _key_pair(tmp_path, "other")
    again = client.get(url, params={"pubkey": pub2.read_text().splitlines()[1]}, headers=headers).content
    assert _stock_decrypt(again, sec2) == FASTQ
    refused = subprocess.run(
        [CRYPT4GH, "decrypt", "--sk", str(sec)], input=again, capture_output=True, timeout=60
    )
    assert refused.returncode != 0
    assert _reads(ctx) == 2


def test_downloads_open_with_a_reader_from_the_specification_and_a_third_party_one(
    ctx: Context, client: TestClient
) -> None:
    """The key pair and the reader share no code with levere's nor the stock tool's Crypt4GH."""
    zone = make_zone(ctx, FILES)
    secret = spec_c4gh.new_secret_key()
    pubkey = spec_c4gh.public_key_file(spec_c4gh.public_key(secret))
    staff = _zone_token(ctx, zone.world.staff)
    disk_url = f"/api/secure/disks/{zone.disk}/deliveries/RUN1"
    before = client.get(f"{disk_url}/data/lane1/s1.fastq", params={"pubkey": pubkey}, headers=staff)
    assert before.status_code == 200 and spec_c4gh.decrypt(before.content, secret) == FASTQ
    assert client.post(f"{disk_url}/release", headers=staff).is_success
    pi = _zone_token(ctx, zone.world.pi)
    for path, plaintext in FILES.items():
        url = f"/api/secure/projects/{USERS}/deliveries/RUN1/data/{path}"
        answer = client.get(url, params={"pubkey": pubkey}, headers=pi)
        assert answer.status_code == 200, answer.text
        assert spec_c4gh.decrypt(answer.content, secret) == plaintext
        assert oarepo_reader.decrypt(answer.content, secret) == plaintext  # a third-party implementation
    with pytest.raises(spec_c4gh.WrongKey):  # made for this key alone
        spec_c4gh.decrypt(answer.content, spec_c4gh.new_secret_key())


@pytest.mark.parametrize(
    "bad",
    [
        "not a key",
        "AAAA",
        PrivateKey.generate().to_crypt4gh(),  # a secret key where the public one belongs
        "A" * 43 + "=",  # 32 zero bytes: a low-order point anyone could read what is encrypted to
    ],
)
def test_a_public_key_that_is_not_a_crypt4gh_key_is_a_clear_error(
    ctx: Context, client: TestClient, bad: str
) -> None:
    zone = _released_zone(ctx)
    headers = _zone_token(ctx, zone.world.pi)
    url = f"/api/secure/projects/{USERS}/deliveries/RUN1/data/notes.txt"
    answer = client.get(url, params={"pubkey": bad}, headers=headers)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"] in ("invalid_public_key", "validation_failed")
    assert _reads(ctx) == 0


def test_the_facility_reads_through_the_disk_before_release_and_is_refused_after(
    ctx: Context, client: TestClient, tmp_path: Path
) -> None:
    zone = make_zone(ctx, FILES)
    _, sec, pub = _key_pair(tmp_path)
    staff = _zone_token(ctx, zone.world.staff)
    disk_url = f"/api/secure/disks/{zone.disk}/deliveries/RUN1"
    before = client.get(f"{disk_url}/data/lane1/s1.fastq", params={"pubkey": pub.read_text()}, headers=staff)
    assert before.status_code == 200 and _stock_decrypt(before.content, sec) == FASTQ
    # the users' side reads the disk too until release; the helpdesk does not
    pi = _zone_token(ctx, zone.world.pi)
    assert client.get(f"{disk_url}/files", headers=pi).status_code == 200
    helpdesk = _zone_token(ctx, zone.world.helpdesk)
    assert client.get(f"{disk_url}/files", headers=helpdesk).status_code == 403
    released = client.post(f"{disk_url}/release", headers=staff)  # a job, done at once in tests
    assert released.status_code == 202 and released.json()["kind"] == "release"
    job = client.get(f"/api/projects/{zone.project}/jobs/{released.json()['id']}", headers=staff).json()
    assert job["state"] == "done" and job["report"]["disk_state"] == "released"
    again = client.post(f"{disk_url}/release", headers=staff)
    assert again.status_code == 409 and again.json()["error"] == "already_released"
    for url, params in (
        (f"{disk_url}/files", {}),
        (f"{disk_url}/data/lane1/s1.fastq", {"pubkey": pub.read_text()}),
        (f"{disk_url}/data/notes.txt", {"pubkey": pub.read_text()}),
    ):
        refused = client.get(url, params=params, headers=staff)
        assert refused.status_code == 403 and refused.json()["error"] == "released_no_access", url
        assert refused.json()["message"].startswith("released: no access")
    assert client.get(f"/api/secure/projects/{USERS}/files", headers=staff).status_code == 403
    # the disk's own listing names the delivery as released, with none of its files, and refuses
    # it when asked by name
    listing = client.get(f"/api/secure/disks/{zone.disk}/files", headers=staff)
    assert listing.status_code == 200
    assert [(d["name"], d["state"]) for d in listing.json()["deliveries"]] == [("RUN1", "released")]
    assert listing.json()["files"] == []
    named = client.get(f"/api/secure/disks/{zone.disk}/files", params={"delivery": "RUN1"}, headers=staff)
    assert named.status_code == 403 and named.json()["error"] == "released_no_access"


def test_an_invited_helpdesk_member_reads_until_the_end_date_and_not_after(
    ctx: Context, client: TestClient, tmp_path: Path
) -> None:
    zone = _released_zone(ctx)
    _, sec, pub = _key_pair(tmp_path)
    analyst = make_user(ctx, "analyst@elixir.example.org", UserKind.HELPDESK, password=None)
    headers = _zone_token(ctx, analyst)
    url = f"/api/secure/projects/{USERS}/deliveries/RUN1/data/notes.txt"
    assert client.get(url, params={"pubkey": pub.read_text()}, headers=headers).status_code == 403
    secure.invite_member(ctx, zone.world.pi, USERS, analyst.email, utcnow() + timedelta(days=2))
    answer = client.get(url, params={"pubkey": pub.read_text()}, headers=headers)
    assert answer.status_code == 200 and _stock_decrypt(answer.content, sec) == FILES["notes.txt"]
    with ctx.tx() as session:  # the end date passes
        session.execute(update(SecureMember).values(ends_at=utcnow() - timedelta(seconds=1)))
    ended = client.get(url, params={"pubkey": pub.read_text()}, headers=headers)
    assert ended.status_code == 403 and ended.json()["error"] == "access_denied"
    assert client.get(f"/api/secure/projects/{USERS}/files", headers=headers).status_code == 403


# --- levere download ----------------------------------------------------------------------------


def test_levere_download_saves_c4gh_files_for_a_public_key_or_decrypts_with_a_secret_key(
    live_server: LiveServer, tmp_path: Path
) -> None:
    ctx = live_server.ctx
    zone, cli, env = _pi_at_the_command_line(live_server, tmp_path)
    _, sec, pub = _key_pair(tmp_path)
    out = tmp_path / "enc"
    made = cli.json("pi", "download", USERS, "RUN1", "--to", str(out), "--pubkey", str(pub), env=env)
    assert made["files"] == 2 and not made["decrypted"]
    saved = out / "RUN1" / "lane1" / "s1.fastq.c4gh"
    assert FASTQ[:32] not in saved.read_bytes()
    assert _stock_decrypt(saved.read_bytes(), sec) == FASTQ
    plain = tmp_path / "plain"
    locked = tmp_path / "locked.sec"
    key = PrivateKey.from_crypt4gh(sec.read_text())
    locked.write_text(key.to_crypt4gh(passphrase="salmon lice"))
    done = cli.json(
        "pi", "download", USERS, "RUN1/lane1/s1.fastq", "--to", str(plain), "--seckey", str(locked),
        env=env | {"C4GH_PASSPHRASE": "salmon lice"},
    )  # fmt: skip
    assert done["decrypted"] and (plain / "s1.fastq").read_bytes() == FASTQ
    assert not list(plain.glob("*.part"))
    # a bad key file and a wrong target are one clear line each
    bad = tmp_path / "bad.pub"
    bad.write_text("nothing like a key\n")
    line = cli.fails("pi", "download", USERS, "RUN1", "--to", str(out), "--pubkey", str(bad), env=env)
    assert "public key" in line
    line = cli.fails("pi", "download", "LEV-2026-0001", "--to", str(out), "--pubkey", str(pub), env=env)
    assert "secure project" in line
    # the facility, after release, through the disk: released, no access
    staff_env = {"LEVERE_TOKEN": _zone_token(ctx, zone.world.staff)["Authorization"].split()[1]}
    line = cli.fails(
        "staff", "download", zone.disk, "RUN1", "--to", str(out), "--pubkey", str(pub), env=staff_env
    )
    assert "released: no access" in line


def test_levere_download_for_a_public_key_file_the_specification_helper_wrote(
    live_server: LiveServer, tmp_path: Path
) -> None:
    _, cli, env = _pi_at_the_command_line(live_server, tmp_path)
    secret = spec_c4gh.new_secret_key()
    pub = tmp_path / "spec.pub"
    pub.write_text(spec_c4gh.public_key_file(spec_c4gh.public_key(secret)))
    out = tmp_path / "enc"
    made = cli.json("pi", "download", USERS, "RUN1", "--to", str(out), "--pubkey", str(pub), env=env)
    assert made["files"] == len(FILES) and not made["decrypted"]
    for path, plaintext in FILES.items():
        saved = (out / "RUN1" / f"{path}.c4gh").read_bytes()
        assert spec_c4gh.decrypt(saved, secret) == plaintext


def test_without_a_key_the_download_is_encrypted_to_the_key_the_sign_in_identity_released(
    live_server: LiveServer, tmp_path: Path
) -> None:
    zone, cli, env = _pi_at_the_command_line(live_server, tmp_path)
    out = tmp_path / "default"
    line = cli.fails("pi", "download", USERS, "RUN1", "--to", str(out), env=env)
    assert "--pubkey" in line and "released a Crypt4GH key" in line
    assert not out.exists()
    # as a sign-in with Life Science Login leaves it: the identity's released key, checked on the way in
    _, sec, pub = _key_pair(tmp_path, "lsaai")
    with live_server.ctx.tx() as session:
        session.add(
            FederatedIdentity(
                user_id=zone.world.pi.id, provider="lifescience", issuer="https://login.example.org/oidc/",
                subject="ola@lifescience.example", crypt4gh_public_keys=[pub.read_text()],
            )
        )  # fmt: skip
    made = cli.json("pi", "download", USERS, "RUN1", "--to", str(out), env=env)
    assert made["files"] == 2 and not made["decrypted"]
    assert made["recipient_from"].startswith("lifescience (")
    assert _stock_decrypt((out / "RUN1" / "lane1" / "s1.fastq.c4gh").read_bytes(), sec) == FASTQ


def test_levere_secure_release_from_the_cli(live_server: LiveServer, tmp_path: Path) -> None:
    ctx = live_server.ctx
    zone = make_zone(ctx, FILES)
    cli = Cli(url=live_server.url, home=tmp_path / "cli")
    env = {"LEVERE_TOKEN": _zone_token(ctx, zone.world.staff)["Authorization"].split()[1]}
    printed = cli.ok("staff", "secure", "release", zone.disk, "RUN1", env=env)
    assert f"released to {USERS}" in printed and "keys are destroyed" in printed
    line = cli.fails("staff", "secure", "release", zone.disk, "RUN1", env=env)
    assert "released once" in line
    pi_env = {"LEVERE_TOKEN": _zone_token(ctx, zone.world.pi)["Authorization"].split()[1]}
    zone2 = cli.fails("pi", "secure", "release", zone.disk, "RUN1", env=pi_env)
    assert "facility" in zone2


def test_no_plaintext_is_stored_anywhere_by_release_and_downloads(
    ctx: Context, client: TestClient, tmp_path: Path
) -> None:
    zone = make_zone(ctx, FILES)
    _, sec, pub = _key_pair(tmp_path)
    staff = _zone_token(ctx, zone.world.staff)
    disk_url = f"/api/secure/disks/{zone.disk}/deliveries/RUN1"
    assert client.get(
        f"{disk_url}/data/lane1/s1.fastq", params={"pubkey": pub.read_text()}, headers=staff
    ).is_success
    assert client.post(f"{disk_url}/release", headers=staff).is_success
    pi = _zone_token(ctx, zone.world.pi)
    url = f"/api/secure/projects/{USERS}/deliveries/RUN1/data/lane1/s1.fastq"
    assert (
        _stock_decrypt(client.get(url, params={"pubkey": pub.read_text()}, headers=pi).content, sec) == FASTQ
    )
    places = [ctx.settings.data_dir]
    url_text = str(ctx.settings.database_url)
    if url_text.startswith("sqlite"):
        database = Path(url_text.split(":///", 1)[1])
        places += sorted(database.parent.glob(database.name + "*"))  # with its journal, if any
    assert scan_paths(places, FASTQ) == []
    # the bodies are there, only encrypted: the scan would have found them otherwise
    assert any(p.stat().st_size >= len(FASTQ) for p in ctx.settings.data_dir.rglob("*") if p.is_file())
