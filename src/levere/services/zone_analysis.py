"""The standard analysis in the secure zone: a job the facility starts on a shared disk's delivery,
and its reports, stored encrypted with the delivery and read by both sides until release.

Design notes
------------
* The job (a job run of kind ``analysis``, :mod:`levere.jobs.dispatch`) reads each FASTQ file of
  the delivery through the disk's header (:func:`levere.services.zone_files.open_plaintext`), so
  the plaintext exists only in memory while :func:`levere.qc.analyse_fastq` reads it. Progress is
  files done and plaintext bytes read, recorded on the run as it goes.
* A file that cannot be analysed (a damaged body, input that is not FASTQ, no header) is a failure
  of that file, named in the run's report and in the delivery's summary; the other files go on.
  The run ends ``done`` when every file was analysed, else ``failed`` with the files and reasons.
* The reports are files of the delivery under ``levere-qc/`` (:mod:`levere.domain.analysis`):
  one JSON summary for the delivery and one HTML page per FASTQ file, each stored as a zone file
  (:func:`levere.services.zone_store.store_zone_file`), so release moves their headers with the
  rest. A new run replaces the reports of the one before.
* Reading a report: before release through the disk's header, for both sides of the disk; after
  release through the users' secure project's header, for its admins and members (and staff only
  while let in); the facility then gets "released: no access". Every read is an audit event; the
  HTML page is the one place the server hands out plaintext, and only the QC report's.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from levere.context import Context
from levere.db.models import Delivery, JobRun, Project, SecureProject, SharedDisk, StoredFile, User, utcnow
from levere.domain.analysis import SUMMARY_PATH, SUMMARY_SCHEMA, is_fastq, is_report, page_path
from levere.domain.errors import Conflict, LevereError, NoHeader, NotFound
from levere.domain.jobruns import ACTIVE, JobKind, JobRunState, job_run_transition
from levere.domain.paths import check_name, check_relative_path
from levere.domain.roles import Action, allowed, require
from levere.domain.secure import DiskState
from levere.qc import analyse_fastq
from levere.services import audit
from levere.services.jobruns import disk_run, new_run, run_view
from levere.services.secure import subject_for_secure
from levere.services.secure_disks import authorize_write, get_disk, subject_for_disk
from levere.services.views import JobRunView
from levere.services.zone_files import open_plaintext
from levere.services.zone_store import remove_zone_file, store_zone_file

log = logging.getLogger(__name__)

#: plaintext bytes read between two progress updates of the run
PROGRESS_BYTES = 32 << 20
#: a report read back whole (summaries and pages are a few hundred KiB)
MAX_REPORT = 64 << 20
#: failures named in the run's error line
ERRORS_NAMED = 5


# --- views ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class QcFileView:
    """One FASTQ file's analysis: its main figures, or why it could not be analysed."""

    path: str
    #: "done" or "failed"
    state: str
    reads: int
    bases: int
    mean_length: float
    gc_fraction: float
    mean_quality: float
    n_fraction: float
    duplicate_fraction: float
    #: where its HTML page is kept (None for a failed file)
    page: str | None
    #: the error's code and message for a failed file
    error: str = ""
    message: str = ""


@dataclass(frozen=True)
class QcReportView:
    """A delivery's analysis report as the delivery's JSON summary holds it."""

    disk: str
    delivery: str
    job: str
    made_at: datetime
    files: tuple[QcFileView, ...]
    #: the JSON summary itself (schema ``levere.qc.delivery/1``, documented in docs/qc.md)
    summary: dict[str, Any]


@dataclass(frozen=True)
class QcPageView:
    """One FASTQ file's HTML page (self-contained: inline style and SVG plots, no scripts)."""

    disk: str
    delivery: str
    path: str
    html: bytes


def _file_view(entry: dict[str, Any]) -> QcFileView:
    figures = entry.get("summary") or {}
    return QcFileView(
        path=entry["path"],
        state=entry["state"],
        reads=int(figures.get("reads", 0)),
        bases=int(figures.get("bases", 0)),
        mean_length=float(figures.get("length", {}).get("mean", 0.0)),
        gc_fraction=float(figures.get("gc", {}).get("fraction", 0.0)),
        mean_quality=float(figures.get("quality", {}).get("mean", 0.0)),
        n_fraction=float(figures.get("n_content", {}).get("fraction", 0.0)),
        duplicate_fraction=float(figures.get("duplication", {}).get("duplicate_fraction", 0.0)),
        page=entry.get("page"),
        error=entry.get("error", ""),
        message=entry.get("message", ""),
    )


# --- finding a zone delivery ----------------------------------------------------------------


def zone_delivery(session: Session, disk: SharedDisk, name: str) -> Delivery:
    found = session.execute(
        select(Delivery).where(
            Delivery.shared_disk_id == disk.id, Delivery.name == check_name(name, "delivery name")
        )
    ).scalar()
    if found is None:
        raise NotFound(f"shared disk {disk.name} has no delivery {name}")
    return found


def _fastq_files(session: Session, delivery: Delivery) -> list[tuple[str, str, int]]:
    """(id, path, plaintext size) of the delivery's FASTQ files, in path order."""
    rows = session.execute(
        select(StoredFile.id, StoredFile.path, StoredFile.size)
        .where(StoredFile.delivery_id == delivery.id)
        .order_by(StoredFile.path)
    ).all()
    return [(fid, path, size) for fid, path, size in rows if is_fastq(path)]


# --- starting the job -----------------------------------------------------------------------


def request_analysis(ctx: Context, actor: User, disk_name: str, delivery_name: str) -> JobRunView:
    """Start the standard analysis of a delivery on a shared disk (the facility's side, while the
    disk is open): a job run, queued once this commits."""
    with ctx.tx() as session:
        disk = authorize_write(session, actor, disk_name)
        delivery = zone_delivery(session, disk, delivery_name)
        if delivery.released_at is not None:
            raise NoHeader(f"delivery {delivery.name} is released: no access", delivery=delivery.name)
        files = _fastq_files(session, delivery)
        if not files:
            raise Conflict(
                f"delivery {delivery.name} has no FASTQ files (*.fastq, *.fq, *.fastq.gz, *.fq.gz, "
                "optionally .c4gh) to analyse",
                delivery=delivery.name,
            )
        running = session.execute(
            select(JobRun.id, JobRun.kind).where(
                JobRun.delivery_id == delivery.id,
                JobRun.kind.in_([JobKind.ANALYSIS.value, JobKind.RELEASE.value]),
                JobRun.state.in_([s.value for s in ACTIVE]),
            )
        ).first()
        if running is not None:
            # a release takes the disk's headers away as it goes: an analysis would lose its files
            what = "an analysis" if running.kind == JobKind.ANALYSIS else "the release"
            raise Conflict(f"{what} of {delivery.name} is under way (job {running.id})", job=running.id)
        project = session.get(Project, delivery.project_id)
        run = new_run(ctx, session, JobKind.ANALYSIS, project, delivery=delivery, actor=actor)
        run.files_total, run.bytes_total = len(files), sum(size for _, _, size in files)
        audit.record(
            session, actor, "analysis.requested", "delivery", delivery.id,
            after={"job": run.id, "disk": disk.name, "files": len(files)},
        )  # fmt: skip
        return run_view(session, run)


# --- the job --------------------------------------------------------------------------------


class _Counting(io.RawIOBase):
    """Passes a stream through and tells ``progress`` the bytes read, every ``step`` bytes."""

    def __init__(self, stream: io.BufferedReader, progress: Callable[[int], None], step: int) -> None:
        self._stream, self._progress, self._step = stream, progress, step
        self.count = self._reported = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        size = self._stream.readinto(buffer)
        self.count += size
        if self.count - self._reported >= self._step:
            self._progress(self.count - self._reported)
            self._reported = self.count
        return size

    def rest(self) -> int:
        """The bytes read but not reported yet."""
        left, self._reported = self.count - self._reported, self.count
        return left


def _progress(ctx: Context, run_id: str, nbytes: int, *, done: int = 0, failed: int = 0) -> None:
    with ctx.tx() as session:
        run = session.get(JobRun, run_id)
        if run is not None:
            run.bytes_done += nbytes
            run.files_done += done
            run.files_failed += failed


def _start(ctx: Context, run_id: str) -> tuple[str, str, list[tuple[str, str, int]]] | None:
    """Mark the run running and drop the reports of an earlier run; the delivery's id, its disk's
    id and its FASTQ files, or None for a run already finished."""
    with ctx.tx() as session:
        found = disk_run(session, run_id)
        if found is None:
            return None
        run, delivery, disk = found
        if delivery.released_at is not None:
            raise NoHeader(f"delivery {delivery.name} is released: no access", delivery=delivery.name)
        files = _fastq_files(session, delivery)
        run.state = job_run_transition(run.state, JobRunState.RUNNING, f"job {run.id}")
        run.started_at = utcnow()
        run.files_total, run.bytes_total = len(files), sum(size for _, _, size in files)
        run.files_done = run.files_failed = run.bytes_done = 0
        old = session.execute(select(StoredFile).where(StoredFile.delivery_id == delivery.id)).scalars()
        for report in [f for f in old if is_report(f.path)]:
            remove_zone_file(ctx, session, report)
        return delivery.id, disk.id, files


def _analyse_one(ctx: Context, run_id: str, disk_id: str, file_id: str, path: str) -> dict[str, Any]:
    """Analyse one file and store its page; its entry in the delivery's summary."""
    with ctx.tx() as session:
        file, disk = session.get(StoredFile, file_id), session.get(SharedDisk, disk_id)
        if file is None or disk is None:
            raise NotFound(f"{path} is gone")
        plaintext = open_plaintext(ctx, session, file, disk)
        delivery_id = file.delivery_id
    counting = _Counting(plaintext, lambda n: _progress(ctx, run_id, n), PROGRESS_BYTES)
    report = analyse_fastq(io.BufferedReader(counting, 1 << 20), name=path)
    page = page_path(path)
    with ctx.tx() as session:
        delivery = session.get(Delivery, delivery_id)
        assert delivery is not None
        store_zone_file(ctx, session, delivery, page, [report.to_html()])
    _progress(ctx, run_id, counting.rest(), done=1)
    return {"path": path, "state": "done", "page": page, "summary": report.summary()}


def run_analysis(ctx: Context, run_id: str) -> None:
    """One attempt at an analysis run (the job's work, see :mod:`levere.jobs.dispatch`)."""
    started = _start(ctx, run_id)
    if started is None:
        return
    delivery_id, disk_id, files = started
    entries: list[dict[str, Any]] = []
    for file_id, path, _size in files:
        try:
            entries.append(_analyse_one(ctx, run_id, disk_id, file_id, path))
        except LevereError as exc:
            log.warning("analysis %s: %s could not be analysed: %s", run_id, path, exc.code)
            entries.append({"path": path, "state": "failed", "error": exc.code, "message": exc.message})
            _progress(ctx, run_id, 0, failed=1)
    with ctx.tx() as session:
        run = session.get(JobRun, run_id)
        delivery = session.get(Delivery, delivery_id)
        disk = session.get(SharedDisk, disk_id)
        assert run is not None and delivery is not None and disk is not None
        made = utcnow()
        summary = {
            "schema": SUMMARY_SCHEMA,
            "disk": disk.name,
            "delivery": delivery.name,
            "job": run.id,
            "made_at": made.isoformat(),
            "files": entries,
        }
        store_zone_file(ctx, session, delivery, SUMMARY_PATH, [json.dumps(summary).encode() + b"\n"])
        failed = [e for e in entries if e["state"] == "failed"]
        run.report = {
            "summary": SUMMARY_PATH,
            "files": [
                {k: e[k] for k in ("path", "state", "error", "message", "page") if k in e} for e in entries
            ],
        }
        target = JobRunState.FAILED if failed else JobRunState.DONE
        run.state = job_run_transition(run.state, target, f"job {run.id}")
        run.finished_at = made
        if failed:
            named = "; ".join(f"{e['path']}: {e['message']}" for e in failed[:ERRORS_NAMED])
            more = f" (and {len(failed) - ERRORS_NAMED} more)" if len(failed) > ERRORS_NAMED else ""
            run.error = f"{len(failed)} of {len(entries)} file(s) could not be analysed: {named}{more}"
        audit.record(
            session, None, "analysis.finished", "delivery", delivery.id,
            after={"job": run.id, "state": run.state, "files": len(entries), "failed": len(failed)},
        )  # fmt: skip


# --- reading the reports --------------------------------------------------------------------


def _reader(
    session: Session, actor: User, disk: SharedDisk, delivery: Delivery
) -> SharedDisk | SecureProject:
    """Whose header ``actor`` reads the delivery's reports through: the disk's before release (both
    sides), the users' secure project's after it (its admins and members, staff while let in)."""
    if delivery.released_at is None:
        require(subject_for_disk(session, disk, actor), Action.ANALYSIS_READ, f"on shared disk {disk.name}")
        if DiskState(disk.state) is DiskState.DESTROYED:
            raise NoHeader(f"shared disk {disk.name} is destroyed, with its keys", disk=disk.name)
        return disk
    users = disk.users_secure
    subject = subject_for_secure(session, users, actor)
    if not allowed(subject, Action.SECURE_DATA_READ) and allowed(
        subject_for_disk(session, disk, actor), Action.ANALYSIS_READ
    ):
        raise NoHeader(f"delivery {delivery.name} is released: no access", delivery=delivery.name)
    require(subject, Action.SECURE_DATA_READ, f"in {users.identifier}")
    return users


def _read_report(
    ctx: Context, session: Session, delivery: Delivery, holder: SharedDisk | SecureProject, path: str
) -> bytes:
    file = session.execute(
        select(StoredFile).where(StoredFile.delivery_id == delivery.id, StoredFile.path == path)
    ).scalar()
    if file is None:
        raise NotFound(
            f"delivery {delivery.name} has no analysis report {path} (start one with the analysis job)"
        )
    with open_plaintext(ctx, session, file, holder) as plaintext:
        data = plaintext.read(MAX_REPORT + 1)
    if len(data) > MAX_REPORT:
        raise Conflict(f"{path} is larger than an analysis report can be", path=path)
    return data


def qc_report(ctx: Context, actor: User, disk_name: str, delivery_name: str) -> QcReportView:
    """A delivery's analysis report (its JSON summary), decrypted in memory."""
    with ctx.tx() as session:
        disk = get_disk(session, disk_name)
        delivery = zone_delivery(session, disk, delivery_name)
        holder = _reader(session, actor, disk, delivery)
        summary = json.loads(_read_report(ctx, session, delivery, holder, SUMMARY_PATH))
        audit.record(
            session, actor, "analysis.report_read", "delivery", delivery.id,
            after={"disk": disk.name, "job": summary.get("job")},
        )  # fmt: skip
        return QcReportView(
            disk=disk.name,
            delivery=delivery.name,
            job=summary["job"],
            made_at=datetime.fromisoformat(summary["made_at"]),
            files=tuple(_file_view(e) for e in summary["files"]),
            summary=summary,
        )


def qc_page(ctx: Context, actor: User, disk_name: str, delivery_name: str, path: str) -> QcPageView:
    """The HTML page of one FASTQ file's analysis, decrypted in memory for an authorised reader."""
    path = check_relative_path(path)
    with ctx.tx() as session:
        disk = get_disk(session, disk_name)
        delivery = zone_delivery(session, disk, delivery_name)
        holder = _reader(session, actor, disk, delivery)
        html = _read_report(ctx, session, delivery, holder, page_path(path))
        audit.record(
            session, actor, "analysis.page_read", "delivery", delivery.id,
            after={"disk": disk.name, "path": path},
        )  # fmt: skip
        return QcPageView(disk=disk.name, delivery=delivery.name, path=path, html=html)
