"""One large file through the service's tus 1.0 endpoint: created or resumed, then sent in PATCHes.

Design notes
------------
The file is read once, in pieces of ``piece`` bytes into one reusable buffer; each piece is hashed
(SHA-256: see :mod:`levere.cli.delivery.hashing`) and handed to the socket, and a PATCH carries ``chunk`` bytes of such pieces. Memory
is one piece whatever the file size, and hashing the next piece overlaps the service draining the
previous one from the socket buffer. Only the last piece is read and hashed *before* its PATCH starts,
because that PATCH carries the whole-file checksum (``Levere-Checksum``) in its headers: the service
compares it with its own before it publishes the file (and the MD5 the checksum file lists, given
when the upload was created), and answers with its MD5 and SHA-256 for us to compare.

Resuming: the service's offset comes from HEAD; the bytes before it are read and hashed locally (not
sent) to rebuild the digest state. After a broken PATCH the offset is asked again and sending resumes
from there; bytes already hashed are not hashed twice (``hashed`` never moves back).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from io import FileIO
from urllib.parse import quote, urlsplit

from levere.cli.client import Client
from levere.cli.delivery.hashing import Checksums, Sha256, parse_header
from levere.cli.delivery.progress import Reporter
from levere.cli.delivery.retry import Cancelled, Retry
from levere.cli.delivery.scan import LocalFile
from levere.cli.delivery.tarstream import FileChanged
from levere.domain.errors import ChecksumMismatch, Conflict, NotFound
from levere.transfer import wire

TUS_VERSION = "1.0.0"
MiB = 1024 * 1024
PIECE = 1 * MiB
#: bytes per PATCH. Memory does not depend on it (a PATCH streams pieces); the service makes each
#: PATCH durable when it ends, so larger ones mean fewer sync points and a faster upload, but more
#: to send again after a crash: 256 MiB is a second or so of sending (figures in docs/benchmarks.md)
CHUNK = 256 * MiB


def upload_path(url: str) -> str:
    """The path of an upload's URL (the service may answer with a full URL in ``Location``)."""
    return urlsplit(url).path or url


@dataclass
class Expected:
    md5: str | None = None
    sha256: str | None = None
    source: str = "the checksum file"
    #: for a file the facility encrypted (``.c4gh``): the MD5 its checksum file lists for the file
    #: as sent, which the service compares on arrival (``md5``/``sha256`` are then the plaintext's)
    sent_md5: str | None = None

    def mismatch(self, path: str, got: Checksums) -> ChecksumMismatch | None:
        """How ``got`` differs from what the checksum file lists (a checksum ``got`` lacks is not
        compared: the service compares it)."""
        for algorithm, want, have in (("MD5", self.md5, got.md5), ("SHA-256", self.sha256, got.sha256)):
            if want and have and want != have:
                return ChecksumMismatch(f"{path}: its {algorithm} is {have} but {self.source} lists {want}")
        return None


class TusUpload:
    """Send ``file`` into ``delivery`` of ``project``; :meth:`run` returns the service's checksums of
    the stored file, once they agree with the ones computed here."""

    def __init__(
        self,
        api: Client,
        retry: Retry,
        reporter: Reporter,
        project: str,
        delivery: str,
        file: LocalFile,
        expected: Expected,
        chunk: int = CHUNK,
        piece: int = PIECE,
        plaintext_size: int | None = None,
    ) -> None:
        """``plaintext_size``: the file is Crypt4GH, encrypted to the shared disk's key, and the
        service records and answers for its plaintext of that size (see :mod:`.c4gh`)."""
        self.api, self.retry, self.reporter = api, retry, reporter
        self.plaintext_size = plaintext_size
        self.project, self.delivery, self.file, self.expected = project, delivery, file, expected
        self.chunk, self.piece = chunk, piece
        self.buffer = bytearray(piece)
        self.view = memoryview(self.buffer)
        self.digests = Sha256()
        self.url: str | None = None
        self.sent = 0  # bytes the service holds
        self.hashed = 0  # bytes fed to ``digests``
        self.counted = 0  # bytes reported to the progress display
        self.result: Checksums | None = None
        self.recreated = False
        #: the service keeps only whole steps of a PATCH that ends before the file does (a shared
        #: disk's encrypting storage): the rest of the file then goes in the final PATCH
        self.whole_steps = False

    # --- the service's side ------------------------------------------------------------------------

    def _head(self) -> int:
        """The bytes the service holds; :class:`NotFound` when the upload is gone (finished or expired)."""
        assert self.url is not None
        response = self.api.send("HEAD", self.url, headers={"Tus-Resumable": TUS_VERSION}, expect=(404, 410))
        if response.status_code in (404, 410):
            raise NotFound(f"the upload of {self.file.path} is no longer on the service")
        return int(response.headers["Upload-Offset"])

    def _create(self) -> None:
        metadata = {
            wire.META_PROJECT: self.project,
            wire.META_DELIVERY: self.delivery,
            wire.META_PATH: self.file.path,
        }
        if self.plaintext_size is not None:
            metadata[wire.META_FORMAT] = wire.FORMAT_CRYPT4GH
            if self.expected.sent_md5:
                metadata[wire.META_MD5] = self.expected.sent_md5
        else:
            if self.expected.md5:
                metadata[wire.META_MD5] = self.expected.md5
            if self.expected.sha256:
                metadata[wire.META_SHA256] = self.expected.sha256
        response = self.api.send(
            "POST",
            "/tus/",
            headers={
                "Tus-Resumable": TUS_VERSION,
                "Upload-Length": str(self.file.size),
                "Upload-Metadata": wire.encode_metadata(metadata),
            },
        )
        self.url = upload_path(response.headers["Location"])
        self.sent = 0

    def _find_own_upload(self) -> None:
        """After a create whose answer was lost: adopt the upload it made, if it made one."""
        found = self.api.get(
            f"/projects/{quote(self.project, safe='')}/deliveries/{quote(self.delivery, safe='')}"
        )
        for upload in found.get("uploads") or []:
            if upload["path"] == self.file.path and upload["length"] == self.file.size:
                self.url = upload_path(upload["url"])
                self.sent = int(upload["offset"])

    def _stored(self) -> Checksums | None:
        """The checksums the service recorded for this path, if it has published the file."""
        prefix = f"{self.delivery}/{self.file.path}"
        for entry in self.api.get(
            f"/projects/{quote(self.project, safe='')}/files", params={"prefix": prefix}
        ):
            if entry["path"] == prefix and entry["size"] == self.stored_size:
                return Checksums(entry["md5"], entry["sha256"])
        return None

    @property
    def stored_size(self) -> int:
        """The size the service records: the plaintext's for a Crypt4GH file."""
        return self.file.size if self.plaintext_size is None else self.plaintext_size

    def terminate(self) -> None:
        if self.url is not None:
            self.api.send("DELETE", self.url, headers={"Tus-Resumable": TUS_VERSION}, expect=(404, 410))

    # --- the local side ----------------------------------------------------------------------------

    def _read(self, fh: FileIO, position: int, size: int) -> memoryview:
        fh.seek(position)
        got = 0
        while got < size:
            n = fh.readinto(self.view[got:size])
            if not n:
                raise FileChanged(
                    f"{self.file.path} changed while it was being delivered (it had {self.file.size} bytes): "
                    "run the command again"
                )
            got += n
        return self.view[:size]

    def _hash(self, piece: memoryview, position: int) -> None:
        if position + len(piece) > self.hashed:
            self.digests.update(piece[max(0, self.hashed - position) :])
            self.hashed = position + len(piece)

    def _count_to(self, position: int) -> None:
        self.reporter.advance(position - self.counted)
        self.counted = position

    def _body(self, fh: FileIO, start: int, end: int) -> Iterator[bytes]:
        position = start
        while position < end:
            if self.retry.cancel.is_set():
                raise Cancelled
            piece = self._read(fh, position, min(self.piece, end - position))
            self._hash(piece, position)
            yield bytes(piece)
            position += len(piece)
            self._count_to(position)

    def _patch(
        self, body: Iterator[bytes] | bytes, length: int, checksums: Checksums | None
    ) -> Checksums | None:
        assert self.url is not None
        headers = {
            "Tus-Resumable": TUS_VERSION,
            "Upload-Offset": str(self.sent),
            "Content-Type": "application/offset+octet-stream",
            "Content-Length": str(length),
        }
        if checksums is not None:
            headers[wire.CHECKSUM_HEADER] = checksums.header()
        response = self.api.send("PATCH", self.url, content=body, headers=headers, expect=(404, 409, 410))
        if response.status_code in (404, 410):
            self.sent = -1  # gone: see _step
            return None
        if response.status_code == 409:  # our offset was stale: ask and carry on from the service's
            self.sent = self._head()
            self._count_to(self.sent)
            return None
        asked = self.sent + length
        self.sent = int(response.headers.get("Upload-Offset", asked))
        if checksums is None and self.sent < asked:
            self.whole_steps = True
        return parse_header(response.headers.get(wire.CHECKSUM_HEADER))

    def _recover(self) -> None:
        try:
            self.sent = self._head()
        except NotFound:
            self.sent = -1  # gone: either published (the answer to the last PATCH was lost) or expired
        else:
            self._count_to(self.sent)

    # --- the whole file ----------------------------------------------------------------------------

    def _ensure_created(self) -> None:
        if self.url is None:
            self._create()

    def run(self, url: str | None = None, counted: int = 0) -> Checksums:
        """Create the upload, or resume ``url``; ``counted`` is what the progress display already shows."""
        self.url = upload_path(url) if url else None
        self.counted = counted
        if self.url is not None:
            try:
                self.sent = self.retry.call(self._head)
            except NotFound:
                self.url = None
        if self.url is None:
            self.retry.call(self._ensure_created, recover=self._find_own_upload)
        self._count_to(self.sent)
        with open(self.file.source, "rb", buffering=0) as fh:
            if os.fstat(fh.fileno()).st_size != self.file.size:
                raise FileChanged(
                    f"{self.file.path} changed since the folder was read: run the command again"
                )
            while self.hashed < self.sent:  # rebuild the digest state of the bytes the service holds
                self._hash(self._read(fh, self.hashed, min(self.piece, self.sent - self.hashed)), self.hashed)
            while self.result is None:
                self.retry.call(lambda: self._step(fh), recover=self._recover)
        return self.result

    def _step(self, fh: FileIO) -> None:
        size = self.file.size
        if self.sent == -1:  # the upload disappeared: published, or expired (then start it anew, once)
            if self._stored() is not None or self.recreated:
                self._finish_from_listing(fh)
                return
            self.recreated = True
            self.url = None
            self._create()
            self._count_to(0)
            return
        last_piece = size - ((size - 1) % self.piece + 1) if size else 0
        if self.whole_steps:
            last_piece = self.sent  # everything left goes in the final PATCH
        if self.sent < last_piece:
            end = min(self.sent + self.chunk, last_piece)
            self._patch(self._body(fh, self.sent, end), end - self.sent, None)
            return
        if self.sent == size:  # everything arrived but the answer did not
            self._finish_from_listing(fh)
            return
        # the final PATCH carries the whole file's checksum: what it sends is hashed before it starts
        for position in range(self.sent, size, self.piece):
            self._hash(self._read(fh, position, min(self.piece, size - position)), position)
        if fh.read(1):
            raise FileChanged(f"{self.file.path} grew while it was being delivered: run the command again")
        computed = self.digests.result()
        if self.plaintext_size is None and (problem := self.expected.mismatch(self.file.path, computed)):
            self.terminate()  # nothing of it is published, and its reserved space is given back
            raise problem
        start = self.sent
        try:
            rest: Iterator[bytes] | bytes = (
                bytes(self._read(fh, start, size - start))
                if size - start <= self.piece
                else self._body(fh, start, size)
            )
            answered = self._patch(rest, size - start, computed)
        except ChecksumMismatch as exc:  # nothing was stored: say it in the checksum file's words
            if self.plaintext_size is not None:
                raise  # the file as sent differs from the MD5 its checksum file lists for it
            arrived = Checksums(exc.details.get("md5"), str(exc.details.get("sha256") or ""))
            raise self.expected.mismatch(self.file.path, arrived) or exc from None
        if self.sent != size:
            return  # a 409 moved us: go round again
        self._count_to(size)
        if answered is None:
            self._finish_from_listing(fh)
            return
        self._check(answered, computed)
        self.result = answered

    def _check(self, stored: Checksums, computed: Checksums) -> None:
        if self.plaintext_size is not None:
            # the service answers for the plaintext, which only the checksum file can vouch for
            if problem := self.expected.mismatch(self.file.path, stored):
                raise ChecksumMismatch(f"{problem.message} (the plaintext the service decrypted and stored)")
            return
        if not stored.agrees_with(computed):
            raise ChecksumMismatch(
                f"{self.file.path}: levere stored a file with SHA-256 {stored.sha256} but the local file "
                f"has SHA-256 {computed.sha256}"
            )

    def _finish_from_listing(self, fh: FileIO) -> None:
        """The service no longer knows the upload: compare the published file with the local one."""
        stored = self._stored()
        if stored is None:
            raise Conflict(
                f"the upload of {self.file.path} is no longer on the service (it may have expired): "
                "run the same command again to send it anew"
            )
        while self.hashed < self.file.size:
            self._hash(
                self._read(fh, self.hashed, min(self.piece, self.file.size - self.hashed)), self.hashed
            )
        computed = self.digests.result()
        self._check(stored, computed)
        if self.plaintext_size is None and (problem := self.expected.mismatch(self.file.path, stored)):
            raise problem
        self._count_to(self.file.size)
        self.result = stored
