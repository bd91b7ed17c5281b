"""A storage backend on an S3-compatible object store (tested against Ceph radosgw).

Design notes
------------
* Whole-object writes are multipart uploads, invisible until completed; objects smaller than one
  part are sent as a single PUT at commit. At most one part is held in memory. Part size is
  8 MiB, grown from ``size_hint`` (or, without a hint, doubled every 2,000 parts) so that even a
  several-hundred-GB file stays under S3's limit of 10,000 parts.
* Resumable sessions are multipart uploads too. S3 wants every part but the last to be at least
  5 MiB, while a tus PATCH may carry any number of bytes. Every part but the last is therefore
  exactly the session's part size, and whatever is left at the end of an append call (or when the
  client's connection drops) is kept in a small *tail* object, ``<prefix>.levere-staging/<id>.tail``,
  which the next append reads back and puts in front of its bytes.
* The tail carries the number of the part it will become (``levere-next-part`` metadata). Once that
  part exists the tail is stale and ignored, so a crash between uploading a part and rewriting
  the tail never counts bytes twice: the offset is always ``sum(parts) + valid tail``, read from
  the server, and so is right after the process was killed.
* An unfinished multipart upload cannot be read back from S3, so :meth:`read_staged` refuses; the
  transfer layer must keep its own checksum state for S3 sessions.
* Appends to one session must not run concurrently (the tus layer serialises them with its
  database row lock); unlike the local backend there is no server-side lock to enforce that.
* Write-once objects carry ``levere-write-once`` metadata, which :meth:`delete` and overwrites
  respect. With ``object_lock`` (the default for a write-once tier) the bucket is versioned with
  object lock enabled, and each write-once object is created under a retention (governance or
  compliance mode), so that nobody can destroy it before the retention ends; writers report
  the version id the store gave each object, and reads of that version see those bytes even
  after another client deleted or overwrote the key (which only adds a delete marker or a newer
  version). levere itself never bypasses a retention: its forced delete (a repair) removes what is
  not locked and hides the rest behind a delete marker.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, HTTPClientError, IncompleteReadError
from botocore.exceptions import ConnectionError as BotoConnectionError

from levere.domain.errors import (
    AlreadyExists,
    ConfigurationError,
    Conflict,
    LevereError,
    NotFound,
    StorageFull,
    StorageUnavailable,
    ValidationFailed,
)
from levere.domain.paths import KeyLimits
from levere.storage.base import CHUNK, Backend, ObjectInfo, ObjectWriter, check_key
from levere.storage.local import STAGING_DIR, check_prefix, check_range, check_user_key
from levere.storage.s3_writer import (
    MIN_PART,
    WRITE_ONCE_META,
    S3Writer,
    error_code,
    part_body,
    part_size_for,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef, HeadObjectOutputTypeDef

_NEXT_PART_META = "levere-next-part"
#: S3 keys are at most 1,024 bytes of UTF-8, the bucket's prefix included
MAX_KEY_BYTES = 1024
#: radosgw (Ceph 16) completes a multipart upload only while the bucket's name and the key together
#: take at most this many bytes (it answers 500 past it): levere keeps to it on every S3 server
MULTIPART_NAME_BYTES = 1012
#: what S3 servers answer when a bucket's or user's quota is used up (radosgw: QuotaExceeded)
_FULL = frozenset({"QuotaExceeded", "InsufficientCapacity", "XMinioStorageFull"})
_SESSION_ID = re.compile(r"^[0-9a-f]{32}$")
_GONE = "upload session not found (finished, aborted or never started)"


def _is_write_once(head: HeadObjectOutputTypeDef) -> bool:
    return (
        head.get("Metadata", {}).get(WRITE_ONCE_META) == "1"
        or bool(head.get("ObjectLockMode"))
        or head.get("ObjectLockLegalHoldStatus") == "ON"
    )


@dataclass(frozen=True)
class _Session:
    """The decoded session string: everything needed to find the upload again after a restart."""

    key: str
    upload: str
    id: str
    length: int
    part: int

    def encode(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def decode(cls, session: str) -> _Session:
        try:
            s = cls(**json.loads(session))
        except (ValueError, TypeError):
            raise NotFound("unknown upload session") from None
        types_ok = all(isinstance(v, str) for v in (s.key, s.upload, s.id)) and all(
            isinstance(v, int) for v in (s.length, s.part)
        )
        if not (types_ok and _SESSION_ID.match(s.id) and s.part >= MIN_PART):
            raise NotFound("unknown upload session")
        check_user_key(s.key)
        return s


@dataclass(frozen=True)
class _Held:
    """What the server holds for a session: its parts and, if still valid, the tail's size."""

    parts: list[CompletedPartTypeDef]
    part_bytes: int
    tail: int
    tail_exists: bool

    @property
    def offset(self) -> int:
        return self.part_bytes + self.tail


class S3Backend(Backend):
    #: each small object is one PUT: several in flight hide the round trips
    small_write_threads = 8

    def __init__(
        self,
        endpoint_url: str,
        bucket: str,
        access_key: str,
        secret_key: str,
        region: str = "us-east-1",
        prefix: str = "",
        backend_id: str = "s3",
        object_lock: bool = False,
        *,
        retention_mode: str = "governance",
        retention_days: int = 3650,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        max_attempts: int = 3,
    ) -> None:
        self.endpoint_url = endpoint_url
        self.bucket = bucket
        self.region = region
        prefix = prefix.strip("/")
        if prefix:
            check_key(prefix)
        self.prefix = prefix + "/" if prefix else ""
        self.backend_id = backend_id
        self.object_lock = object_lock
        self.retention_mode = retention_mode
        self.retention_days = retention_days
        self._access_key = access_key
        self._secret_key = secret_key
        self._config = Config(
            s3={"addressing_style": "path"},
            # Newer botocore sends CRC checksums by default, which radosgw (Ceph 16) rejects.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"max_attempts": max_attempts, "mode": "standard"},
        )
        self._client: S3Client | None = None
        self._client_lock = threading.Lock()
        self._conditional_puts: bool | None = None

    def __repr__(self) -> str:
        return f"S3Backend({self.endpoint_url!r}, {self.bucket!r}, prefix={self.prefix!r}, id={self.backend_id!r})"

    @property
    def client(self) -> S3Client:
        # Created on first use so that constructing a backend (at start-up, in tests) does no I/O.
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = boto3.session.Session().client(
                        "s3",
                        endpoint_url=self.endpoint_url,
                        aws_access_key_id=self._access_key,
                        aws_secret_access_key=self._secret_key,
                        region_name=self.region,
                        config=self._config,
                    )
        return self._client

    def key_limits(self) -> KeyLimits:
        # staging tails live under a short, fixed name: only the objects' own keys matter
        whole = min(MAX_KEY_BYTES, MULTIPART_NAME_BYTES - len(self.bucket.encode()))
        return KeyLimits(whole - len(self.prefix.encode()), MAX_KEY_BYTES, "S3 storage")

    # --- helpers -------------------------------------------------------------------------------
    def _full(self, key: str) -> str:
        return self.prefix + check_user_key(key)

    def _tail_key(self, sid: str) -> str:
        return f"{self.prefix}{STAGING_DIR}/{sid}.tail"

    @contextmanager
    def _errors(self, what: str, key: str | None = None) -> Iterator[None]:
        """Turn boto errors into levere's: unreachable or failing server -> StorageUnavailable."""
        try:
            yield
        except ClientError as e:
            raise self._translate(e, what, key) from e
        except (BotoConnectionError, HTTPClientError, IncompleteReadError) as e:
            raise StorageUnavailable(f"S3 storage at {self.endpoint_url} is unreachable ({what}): {e}") from e

    def _translate(self, e: ClientError, what: str, key: str | None) -> LevereError:
        code = error_code(e)
        if code in ("NoSuchKey", "404", "NotFound", "NoSuchVersion"):
            return NotFound(f"no object {key!r}" if key else f"not found ({what})")
        if code == "NoSuchUpload":
            return NotFound(_GONE)
        if code == "NoSuchBucket":
            return StorageUnavailable(f"bucket {self.bucket!r} does not exist at {self.endpoint_url}")
        if code in _FULL:
            return StorageFull(f"the storage has no space left to {what} {key or ''}".rstrip(), reason=code)
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return StorageUnavailable(f"S3 storage at {self.endpoint_url} refused levere's credentials")
        message = e.response.get("Error", {}).get("Message") or ""
        where = f"S3 storage at {self.endpoint_url}"
        return StorageUnavailable(f"{where} failed to {what}: {code} {message}".rstrip())

    def _head(self, full_key: str, key: str, version: str | None = None) -> HeadObjectOutputTypeDef | None:
        with self._errors("look up", key):
            try:
                if version is None:
                    return self.client.head_object(Bucket=self.bucket, Key=full_key)
                return self.client.head_object(Bucket=self.bucket, Key=full_key, VersionId=version)
            except ClientError as e:
                code = error_code(e)
                # a version id that is not valid at all is a 400 on radosgw
                if code in ("404", "NoSuchKey", "NotFound", "NoSuchVersion") or (version and code == "400"):
                    return None
                raise

    def conditional_puts(self) -> bool:
        """Whether the server honours ``If-None-Match: *`` on PUT (refusing to replace an
        object), found out once by trying it on a probe object. Unknown (an error): False."""
        if self._conditional_puts is None:
            probe = f"{self.prefix}{STAGING_DIR}/probe-{secrets.token_hex(8)}"
            c = self.client
            try:
                c.put_object(Bucket=self.bucket, Key=probe, Body=b"", IfNoneMatch="*")
                try:
                    c.put_object(Bucket=self.bucket, Key=probe, Body=b"", IfNoneMatch="*")
                    self._conditional_puts = False
                except ClientError as e:
                    self._conditional_puts = error_code(e) == "PreconditionFailed"
                finally:
                    c.delete_object(Bucket=self.bucket, Key=probe)
            except (ClientError, BotoConnectionError, HTTPClientError):
                return False  # ask again next time; meanwhile the HEAD check guards
        return self._conditional_puts

    def _refuse_existing(self, key: str, *, any_object: bool) -> None:
        head = self._head(self._full(key), key)
        if head is None:
            return
        if _is_write_once(head):
            raise AlreadyExists(f"{key!r} already exists and is write-once")
        if any_object:
            raise AlreadyExists(f"{key!r} already exists")

    def retention(self) -> dict[str, Any]:
        """The request fields that create an object under this backend's retention."""
        until = dt.datetime.now(dt.UTC) + dt.timedelta(days=self.retention_days)
        return {"ObjectLockMode": self.retention_mode.upper(), "ObjectLockRetainUntilDate": until}

    def _abort_upload(self, full_key: str, upload_id: str) -> None:
        with self._errors("abort upload"):
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=full_key, UploadId=upload_id)
            except ClientError as e:
                if error_code(e) not in ("NoSuchUpload", "NoSuchKey"):
                    raise  # otherwise already gone: aborting is idempotent

    def _remove(self, full_key: str, key: str, *, force: bool) -> None:
        """Remove every trace of ``full_key``; on a versioned (object lock) bucket that means
        every version and delete marker, or the bytes would live on behind a marker. Versions
        under retention stay: with ``force`` they are hidden behind a delete marker (the key is
        then free to be written again), without it that is refused."""
        c = self.client
        with self._errors("delete", key):
            if not self.object_lock:
                c.delete_object(Bucket=self.bucket, Key=full_key)
                return
            locked = False
            pages = c.get_paginator("list_object_versions").paginate(Bucket=self.bucket, Prefix=full_key)
            for page in pages:
                for v in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                    if v.get("Key") != full_key or "VersionId" not in v:
                        continue
                    try:
                        c.delete_object(Bucket=self.bucket, Key=full_key, VersionId=v["VersionId"])
                    except ClientError as e:
                        if error_code(e) != "AccessDenied":
                            raise
                        locked = True
            if locked and not force:
                raise Conflict(f"{key!r} is protected by object lock; deleting it needs force")
            if locked:
                c.delete_object(Bucket=self.bucket, Key=full_key)

    # --- bucket --------------------------------------------------------------------------------
    def check_ready(self) -> None:
        with self._errors("reach the bucket"):
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except ClientError as e:
                if error_code(e) in ("404", "NoSuchBucket", "NotFound"):
                    raise StorageUnavailable(
                        f"bucket {self.bucket!r} does not exist at {self.endpoint_url}"
                    ) from None
                raise

    def ensure_bucket(self) -> None:
        """Create the bucket if it is missing (with object lock when configured). Explicit, so
        that deployments with a pre-made bucket and narrower credentials never try."""
        c = self.client
        with self._errors("prepare bucket"):
            try:
                c.head_bucket(Bucket=self.bucket)
            except ClientError as e:
                if error_code(e) not in ("404", "NoSuchBucket", "NotFound"):
                    raise
            else:
                if self.object_lock:
                    self._check_bucket_lock()
                return
            kwargs: dict[str, Any] = {"Bucket": self.bucket}
            if self.region != "us-east-1":
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
            if self.object_lock:
                kwargs["ObjectLockEnabledForBucket"] = True
            try:
                c.create_bucket(**kwargs)
            except ClientError as e:
                if error_code(e) != "BucketAlreadyOwnedByYou":
                    raise

    def prepare_write_once(self) -> str | None:
        if not self.object_lock:
            return (
                f"write_once = false for bucket {self.bucket!r} at {self.endpoint_url}: anyone with its "
                "credentials, levere's included, can delete or overwrite the copies levere keeps there"
            )
        try:
            self.ensure_bucket()
            with self._errors("look at the versioning of the bucket"):
                versioning = self.client.get_bucket_versioning(Bucket=self.bucket).get("Status")
        except Conflict as exc:
            raise ConfigurationError(
                f"{exc.message}; make a bucket with object lock, or set write_once = false"
            ) from None
        if versioning != "Enabled":
            raise ConfigurationError(f"bucket {self.bucket!r} does not keep versions, which write-once needs")
        return None

    def _check_bucket_lock(self) -> None:
        try:
            conf = self.client.get_object_lock_configuration(Bucket=self.bucket)
            enabled = conf.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"
        except ClientError as e:
            if error_code(e) != "ObjectLockConfigurationNotFoundError":
                raise
            enabled = False
        if not enabled:
            raise Conflict(f"bucket {self.bucket!r} exists without object lock, which levere is set to use")

    # --- whole objects -------------------------------------------------------------------------
    def open_writer(
        self, key: str, *, size_hint: int | None = None, write_once: bool = False, durable: bool = True
    ) -> ObjectWriter:
        check_user_key(key)
        return S3Writer(self, key, size_hint, write_once)

    def read(
        self, key: str, start: int = 0, end: int | None = None, *, version: str | None = None
    ) -> Iterator[bytes]:
        check_range(start, end)
        full = self._full(key)
        if end is not None and end == start:
            if self.stat(key, version=version) is None:
                raise NotFound(f"no object {key!r}")
            return iter(())
        extra: dict[str, Any] = {} if version is None else {"VersionId": version}
        if start or end is not None:
            extra["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        with self._errors("read", key):
            try:
                body = self.client.get_object(Bucket=self.bucket, Key=full, **extra)["Body"]
            except ClientError as e:
                if error_code(e) != "InvalidRange":
                    raise
                # A range starting past the end is an empty read, as it is for a file.
                if self.stat(key, version=version) is None:
                    raise NotFound(f"no object {key!r}") from None
                return iter(())
        return self._stream(body, key)

    def _stream(self, body: Any, key: str) -> Iterator[bytes]:
        try:
            with self._errors("read", key):
                yield from body.iter_chunks(CHUNK)
        finally:
            body.close()

    def stat(self, key: str, *, version: str | None = None) -> ObjectInfo | None:
        head = self._head(self._full(key), key, version)
        if head is None:
            return None
        return ObjectInfo(key=key, size=head["ContentLength"], version=head.get("VersionId") or None)

    def delete(self, key: str, *, force: bool = False) -> None:
        full = self._full(key)
        head = self._head(full, key)
        if head is None:
            return
        if not force and _is_write_once(head):
            raise Conflict(f"{key!r} is write-once; deleting it needs force")
        self._remove(full, key, force=force)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        check_prefix(prefix)
        return self._list(prefix)

    def _list(self, prefix: str) -> Iterator[ObjectInfo]:
        skip = self.prefix + STAGING_DIR + "/"
        with self._errors("list"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix + prefix
            )
            for page in pages:
                for obj in page.get("Contents", []):
                    full = obj.get("Key", "")
                    if full.startswith(skip):
                        continue
                    key = full[len(self.prefix) :]
                    try:
                        check_user_key(key)
                    except LevereError:
                        continue  # e.g. "folder/" markers made by other tools
                    yield ObjectInfo(key=key, size=obj.get("Size", 0))

    # --- resumable staging sessions ------------------------------------------------------------
    def start_staged(self, key: str, length: int) -> str:
        full = self._full(key)
        if length < 0:
            raise ValidationFailed({"length": "must not be negative"})
        with self._errors("start upload", key):
            upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=full)["UploadId"]
        return _Session(key, upload_id, secrets.token_hex(16), length, part_size_for(length)).encode()

    def _held(self, s: _Session) -> _Held:
        c = self.client
        parts: list[CompletedPartTypeDef] = []
        part_bytes = 0
        sizes: list[int] = []
        try:
            with self._errors("list upload parts", s.key):
                pages = c.get_paginator("list_parts").paginate(
                    Bucket=self.bucket, Key=self._full(s.key), UploadId=s.upload
                )
                for page in pages:
                    for p in page.get("Parts", []):
                        parts.append({"PartNumber": p["PartNumber"], "ETag": p["ETag"]})
                        sizes.append(p["Size"])
        except NotFound:
            # radosgw answers NoSuchKey, not NoSuchUpload, once an upload is completed.
            raise NotFound(_GONE) from None
        for i, (part, size) in enumerate(zip(parts, sizes, strict=True), start=1):
            full_size = size == s.part or i == len(parts)
            if part["PartNumber"] != i or not full_size:
                number = part["PartNumber"]
                raise Conflict(f"upload session for {s.key!r} is damaged (unexpected part {number})")
            part_bytes += size
        tail = 0
        head = self._head(self._tail_key(s.id), s.key)
        if head is not None and head.get("Metadata", {}).get(_NEXT_PART_META) == str(len(parts) + 1):
            tail = head["ContentLength"]
        return _Held(parts, part_bytes, tail, head is not None)

    def staged_offset(self, session: str) -> int:
        return self._held(_Session.decode(session)).offset

    def append_staged(self, session: str, offset: int, chunks: Iterable[bytes]) -> int:
        s = _Session.decode(session)
        held = self._held(s)
        if offset != held.offset:
            raise Conflict(
                f"upload offset mismatch: request starts at {offset}, stored bytes end at {held.offset}"
            )
        buf = self._read_tail(s, held)
        next_part = len(held.parts) + 1
        received = held.offset
        try:
            for chunk in chunks:
                if received + len(chunk) > s.length:
                    raise Conflict(f"upload would exceed its declared length of {s.length} bytes")
                view = memoryview(chunk)
                while view:
                    piece = view[: s.part - len(buf)]
                    buf += piece
                    received += len(piece)
                    view = view[len(piece) :]
                    if len(buf) == s.part:
                        self._upload_part(s, next_part, buf)
                        next_part += 1
                        buf.clear()
        except BaseException:
            # A dropped connection: keep what arrived, so the client resumes from there.
            self._keep(s, next_part, buf, received, held)
            raise
        self._keep(s, next_part, buf, received, held)
        return received

    def _read_tail(self, s: _Session, held: _Held) -> bytearray:
        buf = bytearray()
        if held.tail:
            with self._errors("read upload tail", s.key):
                buf += self.client.get_object(Bucket=self.bucket, Key=self._tail_key(s.id))["Body"].read()
            if len(buf) != held.tail:
                raise Conflict(f"upload session for {s.key!r} changed while it was being read")
        return buf

    def _upload_part(self, s: _Session, number: int, data: bytearray) -> CompletedPartTypeDef:
        with self._errors("upload part", s.key):
            etag = self.client.upload_part(
                Bucket=self.bucket,
                Key=self._full(s.key),
                UploadId=s.upload,
                PartNumber=number,
                Body=part_body(data),
            )["ETag"]
        return {"PartNumber": number, "ETag": etag}

    def _keep(self, s: _Session, next_part: int, buf: bytearray, received: int, before: _Held) -> None:
        """Make the unsent remainder ``buf`` durable: the last part if the object is complete,
        otherwise the tail object."""
        if received == before.offset:
            return  # nothing new arrived; the stored state already describes it
        if buf and (received == s.length or len(buf) >= s.part):
            self._upload_part(s, next_part, buf)
            next_part += 1
            buf.clear()
        tail = self._tail_key(s.id)
        with self._errors("store upload tail", s.key):
            if buf:
                self.client.put_object(
                    Bucket=self.bucket,
                    Key=tail,
                    Body=part_body(buf),
                    Metadata={_NEXT_PART_META: str(next_part)},
                )
                return
        if before.tail_exists:
            self._remove(tail, s.key, force=False)

    def truncate_staged(self, session: str, offset: int) -> int:
        """Parts cannot be taken back from a multipart upload, so only the tail is cut: to
        ``offset`` if it lies in the tail, else away (back to the end of the last part)."""
        s = _Session.decode(session)
        held = self._held(s)
        if held.offset <= offset:
            return held.offset
        keep = max(offset - held.part_bytes, 0)
        if keep:
            buf = self._read_tail(s, held)
            del buf[keep:]
            with self._errors("store upload tail", s.key):
                self.client.put_object(
                    Bucket=self.bucket,
                    Key=self._tail_key(s.id),
                    Body=part_body(buf),
                    Metadata={_NEXT_PART_META: str(len(held.parts) + 1)},
                )
        elif held.tail_exists:
            self._remove(self._tail_key(s.id), s.key, force=False)
        return held.part_bytes + keep

    def staged_step(self, session: str) -> int:
        # Each full part is one upload_part call: before it the bytes are in memory, after it durable.
        return _Session.decode(session).part

    def read_staged(self, session: str) -> Iterator[bytes]:
        _Session.decode(session)
        raise Conflict(
            "S3 cannot read back an unfinished multipart upload; checksum state must be kept elsewhere"
        )

    def finish_staged(self, session: str) -> None:
        s = _Session.decode(session)
        held = self._held(s)
        if held.offset != s.length:
            raise Conflict(f"upload is incomplete: {held.offset} of {s.length} bytes received")
        self._refuse_existing(s.key, any_object=False)
        full = self._full(s.key)
        c = self.client
        parts = list(held.parts)
        if held.tail:
            parts.append(self._upload_part(s, len(parts) + 1, self._read_tail(s, held)))
        if not parts:
            # S3 cannot complete an upload without parts; an empty object is a plain PUT.
            with self._errors("write", s.key):
                c.put_object(Bucket=self.bucket, Key=full, Body=b"")
            self._abort_upload(full, s.upload)
        else:
            with self._errors("complete upload", s.key):
                c.complete_multipart_upload(
                    Bucket=self.bucket, Key=full, UploadId=s.upload, MultipartUpload={"Parts": parts}
                )
        if held.tail_exists:
            self._remove(self._tail_key(s.id), s.key, force=False)

    def abort_staged(self, session: str) -> None:
        s = _Session.decode(session)
        self._abort_upload(self._full(s.key), s.upload)
        self._remove(self._tail_key(s.id), s.key, force=False)
