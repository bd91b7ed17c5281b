"""Sealing a delivery: its checks, the run's own checksum file, and the manifest it leaves.

Design notes
------------
* Sealing checks the state and the uploads first (one transaction), reads and verifies the run's
  own checksum file without holding any lock, then seals (or fails) in a second transaction that
  checks again that nothing changed in between.
* The manifest is the sealed file rows themselves (path, size, MD5, SHA-256), immutable from then
  on; its fingerprint, the SHA-256 of its ``md5sum`` form, is stored on the delivery and printed
  on receipts.
* On a shared disk, a file the facility encrypted itself (``x.fastq.gz.c4gh``, uploaded as
  Crypt4GH) is stored with its PLAINTEXT's MD5; the run's checksum file was written over the
  plaintext, so its entry ``x.fastq.gz`` is compared with that file. An entry naming the ``.c4gh``
  file itself (the MD5 of the encrypted file as the facility holds it) cannot be compared with what
  is stored (the service keeps the body and makes its own header): it is left out of the check and
  the file counts as not covered, named apart in the coverage record (``encrypted_only``).
* A sealed delivery's members are told, and its long-term copies are planned, in the sealing
  transaction; a failed one tells the facility user who sealed it which files did not match.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from levere.context import Context
from levere.db.models import (
    Delivery,
    Facility,
    Project,
    ProjectMember,
    Replica,
    StoredFile,
    Upload,
    User,
    utcnow,
)
from levere.domain.checksum_coverage import KEEP_NAMES, ChecksumCoverage
from levere.domain.deliveries import DeliveryState, UploadState, delivery_transition
from levere.domain.errors import ChecksumFileRequired, Conflict, InvalidPath, ValidationFailed
from levere.domain.paths import check_relative_path
from levere.domain.roles import Action
from levere.domain.tiers import Tier
from levere.domain.units import count, format_size
from levere.services import audit, zone_uploads
from levere.services.deliveries import (
    DeliveryView,
    delivery_view,
    get_delivery,
    reclaim_dead_batches,
)
from levere.services.notify import notify
from levere.services.projects import authorize, facilities
from levere.services.sync import on_delivery_sealed
from levere.transfer import wire

#: a checksum file is read whole into memory to verify a run; real ones are a few hundred KiB
MAX_CHECKSUM_FILE = 64 * 1024 * 1024


class DeliveryVerificationFailed(Conflict):
    """Sealing found a file missing or different from the run's checksum file; the delivery failed."""

    code = "checksum_mismatch"


def manifest_lines(files: Iterable[tuple[str, str]]) -> Iterator[str]:
    """``md5  path`` lines, as ``md5sum`` writes them (paths hold no newline or backslash)."""
    for path, md5 in files:
        yield f"{md5}  {path}\n"


def manifest_fingerprint(rows: Iterable[tuple[str, str]]) -> str:
    """SHA-256 of the manifest in ``md5sum`` form, from (path, md5) in path order."""
    digest = hashlib.sha256()
    for line in manifest_lines(rows):
        digest.update(line.encode())
    return digest.hexdigest()


def _manifest_rows(session: Session, delivery: Delivery) -> list[tuple[str, str]]:
    """(path, md5) of the delivery's files in code-point order of the paths, whatever the
    database's collation, so that the manifest and its fingerprint are the same everywhere."""
    rows = session.execute(
        select(StoredFile.path, StoredFile.md5).where(StoredFile.delivery_id == delivery.id)
    ).all()
    return sorted((r[0], r[1]) for r in rows)


def parse_md5sum(text: str, base: str) -> tuple[dict[str, str], list[str]]:
    """Entries of an ``md5sum`` file, as delivery paths (relative to the file's folder ``base``),
    and the lines that could not be read."""
    entries: dict[str, str] = {}
    bad: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        escaped = line.startswith("\\")
        if escaped:
            line = line[1:]
        digest, _, rest = line.partition(" ")
        name = rest[1:] if rest[:1] in (" ", "*") else rest
        if escaped:
            name = name.replace("\\n", "\n").replace("\\\\", "\\")
        digest = digest.lower()
        if len(digest) != 32 or any(c not in "0123456789abcdef" for c in digest) or not name:
            bad.append(f"line {number}")
            continue
        while name.startswith("./"):
            name = name[2:]
        try:
            path = check_relative_path(f"{base}{name}")
        except InvalidPath:
            bad.append(f"line {number}")
            continue
        entries[path] = digest
    return entries, bad


def for_encrypted(
    listed: dict[str, str], stored: dict[str, str], encrypted: frozenset[str]
) -> tuple[dict[str, str], list[str]]:
    """The checksum file's entries as they apply to a delivery with files uploaded as Crypt4GH
    (``encrypted``, stored with their plaintext's MD5), and the files it lists only by their
    encrypted form (not checked: see the module notes)."""
    if not encrypted:
        return listed, []
    applied = dict(listed)
    encrypted_only: list[str] = []
    for path in sorted(encrypted):
        if path in applied:
            del applied[path]
            encrypted_only.append(path)
        plain = path.removesuffix(wire.CRYPT4GH_SUFFIX)
        if plain != path and plain not in stored and plain in applied:
            applied[path] = applied.pop(plain)
    return applied, encrypted_only


def _verify_against(
    listed: dict[str, str], bad: list[str], stored: dict[str, str], checksum_file: str
) -> list[str]:
    problems = [f"{checksum_file}: cannot read {where}" for where in bad]
    for path, md5 in sorted(listed.items()):
        have = stored.get(path)
        if have is None:
            problems.append(f"{path}: listed in {checksum_file} but not delivered")
        elif have != md5:
            problems.append(f"{path}: MD5 {have} differs from {md5} in {checksum_file}")
    return problems


def _read_checksum_file(ctx: Context, tier: Tier, key: str, size: int, path: str) -> str:
    if size > MAX_CHECKSUM_FILE:
        raise ValidationFailed({"checksum_file": f"{path} is larger than {format_size(MAX_CHECKSUM_FILE)}"})
    return _decoded(b"".join(ctx.backend(tier).read(key)), path)


def _decoded(data: bytes, path: str) -> str:
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise ValidationFailed({"checksum_file": f"{path} is not UTF-8 text"}) from None


@dataclass(frozen=True)
class _SealCheck:
    file_count: int
    stored: dict[str, str]  # path -> md5
    checksum_key: str | None
    #: the tier the checksum file is read from: where the delivery landed
    checksum_tier: Tier
    checksum_size: int
    #: the shared disk the delivery is on (its checksum file is read through the disk's header)
    disk_id: str | None = None
    #: its files uploaded already encrypted (Crypt4GH), stored with their plaintext's checksums
    encrypted: frozenset[str] = frozenset()


def _seal_checks(
    session: Session, project: Project, delivery: Delivery, checksum_file: str | None
) -> _SealCheck:
    if delivery.state != DeliveryState.OPEN:
        raise Conflict(f"delivery {delivery.name} is already {delivery.state}", state=delivery.state)
    reclaim_dead_batches(session, Upload.delivery_id == delivery.id)
    active = session.execute(
        select(func.count(Upload.id)).where(
            Upload.delivery_id == delivery.id, Upload.state == UploadState.ACTIVE
        )
    ).scalar_one()
    if active:
        raise Conflict(
            f"delivery {delivery.name} has {active} upload(s) still in progress; finish or cancel them first",
            state=delivery.state,
            active_uploads=active,
        )
    stored = dict(_manifest_rows(session, delivery))
    landing = zone_uploads.upload_placement(project, delivery).tier
    key: str | None = None
    size = 0
    if checksum_file is not None:
        checksum_file = check_relative_path(checksum_file)
        row = session.execute(
            select(StoredFile.size, Replica.key)
            .join(Replica, (Replica.file_id == StoredFile.id) & (Replica.tier == landing))
            .where(StoredFile.delivery_id == delivery.id, StoredFile.path == checksum_file)
        ).first()
        if row is None:
            raise ValidationFailed({"checksum_file": f"{checksum_file} is not in delivery {delivery.name}"})
        size, key = int(row[0]), str(row[1])
    encrypted = zone_uploads.encrypted_paths(session, delivery.id) if delivery.shared_disk_id else frozenset()
    return _SealCheck(len(stored), stored, key, landing, size, delivery.shared_disk_id, encrypted)


@dataclass(frozen=True)
class ClientChecked:
    """A checksum file only the delivering client could read (not plain ``md5sum`` output): it
    compared every file it lists as it sent it, and names the delivered files the file leaves out."""

    checksum_file: str
    unlisted_count: int
    #: the first of them (at most ``KEEP_NAMES``), in path order
    unlisted: list[str]
    #: of them, files uploaded as Crypt4GH that it lists only by their encrypted form
    encrypted_only: list[str] = field(default_factory=list)


def seal(
    ctx: Context,
    actor: User,
    identifier: str,
    name: str,
    checksum_file: str | None = None,
    client_checked: ClientChecked | None = None,
) -> DeliveryView:
    """Seal a delivery, verified against ``checksum_file`` (read here) if given, and record how
    much of the delivery a checksum file covered; a facility that requires a complete one has the
    seal refused, the delivery left open, while any file is unlisted."""
    checked: _SealCheck | None = None
    problems: list[str] = []
    listed: dict[str, str] = {}
    encrypted_only: list[str] = []
    if checksum_file is not None:
        # the checksum file is read outside any transaction; the sealing one below checks that
        # nothing changed meanwhile
        with ctx.tx() as session:
            project = authorize(session, actor, identifier, Action.DELIVERY_UPLOAD)
            checked = _seal_checks(session, project, get_delivery(session, project, name), checksum_file)
        assert checked.checksum_key is not None
        checksum_file = check_relative_path(checksum_file)
        if checked.disk_id is not None:
            text = _decoded(
                zone_uploads.read_small_plaintext(
                    ctx, actor, checked.disk_id, name, checksum_file, MAX_CHECKSUM_FILE
                ),
                checksum_file,
            )
        else:
            text = _read_checksum_file(
                ctx, checked.checksum_tier, checked.checksum_key, checked.checksum_size, checksum_file
            )
        base = checksum_file.rpartition("/")[0]
        listed, bad = parse_md5sum(text, f"{base}/" if base else "")
        listed, encrypted_only = for_encrypted(listed, checked.stored, checked.encrypted)
        problems = _verify_against(listed, bad, checked.stored, checksum_file)
    with ctx.tx() as session:
        project = authorize(session, actor, identifier, Action.DELIVERY_UPLOAD)
        delivery = get_delivery(session, project, name, lock=True)
        check = _seal_checks(session, project, delivery, None)
        if checked is not None and check.stored != checked.stored:
            raise Conflict(f"delivery {name} changed while it was being sealed; seal it again")
        if problems:
            _fail(ctx, session, actor, project, delivery, problems)
        else:
            coverage = _coverage(check.stored, checksum_file, listed, client_checked, encrypted_only)
            _require_complete(session, delivery, coverage)
            _seal(ctx, session, actor, project, delivery, coverage, check)
            return delivery_view(session, project, delivery)
    shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
    raise DeliveryVerificationFailed(
        f"delivery {name} failed verification: {shown}", state="failed", problems=problems[:100]
    )


def _coverage(
    stored: dict[str, str],
    checksum_file: str | None,
    listed: dict[str, str],
    client: ClientChecked | None,
    encrypted_only: list[str],
) -> ChecksumCoverage:
    if checksum_file is not None:
        return ChecksumCoverage.of(checksum_file, stored, listed, encrypted_only=encrypted_only)
    if client is not None:
        path = check_relative_path(client.checksum_file)
        if path not in stored:
            raise ValidationFailed({"checksum_file": f"{path} is not in the delivery"})
        files = len(stored) - 1
        if not 0 <= client.unlisted_count <= files or not set(client.unlisted) <= stored.keys():
            raise ValidationFailed({"client_checked": "names files the delivery does not hold"})
        names = tuple(sorted(client.unlisted)[:KEEP_NAMES])
        if not set(client.encrypted_only) <= stored.keys():
            raise ValidationFailed({"client_checked": "names files the delivery does not hold"})
        only = tuple(sorted(client.encrypted_only)[:KEEP_NAMES])
        return ChecksumCoverage(path, files, files - client.unlisted_count, names, "client", only)
    return ChecksumCoverage.of(None, stored, ())


def _require_complete(session: Session, delivery: Delivery, coverage: ChecksumCoverage) -> None:
    if coverage.complete or delivery.facility_id is None:
        return
    facility = session.get(Facility, delivery.facility_id)
    if facility is None or not facility.require_checksum_file:
        return
    raise ChecksumFileRequired(
        f"{facility.name} requires every file of a delivery to be listed in its checksum file, and "
        f"delivery {delivery.name} has {coverage.summary()}; it was not sealed",
        facility=facility.name, coverage=coverage.as_record(),
    )  # fmt: skip


def _fail(
    ctx: Context, session: Session, actor: User, project: Project, delivery: Delivery, problems: list[str]
) -> None:
    delivery.state = delivery_transition(delivery.state, DeliveryState.FAILED, delivery.name)
    delivery.failure_reason = "; ".join(problems[:20]) + (
        f"; and {len(problems) - 20} more" if len(problems) > 20 else ""
    )
    audit.record(
        session, actor, "delivery.failed", "delivery", delivery.id,
        before={"state": "open"}, after={"state": "failed", "problems": problems[:100]},
    )  # fmt: skip
    notify(
        ctx, session, [actor],
        f"[levere] Delivery {delivery.name} to {project.identifier} failed verification",
        f"Delivery {delivery.name} to {project.identifier} did not match its checksum file:\n\n"
        + "\n".join(f"  {p}" for p in problems[:50])
        + "\n\nNothing was published to the project's members. Deliver the run again under a new name.",
    )  # fmt: skip


def _seal(
    ctx: Context,
    session: Session,
    actor: User,
    project: Project,
    delivery: Delivery,
    coverage: ChecksumCoverage,
    check: _SealCheck,
) -> None:
    delivery.state = delivery_transition(delivery.state, DeliveryState.SEALED, delivery.name)
    delivery.sealed_at = utcnow()
    delivery.manifest_sha256 = manifest_fingerprint(check.stored.items())
    delivery.checksum_coverage = coverage.as_record()
    total = session.execute(
        select(func.coalesce(func.sum(StoredFile.size), 0)).where(StoredFile.delivery_id == delivery.id)
    ).scalar_one()
    audit.record(
        session, actor, "delivery.sealed", "delivery", delivery.id,
        before={"state": "open"},
        after={
            "state": "sealed", "files": check.file_count, "bytes": int(total),
            "manifest_sha256": delivery.manifest_sha256, "verified_with": coverage.checksum_file,
            "checksum_coverage": coverage.summary(),
        },
    )  # fmt: skip
    members = session.execute(
        select(User)
        .join(ProjectMember, ProjectMember.user_id == User.id)
        .where(ProjectMember.project_id == project.id)
    ).scalars()
    verified = f"Checksums: {coverage.summary()}.\n"
    notify(
        ctx, session, list(members),
        f"[levere] New data in {project.identifier}: delivery {delivery.name}",
        f"The delivery {delivery.name} has arrived in project {project.identifier} ({project.title}) "
        f"from {', '.join(f.display_name for f in facilities(session, project)) or 'the facility'}: "
        f"{count(check.file_count, 'file')}, {format_size(int(total))}.\n{verified}"
        f"Manifest fingerprint (SHA-256): {delivery.manifest_sha256}\n\n"
        f"List it:      levere ls {project.identifier} {delivery.name}/\n"
        f"Download it:  levere download {project.identifier} {delivery.name} --to DIR\n",
    )  # fmt: skip
    if delivery.shared_disk_id is None:
        # long-term sync is planned in the same transaction; a delivery on a shared disk goes to
        # long-term only once released to the users' project
        on_delivery_sealed(ctx, session, delivery)
