"""Taking back what a staged request stored (``Backend.truncate_staged``), on every backend: a tus
request that fails as a whole (its body ran past the upload's end, or the storage was full) leaves
nothing of itself. Part of the storage contract, beside ``test_contract.py``."""

from __future__ import annotations

import hashlib

from levere.storage import Backend
from tests.storage.conftest import BackendFactory

MiB = 1024 * 1024


def blob(size: int, seed: int) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(b"%d-%d" % (seed, counter)).digest()
        counter += 1
    return bytes(out[:size])


def test_bytes_past_an_offset_are_taken_back_and_the_upload_goes_on(backend_factory: BackendFactory) -> None:
    data = blob(3 * MiB, seed=1)
    backend: Backend = backend_factory()
    s = backend.start_staged("back/one.bin", len(data))
    assert backend.append_staged(s, 0, [data[:1000]]) == 1000
    assert backend.append_staged(s, 1000, [data[1000 : 2 * MiB]]) == 2 * MiB
    # the second request is taken back whole, also as a restarted process sees it
    assert backend.truncate_staged(s, 1000) == 1000
    assert backend_factory().staged_offset(s) == 1000
    assert backend.truncate_staged(s, 5000) == 1000  # nothing past the end to drop
    assert backend.append_staged(s, 1000, [data[1000:]]) == len(data)
    backend.finish_staged(s)
    assert b"".join(backend.read("back/one.bin")) == data


def test_taking_back_everything_leaves_an_empty_session(backend: Backend) -> None:
    s = backend.start_staged("back/two.bin", 10)
    backend.append_staged(s, 0, [b"01234"])
    assert backend.truncate_staged(s, 0) == 0
    assert backend.staged_offset(s) == 0
    backend.append_staged(s, 0, [b"abcdefghij"])
    backend.finish_staged(s)
    assert b"".join(backend.read("back/two.bin")) == b"abcdefghij"


def test_a_step_made_durable_stays_and_nothing_is_published(backend: Backend) -> None:
    """Where bytes become durable in steps (S3 parts), a completed step cannot be taken back: the
    session keeps it, and never holds the whole upload, so nothing is published by it."""
    data = blob(20 * MiB, seed=2)
    s = backend.start_staged("back/three.bin", len(data))
    step = backend.staged_step(s)
    start = 1000
    backend.append_staged(s, 0, [data[:start]])
    end = backend.append_staged(s, start, [data[start : 12 * MiB]])
    kept = backend.truncate_staged(s, start)
    if step is None:
        assert kept == start
    else:
        assert kept == (end // step) * step  # the last whole part, not the tail after it
    assert backend.staged_offset(s) == kept < len(data)
    assert backend.stat("back/three.bin") is None
    backend.append_staged(s, kept, [data[kept:]])
    backend.finish_staged(s)
    assert b"".join(backend.read("back/three.bin")) == data
