"""Rotating the master key: a new key line on top, every stored private key re-wrapped under it,
the old line removed, and every key still opening; the key file stays readable by levere only."""

from __future__ import annotations

import stat
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from levere.cli.main import invoke
from levere.context import Context
from levere.crypt4gh import MasterKeys
from levere.db.models import AuditEvent, SecureProject, SharedDisk, utcnow
from levere.services import secure, secure_disks
from levere.services.secure import key_context
from tests.helpers import basic_world, provisioned_project


def _zone(ctx: Context) -> str:
    world = basic_world(ctx)
    provisioned_project(ctx, world, sensitive=True, secure_project_id="p1234")
    secure.register(ctx, world.helpdesk, "p11", facility=world.facility.name)
    return secure_disks.create(
        ctx,
        world.helpdesk,
        facility_project="p11",
        users_project="p1234",
        ends_at=utcnow() + timedelta(days=9),
    ).name


def _stored(ctx: Context) -> list[tuple[str, str, str | None]]:
    with ctx.tx() as session:
        rows = [
            (key_context("secure-project", p.id), p.wrapped_private_key, p.master_key_id)
            for p in session.execute(select(SecureProject)).scalars()
        ]
        rows += [
            (key_context("shared-disk", d.id), d.wrapped_private_key or "", d.master_key_id)
            for d in session.execute(select(SharedDisk)).scalars()
        ]
    return rows


def test_a_new_key_line_then_rewrap_moves_every_key_and_the_old_line_can_go(
    ctx: Context, capsys: pytest.CaptureFixture[str]
) -> None:
    _zone(ctx)
    path = ctx.settings.secure.master_key_file
    assert path is not None
    before = _stored(ctx)
    assert len(before) == 3 and {kid for _, _, kid in before} == {"test-1"}
    opened = {context: MasterKeys.from_file(path).unwrap(wrapped, context) for context, wrapped, _ in before}

    assert invoke(["master-key", "new", str(path), "--id", "test-2"]) == 0
    out = capsys.readouterr().out
    assert "test-2" in out and "rewrap" in out
    assert path.read_text().splitlines()[0].startswith("test-2 ")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    moved = secure.rewrap_keys(ctx)
    assert (moved.master_key_id, moved.rewrapped, moved.already_current) == ("test-2", 3, 0)
    again = secure.rewrap_keys(ctx)
    assert (again.rewrapped, again.already_current) == (0, 3)

    # with the old line gone, every key still opens, and it is the same key
    path.write_text(
        "\n".join(line for line in path.read_text().splitlines() if not line.startswith("test-1"))
    )
    newer = MasterKeys.from_file(path)
    after = _stored(ctx)
    assert {kid for _, _, kid in after} == {"test-2"}
    for context, wrapped, _ in after:
        assert newer.unwrap(wrapped, context) == opened[context]
    with ctx.tx() as session:
        events = session.execute(
            select(AuditEvent).where(AuditEvent.action == "secure.keys_rewrapped")
        ).scalars()
        assert [e.after for e in events] == [{"rewrapped": 3}]


def test_a_new_key_file_is_made_for_its_owner_only_and_a_readable_one_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "keys" / "master.keys"
    assert invoke(["master-key", "new", str(path), "--id", "first"]) == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert MasterKeys.from_file(path).current_id == "first"

    capsys.readouterr()
    assert invoke(["master-key", "new", str(path), "--id", "first"]) != 0
    assert "already" in capsys.readouterr().err
    path.chmod(0o644)
    content = path.read_text()
    assert invoke(["master-key", "new", str(path), "--id", "second"]) != 0
    assert "chmod 600" in capsys.readouterr().err
    assert path.read_text() == content  # nothing added to a key file others can read
