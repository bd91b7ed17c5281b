"""The secure zone over the API and the CLI: the second factor every zone route needs, and a shared
disk's public key as the stock ``crypt4gh`` tool reads it."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pyotp
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from crypt4gh import lib as c4gh_lib
from levere.context import Context
from levere.crypt4gh import MasterKeys
from levere.db.models import ApiToken, SharedDisk, User, utcnow
from levere.domain.roles import UserKind
from levere.services import secure, secure_disks
from levere.services.secure import key_context
from tests.cli_live import Cli
from tests.conftest import LiveServer
from tests.helpers import PASSWORD, World, auth, basic_world, make_user, provisioned_project, token_for

ZONE_ROUTES = ("/api/secure/projects", "/api/secure/disks")


def _with_totp(ctx: Context, user: User) -> str:
    """Turn on two-factor sign-in for ``user``; returns the secret."""
    secret = pyotp.random_base32()
    with ctx.tx() as session:
        row = session.get(User, user.id)
        assert row is not None
        row.totp_secret, row.totp_enabled = secret, True
    return secret


def _code(ctx: Context, user: User, secret: str) -> str:
    """The current one-time code, usable again (each code works once; tests sign in several times)."""
    with ctx.tx() as session:
        row = session.get(User, user.id)
        assert row is not None
        row.totp_last_step = None
    return pyotp.TOTP(secret).now()


def _login(client: TestClient, email: str, totp: str | None) -> dict[str, object]:
    answer = client.post("/api/auth/login", json={"email": email, "password": PASSWORD, "totp": totp})
    assert answer.status_code < 300, answer.text
    return answer.json()  # type: ignore[no-any-return]


def _zone(ctx: Context, world: World) -> str:
    provisioned_project(ctx, world, sensitive=True, secure_project_id="p1234")
    secure.register(ctx, world.helpdesk, "p11", facility=world.facility.name)
    return secure_disks.create(
        ctx,
        world.helpdesk,
        facility_project="p11",
        users_project="p1234",
        ends_at=utcnow() + timedelta(days=9),
    ).name


def test_zone_routes_refuse_a_token_whose_sign_in_had_no_second_factor(
    ctx: Context, client: TestClient
) -> None:
    world = basic_world(ctx)
    disk = _zone(ctx, world)
    plain = auth(token_for(ctx, world.helpdesk))
    for path in (*ZONE_ROUTES, f"/api/secure/disks/{disk}", f"/api/secure/disks/{disk}/pubkey"):
        answer = client.get(path, headers=plain)
        assert answer.status_code == 403, path
        body = answer.json()
        assert body["error"] == "access_denied" and body["details"]["reason"] == "second_factor_required"
        assert "second factor" in body["message"] and "one-time code" in body["message"]
    refused = client.post(f"/api/secure/disks/{disk}/destroy", headers=plain)
    assert refused.status_code == 403
    assert secure_disks.show(ctx, world.helpdesk, disk).state == "open"  # nothing changed
    assert client.get("/api/projects", headers=plain).status_code == 200  # the rest of levere is open to it


def test_a_sign_in_with_totp_issues_a_token_the_zone_takes_and_tokens_made_with_a_token_do_not(
    ctx: Context, client: TestClient
) -> None:
    world = basic_world(ctx)
    disk = _zone(ctx, world)
    staff = make_user(ctx, "analyst@norseq.example.org", UserKind.FACILITY, world.facility)
    secret = _with_totp(ctx, staff)
    signed = _login(client, staff.email, _code(ctx, staff, secret))
    headers = auth(str(signed["token"]))
    listed = client.get("/api/secure/disks", headers=headers)
    assert listed.status_code == 200 and [d["name"] for d in listed.json()] == [disk]
    mine = client.get("/api/me/tokens", headers=headers).json()
    assert [t["second_factor"] for t in mine] == [True]
    # a token made with a token proves no second factor of its own: the zone refuses it
    made = client.post("/api/me/tokens", json={"name": "laptop"}, headers=headers).json()
    assert made["info"]["second_factor"] is False
    assert client.get("/api/secure/disks", headers=auth(made["token"])).status_code == 403


def test_a_wrong_or_missing_code_issues_no_token_and_an_account_without_totp_gets_no_zone_access(
    ctx: Context, client: TestClient
) -> None:
    world = basic_world(ctx)
    _zone(ctx, world)
    staff = make_user(ctx, "analyst@norseq.example.org", UserKind.FACILITY, world.facility)
    secret = _with_totp(ctx, staff)
    right = _code(ctx, staff, secret)
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    for code in (wrong, None):
        answer = client.post(
            "/api/auth/login", json={"email": staff.email, "password": PASSWORD, "totp": code}
        )
        assert answer.status_code == 401
    with ctx.tx() as session:
        assert session.execute(select(ApiToken).where(ApiToken.user_id == staff.id)).first() is None
    # a user who never set up TOTP signs in, but the zone refuses the token
    researcher = make_user(ctx, "researcher@uib.example.org")
    token = str(_login(client, researcher.email, None)["token"])
    assert client.get("/api/projects", headers=auth(token)).status_code == 200
    refused = client.get("/api/secure/projects", headers=auth(token)).json()
    assert refused["details"]["reason"] == "second_factor_required"


def test_disk_changes_over_the_api_by_anyone_but_the_helpdesk_are_refused(
    ctx: Context, client: TestClient
) -> None:
    world = basic_world(ctx)
    disk = _zone(ctx, world)
    staff, helpdesk = token_for(ctx, world.staff), token_for(ctx, world.helpdesk)
    with ctx.tx() as session:  # as if both had signed in with a one-time code
        session.execute(update(ApiToken).values(second_factor=True))
    ends = (utcnow() + timedelta(days=2)).isoformat()
    body = {"facility_project": "p11", "users_project": "p1234", "ends_at": ends}
    denied = client.post("/api/secure/disks", json=body, headers=auth(staff))
    assert denied.status_code == 403 and denied.json()["error"] == "access_denied"
    assert client.post(f"/api/secure/disks/{disk}/destroy", headers=auth(staff)).status_code == 403
    naive = client.post(
        "/api/secure/disks", json=body | {"ends_at": "2030-01-01T00:00:00"}, headers=auth(helpdesk)
    )
    assert naive.status_code == 422 and "ends_at" in naive.text
    bad_id = client.post("/api/secure/disks", json=body | {"users_project": "x1"}, headers=auth(helpdesk))
    assert bad_id.status_code == 404
    assert [d.name for d in secure_disks.visible(ctx, world.helpdesk)] == [disk]
    made = client.post("/api/secure/disks", json=body | {"quota_bytes": "500G"}, headers=auth(helpdesk))
    assert made.status_code == 201 and made.json()["quota_bytes"] == 500 * 2**30
    assert "wrapped" not in made.text and made.json()["state"] == "open"


# --- the CLI ----------------------------------------------------------------------------------------


@pytest.fixture
def cli(live_server: LiveServer, tmp_path: Path) -> Cli:
    return Cli(url=live_server.url, home=tmp_path / "cli")


def test_levere_secure_pubkey_prints_a_key_the_stock_crypt4gh_tool_encrypts_to(
    cli: Cli, live_server: LiveServer, tmp_path: Path
) -> None:
    ctx = live_server.ctx
    world = basic_world(ctx)
    disk = _zone(ctx, world)
    staff = make_user(ctx, "analyst@norseq.example.org", UserKind.FACILITY, world.facility)
    # signed in before two-factor sign-in was set up: the zone is refused, with the CLI's own hint
    cli.ok("analyst", "login", "--email", staff.email, password=PASSWORD)
    line = cli.fails("analyst", "secure", "pubkey", disk)
    assert "second factor" in line and "one-time code" in line
    secret = _with_totp(ctx, staff)
    cli.ok("analyst", "login", "--email", staff.email, "--totp", _code(ctx, staff, secret), password=PASSWORD)
    listed_tokens = cli.json("analyst", "account", "tokens")
    assert sorted(t["second_factor"] for t in listed_tokens) == [False, True]
    assert "two-factor" in cli.ok("analyst", "account", "tokens")
    pem = cli.ok("analyst", "secure", "pubkey", disk)
    assert pem.startswith("-----BEGIN CRYPT4GH PUBLIC KEY-----\n") and pem.endswith(
        "-----END CRYPT4GH PUBLIC KEY-----\n"
    )
    key_file = tmp_path / "disk.pub"
    key_file.write_text(pem)
    plaintext = b"@read1\nACGTACGTTTGA\n+\nIIIIIIIIIIII\n" * 1000
    encrypted = subprocess.run(
        [str(Path(sys.executable).parent / "crypt4gh"), "encrypt", "--recipient_pk", str(key_file)],
        input=plaintext, capture_output=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    assert plaintext[:32] not in encrypted
    # what the stock tool encrypted opens with the disk's private key, unwrapped from the database
    with ctx.tx() as session:
        row = session.execute(select(SharedDisk).where(SharedDisk.name == disk)).scalar_one()
        wrapped, row_id = row.wrapped_private_key, row.id
    assert wrapped is not None
    private = MasterKeys.from_setting(ctx.settings.secure.master_key_file).unwrap(
        wrapped, key_context("shared-disk", row_id)
    )
    src, out = tmp_path / "in.c4gh", tmp_path / "out.txt"
    src.write_bytes(encrypted)
    with src.open("rb") as infile, out.open("wb") as outfile:
        c4gh_lib.decrypt([(0, private.secret_bytes(), None)], infile, outfile)
    assert out.read_bytes() == plaintext
    listed = cli.json("analyst", "secure", "disk", "list")
    assert [(d["name"], d["state"]) for d in listed] == [(disk, "open")]
    shown = cli.ok("analyst", "secure", "disk", "show", disk)
    assert "p11" in shown and "p1234" in shown and "1.0 TiB" in shown
    assert "c4gh-wrap" not in cli.ok("analyst", "--json", "secure", "disk", "show", disk)
