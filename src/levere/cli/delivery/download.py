"""``levere download``'s engine: files of a project onto local disk, resumable and verified.

Design notes
------------
A file is written to ``NAME.part`` next to its final place and renamed only after its size, MD5 and
SHA-256 equal the service's manifest, so a name on disk always holds a whole, verified file. An
interrupted download keeps its ``.part``; the next run hashes what it holds (to rebuild the digest
state) and asks only for the rest with ``Range``, guarded by ``If-Range`` on the content's ETag so a
part of an older version is never completed with bytes of a newer one. A file that does not match
is fetched again from its first byte: the service checks whole-file reads against the manifest and
serves the next intact copy once it has found one damaged (``services/downloads.py``).

Local names follow ``cp -r``: what is asked for lands in the target folder under its last path
component (a whole project keeps its delivery folders). Every server path is checked before anything
is written, and none may climb out of the target folder.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

from levere.cli.client import Client
from levere.cli.delivery.hashing import Checksums, Digests, parse_header
from levere.cli.delivery.progress import Reporter
from levere.cli.delivery.retry import Cancelled, Retry, wait_all
from levere.domain.errors import ChecksumMismatch, Conflict, InvalidPath, LevereError, NotFound
from levere.domain.paths import check_relative_path
from levere.transfer import wire

MiB = 1024 * 1024
PIECE = 1 * MiB
PART = ".part"
#: how often a file that does not match the manifest is fetched again from its first byte: once per
#: copy the service may hold (the area, long-term storage)
RESTARTS = 2


@dataclass(frozen=True)
class Wanted:
    remote: str  # DELIVERY/PATH in the project
    local: Path
    size: int
    checksums: Checksums


@dataclass
class Summary:
    files: int = 0
    bytes: int = 0
    fetched_files: int = 0
    fetched_bytes: int = 0
    already_there: int = 0
    seconds: float = 0.0
    target: str = ""


def select(entries: list[dict[str, Any]], path: str | None) -> tuple[list[dict[str, Any]], str]:
    """The entries under ``path`` (a file, a folder, a delivery, or everything) and the prefix that
    local names are taken relative to."""
    if not path:
        return entries, ""
    wanted = path.strip("/")
    exact = [e for e in entries if e["path"] == wanted]
    if exact:
        return exact, wanted.rpartition("/")[0]
    under = [e for e in entries if e["path"].startswith(wanted + "/")]
    if not under:
        raise NotFound(f"nothing at {wanted} in this project")
    return under, wanted.rpartition("/")[0]


def local_target(target: Path, remote: str, base: str) -> Path:
    """Where ``remote`` goes under ``target``, or :class:`InvalidPath` if it would land elsewhere."""
    checked = check_relative_path(remote)
    if checked != remote:
        raise InvalidPath(f"the service sent a path that is not in normal form: {remote!r}")
    relative = remote[len(base) + 1 :] if base else remote
    root = os.path.abspath(target)
    final = os.path.abspath(os.path.join(root, *relative.split("/")))
    if not final.startswith(root + os.sep):
        raise InvalidPath(f"the service sent {remote!r}, which would be written outside {target}")
    return Path(final)


def plan(entries: list[dict[str, Any]], target: Path, base: str) -> list[Wanted]:
    wanted: list[Wanted] = []
    taken: dict[Path, str] = {}  # every local name a file uses: its own and its ".part"
    for entry in entries:
        local = local_target(target, entry["path"], base)
        part = Path(str(local) + PART)
        clash = taken.get(local) or taken.get(part)
        if clash is not None:
            raise InvalidPath(f"{entry['path']} and {clash} would use the same local file")
        taken[local] = taken[part] = entry["path"]
        wanted.append(
            Wanted(entry["path"], local, int(entry["size"]), Checksums(entry["md5"], entry["sha256"]))
        )
    return wanted


def hash_file(path: Path, limit: int | None = None, buffer: bytearray | None = None) -> Digests:
    digests = Digests()
    view = memoryview(buffer or bytearray(PIECE))
    with open(path, "rb", buffering=0) as fh:
        left = limit
        while left is None or left > 0:
            n = fh.readinto(view if left is None else view[: min(len(view), left)])
            if not n:
                break
            digests.update(view[:n])
            if left is not None:
                left -= n
    return digests


class Downloader:
    def __init__(
        self,
        api: Client,
        project: str,
        reporter: Reporter,
        retry: Retry,
        jobs: int = 4,
        overwrite: bool = False,
    ) -> None:
        self.api, self.project, self.reporter, self.retry = api, project, reporter, retry
        self.jobs, self.overwrite = jobs, overwrite
        #: the transfer grant of each delivery being downloaded (see :meth:`_grants`)
        self.grants: dict[str, str] = {}

    def listing(self, path: str | None) -> list[dict[str, Any]]:
        prefix = (path or "").strip("/")
        params = {"prefix": prefix} if prefix else {}
        data: list[dict[str, Any]] = self.retry.call(
            lambda: self.api.get(f"/projects/{quote(self.project, safe='')}/files", params=params)
        )
        return data

    def run(self, path: str | None, target: Path) -> Summary:
        started = time.monotonic()
        entries, base = select(self.listing(path), path)
        wanted = plan(entries, target, base)
        summary = Summary(files=len(wanted), bytes=sum(w.size for w in wanted), target=str(target))
        self.reporter.start(summary.bytes, summary.files)
        lock = threading.Lock()

        def one(item: Wanted) -> None:
            fetched = self.fetch(item)
            with lock:
                if fetched is None:
                    summary.already_there += 1
                else:
                    summary.fetched_files += 1
                    summary.fetched_bytes += fetched

        self._grants(path, wanted)
        try:
            with ThreadPoolExecutor(max(1, self.jobs), "levere-download") as pool:
                futures = [pool.submit(one, item) for item in wanted]
                wait_all(futures, self.retry.cancel)
        finally:
            for grant_id in set(self.grants.values()):
                self.api.end_grant(grant_id)
        summary.seconds = time.monotonic() - started
        return summary

    def _grants(self, path: str | None, wanted: list[Wanted]) -> None:
        """A transfer grant for what is downloaded, so that it finishes even if the token expires
        meanwhile: one for the file or folder asked for, or one per delivery of a whole project."""
        asked = (path or "").strip("/")
        deliveries = sorted({w.remote.split("/", 1)[0] for w in wanted})
        targets = {d: asked for d in deliveries} if asked else {d: d for d in deliveries}
        for delivery, target in targets.items():
            if target and (grant_id := self.api.begin_grant("download", self.project, target)):
                self.grants[delivery] = grant_id

    def fetch(self, item: Wanted) -> int | None:
        """Download ``item`` unless it is already there; the bytes fetched, or ``None``."""
        if item.local.exists():
            if self._already_there(item):
                self.reporter.advance(item.size)
                self.reporter.file_done()
                return None
            if not self.overwrite:
                raise Conflict(
                    f"{item.local} exists and is not {item.remote} as stored: move it away or use --overwrite"
                )
        item.local.parent.mkdir(parents=True, exist_ok=True)
        part = Path(str(item.local) + PART)
        fetched = self._fill(item, part)
        os.replace(part, item.local)
        self.reporter.file_done()
        return fetched

    def _already_there(self, item: Wanted) -> bool:
        if not item.local.is_file() or item.local.stat().st_size != item.size:
            return False
        return hash_file(item.local).result() == item.checksums

    def _fill(self, item: Wanted, part: Path, restarts: int = RESTARTS) -> int:
        have = part.stat().st_size if part.exists() else 0
        if have > item.size:
            have = 0
        digests = hash_file(part, have) if have else Digests()
        self.reporter.advance(have)
        state = _PartState(have, digests, item.size, needs_request=have < item.size)
        with open(part, "r+b" if have else "wb") as fh:
            fh.truncate(have)
            fh.seek(have)
            while state.have < item.size or state.needs_request:
                self.retry.call(lambda: self._get(item, fh, state), recover=lambda: self._rewind(fh, state))
            fh.flush()
            os.fsync(fh.fileno())
        got = state.digests.result()
        if got != item.checksums or (state.announced and state.announced != item.checksums):
            part.unlink(missing_ok=True)
            self.reporter.advance(-item.size)
            if restarts:
                # from the first byte again: an old part may hold another version, or the bytes may
                # have come from a damaged copy, which the service has since set aside for another
                return self._fill(item, part, restarts - 1)
            raise ChecksumMismatch(
                f"{item.remote}: downloaded bytes have MD5 {got.md5} / SHA-256 {got.sha256} but the manifest "
                f"says {item.checksums.md5} / {item.checksums.sha256}; nothing was kept"
            )
        return item.size - have

    def _rewind(self, fh: BinaryIO, state: _PartState) -> None:
        fh.flush()
        state.have = fh.tell()
        state.needs_request = state.have < state.size

    def _get(self, item: Wanted, fh: BinaryIO, state: _PartState) -> None:
        headers = {}
        if state.have:
            headers = {"Range": f"bytes={state.have}-", "If-Range": f'"{item.checksums.sha256}"'}
        if grant_id := self.grants.get(item.remote.split("/", 1)[0]):
            headers[wire.GRANT_HEADER] = grant_id
        url = f"/projects/{quote(self.project, safe='')}/data/{quote(item.remote)}"
        with self.api.stream("GET", url, headers=headers, expect=(416,)) as response:
            if response.status_code == 416:  # the service has fewer bytes than our part: start over
                self._restart(fh, state)
                return
            if state.have and response.status_code == 200:  # If-Range said the content changed
                self._restart(fh, state)
            state.announced = parse_header(response.headers.get(wire.CHECKSUM_HEADER)) or state.announced
            for data in response.iter_bytes(PIECE):
                if self.retry.cancel.is_set():
                    raise Cancelled
                if state.have + len(data) > item.size:
                    raise LevereError(f"{item.remote}: the service sent more than its {item.size} bytes")
                fh.write(data)
                state.digests.update(data)
                state.have += len(data)
                self.reporter.advance(len(data))
        state.needs_request = False
        if state.have < item.size:
            raise LevereError(f"{item.remote}: the service sent {state.have} of {item.size} bytes")

    def _restart(self, fh: BinaryIO, state: _PartState) -> None:
        self.reporter.advance(-state.have)
        fh.seek(0)
        fh.truncate(0)
        state.have = 0
        state.digests = Digests()


@dataclass
class _PartState:
    have: int
    digests: Digests
    size: int
    needs_request: bool = True
    announced: Checksums | None = None
