"""How a batch's small files are published: in child processes on a local disk, on threads for an
object store, in the request's thread with one CPU; and what happens when a child dies."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import get_args

import pytest
from sqlalchemy import select

from levere import dataplane
from levere.config import SyncSettings, TierName, TierSettings
from levere.context import Context
from levere.dataplane import process_pools, small_writes
from levere.dataplane.small_writes import SmallWrites, publish_group
from levere.db.models import Replica, StoredFile
from levere.domain.errors import StorageUnavailable
from levere.domain.tiers import Tier
from levere.services import batches, deliveries
from levere.storage import LocalBackend, S3Spec
from levere.transfer.pipe import ByteSource
from tests.deliveries_support import Crew, crew, digests, quota, tar_of


def _files(count: int, prefix: str = "lane") -> dict[str, bytes]:
    return {f"{prefix}{i % 4}/r{i:05d}.fq": os.urandom(100 + i % 3000) for i in range(count)}


def _ingest(
    ctx: Context,
    files: dict[str, bytes],
    c: Crew | None = None,
    after_each: Callable[[int], None] | None = None,
) -> tuple[batches.BatchResult, Crew]:
    """``files`` sent as one batch into delivery RUN1 of a new project (or of ``c``'s)."""
    if c is None:
        c = crew(ctx)
        deliveries.open_delivery(ctx, c.staff, c.project, "RUN1")
    body = tar_of(files)
    source = _Pieces(body, after_each)
    return batches.ingest(ctx, c.staff, c.project, "RUN1", source, content_length=len(body)), c


class _Pieces(ByteSource):
    """A body in 256 KiB pieces; ``after_each`` runs after each piece is taken."""

    def __init__(self, body: bytes, after_each: Callable[[int], None] | None = None) -> None:
        super().__init__()
        step = 256 * 1024
        self._pieces: Iterator[bytes] = iter([body[i : i + step] for i in range(0, len(body), step)])
        self._after = after_each
        self.taken = 0

    def _next(self) -> bytes | None:
        piece = next(self._pieces, None)
        self.taken += 1
        if self._after is not None:
            self._after(self.taken)
        return piece


def _publishers() -> list[int]:
    """The process ids of this process's children that publish small files."""
    return [p.pid for p in multiprocessing.active_children() if p.name == "levere-publisher" and p.pid]


def _assert_stored_exactly(ctx: Context, identifier: str, files: dict[str, bytes]) -> None:
    """Each file is recorded with its size and checksums and on the disk with its bytes, nothing
    else is recorded, and the quota counts exactly their bytes."""
    with ctx.tx() as session:
        rows = session.execute(
            select(StoredFile.path, StoredFile.size, StoredFile.md5, StoredFile.sha256)
        ).all()
        copies = session.execute(
            select(Replica.id, Replica.key, Replica.state, StoredFile.path).join(StoredFile)
        ).all()
    assert {r[0]: (r[1], r[2], r[3]) for r in rows} == {p: (len(d), *digests(d)) for p, d in files.items()}
    # one present copy in the area per file, under its key, each with an id of its own
    assert sorted((c.path, c.key, c.state) for c in copies) == sorted(
        (p, f"{identifier}/RUN1/{p}", "present") for p in files
    )
    assert len({c.id for c in copies}) == len(files)
    assert {uuid.UUID(c.id).version for c in copies} == {7}
    area = ctx.backend(Tier.AREA)
    for path, data in files.items():
        assert b"".join(area.read(f"{identifier}/RUN1/{path}")) == data
    used = quota(ctx, identifier)
    assert (used.used_bytes, used.reserved_bytes) == (sum(map(len, files.values())), 0)


def _with(ctx: Context, **changes: object) -> Context:
    return Context.build(ctx.settings.model_copy(update=changes))


@pytest.mark.parametrize("processes", [1, 2])
def test_each_way_of_publishing_stores_exactly_the_files_sent(ctx: Context, processes: int) -> None:
    """In the request's thread (1) or in two child processes (2): the same files, bytes and rows."""
    files = _files(700)
    files["empty.txt"] = b""
    others = set(_publishers())
    here = _with(ctx, ingest_processes=processes)
    try:
        result, c = _ingest(here, files)
    finally:
        here.close()
    assert result.failed == [] and sorted(f.path for f in result.stored) == sorted(files)
    _assert_stored_exactly(ctx, c.project, files)
    if processes == 2:  # the files went through two children, which wait for the next batch
        assert len(set(_publishers()) - others) == 2


def test_a_batch_smaller_than_a_group_starts_no_children(ctx: Context) -> None:
    """The checksum file of a run of large files, say: written at once, by the service itself."""
    others = set(_publishers())
    here = _with(ctx, ingest_processes=2)
    try:
        files = _files(small_writes.GROUP_FILES - 1)
        result, c = _ingest(here, files)
    finally:
        here.close()
    assert result.failed == [] and len(result.stored) == len(files)
    _assert_stored_exactly(ctx, c.project, files)
    assert set(_publishers()) - others == set()


def test_a_publishing_process_killed_mid_batch_loses_nothing(
    ctx: Context, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGKILL to a child while groups are in flight: its groups are published here instead, every
    file is stored once with its own bytes and recorded, and the next batch gets fresh children."""
    here = _with(ctx, ingest_processes=2)
    files = _files(3000)
    killed: list[int] = []

    others = set(_publishers())  # children of earlier tests, publishing to their own folders

    def kill_a_child(taken: int) -> None:
        if taken == 20:
            victim = next(pid for pid in _publishers() if pid not in others)
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)

    try:
        result, c = _ingest(here, files, after_each=kill_a_child)
        assert killed, "the body was too short to kill a child in the middle"
        assert "a process publishing small files stopped" in caplog.text
        assert result.failed == [] and len(result.stored) == 3000
        _assert_stored_exactly(here, c.project, files)
        # the next batch works, in new children
        again, _ = _ingest(here, {f"later/{p}": d for p, d in _files(300).items()}, c)
        assert again.failed == [] and len(again.stored) == 300
        mine = set(_publishers()) - others
        assert len(mine) == 2 and killed[0] not in mine
    finally:
        here.close()


def test_idle_children_leave_and_the_next_batch_starts_new_ones(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(process_pools, "IDLE_SECONDS", 0.5)
    others = set(_publishers())
    here = _with(ctx, ingest_processes=2)
    try:
        first, c = _ingest(here, _files(300))
        started = set(_publishers()) - others
        assert len(started) == 2 and first.failed == []
        deadline = time.monotonic() + 10
        while set(_publishers()) & started:  # they leave by themselves
            assert time.monotonic() < deadline, "idle children did not leave"
            time.sleep(0.1)
        # the next children stay for the count below, however slow the machine is meanwhile
        monkeypatch.setattr(process_pools, "IDLE_SECONDS", 120.0)
        files = {f"later/{p}": d for p, d in _files(300).items()}
        again, _ = _ingest(here, files, c)
        assert again.failed == [] and len(again.stored) == 300
        assert len(set(_publishers()) - others - started) == 2
    finally:
        here.close()


def _fork_servers() -> set[int]:
    """The process ids of this process's children that are fork servers."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid() and b"forkserver" in cmdline:
                found.add(int(entry))
    return found


def test_a_service_on_a_local_area_starts_its_fork_server_before_the_first_batch(
    ctx: Context, tmp_path: Path
) -> None:
    """``levere serve`` calls the data plane's warm_up(): the children's fork server starts beside
    it (where a tier will use them), not in the middle of the first batch."""
    s3 = S3Spec(
        endpoint_url="http://127.0.0.1:1", bucket="bucket", access_key="k", secret_key="s", backend_id="s3"
    )
    on_s3 = _with(
        ctx,
        tiers=TierSettings(**{t: s3.model_copy(update={"backend_id": t}) for t in get_args(TierName)}),
    )
    one = _with(ctx, ingest_processes=1, sync=SyncSettings(processes=1))
    local = _with(ctx, ingest_processes=2)
    try:
        assert dataplane.warm_up(on_s3) is None  # an object store publishes and copies on threads
        assert dataplane.warm_up(one) is None  # one process: no children
        thread = dataplane.warm_up(local)
    finally:
        for c in (on_s3, one, local):
            c.close()
    assert thread is not None
    thread.join(timeout=30)
    assert not thread.is_alive() and _fork_servers()
    # the children of the next batch come from it
    before = _fork_servers()
    here = _with(ctx, ingest_processes=2)
    try:
        result, _ = _ingest(here, _files(200))
    finally:
        here.close()
    assert result.failed == [] and len(result.stored) == 200
    assert _fork_servers() == before


class _FlushFails(LocalBackend):
    """A local folder whose second flush fails (the disk went away for a moment)."""

    def __init__(self, root: Path, backend_id: str) -> None:
        super().__init__(root, backend_id)
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        if self.flushes == 2:
            raise StorageUnavailable("the disk went away")
        super().flush()


def test_a_chunk_whose_flush_fails_is_not_recorded_and_a_retry_stores_everything(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks of 100 files, published by two children; the flush of the second chunk (on the
    flushing thread) fails: the batch fails, the first chunk and those after the failure are
    recorded, the second is not (its files are not known to be durable), the reservation is
    given back, and sending the batch again stores every file."""
    monkeypatch.setattr(batches, "CHUNK_FILES", 100)
    here = _with(ctx, ingest_processes=2)
    try:
        area = here.backend(Tier.AREA)
        assert isinstance(area, LocalBackend)
        failing = _FlushFails(area.root, area.backend_id)
        failing.recipe = area.recipe  # the children publish through the area's own backend
        here._tiers["area"] = failing
        c = crew(here)
        deliveries.open_delivery(here, c.staff, c.project, "RUN1")
        files = _files(450)
        with pytest.raises(StorageUnavailable, match="the disk went away"):
            _ingest(here, files, c)
        order = list(files)
        with here.tx() as session:
            recorded = set(session.execute(select(StoredFile.path)).scalars())
        assert recorded == set(order[:100]) | set(order[200:400])
        used = quota(here, c.project)
        assert (used.used_bytes, used.reserved_bytes) == (sum(len(files[p]) for p in recorded), 0)
        again, _ = _ingest(here, files, c)
        assert again.failed == [] and len(again.stored) == 450
        _assert_stored_exactly(here, c.project, files)
    finally:
        here.close()


class _Failing(LocalBackend):
    """A local folder whose disk refuses one name; several threads, as an object store has."""

    small_write_threads = 3

    def __init__(self, root: Path, refuse: str) -> None:
        super().__init__(root, "failing")
        self.refuse = refuse

    @contextlib.contextmanager
    def small_writes(self) -> Iterator[Callable[[str, bytes], None]]:
        with super().small_writes() as write:

            def refusing(key: str, data: bytes) -> None:
                if key == self.refuse:
                    raise OSError(28, "No space left on device")
                write(key, data)

            yield refusing


@pytest.mark.parametrize("threads", [0, 3])
def test_a_storage_failure_stops_the_handing_over_and_keeps_what_was_stored(
    tmp_path: Path, threads: int
) -> None:
    root = tmp_path / "area"
    root.mkdir()
    backend = _Failing(root, "f/0150")
    backend.small_write_threads = threads
    writes: SmallWrites[int] = SmallWrites(backend)
    data = {i: os.urandom(1000) for i in range(400)}
    wrong = digests(b"something else")
    handed: list[int] = []
    # inline, the next file handed over hears of the failure; on threads, the caller's drain does
    with contextlib.suppress(StorageUnavailable):
        for i, payload in data.items():
            expect = wrong if i == 7 else digests(payload)
            writes.add(i, f"f/{i:04d}", payload, *expect, f"f/{i:04d}")
            handed.append(i)
    done = writes.close()
    assert isinstance(done.error, StorageUnavailable)
    assert done.error.message == "could not store f/0150: No space left on device"
    assert (len(handed) < 400) == (threads == 0)
    stored = [tag for tag, _md5, _sha, _sealed in done.stored]
    mismatched = [tag for tag, _md5, _sha in done.mismatched]
    # every file handed over is accounted for exactly once; all before the failed one are stored
    assert sorted(stored + mismatched + done.unwritten) == handed
    assert mismatched == [7] and 150 in done.unwritten
    assert set(range(150)) - {7} <= set(stored)
    for tag, md5, sha256, _sealed in done.stored:
        assert (md5, sha256) == digests(data[tag])
        assert (root / f"f/{tag:04d}").read_bytes() == data[tag]
    assert not (root / "f/0007").exists() and not (root / "f/0150").exists()


def test_publish_group_checks_before_it_writes(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path, "t")
    good, bad = b"good bytes", b"bad bytes"
    results = publish_group(
        backend,
        [
            ("a/good", good, *digests(good), "a/good"),
            ("a/bad", bad, "", digests(b"other")[1], "a/bad"),
            ("a/unchecked", bad, "", "", "a/unchecked"),
        ],
    )
    assert results == [
        (*digests(good), "", "", None),
        (*digests(bad), "mismatch", "", None),
        (*digests(bad), "", "", None),
    ]
    assert (tmp_path / "a/good").read_bytes() == good and not (tmp_path / "a/bad").exists()
