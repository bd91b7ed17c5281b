"""Approving an application at the maximum size: levere against a plain bulk insert of the same rows.

levere's part is what `levere applications approve` runs in the service: one transaction that
provisions the project with every member the application lists (the PI plus MAX_MEMBERS people,
all of them new: an account, a membership, an invitation and a welcome note each, and three audit
events). The baseline inserts the same number of rows into the same tables with SQLAlchemy core's
``executemany``, in one transaction, into a second database built by the same migrations: the
least any provisioning could cost. Rounds alternate baseline and levere; each round uses new
addresses. The goal is absolute: approval under 2 s (the median), as the transaction holds the
database's write lock for its whole length.

On SQLite always; on PostgreSQL too when LEVERE_TEST_DATABASE_URL names a server (as the tests
use it, e.g. postgresql+psycopg://postgres@127.0.0.1:5433).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from levere.config import Settings, SmtpSettings
from levere.context import Context
from levere.db.migrate import upgrade
from levere.db.models import (
    Facility,
    Project,
    audit_table,
    invitations_table,
    members_table,
    new_ids,
    notifications_table,
    users_table,
    utcnow,
)
from levere.domain.applications import MAX_MEMBERS, ApplicationForm, RequestedMember
from levere.domain.roles import ProjectRole, UserKind
from levere.services import accounts, applications

GOAL_SECONDS = 2.0


@contextmanager
def databases(kind: str) -> Iterator[tuple[str, str]]:
    """Two empty databases built by the migrations: one for levere, one for the baseline."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="bench-provision-") as tmp:
            urls = (f"sqlite:///{tmp}/levere.db", f"sqlite:///{tmp}/baseline.db")
            for url in urls:
                upgrade(url)
            yield urls
        return
    server = os.environ["LEVERE_TEST_DATABASE_URL"]
    admin = sa.create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    names = [f"levere_bench_{uuid.uuid4().hex[:8]}" for _ in range(2)]
    try:
        with admin.connect() as conn:
            for name in names:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        for name in names:
            upgrade(f"{server}/{name}")
        yield f"{server}/{names[0]}", f"{server}/{names[1]}"
    finally:
        with admin.connect() as conn:
            for name in names:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def addresses(round_no: int) -> list[str]:
    return [f"r{round_no}-person{i:05d}@uib.example.org" for i in range(MAX_MEMBERS)]


def levere_round(ctx: Context, round_no: int) -> float:
    """Seconds of the approving transaction for an application at the maximum."""
    with ctx.tx() as session:
        helpdesk = accounts.get_user_by_email(session, "helpdesk@levere.bench")
        staff = accounts.get_user_by_email(session, "staff@seq.bench")
        pi = accounts.create_user(session, None, f"r{round_no}-pi@uib.example.org")
    roles = (ProjectRole.MEMBER, ProjectRole.VIEWER, ProjectRole.ADMIN)
    form = ApplicationForm(
        title=f"Consortium {round_no}", pi_email=pi.email, data_ownership="UiB", funding_source="RCN",
        description="Many members", facility="seq", quota_area_bytes=2**40, quota_longterm_bytes=2**41,
        members=[RequestedMember(e, roles[i % 3]) for i, e in enumerate(addresses(round_no))],
    )  # fmt: skip
    application = applications.create(ctx, staff, form)
    applications.submit(ctx, pi, str(application.number))
    started = time.perf_counter()
    applications.approve(ctx, helpdesk, str(application.number))
    return time.perf_counter() - started


def baseline_round(engine: sa.Engine, round_no: int) -> float:
    """Seconds to insert the rows of one approval with SQLAlchemy core, no levere code involved."""
    emails = [f"r{round_no}-pi@uib.example.org", *addresses(round_no)]
    n = len(emails)
    now = utcnow()
    user_ids, invitation_ids, note_ids = new_ids(n), new_ids(n), new_ids(n)
    project_id = new_ids(1)[0]
    started = time.perf_counter()
    with engine.begin() as conn:
        first_seq = (conn.execute(sa.select(sa.func.max(audit_table.c.seq))).scalar() or 0) + 1
        conn.execute(sa.insert(Project.__table__), [{
            "id": project_id, "identifier": f"BENCH-{round_no}", "title": "Consortium", "sensitive": False,
            "secure_project_id": "", "sync_mode": "auto", "created_at": now}])  # fmt: skip
        conn.execute(sa.insert(users_table), [
            {"id": i, "email": e, "name": "", "kind": "user", "facility_id": None, "password_hash": None,
             "totp_secret": None, "totp_enabled": False, "totp_last_step": None, "active": True,
             "created_at": now} for i, e in zip(user_ids, emails, strict=True)])  # fmt: skip
        conn.execute(sa.insert(members_table), [
            {"project_id": project_id, "user_id": i, "role": "member", "added_at": now} for i in user_ids])  # fmt: skip
        conn.execute(sa.insert(invitations_table), [
            {"id": i, "email": e, "secret_hash": uuid.uuid4().hex * 2, "project_id": project_id, "role": "member",
             "invited_by_id": None, "created_at": now, "expires_at": now + timedelta(hours=72), "accepted_at": None}
            for i, e in zip(invitation_ids, emails, strict=True)])  # fmt: skip
        conn.execute(sa.insert(notifications_table), [
            {"id": i, "user_id": u, "email": e, "subject": "joined", "body": "welcome " * 80, "created_at": now,
             "read_at": None, "email_state": "disabled", "email_error": ""}
            for i, u, e in zip(note_ids, user_ids, emails, strict=True)])  # fmt: skip
        conn.execute(sa.insert(audit_table), [
            {"seq": first_seq + k, "at": now, "actor_id": None, "actor_email": "system", "action": "member.added",
             "object_type": "project", "object_id": project_id, "before": None, "after": {"email": emails[k % n]},
             "prev_hash": "0" * 64, "hash": uuid.uuid4().hex * 2} for k in range(3 * n)])  # fmt: skip
    return time.perf_counter() - started


def world(ctx: Context) -> None:
    with ctx.tx() as session:
        facility = Facility(name="seq", display_name="Sequencing", contact_email="seq@seq.bench")
        session.add(facility)
        session.flush()
        accounts.create_user(session, None, "helpdesk@levere.bench", kind=UserKind.HELPDESK)
        accounts.create_user(session, None, "staff@seq.bench", kind=UserKind.FACILITY, facility=facility)


def run(kind: str, rounds: int) -> dict[str, float]:
    print(f"== approving an application with {MAX_MEMBERS} members on {kind}", flush=True)
    with databases(kind) as (levere_url, baseline_url), tempfile.TemporaryDirectory() as data:
        settings = Settings(
            data_dir=Path(data), database_url=levere_url, queue_url="memory", smtp=SmtpSettings(enabled=False)
        )
        ctx = Context.build(settings)
        baseline_engine = sa.create_engine(baseline_url)
        try:
            world(ctx)
            times: dict[str, list[float]] = {"baseline": [], "levere": []}
            for i in range(rounds):
                times["baseline"].append(baseline_round(baseline_engine, i))
                times["levere"].append(levere_round(ctx, i))
                print(
                    f"  round {i + 1}: bulk insert {times['baseline'][-1]:.3f} s, "
                    f"levere approve {times['levere'][-1]:.3f} s",
                    flush=True,
                )
        finally:
            baseline_engine.dispose()
            ctx.close()
    base, lev = statistics.median(times["baseline"]), statistics.median(times["levere"])
    ok = lev < GOAL_SECONDS
    print(
        f"approve {MAX_MEMBERS} members on {kind}: levere median {lev:.3f} s, plain bulk insert median "
        f"{base:.3f} s, ratio {lev / base:.1f}x (goal < {GOAL_SECONDS:.0f} s) {'OK' if ok else 'ABOVE GOAL'}",
        flush=True,
    )
    return {"levere_s": lev, "baseline_s": base, "ok": float(ok)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the medians here")
    args = parser.parse_args()
    results = {"sqlite": run("sqlite", args.rounds)}
    if os.environ.get("LEVERE_TEST_DATABASE_URL"):
        results["postgresql"] = run("postgresql", args.rounds)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if all(r["ok"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
