"""The audit log: every change in the application flow is an event, chained by hash; tampering shows."""

from __future__ import annotations

import json
import subprocess
import threading
from typing import Any

import pytest
from sqlalchemy import func, select, text

from levere.context import Context
from levere.db.models import AuditEvent, User
from levere.domain.errors import AccessDenied, InvalidTransition
from levere.domain.roles import ProjectRole, UserKind
from levere.services import applications, audit, projects
from tests.cli_live import audit_cli
from tests.conftest import LiveServer
from tests.helpers import basic_world, complete_form, make_user, token_for


def events(ctx: Context) -> list[AuditEvent]:
    with ctx.tx() as session:
        return list(session.execute(select(AuditEvent).order_by(AuditEvent.seq)).scalars())


def verify(ctx: Context) -> audit.ChainReport:
    with ctx.tx() as session:
        return audit.verify_chain(session)


def raw(ctx: Context, sql: str, **params: Any) -> None:
    with ctx.engine.begin() as conn:
        conn.execute(text(sql), params)


def json_param(ctx: Context) -> str:
    return "CAST(:j AS JSON)" if ctx.engine.dialect.name == "postgresql" else ":j"


def test_every_step_of_the_flow_is_an_event_with_who_what_before_and_after(ctx: Context) -> None:
    world = basic_world(ctx)
    start = len(events(ctx))
    app = applications.create(ctx, world.staff, complete_form(world.facility.name, world.pi.email))
    ref = str(app.number)
    applications.update(ctx, world.staff, ref, {"grant_id": "RCN-2"})
    applications.submit(ctx, world.pi, ref)
    applications.request_changes(ctx, world.helpdesk, ref, "add WP2")
    applications.update(ctx, world.pi, ref, {"title": "Better title"})
    applications.submit(ctx, world.pi, ref)
    _, project = applications.approve(ctx, world.helpdesk, ref, area_bytes=10**12)
    projects.add_member(ctx, world.pi, project.identifier, "late@uib.example.org", ProjectRole.VIEWER)
    projects.set_role(ctx, world.pi, project.identifier, "late@uib.example.org", ProjectRole.MEMBER)
    projects.remove_member(ctx, world.pi, project.identifier, "late@uib.example.org")
    second = applications.create(ctx, world.pi, complete_form(world.facility.name, world.pi.email))
    applications.submit(ctx, world.pi, str(second.number))
    applications.reject(ctx, world.helpdesk, str(second.number), "duplicate")

    written = events(ctx)[start:]
    flow = [(e.action, e.actor_email) for e in written if e.object_id == app.id]
    assert flow == [
        ("application.created", world.staff.email),
        ("application.edited", world.staff.email),
        ("application.submitted", world.pi.email),
        ("application.changes_requested", world.helpdesk.email),
        ("application.edited", world.pi.email),
        ("application.submitted", world.pi.email),
        ("application.approved", world.helpdesk.email),
    ]
    by_action: dict[str, list[AuditEvent]] = {}
    for e in written:
        by_action.setdefault(e.action, []).append(e)
    edited = by_action["application.edited"][0]
    assert edited.before is not None and edited.after is not None
    assert (edited.before["grant_id"], edited.after["grant_id"]) == ("RCN-123456", "RCN-2")
    submitted = by_action["application.submitted"][0]
    assert (submitted.before["state"], submitted.after["state"]) == ("draft", "submitted")  # type: ignore[index]
    sent_back = by_action["application.changes_requested"][0]
    assert sent_back.after["state"] == "changes_requested" and sent_back.after["reason"] == "add WP2"  # type: ignore[index]
    approved = by_action["application.approved"][0]
    assert approved.before["state"] == "submitted"  # type: ignore[index]
    assert approved.after["project"] == project.identifier  # type: ignore[index]
    assert approved.after["granted"] == {"area": 10**12, "longterm": 2000 * 1024**3}  # type: ignore[index]
    rejected = [e for e in by_action["application.rejected"] if e.object_id == second.id]
    assert rejected[0].after["reason"] == "duplicate"  # type: ignore[index]
    # provisioning: the project, its members (and invitations), the facility
    provisioned = by_action["project.provisioned"][0]
    assert provisioned.object_id == project.id and provisioned.after["identifier"] == project.identifier  # type: ignore[index]
    added = {(e.after or {}).get("email"): (e.after or {}).get("role") for e in by_action["member.added"]}
    assert added[world.pi.email] == "admin" and added["member@uib.example.org"] == "member"
    assert added["late@uib.example.org"] == "viewer"
    assert by_action["project.facility_assigned"][0].after == {"facility": world.facility.name}
    changed = by_action["member.role_changed"][0]
    assert changed.before == {"email": "late@uib.example.org", "role": "viewer"}
    assert changed.after == {"email": "late@uib.example.org", "role": "member"}
    assert by_action["member.removed"][0].before == {"email": "late@uib.example.org", "role": "member"}
    assert "invitation.created" in by_action and "user.created" in by_action
    # every event knows when, who (by id too) and what
    for e in written:
        assert e.at is not None and e.action and e.object_type and e.object_id
    with ctx.tx() as session:
        pi_id = session.execute(select(User.id).where(User.email == world.pi.email)).scalar()
    assert all(e.actor_id == pi_id for e in written if e.actor_email == world.pi.email)
    report = verify(ctx)
    assert report.ok and report.events == len(events(ctx))


def test_a_refused_change_writes_no_event(ctx: Context) -> None:
    world = basic_world(ctx)
    app = applications.create(ctx, world.pi, complete_form(world.facility.name, world.pi.email))
    before = len(events(ctx))
    with pytest.raises(InvalidTransition):
        applications.approve(ctx, world.helpdesk, str(app.number))  # a draft
    with pytest.raises(AccessDenied):
        applications.submit(ctx, world.staff, str(app.number))  # not the PI
    assert len(events(ctx)) == before


def _some_history(ctx: Context) -> list[AuditEvent]:
    world = basic_world(ctx)
    app = applications.create(ctx, world.staff, complete_form(world.facility.name, world.pi.email))
    applications.submit(ctx, world.pi, str(app.number))
    found = events(ctx)
    assert len(found) >= 6 and verify(ctx).ok
    return found


def test_altering_an_events_content_is_found_at_its_seq(ctx: Context) -> None:
    history = _some_history(ctx)
    target = history[len(history) // 2]
    changed = dict(target.after or {}) | {"sneaky": True}
    raw(
        ctx,
        f"UPDATE audit_events SET after = {json_param(ctx)} WHERE seq = :s",
        j=json.dumps(changed),
        s=target.seq,
    )
    report = verify(ctx)
    assert not report.ok and report.first_bad_seq == target.seq
    assert f"event {target.seq} was altered" in report.problem


def test_altering_an_events_actor_is_found_at_its_seq(ctx: Context) -> None:
    history = _some_history(ctx)
    target = history[3]
    raw(ctx, "UPDATE audit_events SET actor_email = 'someone-else@example.org' WHERE seq = :s", s=target.seq)
    report = verify(ctx)
    assert not report.ok and report.first_bad_seq == target.seq


def test_rewriting_an_event_with_a_fresh_hash_breaks_the_next_link(ctx: Context) -> None:
    history = _some_history(ctx)
    target = history[2]
    raw(ctx, "UPDATE audit_events SET hash = :h WHERE seq = :s", h="f" * 64, s=target.seq)
    report = verify(ctx)
    assert not report.ok and report.first_bad_seq == target.seq


def test_deleting_events_is_found(ctx: Context) -> None:
    history = _some_history(ctx)
    newest = history[-1]
    raw(ctx, "DELETE FROM audit_events WHERE seq = :s", s=newest.seq)
    report = verify(ctx)
    assert not report.ok and report.first_bad_seq == newest.seq
    assert "removed" in report.problem
    raw(ctx, "DELETE FROM audit_events WHERE seq = :s", s=history[1].seq)
    report = verify(ctx)
    assert not report.ok and report.first_bad_seq == history[2].seq
    assert f"event {history[1].seq} is missing" in report.problem


def _audit_verify_cli(live: LiveServer, token: str, tmp: Any) -> subprocess.CompletedProcess[str]:
    return audit_cli(live, token, tmp, "verify")


def test_levere_audit_verify(ctx: Context, live_server: LiveServer, tmp_path: Any) -> None:
    history = _some_history(ctx)
    operator = make_user(ctx, "operator@levere.test", UserKind.HELPDESK, password=None)
    token = token_for(ctx, operator)
    done = _audit_verify_cli(live_server, token, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "audit log intact" in done.stdout and "hash chain verified" in done.stdout

    raw(ctx, "UPDATE audit_events SET actor_email = 'x@example.org' WHERE seq = :s", s=history[4].seq)
    damaged = _audit_verify_cli(live_server, token, tmp_path)
    assert damaged.returncode != 0
    lines = damaged.stderr.strip().splitlines()
    assert len(lines) == 1, damaged.stderr
    assert f"audit log damaged at event {history[4].seq}" in lines[0] and "altered" in lines[0]
    assert "Traceback" not in damaged.stderr + damaged.stdout
    # only the helpdesk reads the audit log
    outsider = make_user(ctx, "outsider@uni.example.org", password=None)
    denied = _audit_verify_cli(live_server, token_for(ctx, outsider), tmp_path)
    assert denied.returncode != 0 and "not allowed" in denied.stderr


def test_concurrent_appends_never_fork_the_chain(ctx: Context) -> None:
    """Writers racing from the very first event (no counter row yet) still make one straight chain."""
    threads, each = 6, 8
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            barrier.wait()
            for i in range(each):
                with ctx.tx() as session:
                    audit.record(session, None, "test.appended", "test", f"{n}-{i}", after={"n": n, "i": i})
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=writer, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    assert not errors, errors
    written = events(ctx)
    assert [e.seq for e in written] == list(range(1, threads * each + 1))
    prevs = [e.prev_hash for e in written]
    assert len(set(prevs)) == len(prevs)  # no two events chained onto the same predecessor
    with ctx.tx() as session:
        assert session.execute(select(func.count()).select_from(AuditEvent)).scalar_one() == threads * each
    report = verify(ctx)
    assert report.ok and report.events == threads * each
