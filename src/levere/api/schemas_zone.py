"""Request and response bodies of the secure zone: secure projects, shared disks, their members,
contents and analysis reports, release, and the users' project's files (routes/secure.py and
routes/zone.py). The common base classes and field types are in ``schemas``."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel

from levere.api.schemas import Email, FacilityName, In, Out, SecureId, Short, Size


class SecureProjectIn(In):
    """Register a secure project that exists at the national service: give ``project`` (a users'
    secure project for that research project) or ``facility`` (the facility's own), not both."""

    identifier: SecureId
    project: Short | None = None
    facility: FacilityName | None = None


class SecureProjectOut(Out):
    identifier: str
    kind: Literal["users", "facility"]
    project: str | None
    facility: str | None
    #: the X25519 public key, base64 (the middle line of a crypt4gh public key file)
    public_key: str
    created_at: datetime


class ZoneMemberIn(In):
    email: Email
    #: access ends by itself at this time (with a time zone)
    ends_at: AwareDatetime


class ZoneMemberOut(Out):
    email: str
    ends_at: datetime
    active: bool
    removed_at: datetime | None


class DiskIn(In):
    facility_project: SecureId
    users_project: SecureId
    ends_at: AwareDatetime
    #: the configured default (1 TiB) when left out
    quota_bytes: Size | None = None


class DiskOut(Out):
    name: str
    state: Literal["open", "released", "expired", "destroyed"]
    facility_project: str
    users_project: str
    quota_bytes: int
    used_bytes: int
    ends_at: datetime
    public_key: str
    created_at: datetime
    released_at: datetime | None
    expired_at: datetime | None
    destroyed_at: datetime | None


class DiskFileOut(Out):
    delivery: str
    path: str
    #: the plaintext's size and checksums
    size: int
    md5: str
    sha256: str
    #: the stored Crypt4GH body's size
    body_size: int | None
    created_at: datetime


class ZoneDeliveryOut(Out):
    name: str
    project: str
    state: str
    files: int
    bytes: int
    created_at: datetime
    sealed_at: datetime | None


class DiskContentsOut(Out):
    disk: str
    state: str
    deliveries: list[ZoneDeliveryOut]
    files: list[DiskFileOut]


class PublicKeyOut(BaseModel):
    #: the key as ``crypt4gh-keygen`` writes a public key file
    pem: str


class QcFileOut(Out):
    """One FASTQ file's standard analysis: its main figures, or why it could not be analysed."""

    path: str
    state: Literal["done", "failed"]
    reads: int
    bases: int
    mean_length: float
    gc_fraction: float
    mean_quality: float
    n_fraction: float
    duplicate_fraction: float
    #: where the file's HTML page is kept in the delivery (read it with the ``qc/page`` route)
    page: str | None
    error: str
    message: str


class QcReportOut(Out):
    """A delivery's analysis report; ``summary`` is the JSON summary as stored (docs/qc.md)."""

    disk: str
    delivery: str
    job: str
    made_at: datetime
    files: list[QcFileOut]
    summary: dict[str, Any]


class ZoneFileOut(Out):
    path: str  # DELIVERY/PATH
    #: the plaintext's size and checksums (what the decrypted download must match)
    size: int
    md5: str
    sha256: str
    #: the stored Crypt4GH body's size; a download is a header for your key plus this body
    body_size: int
    released: bool
