"""A storage backend on an S3-compatible object store (tested against Ceph radosgw).

Design notes
------------
* Whole-object writes are multipart uploads, invisible until completed; objects smaller than one
  part are sent as a single PUT at commit. At most one part is held in memory. Part size is
  8 MiB, grown from ``size_hint`` (or, without a hint, doubled every 2,000 parts) so that even a
  several-hundred-GB file stays under S3's limit of 10,000 parts.
* Resumable sessions (:mod:`levere.storage.s3_staging`) are multipart uploads too. S3 wants every
  part but the last to be at least 5 MiB, while a tus PATCH may carry any number of bytes. Every
  part but the last is therefore exactly the session's part size, and whatever is left at the end
  of an append call (or when the client's connection drops) is kept in a small *tail* object,
  ``<prefix>.levere-staging/<id>.tail``, which the next append reads back and puts in front of its
  bytes.
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
import secrets
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
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
)
from levere.domain.paths import KeyLimits
from levere.storage.base import CHUNK, Backend, Capability, ObjectInfo, ObjectWriter
from levere.storage.keys import STAGING_DIR, check_key, check_prefix, check_range, check_user_key
from levere.storage.s3_staging import GONE, S3Staging
from levere.storage.s3_writer import (
    WRITE_ONCE_META,
    S3Writer,
    error_code,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import HeadObjectOutputTypeDef

#: S3 keys are at most 1,024 bytes of UTF-8, the bucket's prefix included
MAX_KEY_BYTES = 1024
#: radosgw (Ceph 16) completes a multipart upload only while the bucket's name and the key together
#: take at most this many bytes (it answers 500 past it): levere keeps to it on every S3 server
MULTIPART_NAME_BYTES = 1012
#: what S3 servers answer when a bucket's or user's quota is used up (radosgw: QuotaExceeded)
_FULL = frozenset({"QuotaExceeded", "InsufficientCapacity", "XMinioStorageFull"})


def _is_write_once(head: HeadObjectOutputTypeDef) -> bool:
    return (
        head.get("Metadata", {}).get(WRITE_ONCE_META) == "1"
        or bool(head.get("ObjectLockMode"))
        or head.get("ObjectLockLegalHoldStatus") == "ON"
    )


class S3Backend(Backend):
    capabilities = frozenset({Capability.WRITE_ONCE})
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
        self._staging = S3Staging(self)

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
            return NotFound(GONE)
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

    # --- resumable staging sessions (:mod:`levere.storage.s3_staging`) ---------------------------
    def start_staged(self, key: str, length: int) -> str:
        return self._staging.start_staged(key, length)

    def staged_offset(self, session: str) -> int:
        return self._staging.staged_offset(session)

    def append_staged(self, session: str, offset: int, chunks: Iterable[bytes]) -> int:
        return self._staging.append_staged(session, offset, chunks)

    def truncate_staged(self, session: str, offset: int) -> int:
        return self._staging.truncate_staged(session, offset)

    def staged_step(self, session: str) -> int:
        return self._staging.staged_step(session)

    def read_staged(self, session: str) -> Iterator[bytes]:
        return self._staging.read_staged(session)

    def finish_staged(self, session: str) -> None:
        self._staging.finish_staged(session)

    def abort_staged(self, session: str) -> None:
        self._staging.abort_staged(session)
