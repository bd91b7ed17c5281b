"""Encryption on both cores: past the first MiB a helper process encrypts chunks while the caller
reads and a writing thread writes. The body must stay one the stock library opens, whoever
encrypted which chunk, when the helper is killed half-way, and when the sink fails."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from crypt4gh import lib as stock_lib
from levere.crypt4gh import BodyEncryptor, PrivateKey, body_size, encrypt_stream, make_header
from levere.crypt4gh.encryptor import HELPER_AFTER

SIZE = HELPER_AFTER + 40 * 1024 * 1024 + 12345  # well past the helper's start, not a whole chunk


def _helpers() -> list[int]:
    """This process's children running the encrypting helper."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == os.getpid() and b"segment_worker.py" in command:
            found.append(int(entry.name))
    return found


class _Paced(io.BytesIO):
    """The plaintext, read at a pace past the helper's start: each read after
    :data:`HELPER_AFTER` bytes waits a little, so that a helper slow to start on a loaded machine
    is up long before the end (the tests are about what happens once it serves)."""

    def readinto(self, buffer: object) -> int:  # type: ignore[override]
        if self.tell() >= HELPER_AFTER:
            time.sleep(0.05)
        return super().readinto(buffer)  # type: ignore[arg-type]


class _Recording(io.BytesIO):
    """A sink that notes which threads wrote to it, and can run something at its n-th write."""

    def __init__(self, at_write: int = -1, action: object = None) -> None:
        super().__init__()
        self.threads: set[str] = set()
        self.writes = 0
        self._at, self._action = at_write, action

    def write(self, data: object) -> int:  # type: ignore[override]
        self.threads.add(threading.current_thread().name)
        self.writes += 1
        if self.writes == self._at and callable(self._action):
            self._action()
        return super().write(data)  # type: ignore[arg-type]


def _stock_decrypt(body: bytes, data_key: object, member: PrivateKey) -> bytes:
    header = make_header(data_key, member.public_key)  # type: ignore[arg-type]
    out = io.BytesIO()
    stock_lib.decrypt([(0, member.secret_bytes(), None)], io.BytesIO(header + body), out)
    return out.getvalue()


@pytest.mark.parametrize("checksums", [True, False])
def test_a_body_encrypted_with_the_helper_opens_with_the_stock_library(checksums: bool) -> None:
    plaintext = os.urandom(SIZE)
    sink = _Recording()
    result = encrypt_stream(_Paced(plaintext), sink, checksums=checksums)

    assert "crypt4gh-write" in sink.threads  # the helper served: its chunks were written by the thread
    assert result.body_size == len(sink.getvalue()) == body_size(SIZE)
    if checksums:
        assert result.md5 == hashlib.md5(plaintext).hexdigest()
        assert result.sha256 == hashlib.sha256(plaintext).hexdigest()
    assert _stock_decrypt(sink.getvalue(), result.data_key, PrivateKey.generate()) == plaintext
    assert _helpers() == []


def test_plaintext_pushed_in_uneven_pieces_through_the_helper_makes_a_valid_body() -> None:
    plaintext = os.urandom(SIZE)
    sink = _Recording()
    with BodyEncryptor(sink) as encryptor:
        at, step = 0, 1
        while at < SIZE:
            step = step * 7 % 3_000_001 + 1
            encryptor.write(plaintext[at : at + step])
            at += step
            if at >= HELPER_AFTER:
                time.sleep(0.05)  # as _Paced does
        result = encryptor.finish()
    assert "crypt4gh-write" in sink.threads
    assert result.md5 == hashlib.md5(plaintext).hexdigest()
    assert _stock_decrypt(sink.getvalue(), result.data_key, PrivateKey.generate()) == plaintext


def test_a_helper_killed_half_way_leaves_a_valid_body() -> None:
    plaintext = os.urandom(SIZE)
    killed: list[int] = []

    def kill_helper() -> None:
        for pid in _helpers():
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    sink = _Recording(at_write=HELPER_AFTER // (1024 * 1024) + 6, action=kill_helper)
    result = encrypt_stream(_Paced(plaintext), sink)

    assert killed  # the helper was running, and was killed while chunks were in flight
    assert result.sha256 == hashlib.sha256(plaintext).hexdigest()
    assert _stock_decrypt(sink.getvalue(), result.data_key, PrivateKey.generate()) == plaintext


def test_neither_thread_nor_helper_outlives_a_sink_that_fails_with_the_helper() -> None:
    class Failing(_Recording):
        def write(self, data: object) -> int:  # type: ignore[override]
            if threading.current_thread().name == "crypt4gh-write":
                raise OSError("disk full")
            return super().write(data)

    before = set(threading.enumerate())
    for checksums in (True, False):
        with pytest.raises(OSError, match="disk full"):
            encrypt_stream(_Paced(bytes(SIZE)), Failing(), checksums=checksums)
    assert [t.name for t in set(threading.enumerate()) - before] == []
    assert _helpers() == []
