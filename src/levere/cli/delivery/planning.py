"""``levere deliver``'s plan, made before anything is sent: the checksum file chosen for the run and
checked against the folder, and per file whether the delivery already holds it, whether an earlier
run's upload is resumed, and whether it goes by tus or in a tar batch."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from levere.cli.delivery import c4gh
from levere.cli.delivery import checksums as checksum_files
from levere.cli.delivery.scan import FolderRefused, LocalFile
from levere.domain.checksum_coverage import ChecksumCoverage
from levere.domain.errors import Conflict, ValidationFailed
from levere.domain.units import count


@dataclass
class ChecksumSource:
    """The checksum file chosen for a delivery: where it is read, and its path inside the delivery."""

    listing: checksum_files.ChecksumFile
    delivery_path: str
    extra: LocalFile | None = None  # given from outside the folder: delivered at its top
    #: entries naming a Crypt4GH file itself (the MD5 of the file as the facility holds it): checked
    #: on arrival against the bytes as sent, but not what the service stores (see :func:`for_encrypted`)
    sent: dict[str, checksum_files.Expected] = field(default_factory=dict)


@dataclass
class Plan:
    files: list[LocalFile]
    skipped: list[LocalFile] = field(default_factory=list)
    large: list[tuple[LocalFile, dict[str, Any] | None]] = field(default_factory=list)
    small: list[LocalFile] = field(default_factory=list)
    stale_uploads: list[dict[str, Any]] = field(default_factory=list)
    extra_stored: list[str] = field(default_factory=list)
    extra_bytes: int = 0
    #: Crypt4GH files bound for a shared disk, with their plaintext's size (what the service records)
    encrypted: dict[str, int] = field(default_factory=dict)

    @functools.cached_property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @functools.cached_property
    def stored_bytes(self) -> int:
        """What the service will hold of the folder: plaintext sizes for Crypt4GH files."""
        return sum(self.encrypted.get(f.path, f.size) for f in self.files)

    @property
    def done_bytes(self) -> int:
        resumed = sum(int(upload["offset"]) for _f, upload in self.large if upload)
        return sum(f.size for f in self.skipped) + resumed


def choose_checksum_file(
    folder: Path, given: Path | None, detect: bool, files: list[LocalFile]
) -> ChecksumSource | None:
    root = os.path.realpath(folder)
    path = given if given is not None else (checksum_files.detect(folder) if detect else None)
    if path is None:
        return None
    if not path.is_file():
        raise ValidationFailed({"checksum file": f"{path} does not exist or is not a file"})
    real = os.path.realpath(path)
    if real.startswith(root + os.sep):
        inside = Path(os.path.relpath(real, root)).as_posix()
        # sources are real paths already (see scan_folder): resolving them again took a second for 20,000
        by_source = {f.source: f.path for f in files}
        delivery_path = by_source.get(real, inside)
        prefix = delivery_path.rpartition("/")[0]
        return ChecksumSource(checksum_files.read(path, prefix), delivery_path)
    # from outside the folder: its names are relative to the folder, and it travels at the top
    name = path.name
    clash = next((f for f in files if f.path == name), None)
    if clash is not None and Path(clash.source).read_bytes() != Path(real).read_bytes():
        raise ValidationFailed(
            {"checksum file": f"{folder.name} already holds a different {name}; rename one of them"}
        )
    extra = None if clash else LocalFile(name, real, os.path.getsize(real), int(os.path.getmtime(real)))
    return ChecksumSource(checksum_files.read(path), name, extra)


def check_listed(source: ChecksumSource | None, files: list[LocalFile], folder: Path) -> None:
    if source is None:
        return
    present = {f.path for f in files}
    missing = sorted(p for p in source.listing.entries if p not in present)
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise FolderRefused(
            f"{source.listing.name} lists {count(len(missing), 'file')} that {folder.name} does not hold, "
            f"so nothing was sent: {shown}"
        )


def for_encrypted(
    source: ChecksumSource | None, encrypted: dict[str, int], files: list[LocalFile]
) -> ChecksumSource | None:
    """The checksum file as it applies to a run with Crypt4GH files (:func:`.c4gh.apply_listing`)."""
    if source is None or not encrypted:
        return source
    listing, sent = c4gh.apply_listing(source.listing, encrypted, {f.path for f in files})
    return replace(source, listing=listing, sent=sent)


def coverage_of(source: ChecksumSource | None, files: list[LocalFile]) -> ChecksumCoverage:
    """Which of the folder's files the checksum file lists (each is compared with it as it is sent)."""
    paths = [f.path for f in files]
    if source is None:
        return ChecksumCoverage.of(None, paths, ())
    return ChecksumCoverage.of(
        source.delivery_path, paths, source.listing.entries, "client", encrypted_only=source.sent
    )


def make_plan(
    files: list[LocalFile],
    delivery: dict[str, Any],
    source: ChecksumSource | None,
    small_file: int,
    encrypted: dict[str, int] | None = None,
) -> Plan:
    """Decide, per file, whether it is already there, to be resumed, sent by tus or in a batch."""
    stored = {f["path"]: f for f in delivery.get("files") or []}
    uploads = {u["path"]: u for u in delivery.get("uploads") or []}
    plan = Plan(files, encrypted=encrypted or {})
    differs: list[str] = []
    local = {f.path for f in files}
    for file in files:
        if (have := stored.get(file.path)) is not None:
            listed = source.listing.md5(file.path) if source else None
            listed_sha = source.listing.sha256(file.path) if source else None
            size = plan.encrypted.get(file.path, file.size)
            if have["size"] != size:
                differs.append(f"{file.path} (stored {have['size']} bytes, the folder has {size})")
            elif (listed and have["md5"] != listed) or (listed_sha and have["sha256"] != listed_sha):
                differs.append(f"{file.path} (stored with another checksum than {source.listing.name} lists)")  # type: ignore[union-attr]
            else:
                plan.skipped.append(file)
            continue
        upload = uploads.pop(file.path, None)
        if upload is not None and int(upload["length"]) != file.size:
            plan.stale_uploads.append(upload)
            upload = None
        # a Crypt4GH file is sent sealed, as it is, which only an upload of its own takes
        if file.path in plan.encrypted or (file.size >= small_file and (file.size > 0 or small_file == 0)):
            plan.large.append((file, upload))
        else:
            if upload is not None:  # it was large by an earlier run's threshold: finish it the same way
                plan.large.append((file, upload))
            else:
                plan.small.append(file)
    if differs:
        raise Conflict(
            f"the delivery already holds {count(len(differs), 'file')} that differ from the folder, and a stored "
            f"file cannot change: {'; '.join(differs[:5])}"
        )
    plan.stale_uploads.extend(uploads.values())
    plan.extra_stored = sorted(p for p in stored if p not in local)
    plan.extra_bytes = sum(int(stored[p]["size"]) for p in plan.extra_stored)
    return plan
