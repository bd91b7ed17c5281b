"""The ``levere`` command line, end to end: a real subprocess against the API on a loopback port."""

from __future__ import annotations

import re
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyotp
import pytest
import sqlalchemy as sa

from levere.domain.roles import UserKind
from tests.cli_live import Cli, _base_env
from tests.conftest import LiveServer, Mailbox, body_of, free_port
from tests.helpers import PASSWORD, make_user

OPERATOR = "operator@levere.test"
PI = "pi@uni.example.org"
STAFF = "staff@seq-a.example.org"


@pytest.fixture
def cli(live_server: LiveServer, tmp_path: Path) -> Cli:
    return Cli(url=live_server.url, home=tmp_path / "cli")


def _link(message: Any) -> str:
    found = re.search(r"http://levere\.test/invite/\S+", body_of(message))
    assert found
    return found.group(0)


def test_init_creates_the_first_operator_once(tmp_path: Path) -> None:
    db = tmp_path / "fresh" / "levere.db"
    env = _base_env() | {
        "LEVERE_DATABASE_URL": f"sqlite:///{db}",
        "LEVERE_DATA_DIR": str(tmp_path / "data"),
    }

    def init(password: str | None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "levere.cli.main", "init", "--email", OPERATOR, "--name", "Op"],
            env=env | ({"LEVERE_PASSWORD": password} if password else {}),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    missing = init(None)
    assert missing.returncode != 0 and "LEVERE_PASSWORD" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1 and "Traceback" not in missing.stderr
    first = init("first password 1")
    assert first.returncode == 0, first.stderr
    assert "helpdesk operator operator@levere.test created" in first.stdout
    again = init("another password 2")
    assert again.returncode == 0 and "already exists" in again.stdout
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT email, kind, password_hash FROM users")).all()
        version = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    engine.dispose()
    assert [(r[0], r[1]) for r in rows] == [(OPERATOR, "helpdesk")]
    assert rows[0][2].startswith("$argon2id$")  # the first password stays
    assert version


def _sign_in_operator(cli: Cli) -> None:
    out = cli.ok("op", "login", "--email", OPERATOR, password=PASSWORD)
    assert f"signed in as {OPERATOR}" in out and "totp-enrol" in out
    assert stat.S_IMODE(cli.config("op").stat().st_mode) == 0o600
    line = cli.fails("op", "applications", "list", "--queue")
    assert "set up two-factor sign-in first" in line
    uri = cli.json("op", "account", "totp-enrol")["otpauth_uri"]
    totp = pyotp.parse_uri(uri)
    assert isinstance(totp, pyotp.TOTP)
    now = time.time()  # this step's code confirms, the next step's signs in (see test_accounts)
    out = cli.ok("op", "account", "totp-confirm", totp.at(now))
    # the enrol-only sign-in is now a full one, and the hint names every option it needs
    assert "now has a full token" in out and f"'levere login --email {OPERATOR} --totp CODE'" in out
    assert isinstance(cli.json("op", "applications", "list", "--queue"), list)
    assert stat.S_IMODE(cli.config("op").stat().st_mode) == 0o600
    line = cli.fails("op", "login", "--email", OPERATOR, password=PASSWORD)
    assert "one-time code" in line and "give the code with --totp CODE" in line
    line = cli.fails("op", "login", "--email", OPERATOR, "--totp", totp.at(now), password=PASSWORD)
    assert line == "error: this code was already used; wait for the next one"
    cli.ok("op", "login", "--email", OPERATOR, "--totp", totp.at(now + 30), password=PASSWORD)
    assert stat.S_IMODE(cli.config("op").stat().st_mode) == 0o600


def _write_forms(tmp: Path) -> tuple[Path, Path]:
    toml_form = tmp / "form.toml"
    toml_form.write_text(
        "[application]\n"
        'title = "From TOML"\n'
        f'pi_email = "{PI}"\n'
        'data_ownership = "University of Oslo"\n'
        'funding_source = "RCN"\n'
        'grant_id = "RCN-7"\n'
        'description = "Cod"\n'
        'facility = "seq-a"\n'
        'quota_area_bytes = "100G"\n'
        'quota_longterm_bytes = "1T"\n'
        'members = ["toml-member@uni.example.org:viewer"]\n'
    )
    yaml_form = tmp / "form.yaml"
    yaml_form.write_text(
        "title: From YAML\n"
        "data_ownership: University of Oslo\n"
        "funding_source: RCN\n"
        "description: Salmon\n"
        "facility: seq-a\n"
        "quota_area_bytes: 50G\n"
        "quota_longterm_bytes: 1073741824\n"
        "sensitive: true\n"
        "secure_project_id: p1234\n"
        "members:\n"
        "  - email: yaml-member@uni.example.org\n"
        "    role: admin\n"
    )
    return toml_form, yaml_form


def test_the_whole_flow_from_the_command_line(
    cli: Cli, live_server: LiveServer, mailbox: Mailbox, tmp_path: Path
) -> None:
    ctx = live_server.ctx
    make_user(ctx, OPERATOR, UserKind.HELPDESK)
    make_user(ctx, PI)
    _sign_in_operator(cli)

    # facilities
    out = cli.ok(
        "op",
        "facilities",
        "create",
        "seq-a",
        "--contact",
        "contact@seq-a.example.org",
        "--display-name",
        "Sequencing A",
    )
    assert "facility seq-a created" in out
    assert [f["name"] for f in cli.json("op", "facilities", "list")] == ["seq-a"]
    assert "Sequencing A" in cli.ok("op", "facilities", "list")
    staff = cli.json("op", "facilities", "add-staff", "seq-a", STAFF, "--name", "Kari")
    assert staff["kind"] == "facility" and staff["has_password"] is False
    link = _link(mailbox.wait_for(STAFF, "Your levere account"))
    cli.ok("staff", "account", "accept-invite", link, "--url", cli.url, password="staff password 1")
    cli.ok("staff", "login", "--email", STAFF, password="staff password 1")
    cli.ok("pi", "login", "--email", PI, password=PASSWORD)

    # applications: from flags (staff for the PI), from TOML and from YAML (the PI)
    out = cli.ok(
        "staff", "apply", "--title", "From flags", "--pi", PI, "--data-ownership", "UiO", "--funding-source", "RCN",
        "--grant-id", "RCN-1", "--description", "Lice", "--facility", "seq-a", "--area-quota", "500G",
        "--longterm-quota", "2T", "--member", "flag-member@uni.example.org:member",
    )  # fmt: skip
    assert "saved as a draft" in out and "From flags" in out
    toml_form, yaml_form = _write_forms(tmp_path)
    from_toml = cli.json("pi", "apply", "--file", str(toml_form))
    assert from_toml["title"] == "From TOML" and from_toml["quota_area_bytes"] == 100 * 1024**3
    assert from_toml["members"] == [{"email": "toml-member@uni.example.org", "role": "viewer"}]
    from_yaml = cli.json("pi", "apply", "-f", str(yaml_form), "--submit")
    assert from_yaml["state"] == "submitted" and from_yaml["pi_email"] == PI
    assert from_yaml["secure_project_id"] == "p1234" and from_yaml["quota_longterm_bytes"] == 1024**3

    listed = cli.json("pi", "applications", "list")
    numbers = {a["title"]: str(a["number"]) for a in listed}
    assert set(numbers) == {"From flags", "From TOML", "From YAML"}
    flags_no, toml_no, yaml_no = numbers["From flags"], numbers["From TOML"], numbers["From YAML"]
    shown = cli.ok("pi", "applications", "show", flags_no)
    assert (
        "From flags" in shown
        and "500.0 GiB area" in shown
        and "flag-member@uni.example.org (member)" in shown
    )
    assert "submitted" in cli.ok("pi", "applications", "submit", flags_no)
    cli.ok("pi", "applications", "submit", toml_no)
    assert "From flags" in cli.ok("staff", "applications", "list")  # the facility follows its drafts

    queue = cli.json("op", "applications", "list", "--queue")
    assert {str(a["number"]) for a in queue} == {flags_no, toml_no, yaml_no}
    project = cli.json(
        "op", "applications", "approve", flags_no, "--area-quota", "400G", "--comment", "start small"
    )
    identifier = project["identifier"]
    assert {q["tier"]: q["limit_bytes"] for q in project["quotas"]}["area"] == 400 * 1024**3
    assert "rejected" in cli.ok("op", "applications", "reject", yaml_no, "--reason", "no secure project yet")
    assert "sent back" in cli.ok("op", "applications", "request-changes", toml_no, "--reason", "add WP2")
    assert cli.json("pi", "applications", "show", toml_no)["state"] == "changes_requested"

    # projects and members
    assert identifier in cli.ok("pi", "projects", "list")
    [mine] = cli.json("pi", "projects", "list")
    assert mine["identifier"] == identifier and mine["my_role"] == "admin"
    shown = cli.ok("pi", "projects", "show", identifier)
    assert "flag-member@uni.example.org" in shown and "400.0 GiB" in shown and "seq-a" in shown
    out = cli.ok("pi", "members", "add", identifier, "new.person@uni.example.org", "--role", "viewer")
    assert "added" in out and "invitation e-mailed" in out
    assert (
        cli.json("pi", "members", "set-role", identifier, "new.person@uni.example.org", "member")["role"]
        == "member"
    )
    members = {m["email"]: m["role"] for m in cli.json("pi", "members", "list", identifier)}
    assert members == {
        PI: "admin",
        "flag-member@uni.example.org": "member",
        "new.person@uni.example.org": "member",
    }
    assert "removed" in cli.ok("pi", "members", "remove", identifier, "new.person@uni.example.org")
    assert "new.person@uni.example.org" not in cli.ok("pi", "members", "list", identifier)

    # tokens
    tokens = cli.json("pi", "account", "tokens")
    assert len(tokens) == 1 and tokens[0]["name"] == "cli"
    created = cli.run("pi", "account", "token-create", "pipeline", "--scope", "read")
    assert created.returncode == 0
    pipeline_token = created.stdout.split()[0]
    assert pipeline_token.startswith("lvr_") and "shown once" in created.stdout
    pipeline_id = pipeline_token.split("_")[1]
    assert "pipeline" in cli.ok("pi", "account", "tokens")
    read_only = {"LEVERE_TOKEN": pipeline_token}
    assert PI in cli.ok("pi", "members", "list", identifier, env=read_only)
    line = cli.fails("pi", "members", "add", identifier, "x@uni.example.org", env=read_only)
    assert "lacks the 'write' scope" in line
    cli.ok("pi", "account", "token-revoke", pipeline_id)
    line = cli.fails("pi", "projects", "list", env={"LEVERE_TOKEN": pipeline_token})
    assert "revoked" in line

    # --json gives every listing to scripts
    assert cli.json("pi", "account", "show")["email"] == PI
    notes = cli.json("pi", "account", "notifications")
    assert any(f"approved: project {identifier}" in n["subject"] for n in notes)

    # the audit log saw all of it
    assert "audit log intact" in cli.ok("op", "audit", "verify")
    assert cli.json("op", "audit", "verify")["ok"] is True

    # the token is in no output but token-create's, and only in files that are private
    secrets = [pipeline_token] + [
        re.search(r'token = "([^"]+)"', cli.config(who).read_text()).group(1)  # type: ignore[union-attr]
        for who in ("op", "pi", "staff")
    ]
    for args, output in cli.outputs:
        if args[:2] == ["account", "token-create"]:
            continue
        for secret in secrets:
            assert secret not in output, args
    for who in ("op", "pi", "staff"):
        assert stat.S_IMODE(cli.config(who).stat().st_mode) == 0o600


def test_errors_are_one_line_and_a_non_zero_exit(cli: Cli, live_server: LiveServer) -> None:
    ctx = live_server.ctx
    make_user(ctx, PI)
    line = cli.fails("pi", "login", "--email", PI, password="wrong password")
    assert "wrong e-mail or password" in line
    line = cli.fails("pi", "login", "--email", PI)  # no LEVERE_PASSWORD, no terminal to ask on
    assert "LEVERE_PASSWORD" in line
    line = cli.fails("pi", "projects", "list")
    assert "not signed in" in line and "levere login" in line
    cli.ok("pi", "login", "--email", PI, password=PASSWORD)
    done = cli.run("pi", "applications", "show", "999")
    assert done.returncode == 4 and done.stderr.strip() == "error: no application 999"
    number = str(cli.json("pi", "apply", "--title", "Mine")["number"])
    line = cli.fails("pi", "applications", "approve", number)
    assert "not allowed to review application" in line
    line = cli.fails("pi", "applications", "submit", number)
    assert "invalid input" in line and "data_ownership" in line
    line = cli.fails("pi", "apply", "--file", "/nonexistent/form.toml")
    assert "cannot read" in line
    line = cli.fails("pi", "projects", "list", env={"LEVERE_URL": f"http://127.0.0.1:{free_port()}"})
    assert "cannot reach levere" in line
    cli.config("pi").write_text("this is = not [ toml")
    line = cli.fails("pi", "projects", "list")
    assert "cannot read the saved sign-in" in line
