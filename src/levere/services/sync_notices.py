"""Telling people about deliveries on long-term storage: safely synced, or failed (once each)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from levere.context import Context
from levere.db.models import Delivery, Project, Replica, StoredFile, User
from levere.domain import units
from levere.domain.replicas import PROBLEMS, UNDER_WAY, ReplicaState
from levere.domain.tiers import Tier
from levere.domain.units import format_size
from levere.services import accounts, audit, notify, projects

if TYPE_CHECKING:
    from levere.dataplane import Scope

NO_SYNC = {"synchronize_session": False}


def concerned(session: Session, project: Project) -> list[User]:
    """Who hears about a project's long-term storage: its admins and the helpdesk."""
    admins = [m.user for m in projects.members(session, project) if m.role == "admin"]
    return admins + accounts.helpdesk_operators(session)


def delivery_synced(session: Session, delivery_id: str, longterm: Tier) -> bool:
    """Every file of the delivery is present on its long-term tier (``longterm``). This runs after every batch,
    so the usual answer ("not yet") comes from the first row of an index walk over the replicas
    still waiting, not from a scan of the delivery's files."""
    waiting = (
        select(Replica.id)
        .join(StoredFile, StoredFile.id == Replica.file_id)
        .where(
            Replica.tier == longterm,
            Replica.state.in_((*UNDER_WAY, *PROBLEMS)),  # not (yet) a present copy
            StoredFile.delivery_id == delivery_id,
        )
        .limit(1)
    )
    if session.execute(waiting).first() is not None:
        return False
    in_delivery = StoredFile.delivery_id == delivery_id
    any_file = select(StoredFile.id).where(in_delivery).limit(1)
    not_there = (
        select(StoredFile.id)
        .where(in_delivery)
        .where(
            ~select(Replica.id)
            .where(
                Replica.file_id == StoredFile.id,
                Replica.tier == longterm,
                Replica.state == ReplicaState.PRESENT,
            )
            .exists()
        )
        .limit(1)
    )
    return session.execute(any_file).first() is not None and session.execute(not_there).first() is None


def _tell_once(session: Session, delivery_id: str, outcome: str, allowed_before: tuple[str, ...]) -> bool:
    """Move the delivery's ``sync_notified`` to ``outcome``; True for the one caller that did."""
    changed = session.execute(
        update(Delivery)
        .where(Delivery.id == delivery_id, Delivery.sync_notified.in_(allowed_before))
        .values(sync_notified=outcome)
        .returning(Delivery.id),
        execution_options=NO_SYNC,
    ).scalar()
    return changed is not None


def announce_if_synced(ctx: Context, session: Session, delivery_id: str, longterm: Tier) -> None:
    if not delivery_synced(session, delivery_id, longterm) or not _tell_once(
        session, delivery_id, "synced", ("", "failed")
    ):
        return
    delivery = session.get(Delivery, delivery_id)
    assert delivery is not None
    project = session.get(Project, delivery.project_id)
    assert project is not None
    count, size = session.execute(
        select(func.count(), func.coalesce(func.sum(StoredFile.size), 0)).where(
            StoredFile.delivery_id == delivery_id
        )
    ).one()
    audit.record(
        session, None, "delivery.synced", "delivery", delivery.id,
        after={"project": project.identifier, "delivery": delivery.name, "files": count, "bytes": size},
    )  # fmt: skip
    where = f"{project.identifier}/{delivery.name}"
    notify.notify(
        ctx, session, concerned(session, project),
        f"[levere] {where} is safely on long-term storage",
        f"All {units.count(count, 'file')} ({format_size(size)}) of delivery {delivery.name} in project "
        f"{project.identifier} ({project.title}) were copied to long-term storage and verified "
        f"against their SHA-256 and MD5 checksums.\n\n"
        f"The project area copy can now be freed to make room:  levere free {project.identifier} {delivery.name}\n"
        f"and brought back, verified, whenever it is needed:  levere restore {project.identifier} {delivery.name}\n",
    )  # fmt: skip


def announce_failures(ctx: Context, session: Session, scope: Scope) -> None:
    """Tell the people concerned about each delivery in scope whose sync failed (once each)."""
    query = (
        select(StoredFile.delivery_id, func.count())
        .join(Replica, Replica.file_id == StoredFile.id)
        .where(Replica.tier == scope.target, Replica.state == ReplicaState.FAILED)
        .group_by(StoredFile.delivery_id)
    )
    project = session.get(Project, scope.project_id)
    assert project is not None
    for delivery_id, count in session.execute(scope.files(query)).all():
        if not _tell_once(session, delivery_id, "failed", ("",)):
            continue
        delivery = session.get(Delivery, delivery_id)
        assert delivery is not None
        reasons = session.execute(
            select(StoredFile.path, Replica.reason)
            .join(Replica, Replica.file_id == StoredFile.id)
            .where(
                StoredFile.delivery_id == delivery_id,
                Replica.tier == scope.target,
                Replica.state == ReplicaState.FAILED,
            )
            .order_by(StoredFile.path)
            .limit(10)
        ).all()
        listed = "\n".join(f"  {delivery.name}/{path}: {reason}" for path, reason in reasons)
        audit.record(
            session, None, "delivery.sync_failed", "delivery", delivery.id,
            after={"project": project.identifier, "delivery": delivery.name, "failed_files": count},
        )  # fmt: skip
        notify.notify(
            ctx, session, concerned(session, project),
            f"[levere] Sync of {project.identifier}/{delivery.name} to long-term storage failed",
            f"{units.count(count, 'file')} of delivery {delivery.name} in project {project.identifier} could not be "
            f"copied to long-term storage after every retry:\n{listed}\n\n"
            f"Nothing was lost: the project area still holds every file. See the details with\n"
            f"  levere status {project.identifier}\nand, once the cause is fixed, try again with\n"
            f"  levere sync {project.identifier} {delivery.name}\n",
        )  # fmt: skip
