"""One behaviour contract, run against every storage backend (see conftest.py for the kinds).

Sizes are chosen around S3's limits: 5 MiB minimum part, 8 MiB levere part, 4 MiB read chunk.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from levere.domain.errors import (
    AlreadyExists,
    Conflict,
    InvalidPath,
    NotFound,
    StorageUnavailable,
)
from levere.storage import (
    CHUNK,
    Backend,
    LocalBackend,
    LocalSpec,
    S3Backend,
    S3Spec,
    build_backend,
    parse_backend_spec,
)
from levere.storage.s3_writer import PART, part_size_for

MiB = 1024 * 1024
BackendFactory = Callable[[], Backend]
RawClient = Callable[[dict[str, Any]], Any]


def blob(size: int, seed: int = 0) -> bytes:
    """Incompressible, reproducible test data."""
    return hashlib.shake_256(seed.to_bytes(8, "big")).digest(size) if size else b""


def pieces(data: bytes, size: int = MiB) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def put(backend: Backend, key: str, data: bytes, **kw: Any) -> None:
    with backend.open_writer(key, **kw) as w:
        for p in pieces(data):
            w.write(p)
        w.commit()


def get(backend: Backend, key: str, start: int = 0, end: int | None = None) -> bytes:
    out = bytearray()
    for chunk in backend.read(key, start, end):
        assert 0 < len(chunk) <= CHUNK
        out += chunk
    return bytes(out)


def keys(backend: Backend, prefix: str = "") -> list[str]:
    return [info.key for info in backend.list(prefix)]


# --- whole objects ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 4 * MiB + 1, 20 * MiB + 123])
def test_write_then_read_gives_same_bytes(backend: Backend, size: int) -> None:
    data = blob(size, seed=size)
    put(backend, "proj/run1/sample.fastq.gz", data, size_hint=size)
    assert get(backend, "proj/run1/sample.fastq.gz") == data
    info = backend.stat("proj/run1/sample.fastq.gz")
    assert info is not None and info.size == size and info.key == "proj/run1/sample.fastq.gz"
    assert backend.exists("proj/run1/sample.fastq.gz")


def test_write_without_size_hint_and_uneven_chunks(backend: Backend) -> None:
    data = blob(17 * MiB + 5, seed=3)
    with backend.open_writer("big.bin") as w:
        for p in pieces(data, 3 * MiB + 7):
            w.write(p)
        w.commit()
    assert get(backend, "big.bin") == data


def test_range_reads(backend: Backend) -> None:
    data = blob(9 * MiB + 11, seed=1)
    put(backend, "r.bin", data)
    n = len(data)
    for start, end in [
        (0, 10),
        (5, 6),
        (100, 4 * MiB + 5),
        (CHUNK - 1, 2 * CHUNK + 1),
        (n - 10, None),
        (n - 10, n + 100),
        (7, 7),
        (n, None),
        (n + 5, None),
    ]:
        assert get(backend, "r.bin", start, end) == data[start:end], (start, end)


def test_nothing_visible_before_commit(backend: Backend) -> None:
    w = backend.open_writer("a/pending.bin")
    w.write(blob(9 * MiB, seed=2))  # past one part, so S3 has a multipart upload running
    assert backend.stat("a/pending.bin") is None
    assert keys(backend) == []
    w.commit()
    assert keys(backend) == ["a/pending.bin"]


def test_abort_leaves_nothing(backend: Backend, leftovers: Callable[[], list[str]]) -> None:
    w = backend.open_writer("a/aborted.bin")
    w.write(blob(9 * MiB, seed=4))
    w.abort()
    assert backend.stat("a/aborted.bin") is None
    assert keys(backend) == []
    assert leftovers() == []


def test_error_inside_with_block_aborts(backend: Backend, leftovers: Callable[[], list[str]]) -> None:
    with pytest.raises(ConnectionResetError), backend.open_writer("x.bin") as w:
        w.write(b"partial")
        raise ConnectionResetError
    assert backend.stat("x.bin") is None
    assert leftovers() == []


def test_writer_cannot_be_used_after_commit(backend: Backend) -> None:
    w = backend.open_writer("once.bin")
    w.write(b"abc")
    w.commit()
    with pytest.raises(Conflict):
        w.write(b"more")
    with pytest.raises(Conflict):
        w.commit()


def test_plain_write_replaces_plain_object(backend: Backend) -> None:
    put(backend, "k", b"old")
    put(backend, "k", b"new contents")
    assert get(backend, "k") == b"new contents"


def test_write_once_is_protected(backend: Backend) -> None:
    put(backend, "final/report.pdf", b"v1", write_once=True)
    for write_once in (True, False):
        w = backend.open_writer("final/report.pdf", write_once=write_once)
        w.write(b"v2")
        with pytest.raises(AlreadyExists):
            w.commit()
    assert get(backend, "final/report.pdf") == b"v1"
    with pytest.raises(Conflict, match="force"):
        backend.delete("final/report.pdf")
    assert get(backend, "final/report.pdf") == b"v1"
    backend.delete("final/report.pdf", force=True)
    assert backend.stat("final/report.pdf") is None


def test_write_once_refuses_any_existing_object(backend: Backend) -> None:
    put(backend, "k", b"plain")
    with pytest.raises(AlreadyExists):
        put(backend, "k", b"locked", write_once=True)
    assert get(backend, "k") == b"plain"


def test_prepare_prefix_then_write_below_it(backend: Backend) -> None:
    backend.prepare_prefix("LEV-0001/run1/")
    assert keys(backend) == []
    put(backend, "LEV-0001/run1/a.txt", b"a")
    backend.prepare_prefix("LEV-0001/run1/")  # again: nothing changes
    assert keys(backend, "LEV-0001/") == ["LEV-0001/run1/a.txt"]


def test_delete(backend: Backend) -> None:
    put(backend, "d/1", b"x")
    backend.delete("d/1")
    assert backend.stat("d/1") is None
    backend.delete("d/1")  # absent: no error
    backend.delete("never/was")


def test_list_is_sorted_and_filtered_by_prefix(backend: Backend) -> None:
    names = ["b", "a/c", "a-b", "a/b/d", "ab", "z/y/x", "a/b0"]
    for i, name in enumerate(names):
        put(backend, name, b"x" * i)
    infos = list(backend.list())
    assert [i.key for i in infos] == sorted(names)
    assert {i.key: i.size for i in infos} == {name: i for i, name in enumerate(names)}
    assert keys(backend, "a/") == ["a/b/d", "a/b0", "a/c"]
    assert keys(backend, "a") == ["a-b", "a/b/d", "a/b0", "a/c", "ab"]
    assert keys(backend, "a/b") == ["a/b/d", "a/b0"]
    assert keys(backend, "nothing/") == []


def test_list_hides_unfinished_uploads(backend: Backend) -> None:
    s = backend.start_staged("up/file", 10 * MiB)
    backend.append_staged(s, 0, [blob(1000)])
    w = backend.open_writer("up/other")
    w.write(b"y")
    assert keys(backend) == []
    w.abort()
    backend.abort_staged(s)


BAD_KEYS = ["../x", "/abs", "a//b", "a/\x00b", "", "a/./b", "a/../b", "a/", "a\\b", ".levere-staging/x"]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_invalid_keys_are_refused(backend: Backend, key: str) -> None:
    calls: list[Callable[[], object]] = [
        lambda: backend.open_writer(key),
        lambda: backend.read(key),
        lambda: backend.stat(key),
        lambda: backend.delete(key),
        lambda: backend.start_staged(key, 1),
    ]
    for call in calls:
        with pytest.raises(InvalidPath):
            call()


def test_missing_object(backend: Backend) -> None:
    with pytest.raises(NotFound):
        backend.read("no/such/key")
    with pytest.raises(NotFound):
        backend.read("no/such/key", 5, 10)
    assert backend.stat("no/such/key") is None
    assert not backend.exists("no/such/key")


def test_unreachable_storage_fails_fast(dead_backend: Backend) -> None:
    started = time.monotonic()
    for call in (
        lambda: dead_backend.stat("a"),
        lambda: list(dead_backend.list()),
        lambda: dead_backend.start_staged("a", 5),
        lambda: put(dead_backend, "a", b"x"),
    ):
        with pytest.raises(StorageUnavailable):
            call()
    assert time.monotonic() - started < 15


# --- resumable staging sessions --------------------------------------------------------------------


def test_staged_odd_pieces(backend: Backend, leftovers: Callable[[], list[str]]) -> None:
    data = blob(20 * MiB + 3, seed=5)
    cuts = [0, 1, 1 + 3 * MiB, 1 + 10 * MiB, len(data)]
    s = backend.start_staged("p/staged.bin", len(data))
    assert backend.staged_offset(s) == 0
    for a, b in itertools.pairwise(cuts):
        assert backend.append_staged(s, a, pieces(data[a:b])) == b
        assert backend.staged_offset(s) == b
    assert backend.stat("p/staged.bin") is None
    backend.finish_staged(s)
    assert get(backend, "p/staged.bin") == data
    assert leftovers() == ["p/staged.bin"]
    with pytest.raises(NotFound):
        backend.staged_offset(s)


def test_staged_offset_survives_restart(backend_factory: BackendFactory) -> None:
    data = blob(12 * MiB + 9, seed=6)
    first = backend_factory()
    s = first.start_staged("restart.bin", len(data))
    first.append_staged(s, 0, pieces(data[: 9 * MiB + 1]))
    second = backend_factory()
    assert second.staged_offset(s) == 9 * MiB + 1
    second.append_staged(s, 9 * MiB + 1, pieces(data[9 * MiB + 1 :]))
    backend_factory().finish_staged(s)
    assert get(backend_factory(), "restart.bin") == data


def test_append_at_wrong_offset_is_refused(backend: Backend) -> None:
    s = backend.start_staged("o.bin", 100)
    backend.append_staged(s, 0, [b"0123456789"])
    for wrong in (0, 5, 11, 100):
        with pytest.raises(Conflict, match="offset"):
            backend.append_staged(s, wrong, [b"x"])
    assert backend.staged_offset(s) == 10
    backend.append_staged(s, 10, [b"y" * 90])
    backend.finish_staged(s)
    assert get(backend, "o.bin") == b"0123456789" + b"y" * 90


def _dropping(data: bytes, after: int) -> Iterator[bytes]:
    """A request body whose connection drops after ``after`` bytes."""
    yield from pieces(data[:after], 3 * MiB)
    raise ConnectionResetError("client went away")


@pytest.mark.parametrize("drop_at", [1000, 5 * MiB + 1, 8 * MiB, 11 * MiB + 3])
def test_dropped_connection_keeps_received_bytes(backend_factory: BackendFactory, drop_at: int) -> None:
    data = blob(14 * MiB, seed=drop_at)
    backend = backend_factory()
    s = backend.start_staged("drop.bin", len(data))
    with pytest.raises(ConnectionResetError):
        backend.append_staged(s, 0, _dropping(data, drop_at))
    assert backend_factory().staged_offset(s) == drop_at
    # and again, from a dropped resume, to exercise a tail followed by a tail
    second_drop = drop_at + (len(data) - drop_at) // 2
    with pytest.raises(ConnectionResetError):
        backend.append_staged(s, drop_at, _dropping(data[drop_at:], second_drop - drop_at))
    assert backend.staged_offset(s) == second_drop
    backend.append_staged(s, second_drop, pieces(data[second_drop:]))
    backend.finish_staged(s)
    assert get(backend, "drop.bin") == data


def test_abort_staged_removes_everything(backend: Backend, leftovers: Callable[[], list[str]]) -> None:
    s = backend.start_staged("gone.bin", 20 * MiB)
    backend.append_staged(s, 0, pieces(blob(9 * MiB + 5)))  # one part and a tail on S3
    backend.abort_staged(s)
    assert leftovers() == []
    assert backend.stat("gone.bin") is None
    with pytest.raises(NotFound):
        backend.staged_offset(s)
    with pytest.raises(NotFound):
        backend.append_staged(s, 0, [b"x"])
    with pytest.raises(NotFound):
        backend.finish_staged(s)
    backend.abort_staged(s)  # twice: no error


def test_finish_before_all_bytes_is_refused(backend: Backend) -> None:
    data = blob(6 * MiB, seed=7)
    s = backend.start_staged("short.bin", len(data))
    backend.append_staged(s, 0, [data[:MiB]])
    with pytest.raises(Conflict, match="incomplete"):
        backend.finish_staged(s)
    assert backend.stat("short.bin") is None
    backend.append_staged(s, MiB, pieces(data[MiB:]))
    backend.finish_staged(s)
    assert get(backend, "short.bin") == data


def test_more_bytes_than_declared_are_refused(backend: Backend) -> None:
    s = backend.start_staged("long.bin", 10)
    with pytest.raises(Conflict, match="declared length"):
        backend.append_staged(s, 0, [b"12345", b"678901"])
    assert backend.staged_offset(s) == 5  # the chunk that fitted is kept
    backend.append_staged(s, 5, [b"67890"])
    backend.finish_staged(s)
    assert get(backend, "long.bin") == b"1234567890"


@pytest.mark.parametrize("length", [0, 1, 10])
def test_small_staged_objects(backend: Backend, length: int) -> None:
    data = blob(length, seed=length)
    s = backend.start_staged(f"small/{length}", length)
    for i in range(length):
        assert backend.append_staged(s, i, [data[i : i + 1]]) == i + 1
    assert backend.append_staged(s, length, []) == length
    backend.finish_staged(s)
    assert get(backend, f"small/{length}") == data


def test_finish_does_not_replace_write_once(backend: Backend) -> None:
    put(backend, "wo", b"locked", write_once=True)
    s = backend.start_staged("wo", 3)
    backend.append_staged(s, 0, [b"new"])
    with pytest.raises(AlreadyExists):
        backend.finish_staged(s)
    assert get(backend, "wo") == b"locked"
    backend.abort_staged(s)


def test_read_staged_gives_bytes_held_so_far(backend: Backend) -> None:
    s = backend.start_staged("rs.bin", 100)
    backend.append_staged(s, 0, [b"abc", b"def"])
    if isinstance(backend, S3Backend):
        # S3 cannot read unfinished multipart uploads; the backend says so instead of guessing.
        with pytest.raises(Conflict, match="cannot read back"):
            list(backend.read_staged(s))
    else:
        assert b"".join(backend.read_staged(s)) == b"abcdef"


def test_write_small_publishes_whole_objects(
    backend_factory: BackendFactory, leftovers: Callable[[], list[str]]
) -> None:
    """Many small files of a batch: each published in one step, durable after one flush()."""
    backend = backend_factory()
    files = {f"p/run/lane{i % 3}/r{i}.fq": blob(100 + i, seed=i) for i in range(20)}
    files["p/run/empty.txt"] = b""
    for key, data in files.items():
        backend.write_small(key, data)
    backend.flush()
    fresh = backend_factory()
    for key, data in files.items():
        assert get(fresh, key) == data
    backend.write_small("p/run/lane0/r0.fq", b"replaced")
    assert get(fresh, "p/run/lane0/r0.fq") == b"replaced"
    assert leftovers() == sorted(files)  # no temporary names left anywhere
    with backend.open_writer("p/run/kept", write_once=True) as writer:
        writer.write(b"kept")
        writer.commit()
    with pytest.raises(AlreadyExists):
        backend.write_small("p/run/kept", b"other")
    assert get(fresh, "p/run/kept") == b"kept"
    with pytest.raises(InvalidPath):
        backend.write_small("../escape", b"x")


def test_a_group_of_small_writes_publishes_each_object_under_its_name(
    backend_factory: BackendFactory, leftovers: Callable[[], list[str]]
) -> None:
    """``small_writes``: many small objects in a few folders, written one after the other inside
    one ``with``, as a batch's group is; the same as ``write_small`` one by one."""
    backend = backend_factory()
    files = {f"g/run/lane{i % 4}/sub{i % 2}/r{i}.fq": blob(50 + i, seed=i) for i in range(40)}
    files["g/run/top.txt"] = b""
    with backend.small_writes() as write:
        for key, data in files.items():
            write(key, data)
        write("g/run/lane0/sub0/r0.fq", b"replaced in the same group")
        with pytest.raises(InvalidPath):
            write("g/../../escape", b"x")
    backend.flush()
    files["g/run/lane0/sub0/r0.fq"] = b"replaced in the same group"
    fresh = backend_factory()
    for key, data in files.items():
        assert get(fresh, key) == data
    assert leftovers() == sorted(files)


def test_write_once_small_writes_are_protected_like_any_write_once_object(
    backend_factory: BackendFactory, leftovers: Callable[[], list[str]]
) -> None:
    """``small_writes(write_once=True)``, as a sync to long-term storage copies small files: each
    object is published write-once, and an existing one is never replaced."""
    backend = backend_factory()
    put(backend, "w/run/plain.fq", b"plain")
    with backend.small_writes(write_once=True) as write:
        write("w/run/lane1/a.fq", b"first")
        write("w/run/empty.fq", b"")
        with pytest.raises(AlreadyExists):
            write("w/run/lane1/a.fq", b"second")
        with pytest.raises(AlreadyExists):
            write("w/run/plain.fq", b"locked")
        write("w/run/lane2/b.fq", b"after the refusals")
    backend.flush()
    fresh = backend_factory()
    assert get(fresh, "w/run/lane1/a.fq") == b"first"
    assert get(fresh, "w/run/empty.fq") == b""
    assert get(fresh, "w/run/plain.fq") == b"plain"
    assert get(fresh, "w/run/lane2/b.fq") == b"after the refusals"
    with pytest.raises(Conflict, match="force"):
        backend.delete("w/run/lane1/a.fq")
    assert leftovers() == ["w/run/empty.fq", "w/run/lane1/a.fq", "w/run/lane2/b.fq", "w/run/plain.fq"]


def test_staged_step_says_how_staged_bytes_become_durable(backend_factory: BackendFactory) -> None:
    """``staged_step`` is None where ``read_staged`` works (the tus layer can rebuild its checksums
    by reading back); otherwise appends that end on its multiples are durable steps, seen at once by
    a fresh process, which is where the tus layer saves its checksum state."""
    backend = backend_factory()
    data = blob(2 * PART + 5, seed=11)
    s = backend.start_staged("step.bin", len(data))
    step = backend.staged_step(s)
    if step is None:
        backend.append_staged(s, 0, pieces(data[: MiB + 3]))
        assert b"".join(backend.read_staged(s)) == data[: MiB + 3]
    else:
        assert 0 < step <= PART
        backend.append_staged(s, 0, pieces(data[:step]))
        assert backend_factory().staged_offset(s) == step
        backend.append_staged(s, step, pieces(data[step : 2 * step]))
        assert backend_factory().staged_offset(s) == 2 * step
        backend.append_staged(s, 2 * step, pieces(data[2 * step :]))
        backend_factory().finish_staged(s)
        assert get(backend_factory(), "step.bin") == data
        return
    backend.abort_staged(s)


def test_random_split_points_give_identical_content(kind: str, backend_factory: BackendFactory) -> None:
    # S3 examples cost real uploads; a few well-chosen ones still cross part and tail boundaries.
    size = 9 * MiB + 17
    data = blob(size, seed=9)
    backend = backend_factory()
    counter = iter(range(1_000_000))

    @settings(
        max_examples=4 if kind == "s3" else 25,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(st.lists(st.integers(min_value=0, max_value=size), max_size=5))
    def check(cuts: list[int]) -> None:
        key = f"hyp/{next(counter)}"
        points = sorted({0, size, *cuts})
        s = backend.start_staged(key, size)
        for a, b in itertools.pairwise(points):
            assert backend.append_staged(s, a, pieces(data[a:b], 2 * MiB + 1)) == b
        backend.finish_staged(s)
        assert hashlib.sha256(get(backend, key)).digest() == hashlib.sha256(data).digest()
        backend.delete(key)

    check()


_CHILD = textwrap.dedent(
    """
    import hashlib, json, sys, time
    from pathlib import Path
    from levere.storage import LocalBackend, S3Backend
    kind, args = sys.argv[1], json.loads(sys.argv[2])
    session = args.pop("session")
    if kind in ("local", "layered"):
        backend = LocalBackend(Path(args["root"]), args["backend_id"])
    else:
        backend = S3Backend(**args)
    data = hashlib.shake_256((11).to_bytes(8, "big")).digest(9 * 1024 * 1024)

    def body():
        for i in range(0, len(data), 1024 * 1024):
            yield data[i : i + 1024 * 1024]
        print("sent", flush=True)
        time.sleep(120)  # killed here, with bytes past the last full part still in memory

    backend.append_staged(session, 0, body())
    """
)


def test_offset_is_right_after_process_is_killed(
    kind: str, backend_args: dict[str, Any], backend_factory: BackendFactory
) -> None:
    backend = backend_factory()
    data = blob(9 * MiB, seed=11) + blob(MiB, seed=12)
    s = backend.start_staged("killed.bin", len(data))
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, kind, json.dumps({**backend_args, "session": s})],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "sent"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    offset = backend_factory().staged_offset(s)
    # Whatever was durable: at least the full 8 MiB part on S3, everything written on disk.
    assert 8 * MiB <= offset <= 9 * MiB
    backend.append_staged(s, offset, pieces(data[offset:]))
    backend.finish_staged(s)
    assert get(backend, "killed.bin") == data


# --- S3 specifics ----------------------------------------------------------------------------------


def test_stale_tail_is_not_counted_twice(
    s3_env: dict[str, Any], s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash after a part holding the tail's bytes was uploaded, before the tail was rewritten."""
    backend = S3Backend(bucket=s3_bucket, prefix="stale-tail", **s3_env)
    data = blob(12 * MiB, seed=13)
    s = backend.start_staged("stale.bin", len(data))
    backend.append_staged(s, 0, [data[: 3 * MiB]])  # all of it in the tail

    class Crash(BaseException):
        pass

    def crash(*_: object) -> None:
        raise Crash

    monkeypatch.setattr(backend._staging, "_keep", crash)  # dies before the tail is rewritten
    with pytest.raises(Crash):
        backend.append_staged(s, 3 * MiB, pieces(data[3 * MiB : 9 * MiB]))  # part 1 = tail + 5 MiB
    fresh = S3Backend(bucket=s3_bucket, prefix="stale-tail", **s3_env)
    assert fresh.staged_offset(s) == 8 * MiB
    fresh.append_staged(s, 8 * MiB, pieces(data[8 * MiB :]))
    fresh.finish_staged(s)
    assert get(fresh, "stale.bin") == data


def test_object_lock_holds_write_once_objects(
    s3_env: dict[str, Any], s3_lock_bucket: str, raw_s3_client: RawClient
) -> None:
    backend = S3Backend(bucket=s3_lock_bucket, prefix="lock-test", object_lock=True, **s3_env)
    backend.ensure_bucket()  # exists already: checks that object lock is on
    data = blob(9 * MiB, seed=14)
    with backend.open_writer("held.bin", write_once=True) as writer:  # a multipart upload
        writer.write(data)
        writer.commit()
    assert writer.version
    version = backend.write_small("small.bin", b"small", write_once=True)
    put(backend, "plain.bin", b"plain")
    client = raw_s3_client(s3_env)
    for key in ("held.bin", "small.bin"):
        head = client.head_object(Bucket=s3_lock_bucket, Key=f"lock-test/{key}")
        assert head["ObjectLockMode"] == "GOVERNANCE" and head["ObjectLockRetainUntilDate"]
    assert head["VersionId"] == version
    with pytest.raises(Conflict):
        backend.delete("held.bin")
    with pytest.raises(AlreadyExists):
        put(backend, "held.bin", b"other")
    backend.delete("plain.bin")
    # a forced delete (levere's repair) hides the locked version and frees the key; the version
    # itself lives on until its retention ends
    backend.delete("held.bin", force=True)
    assert backend.stat("held.bin") is None
    assert b"".join(backend.read("held.bin", version=writer.version)) == data
    assert backend.stat("held.bin", version="no-such-version") is None
    versions = client.list_object_versions(Bucket=s3_lock_bucket, Prefix="lock-test/plain")
    assert versions.get("Versions", []) == [] and versions.get("DeleteMarkers", []) == []


@pytest.mark.parametrize("length", [0, 1, 8 * MiB, 70 * 10**9, 200 * 10**9, 5 * 10**12])
def test_part_size_keeps_any_declared_length_within_s3_part_limit(length: int) -> None:
    size = part_size_for(length)
    assert size >= PART and size % MiB == 0
    assert -(-length // size) <= 9_000


def test_ensure_bucket_refuses_lock_on_unlocked_bucket(s3_env: dict[str, Any], s3_bucket: str) -> None:
    with pytest.raises(Conflict, match="object lock"):
        S3Backend(bucket=s3_bucket, object_lock=True, **s3_env).ensure_bucket()


# --- configuration ---------------------------------------------------------------------------------


def test_specs_build_backends_without_io(tmp_path: Any) -> None:
    local = parse_backend_spec({"type": "local", "backend_id": "disk1", "root": str(tmp_path / "absent")})
    assert isinstance(local, LocalSpec)
    assert isinstance(build_backend(local), LocalBackend)
    s3 = parse_backend_spec(
        {
            "type": "s3",
            "backend_id": "ceph1",
            "endpoint_url": "http://127.0.0.1:1",
            "bucket": "deliveries",
            "access_key": "AKIA-visible-nowhere",
            "secret_key": "very-secret-value",
            "retention_mode": "compliance",
        }
    )
    assert isinstance(s3, S3Spec) and s3.write_once  # the default
    built = build_backend(s3, write_once=True)
    assert isinstance(built, S3Backend) and built.object_lock and built.backend_id == "ceph1"
    assert built.retention_mode == "compliance"
    # a tier that is not write-once (the working area) frees and replaces its objects
    plain = build_backend(s3)
    assert isinstance(plain, S3Backend) and not plain.object_lock
    for text in (repr(s3), str(s3), repr(built), s3.model_dump_json()):
        assert "very-secret-value" not in text and "AKIA-visible-nowhere" not in text


@pytest.mark.parametrize(
    "raw",
    [
        {"type": "ftp", "backend_id": "x", "root": "/"},
        {"type": "local", "backend_id": "x"},
        {"type": "local", "backend_id": "x", "root": "/", "bucket": "typo"},
        {"type": "s3", "backend_id": "x", "endpoint_url": "127.0.0.1", "bucket": "abc"},
    ],
)
def test_bad_specs_are_refused(raw: dict[str, Any]) -> None:
    from levere.domain.errors import ConfigurationError

    with pytest.raises(ConfigurationError):
        parse_backend_spec(raw)
