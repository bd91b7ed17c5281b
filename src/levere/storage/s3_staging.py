"""Resumable upload sessions on S3 (tus uploads): multipart uploads plus a small *tail* object for
what does not fill a part yet. See :mod:`levere.storage.s3` for the design; the backend hands its
staging methods to :class:`S3Staging`."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from levere.domain.errors import Conflict, NotFound, ValidationFailed
from levere.storage.keys import STAGING_DIR, check_user_key
from levere.storage.s3_writer import MIN_PART, part_body, part_size_for

if TYPE_CHECKING:
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

    from levere.storage.s3 import S3Backend

_NEXT_PART_META = "levere-next-part"
_SESSION_ID = re.compile(r"^[0-9a-f]{32}$")
GONE = "upload session not found (finished, aborted or never started)"


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


class S3Staging:
    """The resumable sessions of one :class:`~levere.storage.s3.S3Backend`."""

    def __init__(self, backend: S3Backend) -> None:
        self.b = backend

    def _tail_key(self, sid: str) -> str:
        return f"{self.b.prefix}{STAGING_DIR}/{sid}.tail"

    def start_staged(self, key: str, length: int) -> str:
        full = self.b._full(key)
        if length < 0:
            raise ValidationFailed({"length": "must not be negative"})
        with self.b._errors("start upload", key):
            upload_id = self.b.client.create_multipart_upload(Bucket=self.b.bucket, Key=full)["UploadId"]
        return _Session(key, upload_id, secrets.token_hex(16), length, part_size_for(length)).encode()

    def _held(self, s: _Session) -> _Held:
        c = self.b.client
        parts: list[CompletedPartTypeDef] = []
        part_bytes = 0
        sizes: list[int] = []
        try:
            with self.b._errors("list upload parts", s.key):
                pages = c.get_paginator("list_parts").paginate(
                    Bucket=self.b.bucket, Key=self.b._full(s.key), UploadId=s.upload
                )
                for page in pages:
                    for p in page.get("Parts", []):
                        parts.append({"PartNumber": p["PartNumber"], "ETag": p["ETag"]})
                        sizes.append(p["Size"])
        except NotFound:
            # radosgw answers NoSuchKey, not NoSuchUpload, once an upload is completed.
            raise NotFound(GONE) from None
        for i, (part, size) in enumerate(zip(parts, sizes, strict=True), start=1):
            full_size = size == s.part or i == len(parts)
            if part["PartNumber"] != i or not full_size:
                number = part["PartNumber"]
                raise Conflict(f"upload session for {s.key!r} is damaged (unexpected part {number})")
            part_bytes += size
        tail = 0
        head = self.b._head(self._tail_key(s.id), s.key)
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
            with self.b._errors("read upload tail", s.key):
                buf += self.b.client.get_object(Bucket=self.b.bucket, Key=self._tail_key(s.id))["Body"].read()
            if len(buf) != held.tail:
                raise Conflict(f"upload session for {s.key!r} changed while it was being read")
        return buf

    def _upload_part(self, s: _Session, number: int, data: bytearray) -> CompletedPartTypeDef:
        with self.b._errors("upload part", s.key):
            etag = self.b.client.upload_part(
                Bucket=self.b.bucket,
                Key=self.b._full(s.key),
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
        with self.b._errors("store upload tail", s.key):
            if buf:
                self.b.client.put_object(
                    Bucket=self.b.bucket,
                    Key=tail,
                    Body=part_body(buf),
                    Metadata={_NEXT_PART_META: str(next_part)},
                )
                return
        if before.tail_exists:
            self.b._remove(tail, s.key, force=False)

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
            with self.b._errors("store upload tail", s.key):
                self.b.client.put_object(
                    Bucket=self.b.bucket,
                    Key=self._tail_key(s.id),
                    Body=part_body(buf),
                    Metadata={_NEXT_PART_META: str(len(held.parts) + 1)},
                )
        elif held.tail_exists:
            self.b._remove(self._tail_key(s.id), s.key, force=False)
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
        self.b._refuse_existing(s.key, any_object=False)
        full = self.b._full(s.key)
        c = self.b.client
        parts = list(held.parts)
        if held.tail:
            parts.append(self._upload_part(s, len(parts) + 1, self._read_tail(s, held)))
        if not parts:
            # S3 cannot complete an upload without parts; an empty object is a plain PUT.
            with self.b._errors("write", s.key):
                c.put_object(Bucket=self.b.bucket, Key=full, Body=b"")
            self.b._abort_upload(full, s.upload)
        else:
            with self.b._errors("complete upload", s.key):
                c.complete_multipart_upload(
                    Bucket=self.b.bucket, Key=full, UploadId=s.upload, MultipartUpload={"Parts": parts}
                )
        if held.tail_exists:
            self.b._remove(self._tail_key(s.id), s.key, force=False)

    def abort_staged(self, session: str) -> None:
        s = _Session.decode(session)
        self.b._abort_upload(self.b._full(s.key), s.upload)
        self.b._remove(self._tail_key(s.id), s.key, force=False)
