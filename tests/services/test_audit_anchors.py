"""Anchors of the audit chain on long-term storage: removing or rewriting anchored events shows."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from levere.config import AuditSettings, Settings
from levere.context import Context
from levere.db.models import AuditEvent, Counter, User
from levere.domain.errors import AccessDenied, Conflict
from levere.domain.roles import UserKind
from levere.domain.tiers import Tier
from levere.jobs.queue import build_queue
from levere.jobs.tasks import anchor_audit_log
from levere.services import audit, audit_anchors
from levere.storage import LocalSpec
from tests.cli_live import audit_cli
from tests.conftest import LiveServer
from tests.helpers import basic_world, complete_form, make_user, token_for


def raw(ctx: Context, sql: str, **params: Any) -> None:
    with ctx.engine.begin() as conn:
        conn.execute(text(sql), params)


def history(ctx: Context) -> User:
    """A few events; returns a helpdesk operator."""
    from levere.services import applications

    world = basic_world(ctx)
    app = applications.create(ctx, world.staff, complete_form(world.facility.name, world.pi.email))
    applications.submit(ctx, world.pi, str(app.number))
    return world.helpdesk


def head(ctx: Context) -> int:
    with ctx.tx() as session:
        return int(
            session.execute(select(AuditEvent.seq).order_by(AuditEvent.seq.desc()).limit(1)).scalar_one()
        )


def truncate(ctx: Context, count: int = 1) -> None:
    """What someone with write access to the database can do: drop the newest events and lower
    the counter to match, so that the chain that is left is a valid chain."""
    newest = head(ctx)
    raw(ctx, "DELETE FROM audit_events WHERE seq > :s", s=newest - count)
    raw(ctx, "UPDATE counters SET value = value - :n WHERE name = 'audit'", n=count)


def verify(ctx: Context, operator: User) -> audit.ChainReport:
    return audit_anchors.verify_log(ctx, operator)[0]


def test_truncating_anchored_events_is_found_naming_what_is_missing(ctx: Context) -> None:
    operator = history(ctx)
    (anchor,) = audit_anchors.anchor_now(ctx, operator)
    assert anchor.seq == head(ctx) and anchor.where == "longterm"
    report, anchors = audit_anchors.verify_log(ctx, operator)
    assert report.ok and [a.seq for a in anchors] == [anchor.seq]

    truncate(ctx)
    with ctx.tx() as session:
        assert audit.verify_chain(session).ok  # the database alone cannot tell
    report = verify(ctx, operator)
    assert not report.ok and report.first_bad_seq == anchor.seq
    assert f"event {anchor.seq} (anchored on the longterm storage at " in report.problem
    assert f"is missing: the log ends at event {anchor.seq - 1}" in report.problem
    assert "anchored events were removed" in report.problem


def test_rewriting_anchored_history_is_found(ctx: Context) -> None:
    operator = history(ctx)
    (anchor,) = audit_anchors.anchor_now(ctx, operator)
    truncate(ctx, 2)
    # new events take the numbers of the removed ones, with other hashes
    for n in range(2):
        with ctx.tx() as session:
            audit.record(session, None, "test.rewritten", "test", str(n))
    assert head(ctx) == anchor.seq
    report = verify(ctx, operator)
    assert not report.ok and report.first_bad_seq == anchor.seq
    assert f"event {anchor.seq} differs from the one anchored" in report.problem
    assert "rewritten" in report.problem
    # an anchor for that number exists with another hash: levere says so and keeps the old one
    with pytest.raises(Conflict, match=r"already holds an anchor for audit event \d+ with another hash"):
        audit_anchors.anchor_now(ctx, operator)
    assert audit_anchors.latest(ctx.backend(Tier.LONGTERM)) == anchor


def test_events_after_the_last_anchor_are_still_verified_by_the_chain(ctx: Context) -> None:
    operator = history(ctx)
    (anchor,) = audit_anchors.anchor_now(ctx, operator)
    for n in range(3):
        with ctx.tx() as session:
            audit.record(session, None, "test.later", "test", str(n))
    assert verify(ctx, operator).ok
    # changed after the anchor: the chain shows it
    raw(ctx, "UPDATE audit_events SET object_id = 'x' WHERE seq = :s", s=anchor.seq + 2)
    report = verify(ctx, operator)
    assert not report.ok and report.first_bad_seq == anchor.seq + 2 and "altered" in report.problem
    raw(ctx, "DELETE FROM audit_events WHERE seq > :s", s=anchor.seq + 1)
    report = verify(ctx, operator)  # removed without lowering the counter: the counter shows it
    assert not report.ok and "2 event(s) after event" in report.problem
    # what an anchor cannot protect: events after it, removed with the counter lowered to match
    raw(ctx, "UPDATE counters SET value = :v WHERE name = 'audit'", v=anchor.seq + 1)
    assert verify(ctx, operator).ok


def test_anchors_go_write_once_to_the_configured_sink_too(settings: Settings, tmp_path: Path) -> None:
    sink = tmp_path / "worm"
    sink.mkdir()
    spec = LocalSpec(type="local", root=sink, backend_id="anchor-sink")
    ctx = Context.build(settings.model_copy(update={"audit": AuditSettings(anchor_sink=spec)}))
    build_queue(ctx, immediate=True)
    try:
        operator = history(ctx)
        first = audit_anchors.anchor_now(ctx, operator)
        assert [(a.where, a.seq) for a in first] == [("longterm", head(ctx)), ("anchor-sink", head(ctx))]
        stored = sink / audit_anchors.key_for(head(ctx))
        assert stored.is_file() and not stored.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
        # the same head again changes nothing
        assert [a.written_at for a in audit_anchors.anchor_now(ctx, operator)] == [
            a.written_at for a in first
        ]
        # the sink alone is enough to show a truncation, should the long-term anchors be gone
        for path in (settings.data_dir / "storage" / "longterm" / "audit-anchors").iterdir():
            path.unlink()
        truncate(ctx)
        report = verify(ctx, operator)
        assert not report.ok and "anchored on the anchor-sink storage" in report.problem
    finally:
        ctx.close()


def test_the_periodic_task_anchors_when_the_interval_has_passed_and_the_log_grew(ctx: Context) -> None:
    longterm = ctx.backend(Tier.LONGTERM)
    anchor_audit_log(ctx)  # an empty log: nothing to anchor
    assert audit_anchors.latest(longterm) is None
    history(ctx)
    anchor_audit_log(ctx)
    first = audit_anchors.latest(longterm)
    assert first is not None and first.seq == head(ctx)

    with ctx.tx() as session:
        audit.record(session, None, "test.later", "test", "1")
    anchor_audit_log(ctx)  # within the interval (60 minutes): not yet
    assert audit_anchors.latest(longterm) == first
    with ctx.tx() as session:  # an hour later
        row = session.get(Counter, "audit_anchor_written_at")
        assert row is not None
        row.value -= 3600
    anchor_audit_log(ctx)
    second = audit_anchors.latest(longterm)
    assert second is not None and second.seq == first.seq + 1 == head(ctx)
    with ctx.tx() as session:
        row = session.get(Counter, "audit_anchor_written_at")
        assert row is not None
        row.value -= 3600
    anchor_audit_log(ctx)  # due, but nothing new to anchor
    assert [i.key for i in longterm.list(audit_anchors.PREFIX)] == [
        audit_anchors.key_for(first.seq),
        audit_anchors.key_for(second.seq),
    ]


def test_only_the_helpdesk_anchors(ctx: Context) -> None:
    history(ctx)
    outsider = make_user(ctx, "outsider@uni.example.org", password=None)
    with pytest.raises(AccessDenied, match="anchor the audit log"):
        audit_anchors.anchor_now(ctx, outsider)


def _cli(live: LiveServer, token: str, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return audit_cli(live, token, tmp, *args, columns=200)


def test_levere_audit_anchor_and_verify(ctx: Context, live_server: LiveServer, tmp_path: Path) -> None:
    history(ctx)
    operator = make_user(ctx, "operator@levere.test", UserKind.HELPDESK, password=None)
    token = token_for(ctx, operator)
    before = _cli(live_server, token, tmp_path, "verify")
    assert before.returncode == 0 and "no anchor outside the database yet" in before.stdout
    anchored = _cli(live_server, token, tmp_path, "anchor")
    assert anchored.returncode == 0, anchored.stderr
    seq = head(ctx)
    assert f"audit log anchored: event {seq} on longterm" in anchored.stdout
    intact = _cli(live_server, token, tmp_path, "verify")
    assert intact.returncode == 0 and f"holds its anchors: event {seq} on longterm" in intact.stdout

    truncate(ctx)
    damaged = _cli(live_server, token, tmp_path, "verify")
    assert damaged.returncode == 8
    (line,) = damaged.stderr.strip().splitlines()
    assert f"audit log damaged at event {seq}: event {seq} (anchored on the longterm storage" in line
    assert "anchored events were removed" in line


def test_something_else_under_the_anchors_name_is_reported(ctx: Context) -> None:
    operator = history(ctx)
    audit_anchors.anchor_now(ctx, operator)
    planted = ctx.settings.data_dir / "storage" / "longterm" / audit_anchors.key_for(10**6)
    planted.write_bytes(b"not an anchor")
    report = verify(ctx, operator)
    assert not report.ok and f"{audit_anchors.key_for(10**6)} on the longterm storage" in report.problem
    assert "is not a readable anchor" in report.problem
