"""``levere deliver``'s engine: from a run folder to a sealed delivery, resumable at every step.

Design notes
------------
Everything that can be checked locally is checked before the first request that changes anything:
the folder scan (links, names), the checksum file (syntax, files it lists). Then the delivery is
opened, or found open from an earlier run: what it already holds is compared with the folder (same
size, and the same MD5 where the checksum file lists one) and not sent again, and its unfinished
uploads are resumed from the service's offset. Large files go through tus, several at a time; small
files go in tar batches, a couple of streams at a time. Every file's checksums are compared with the
service's as it answers for it, and before sealing the delivery's totals are compared with the folder,
so that a seal only ever covers exactly the folder's bytes. A delivery that cannot fit in the quota
is refused before anything is sent (the service, which reserves space before each byte, stays the
judge).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from levere.cli.client import Client
from levere.cli.delivery import c4gh
from levere.cli.delivery.batch import BatchSender, split
from levere.cli.delivery.hashing import Checksums
from levere.cli.delivery.planning import (
    ChecksumSource,
    Plan,
    check_listed,
    choose_checksum_file,
    coverage_of,
    for_encrypted,
    make_plan,
)
from levere.cli.delivery.progress import Reporter
from levere.cli.delivery.retry import Retry, wait_all
from levere.cli.delivery.scan import LocalFile, scan_folder
from levere.cli.delivery.tus import CHUNK, PIECE, Expected, TusUpload
from levere.domain.checksum_coverage import KEEP_NAMES, ChecksumCoverage
from levere.domain.errors import (
    AccessDenied,
    ChecksumFileRequired,
    ChecksumMismatch,
    Conflict,
    LevereError,
    NotFound,
    QuotaExceeded,
    StorageFull,
)
from levere.domain.paths import check_name
from levere.domain.units import count, format_size

MiB = 1024 * 1024
SMALL_FILE = 1 * MiB


@dataclass
class Options:
    jobs: int = 4
    #: tar streams of small files at once. One: the service parses and records a stream on one
    #: thread (its children hash and write the files); a second stream only makes two threads take
    #: turns, and is slower (docs/benchmarks.md)
    batch_streams: int = 1
    small_file: int = SMALL_FILE
    chunk: int = CHUNK
    piece: int = PIECE
    seal: bool = True
    retry: Retry = field(default_factory=Retry)
    #: the shared disk a sensitive project's delivery lands on (small plaintext files still go in
    #: tar batches, which the service encrypts file by file; Crypt4GH files each go by tus)
    disk: str | None = None


@dataclass
class Receipt:
    project: str
    delivery: dict[str, Any]
    sent_files: int
    sent_bytes: int
    seconds: float
    already_sealed: bool = False
    sealed: bool = True
    checksum_file: str | None = None
    service_verified: bool = False  # the service checked the checksum file again when sealing
    notes: list[str] = field(default_factory=list)
    #: what the checksum file covered, as counted here (the service's record wins once sealed)
    coverage: ChecksumCoverage | None = None

    @property
    def checksum_coverage(self) -> ChecksumCoverage | None:
        recorded = self.delivery.get("checksum_coverage")
        if recorded:
            return ChecksumCoverage.from_record(recorded)
        return self.coverage

    def as_json(self) -> dict[str, Any]:
        d = self.delivery
        return {
            "project": self.project,
            "delivery": d["name"],
            "state": d["state"],
            "files": d.get("file_count"),
            "bytes": d.get("total_bytes"),
            "manifest_sha256": d.get("manifest_sha256") or None,
            "checksum_file": self.checksum_file,
            "checked_by_service": self.service_verified,
            "checksum_coverage": self.delivery.get("checksum_coverage")
            or (self.coverage.as_record() if self.coverage else None),
            "sent_files": self.sent_files,
            "sent_bytes": self.sent_bytes,
            "seconds": round(self.seconds, 3),
        }


# --- the delivery itself -------------------------------------------------------------------------


class Deliverer:
    def __init__(self, api: Client, project: str, reporter: Reporter, options: Options) -> None:
        self.api, self.project, self.reporter, self.options = api, project, reporter, options
        self.retry = options.retry
        #: the run's Crypt4GH files (only on a shared disk), with their plaintext's size
        self.encrypted: dict[str, int] = {}

    def url(self, name: str, *rest: str) -> str:
        return "/".join(
            [f"/projects/{quote(self.project, safe='')}/deliveries/{quote(name, safe='')}", *rest]
        )

    def get(self, name: str) -> dict[str, Any]:
        data: dict[str, Any] = self.retry.call(lambda: self.api.get(self.url(name)))
        return data

    def find(self, name: str) -> dict[str, Any] | None:
        try:
            return self.get(name)
        except NotFound:
            return None  # no such delivery (a missing project is reported when it is made)

    def create(self, name: str, metadata: dict[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name, "metadata": metadata}
        if self.options.disk:
            body["disk"] = self.options.disk
        # Conflict: made by a try whose answer was lost, or by someone at the same moment
        with contextlib.suppress(Conflict):
            made = self.retry.call(
                lambda: self.api.post(f"/projects/{quote(self.project, safe='')}/deliveries", body)
            )
            return {**made, "files": [], "uploads": []}
        return self.get(name)

    def _drop_upload(self, upload: dict[str, Any]) -> None:
        self.retry.call(
            lambda: self.api.send(
                "DELETE", upload["url"], headers={"Tus-Resumable": "1.0.0"}, expect=(404, 410)
            )
        )

    def run(
        self,
        folder: Path,
        name: str | None = None,
        metadata: dict[str, Any] | None = None,
        checksum_file: Path | None = None,
        detect_checksum_file: bool = True,
    ) -> Receipt:
        started = time.monotonic()
        name = check_name(name or Path(os.path.realpath(folder)).name, "delivery name")
        files = scan_folder(folder)
        source = choose_checksum_file(folder, checksum_file, detect_checksum_file, files)
        if source is not None and source.extra is not None:
            files = sorted([*files, source.extra], key=lambda f: f.path)
        if self.options.disk:
            self.encrypted = c4gh.encrypted_files(files)
            source = for_encrypted(source, self.encrypted, files)
        check_listed(source, files, folder)
        coverage = coverage_of(source, files)
        if not coverage.complete:
            self._check_required(coverage)
        delivery = self.find(name)
        created = delivery is None
        first: Plan | None = None
        if delivery is None:  # nothing to resume: refuse what cannot fit before making anything
            first = make_plan(files, {}, source, self.options.small_file, self.encrypted)
            self._check_quota(first)
            delivery = self.create(name, metadata or {})
        if delivery["state"] == "sealed":
            return self._already_sealed(delivery, files, source, started)
        if delivery["state"] != "open":
            raise Conflict(
                f"delivery {name} of {self.project} has {delivery['state']}"
                + (f" ({delivery['failure_reason']})" if delivery.get("failure_reason") else "")
                + ": deliver the folder under another --name"
            )
        # the rest belongs to this delivery alone: it may outlast the token (a transfer grant)
        with self.api.granted("delivery", self.project, name):
            return self._send(folder, name, files, source, coverage, delivery, first, created, started)

    def _send(
        self,
        folder: Path,
        name: str,
        files: list[LocalFile],
        source: ChecksumSource | None,
        coverage: ChecksumCoverage,
        delivery: dict[str, Any],
        first: Plan | None,
        created: bool,
        started: float,
    ) -> Receipt:
        if first is not None and not delivery.get("files") and not delivery.get("uploads"):
            plan = first  # made for the quota check, and the new delivery holds nothing yet
        else:
            plan = make_plan(files, delivery, source, self.options.small_file, self.encrypted)
        notes = [
            f"note: {name} already holds {p}, which is not in {folder.name}" for p in plan.extra_stored[:5]
        ]
        for note in notes:
            self.reporter.note(note)
        for upload in plan.stale_uploads:  # they would keep their reserved space and block the seal
            if upload["path"] not in {f.path for f in files}:
                notes.append(
                    f"note: dropped the unfinished upload of {upload['path']}, which is not in {folder.name}"
                )
                self.reporter.note(notes[-1])
            self._drop_upload(upload)
        if not created:  # a new delivery's plan was checked just before it was made
            self._check_quota(plan)
        self.reporter.start(plan.total_bytes, len(files), plan.done_bytes, len(plan.skipped))
        try:
            computed = self._transfer(name, plan, source)
        except StorageFull as exc:  # retrying cannot help until someone makes room: stop at once
            raise StorageFull(
                f"the server's storage is full, so the delivery stopped ({exc.message})", **exc.details
            ) from None
        delivery = self._confirm(name, plan, computed)
        receipt = Receipt(
            self.project,
            delivery,
            sent_files=len(plan.large) + len(plan.small),
            sent_bytes=plan.total_bytes - plan.done_bytes,
            seconds=0.0,
            checksum_file=source.delivery_path if source else None,
            notes=notes,
            sealed=self.options.seal,
            coverage=coverage,
        )
        if self.options.seal:
            # the service checks the file again at sealing when it can read it (plain md5sum output);
            # otherwise it records what this client compared
            server_checks = source is not None and source.listing.plain_md5sum
            body: dict[str, Any] = {
                "checksum_file": source.delivery_path if source and server_checks else None
            }
            if source is not None and not server_checks:
                body["client_checked"] = {
                    "checksum_file": source.delivery_path,
                    "unlisted_count": coverage.unlisted_count,
                    "unlisted": list(coverage.unlisted[:KEEP_NAMES]),
                    "encrypted_only": list(coverage.encrypted_only),
                }
            receipt.service_verified = server_checks
            try:
                receipt.delivery = self.retry.call(lambda: self.api.post(self.url(name, "seal"), body))
            except LevereError:
                after = self._get_quietly(name)
                if after is None or after["state"] != "sealed":  # a lost answer to a seal that worked is fine
                    raise
                receipt.delivery = after
        receipt.seconds = time.monotonic() - started
        return receipt

    def _check_required(self, coverage: ChecksumCoverage) -> None:
        """Refuse before sending anything when this user's facility requires a checksum file that
        lists every file (the service refuses the seal too: this only spares a doomed transfer)."""
        try:
            me = self.retry.call(lambda: self.api.get("/me"))
            facilities = self.retry.call(lambda: self.api.get("/facilities")) if me.get("facility_id") else []
        except (AccessDenied, NotFound):
            return
        facility = next((f for f in facilities if f["id"] == me.get("facility_id")), None)
        if facility is not None and facility.get("require_checksum_file"):
            raise ChecksumFileRequired(
                f"{facility['name']} requires a checksum file that lists every delivered file, and this run "
                f"has {coverage.summary()}; nothing was sent",
                facility=facility["name"],
            )

    def _check_quota(self, plan: Plan) -> None:
        """Refuse at once a delivery that cannot fit, with the numbers; the service stays the judge
        (it reserves each file's size before accepting a byte), this only spares a doomed transfer."""
        if self.options.disk:
            self._check_disk_quota(plan, self.options.disk)
            return
        try:
            project = self.retry.call(lambda: self.api.get(f"/projects/{quote(self.project, safe='')}"))
        except (AccessDenied, NotFound):
            return  # the service will say what is wrong when the delivery is made
        area = next((q for q in project.get("quotas") or [] if q.get("tier") == "area"), None)
        if area is None:
            return
        # what our own unfinished uploads hold reserved is already counted in reserved_bytes
        need = sum(f.size for f, upload in plan.large if upload is None) + sum(f.size for f in plan.small)
        free = area["limit_bytes"] - area["used_bytes"] - area["reserved_bytes"]
        if need > free:
            raise QuotaExceeded(
                f"the delivery needs {format_size(need)} more but only {format_size(max(free, 0))} of the "
                f"{format_size(area['limit_bytes'])} area quota of {self.project} is free "
                f"({format_size(area['used_bytes'])} used, {format_size(area['reserved_bytes'])} reserved by "
                "uploads in progress); nothing was sent",
                needed=need, available=max(free, 0), limit=area["limit_bytes"],
            )  # fmt: skip

    def _check_disk_quota(self, plan: Plan, name: str) -> None:
        """As :meth:`_check_quota`, against the shared disk's quota: a sensitive project's delivery
        lands there, not on the project area."""
        try:
            disk = self.retry.call(lambda: self.api.get(f"/secure/disks/{quote(name, safe='')}"))
        except (AccessDenied, NotFound):
            return  # the service will say what is wrong when the delivery is made
        need = sum(f.size for f, upload in plan.large if upload is None) + sum(f.size for f in plan.small)
        free = disk["quota_bytes"] - disk["used_bytes"]
        if need > free:
            raise QuotaExceeded(
                f"the delivery needs {format_size(need)} more but only {format_size(max(free, 0))} of the "
                f"{format_size(disk['quota_bytes'])} of shared disk {name} is free "
                f"({format_size(disk['used_bytes'])} used); nothing was sent",
                needed=need, available=max(free, 0), limit=disk["quota_bytes"],
            )  # fmt: skip

    def _get_quietly(self, name: str) -> dict[str, Any] | None:
        try:
            return self.get(name)
        except LevereError:
            return None

    def _already_sealed(
        self, delivery: dict[str, Any], files: list[LocalFile], source: ChecksumSource | None, started: float
    ) -> Receipt:
        stored = {f["path"]: f for f in delivery.get("files") or []}
        listed = source.listing if source else None
        different = [
            f.path for f in files
            if f.path not in stored or stored[f.path]["size"] != self.encrypted.get(f.path, f.size)
            or (listed is not None and listed.md5(f.path) not in (None, stored[f.path]["md5"]))
        ]  # fmt: skip
        if different:
            raise Conflict(
                f"delivery {delivery['name']} of {self.project} is sealed and does not hold "
                f"{', '.join(different[:5])}{' ...' if len(different) > 5 else ''}: "
                "deliver the folder under another --name"
            )
        return Receipt(
            self.project, delivery, 0, 0, time.monotonic() - started, already_sealed=True,
            checksum_file=source.delivery_path if source else None,
        )  # fmt: skip

    def _expected(self, source: ChecksumSource | None) -> Callable[[str], Expected]:
        if source is None:
            nothing = Expected()  # shared: it is asked for once per file or more
            return lambda _path: nothing
        listing, sent = source.listing, source.sent

        def expected(path: str) -> Expected:
            as_sent = sent.get(path)
            return Expected(
                listing.md5(path), listing.sha256(path), listing.name,
                as_sent.digest if as_sent is not None and as_sent.algorithm == "md5" else None,
            )  # fmt: skip

        return expected

    def _transfer(self, name: str, plan: Plan, source: ChecksumSource | None) -> dict[str, Checksums]:
        expected = self._expected(source)
        computed: dict[str, Checksums] = {}
        failures: list[LevereError] = []
        lock = threading.Lock()

        def large(file: LocalFile, upload: dict[str, Any] | None) -> None:
            tus = TusUpload(
                self.api, self.retry, self.reporter, self.project, name, file, expected(file.path),
                self.options.chunk, self.options.piece, self.encrypted.get(file.path),
            )  # fmt: skip
            try:
                result = tus.run(upload["url"] if upload else None, int(upload["offset"]) if upload else 0)
            except ChecksumMismatch as exc:
                with lock:
                    failures.append(exc)
                return
            with lock:
                computed[file.path] = result
            self.reporter.file_done()

        sender = BatchSender(self.api, self.retry, self.reporter, self.project, name, expected)

        def small(batch: list[LocalFile]) -> None:
            outcome = sender.send(batch)
            with lock:
                computed.update(outcome.computed)
                failures.extend(outcome.failures)

        futures: list[Future[None]] = []
        with (
            ThreadPoolExecutor(max(1, self.options.jobs), "levere-tus") as tus_pool,
            ThreadPoolExecutor(max(1, self.options.batch_streams), "levere-batch") as batch_pool,
        ):
            futures += [batch_pool.submit(small, b) for b in split(plan.small, self.options.batch_streams)]
            futures += [tus_pool.submit(large, f, u) for f, u in plan.large]
            wait_all(futures, self.retry.cancel)
        if failures:
            raise _combined(failures)
        return computed

    def _confirm(self, name: str, plan: Plan, computed: dict[str, Checksums]) -> dict[str, Any]:
        """Before sealing: the delivery holds the folder's files and no others.

        Each file's checksums were compared as the service answered for it; here the delivery's
        totals are compared (one cheap request), and only when they differ is the whole file list
        fetched, to name what is wrong.
        """
        page = self.retry.call(lambda: self.api.get(self.url(name, "files"), params={"limit": 1}))
        summary = page.get("delivery") if isinstance(page, dict) else None
        want = (len(plan.files) + len(plan.extra_stored), plan.stored_bytes + plan.extra_bytes)
        if summary is not None and (summary["file_count"], summary["total_bytes"]) == want:
            return dict(summary)
        delivery = self.get(name)
        self._verify(delivery, plan.files, computed)
        raise Conflict(
            f"delivery {name} holds {count(delivery['file_count'], 'file')} ({delivery['total_bytes']} bytes), not the "
            f"{want[0]} ({want[1]} bytes) expected: someone else is adding files to it; it was not sealed"
        )

    def _verify(
        self, delivery: dict[str, Any], files: list[LocalFile], computed: dict[str, Checksums]
    ) -> None:
        """The delivery holds every file of the folder, with the bytes computed here."""
        stored = {f["path"]: f for f in delivery.get("files") or []}
        problems: list[str] = []
        for file in files:
            have = stored.get(file.path)
            if have is None:
                problems.append(f"{file.path} is missing")
            elif have["size"] != (size := self.encrypted.get(file.path, file.size)):
                problems.append(f"{file.path} has {have['size']} bytes instead of {size}")
            elif (mine := computed.get(file.path)) and not mine.agrees_with(
                Checksums(have["md5"], have["sha256"])
            ):
                problems.append(f"{file.path} has other checksums than the file")
        if problems:
            raise ChecksumMismatch(
                f"the delivery does not match the folder, so it was not sealed: {'; '.join(problems[:5])}"
            )


def _combined(failures: list[LevereError]) -> LevereError:
    """One error for many failed files: the quota first (one example is enough: the rest are alike),
    then checksum mismatches (each file named), then anything else."""
    if len(failures) == 1:
        return failures[0]
    quota = [f for f in failures if isinstance(f, QuotaExceeded)]
    if quota:
        return QuotaExceeded(f"{count(len(quota), 'file')} did not fit in the quota, e.g. {quota[0].message}")
    mismatches = [f for f in failures if isinstance(f, ChecksumMismatch)]
    chosen = mismatches or failures
    kind = ChecksumMismatch if mismatches else type(failures[0])
    shown = "; ".join(f.message for f in chosen[:5])
    more = f"; and {len(chosen) - 5} more" if len(chosen) > 5 else ""
    try:
        return kind(f"{count(len(chosen), 'file')} were not delivered: {shown}{more}")
    except TypeError:  # an error kind with a constructor of its own
        return LevereError(f"{count(len(chosen), 'file')} were not delivered: {shown}{more}")
