"""Whole-object writes to S3: part sizes, and the writer that sends an object as one PUT or as a
multipart upload (see the notes of ``storage/s3.py``). The resumable sessions there use the same
part sizing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from botocore.exceptions import ClientError

from levere.domain.errors import AlreadyExists, Conflict
from levere.storage.base import ObjectWriter

if TYPE_CHECKING:
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

    from levere.storage.s3 import S3Backend

MiB = 1024 * 1024
MIN_PART = 5 * MiB
PART = 8 * MiB
MAX_PARTS = 10_000
# Parts planned from a declared length stay this far below MAX_PARTS, for safety.
_PART_BUDGET = 9_000
WRITE_ONCE_META = "levere-write-once"


def part_size_for(length: int | None) -> int:
    """Smallest whole-MiB part size (at least :data:`PART`) that fits ``length`` in the budget."""
    if length is None:
        return PART
    per_part = -(-length // _PART_BUDGET)
    return max(PART, -(-per_part // MiB) * MiB)


def part_body(buf: bytearray) -> bytes:
    # botocore sends a bytearray as it is (no copy of a whole part); its stubs only list bytes.
    return cast(bytes, buf)


def error_code(e: ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


class S3Writer(ObjectWriter):
    def __init__(self, backend: S3Backend, key: str, size_hint: int | None, write_once: bool) -> None:
        self._b = backend
        self._key = key
        self._full = backend._full(key)
        self._write_once = write_once
        self._base_part = part_size_for(size_hint)
        self._buf = bytearray()
        self._upload_id: str | None = None
        self._parts: list[CompletedPartTypeDef] = []
        self._closed = False

    def _part_size(self) -> int:
        return max(self._base_part, PART << (len(self._parts) // 2_000))

    def _metadata(self) -> dict[str, str]:
        return {WRITE_ONCE_META: "1"} if self._write_once else {}

    def _locked(self) -> dict[str, Any]:
        """Request fields that put a write-once object under retention as it is created, so that
        it is never there unprotected. (radosgw ignores them on multipart uploads: those get
        their retention once completed.)"""
        return self._b.retention() if self._write_once and self._b.object_lock else {}

    def write(self, chunk: bytes) -> None:
        if self._closed:
            raise Conflict(f"writer for {self._key!r} is already closed")
        view = memoryview(chunk)
        while view:
            room = self._part_size() - len(self._buf)
            self._buf += view[:room]
            view = view[room:]
            if len(self._buf) >= self._part_size():
                self._send_part()

    def _send_part(self) -> None:
        c = self._b.client
        with self._b._errors("upload part", self._key):
            if self._upload_id is None:
                self._upload_id = c.create_multipart_upload(
                    Bucket=self._b.bucket, Key=self._full, Metadata=self._metadata()
                )["UploadId"]
            n = len(self._parts) + 1
            if n > MAX_PARTS:
                raise Conflict(f"{self._key!r} is too large for S3 ({MAX_PARTS} parts)")
            etag = c.upload_part(
                Bucket=self._b.bucket,
                Key=self._full,
                UploadId=self._upload_id,
                PartNumber=n,
                Body=part_body(self._buf),
            )["ETag"]
        self._parts.append({"PartNumber": n, "ETag": etag})
        self._buf.clear()

    def commit(self) -> None:
        if self._closed:
            raise Conflict(f"writer for {self._key!r} is already closed")
        self._closed = True
        try:
            single_put = self._upload_id is None
            if not (
                single_put and self._write_once and not self._b.object_lock and self._b.conditional_puts()
            ):
                # otherwise the conditional PUT below refuses an existing object by itself, in one
                # request instead of two (a sync of many small files is mostly round trips)
                self._b._refuse_existing(self._key, any_object=self._write_once)
            c = self._b.client
            if self._upload_id is None:
                extra: dict[str, Any] = {}
                if self._write_once and not self._b.object_lock:
                    # Closes the race between the check above and this PUT where the server
                    # honours it (radosgw does on unversioned buckets).
                    extra["IfNoneMatch"] = "*"
                with self._b._errors("write", self._key):
                    try:
                        put = c.put_object(
                            Bucket=self._b.bucket,
                            Key=self._full,
                            Body=part_body(self._buf),
                            Metadata=self._metadata(),
                            **extra,
                            **self._locked(),
                        )
                        self.version = put.get("VersionId") or None
                    except ClientError as e:
                        if error_code(e) == "PreconditionFailed":
                            raise AlreadyExists(f"{self._key!r} already exists") from None
                        raise
            else:
                if self._buf:
                    self._send_part()
                with self._b._errors("complete upload", self._key):
                    completed = c.complete_multipart_upload(
                        Bucket=self._b.bucket,
                        Key=self._full,
                        UploadId=self._upload_id,
                        MultipartUpload={"Parts": self._parts},
                    )
                self.version = completed.get("VersionId") or None
                self._upload_id = None
                held = self._locked()
                if held:
                    with self._b._errors("set retention on", self._key):
                        c.put_object_retention(
                            Bucket=self._b.bucket,
                            Key=self._full,
                            VersionId=self.version or "",
                            Retention={
                                "Mode": held["ObjectLockMode"],
                                "RetainUntilDate": held["ObjectLockRetainUntilDate"],
                            },
                        )
        except BaseException:
            self._discard()
            raise
        finally:
            self._buf.clear()

    def abort(self) -> None:
        self._closed = True
        self._buf.clear()
        self._discard()

    def _discard(self) -> None:
        if self._upload_id is not None:
            upload_id, self._upload_id = self._upload_id, None
            self._b._abort_upload(self._full, upload_id)
