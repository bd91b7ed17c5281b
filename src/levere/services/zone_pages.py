"""What the portal's secure-zone pages show: the shared disks, one disk with its deliveries, files and
analysis reports, the release confirmation, and a users' secure project with its released files and
members. Each is assembled from the zone's own use cases (which check the permission table and
record every read as an audit event) plus what the viewer may do, so templates decide nothing.

Design notes
------------
* A disk's deliveries are listed for everyone who may see the disk; their files and reports only
  for those who may read its data (both sides, until release). A released delivery shows, to the
  facility, the words of ``released_no_access`` instead of its files. An analysis or a release
  under way is shown with its progress; while a release runs, neither is offered again.
* The release confirmation says what will happen from the records as they are now: how many files,
  to which users' secure project, and whether this release empties the disk (its key is then
  destroyed). Reading it is an audit event like every other read in the zone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from levere.context import Context
from levere.db.models import Delivery, JobRun, Project, StoredFile, User, utcnow
from levere.domain.analysis import REPORT_FOLDER, is_report
from levere.domain.deliveries import DeliveryState
from levere.domain.errors import LevereError, NoHeader, NotFound
from levere.domain.jobruns import ACTIVE, JobKind
from levere.domain.roles import Action, allowed
from levere.domain.secure import DISK_WORDS, DiskState, effective_state
from levere.services import audit, identity_keys, secure, secure_disks, zone_access, zone_analysis, zone_files
from levere.services.jobruns import run_views
from levere.services.secure import MemberView, SecureProjectView, authorize_secure, subject_for_secure
from levere.services.secure_disks import DiskView, authorize_disk, subject_for_disk
from levere.services.views import JobRunView, RecipientKeyView
from levere.services.zone_analysis import QcReportView
from levere.services.zone_files import ZoneFileView


@dataclass(frozen=True)
class DiskList:
    disks: tuple[DiskView, ...]
    secure_projects: tuple[SecureProjectView, ...]


def disk_list(ctx: Context, user: User) -> DiskList:
    """The shared disks and secure projects ``user`` may see (each listing audited by its use case)."""
    return DiskList(tuple(secure_disks.visible(ctx, user)), tuple(secure.visible(ctx, user)))


@dataclass(frozen=True)
class DiskDelivery:
    """A delivery on a shared disk as its page shows it."""

    name: str
    project: str
    state: str
    released_at: datetime | None
    file_count: int
    #: the files (plaintext sizes and checksums), for those who may read the disk's data
    files: tuple[ZoneFileView, ...]
    #: the analysis report's figures, if there is one and the viewer may read it
    report: QcReportView | None
    #: why the viewer sees no files: the ``released_no_access`` words, or "" when none apply
    no_access: str
    may_analyse: bool
    may_release: bool
    #: the delivery's analysis and release runs that are queued or under way (progress in files)
    running: tuple[JobRunView, ...] = ()


@dataclass(frozen=True)
class DiskScreen:
    disk: DiskView
    state_words: str
    deliveries: tuple[DiskDelivery, ...]
    #: the viewer may read the users' secure project (a link to it is shown)
    may_see_users_project: bool


def _reports_and_files(
    ctx: Context, user: User, disk: str, delivery: str, released: bool, may_read: bool, may_report: bool
) -> tuple[tuple[ZoneFileView, ...], QcReportView | None]:
    if released or not may_read:
        return (), None
    listed = zone_files.disk_contents(ctx, user, disk, delivery, to_read=True)
    files = tuple(f for f in listed.files if not is_report(f.path))
    report = None
    if may_report:
        try:
            report = zone_analysis.qc_report(ctx, user, disk, delivery)
        except NotFound:  # no analysis has run yet
            report = None
        except NoHeader:  # the disk was destroyed with its keys: its files are listed, never read
            report = None
    return files, report


def disk_page(ctx: Context, user: User, name: str) -> DiskScreen:
    """A shared disk with its deliveries; files and reports for those who may read them."""
    shown = secure_disks.show(ctx, user, name)  # DISK_READ, audited
    now = utcnow()
    with ctx.tx() as session:
        disk = authorize_disk(session, user, name, Action.DISK_READ)
        subject = subject_for_disk(session, disk, user)
        open_now = effective_state(DiskState(disk.state), disk.ends_at, now) is DiskState.OPEN
        rows = session.execute(
            select(Delivery, Project.identifier, func.count(StoredFile.id))
            .join(Project, Project.id == Delivery.project_id)
            # the files as delivered: the analysis' reports are shown as the report
            .outerjoin(
                StoredFile,
                and_(StoredFile.delivery_id == Delivery.id, ~StoredFile.path.like(f"{REPORT_FOLDER}/%")),
            )
            .where(Delivery.shared_disk_id == disk.id)
            .group_by(Delivery.id, Project.identifier)
            .order_by(Delivery.created_at, Delivery.name)
        ).all()
        found = [(d.name, project, d.state, d.released_at, count) for d, project, count in rows]
        users_side = allowed(subject_for_secure(session, disk.users_secure, user), Action.SECURE_READ)
        released_words = {
            d.name: _released_words(session, user, d) for d, _, _ in rows if d.released_at is not None
        }
        active = session.execute(
            select(JobRun)
            .where(
                JobRun.delivery_id.in_([d.id for d, _, _ in rows]),
                JobRun.kind.in_([JobKind.ANALYSIS.value, JobKind.RELEASE.value]),
                JobRun.state.in_([s.value for s in ACTIVE]),
            )
            .order_by(JobRun.created_at)
        ).scalars()
        running: dict[str, list[JobRunView]] = {}
        for view in run_views(session, list(active)):
            running.setdefault(view.delivery or "", []).append(view)
    may_read = allowed(subject, Action.DISK_DATA_READ)
    may_report = allowed(subject, Action.ANALYSIS_READ)
    may_write = allowed(subject, Action.DISK_WRITE) and open_now
    may_release = allowed(subject, Action.DISK_RELEASE)
    deliveries = []
    for delivery, project, state, released_at, count in found:
        released = released_at is not None
        files, report = _reports_and_files(ctx, user, name, delivery, released, may_read, may_report)
        jobs = tuple(running.get(delivery, ()))
        releasing = any(j.kind is JobKind.RELEASE for j in jobs)
        deliveries.append(
            DiskDelivery(
                name=delivery, project=project, state=state, released_at=released_at, file_count=count,
                files=files, report=report, no_access=released_words.get(delivery, ""),
                may_analyse=may_write and not released and not releasing,
                may_release=may_release and not released and not releasing
                and state == DeliveryState.SEALED
                and DiskState(shown.state) in (DiskState.OPEN, DiskState.EXPIRED),
                running=jobs,
            )
        )  # fmt: skip
    return DiskScreen(
        disk=shown,
        state_words=DISK_WORDS[DiskState(shown.state)],
        deliveries=tuple(deliveries),
        may_see_users_project=users_side,
    )


def _released_words(session: Session, user: User, delivery: Delivery) -> str:
    """The facility's "released: no access" in full; "" for whoever still reads the delivery."""
    try:
        zone_access.refuse_released(session, user, delivery)
    except LevereError as exc:
        return exc.message
    return ""


@dataclass(frozen=True)
class ReleasePreview:
    """What releasing a delivery will do, in the numbers the confirmation page states."""

    disk: str
    delivery: str
    users_project: str
    files: int  # with the analysis' reports, which go with the delivery
    reports: int
    bytes: int
    #: no other delivery on the disk is left unreleased: the disk's key is destroyed afterwards
    empties_disk: bool


def release_preview(ctx: Context, user: User, name: str, delivery_name: str) -> ReleasePreview:
    """The confirmation of a release (the facility's side only): nothing changes here."""
    with ctx.tx() as session:
        disk = authorize_disk(session, user, name, Action.DISK_RELEASE)
        delivery = session.execute(
            select(Delivery).where(Delivery.shared_disk_id == disk.id, Delivery.name == delivery_name.strip())
        ).scalar()
        if delivery is None:
            raise NotFound(f"no delivery {delivery_name.strip()[:100]} on shared disk {disk.name}")
        zone_access.refuse_released(session, user, delivery)
        count, size = session.execute(
            select(func.count(StoredFile.id), func.coalesce(func.sum(StoredFile.size), 0)).where(
                StoredFile.delivery_id == delivery.id
            )
        ).one()
        reports = session.execute(
            select(func.count(StoredFile.id)).where(
                StoredFile.delivery_id == delivery.id, StoredFile.path.like(f"{REPORT_FOLDER}/%")
            )
        ).scalar_one()
        others = session.execute(
            select(func.count())
            .select_from(Delivery)
            .where(
                Delivery.shared_disk_id == disk.id,
                Delivery.released_at.is_(None),
                Delivery.id != delivery.id,
            )
        ).scalar_one()
        audit.record(
            session, user, "delivery.release_previewed", "delivery", delivery.id,
            after={"disk": disk.name, "files": count},
        )  # fmt: skip
        return ReleasePreview(
            disk=disk.name,
            delivery=delivery.name,
            users_project=disk.users_secure.identifier,
            files=int(count),
            reports=int(reports),
            bytes=int(size),
            empties_disk=others == 0,
        )


@dataclass(frozen=True)
class SecureProjectScreen:
    project: SecureProjectView
    #: released files (DELIVERY/PATH), for those who may read the project's data
    files: tuple[ZoneFileView, ...]
    may_read: bool
    members: tuple[MemberView, ...]
    may_list_members: bool
    may_manage_members: bool
    #: the Crypt4GH keys the viewer's sign-in identities released: downloads' default recipients
    keys: tuple[RecipientKeyView, ...]


def secure_project_page(ctx: Context, user: User, identifier: str) -> SecureProjectScreen:
    shown = secure.show(ctx, user, identifier)  # SECURE_READ, audited
    with ctx.tx() as session:
        found = authorize_secure(session, user, identifier, Action.SECURE_READ)
        subject = subject_for_secure(session, found, user)
    may_read = allowed(subject, Action.SECURE_DATA_READ) and shown.kind == "users"
    may_list = allowed(subject, Action.SECURE_MEMBER_LIST)
    files = tuple(zone_access.secure_files(ctx, user, identifier)) if may_read else ()
    return SecureProjectScreen(
        project=shown,
        files=files,
        may_read=may_read,
        members=tuple(secure.list_members(ctx, user, identifier)) if may_list else (),
        may_list_members=may_list,
        may_manage_members=allowed(subject, Action.SECURE_MEMBER_MANAGE) and shown.kind == "users",
        keys=tuple(identity_keys.default_recipient_keys(ctx, user)),
    )
