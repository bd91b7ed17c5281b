"""Many small files per request: tar streams to the delivery's batch endpoint.

Design notes
------------
One HTTP round trip per 4 KiB file would cap a delivery at a few hundred files per second; a tar
stream of thousands of members costs one request and lets the service write them back to back. Each
member carries its expected checksums, so the service verifies and publishes files one by one and a
broken stream keeps everything before the break: a retry asks which files arrived and sends the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from levere.cli.client import Client
from levere.cli.delivery import tarstream
from levere.cli.delivery.hashing import Checksums
from levere.cli.delivery.progress import Reporter
from levere.cli.delivery.retry import Cancelled, Retry
from levere.cli.delivery.scan import LocalFile
from levere.cli.delivery.tus import Expected
from levere.domain.errors import AlreadyExists, ChecksumMismatch, LevereError, QuotaExceeded

MiB = 1024 * 1024
#: a batch's fixed costs (the service's start and end of it, its answer) are paid once per batch, so
#: a run's small files go in as few batches as these limits allow (docs/benchmarks.md)
MAX_FILES = 20_000
MAX_BYTES = 256 * MiB
#: the service answers after the last member is committed: give it time beyond the usual timeout
#: (seconds to connect, read, write and wait for a connection, as httpx takes them)
TIMEOUT = (60.0, 900.0, 60.0, 60.0)


def split(
    files: list[LocalFile], parallel: int, max_files: int = MAX_FILES, max_bytes: int = MAX_BYTES
) -> list[list[LocalFile]]:
    """Batches of at most ``max_files`` / ``max_bytes``, and at least ``parallel`` of them when there
    are enough files to be worth it (a few hundred each), so that parallel streams have work."""
    if not files:
        return []
    wanted = max(1, min(parallel, len(files) // 500))
    per_batch = min(max_files, -(-len(files) // wanted))
    batches: list[list[LocalFile]] = [[]]
    size = 0
    for file in files:
        if batches[-1] and (len(batches[-1]) >= per_batch or size + file.size > max_bytes):
            batches.append([])
            size = 0
        batches[-1].append(file)
        size += file.size
    return batches


@dataclass
class BatchOutcome:
    computed: dict[str, Checksums] = field(default_factory=dict)
    failures: list[LevereError] = field(default_factory=list)


class BatchSender:
    """Send one batch of small files, resending what a broken stream did not deliver."""

    def __init__(
        self,
        api: Client,
        retry: Retry,
        reporter: Reporter,
        project: str,
        delivery: str,
        expected: Callable[[str], Expected],
    ) -> None:
        self.api, self.retry, self.reporter = api, retry, reporter
        self.project, self.delivery, self.expected = project, delivery, expected

    def _unless_cancelled(self, chunks: Iterator[bytes], report: Callable[[], None]) -> Iterator[bytes]:
        """The stream's chunks until a cancel; ``report`` shows the progress each one brings."""
        for chunk in chunks:
            if self.retry.cancel.is_set():
                raise Cancelled
            report()
            yield chunk

    def _stored_paths(self, paths: set[str]) -> dict[str, dict[str, Any]]:
        found = self.api.get(
            f"/projects/{quote(self.project, safe='')}/deliveries/{quote(self.delivery, safe='')}"
        )
        return {f["path"]: f for f in found.get("files") or [] if f["path"] in paths}

    def send(self, files: list[LocalFile]) -> BatchOutcome:
        outcome = BatchOutcome()
        pending = {f.path: f for f in files}
        counted: dict[str, int] = {}
        unreported = 0

        def on_member(sent: tarstream.Sent) -> None:
            nonlocal unreported
            outcome.computed[sent.path] = sent.checksums
            counted[sent.path] = sent.size
            unreported += sent.size

        def report() -> None:
            # the display hears of the bytes once per chunk of the stream rather than once per file
            nonlocal unreported
            if unreported:
                self.reporter.advance(unreported)
                unreported = 0

        def attempt() -> None:
            batch = sorted(pending.values(), key=lambda f: f.path)
            # one lookup per file, where the stream and the size would make three
            expected = {f.path: self.expected(f.path) for f in batch}

            def md5(path: str) -> str | None:
                return expected[path].md5

            answer = self.api.send(
                "POST",
                f"/projects/{quote(self.project, safe='')}/deliveries/{quote(self.delivery, safe='')}/batch"
                "?stored=paths",
                content=self._unless_cancelled(
                    tarstream.stream(batch, md5, lambda p: expected[p].sha256, on_member), report
                ),
                headers={
                    "Content-Type": "application/x-tar",
                    "Content-Length": str(tarstream.archive_size(batch, md5)),
                },
                timeout=TIMEOUT,
            ).json()
            # Each member carried the SHA-256 computed here from the bytes sent (or the one the
            # checksum file lists, which those bytes then match), and the service stores no file
            # that does not match its member: a stored path says the service holds those bytes.
            # (A service that lists each file with its checksums has them compared once more.)
            stored = answer.get("stored") or []
            for entry in stored:
                self._accept(entry, outcome)
                pending.pop(entry["path"], None)
            paths = answer.get("stored_paths") or []
            for path in paths:
                pending.pop(path, None)
            self.reporter.file_done(len(stored) + len(paths))
            for entry in answer.get("failed") or []:
                outcome.failures.append(self._failure(entry, outcome))
                pending.pop(entry["path"], None)
            for path in list(pending):  # not mentioned at all: the service lost track of it
                outcome.failures.append(LevereError(f"{path}: the service did not say whether it stored it"))
                pending.pop(path)

        def recover() -> None:
            report()  # what the broken stream had counted but not yet shown, so that it adds up below
            # a broken stream: the service kept the members completed before the break
            stored = self._stored_paths(set(pending))
            for path, entry in stored.items():
                self._accept(entry, outcome)
                pending.pop(path)
            self.reporter.file_done(len(stored))
            for path in pending:  # sent but lost: they will be sent (and counted) again
                self.reporter.advance(-counted.pop(path, 0))

        self.retry.call(attempt, recover=recover)
        return outcome

    def _accept(self, entry: dict[str, Any], outcome: BatchOutcome) -> None:
        path = entry["path"]
        stored = Checksums(entry["md5"], entry["sha256"])
        computed = outcome.computed.get(path)
        if computed is not None and not stored.agrees_with(computed):
            raise ChecksumMismatch(
                f"{path}: levere stored a file with SHA-256 {stored.sha256} but the local file has "
                f"SHA-256 {computed.sha256}"
            )
        outcome.computed[path] = stored  # the service's, with its MD5

    def _failure(self, entry: dict[str, Any], outcome: BatchOutcome) -> LevereError:
        path, code, message = entry["path"], entry.get("error", "error"), entry.get("message", "")
        computed = outcome.computed.get(path)
        if code == "checksum_mismatch" and computed is not None:
            arrived = Checksums(entry.get("md5"), entry.get("sha256") or computed.sha256)
            problem = self.expected(path).mismatch(path, arrived)
            return problem or ChecksumMismatch(message or f"{path}: damaged on the way; run again")
        if code == "checksum_mismatch":
            return ChecksumMismatch(message or f"{path}: checksum mismatch")
        if code == "quota_exceeded":
            return QuotaExceeded(message or f"{path} does not fit in the project's quota")
        if code == "already_exists":
            return AlreadyExists(message or f"{path} is already in the delivery with other content")
        return LevereError(message or f"{path}: {code}")
