"""What the local backend asks of the kernel beyond the ``os`` module: durability (fsync of files
and folders, ``syncfs``), paced write-back of big files, ``linkat`` for naming unnamed files, and
a few checks and clean-ups on plain paths. Linux calls come through libc; where one is missing
(another system), its getter answers ``None`` and the caller takes the portable way.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import secrets
import stat as stat_mod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from levere.domain.errors import Conflict, NotFound, StorageFull

#: what the kernel answers when a write finds no room: the file system is full, or a user's or
#: group's disk quota is used up
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


def full_error(exc: OSError, what: str) -> StorageFull | None:
    """``exc`` as levere's :class:`StorageFull` when it says the file system has no room."""
    if exc.errno not in NO_SPACE:
        return None
    return StorageFull(f"the storage has no space left to {what}", reason=os.strerror(exc.errno or 0))


@contextlib.contextmanager
def space_errors(what: str) -> Iterator[None]:
    """Raise a full file system's ``OSError`` as :class:`StorageFull` (``what`` says what was
    being written, in the user's words); any other error as it is."""
    try:
        yield
    except OSError as exc:
        full = full_error(exc, what)
        if full is None:
            raise
        raise full from exc


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(f: BinaryIO) -> None:
    f.flush()
    os.fsync(f.fileno())


_SYNC_FILE_RANGE_WAIT_BEFORE = 1
_SYNC_FILE_RANGE_WRITE = 2
_SYNC_FILE_RANGE_WAIT_AFTER = 4


@functools.cache
def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None  # not Linux: writes are left to the kernel and the final fsync
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


class WriteBack:
    """Moves a big file's written bytes to the disk in steps while it is written, and out of the
    page cache a step later (see the notes of ``storage/local.py``). Advice only: the caller's
    fsync is still what makes the bytes durable, and any failure here is ignored."""

    STEP = 32 * 1024 * 1024

    def __init__(self, fd: int, start: int = 0) -> None:
        self.fd = fd
        self.sent = start  # writeback started up to here
        self.dropped = start  # out of the cache up to here
        self._range = _sync_file_range()

    def written(self, end: int) -> None:
        """The file now holds bytes up to ``end``."""
        if self._range is None:
            return
        step = self.STEP
        while end - self.sent >= step:
            self._range(self.fd, self.sent, step, _SYNC_FILE_RANGE_WRITE)
            self.sent += step
            if self.sent - self.dropped >= 2 * step:
                # the step before: wait until it is on the disk, then let its pages go
                self._range(
                    self.fd, self.dropped, step,
                    _SYNC_FILE_RANGE_WAIT_BEFORE | _SYNC_FILE_RANGE_WRITE | _SYNC_FILE_RANGE_WAIT_AFTER,
                )  # fmt: skip
                with contextlib.suppress(OSError):
                    os.posix_fadvise(self.fd, self.dropped, step, os.POSIX_FADV_DONTNEED)
                self.dropped += step

    def synced(self) -> None:
        """After an fsync: drop the rest of what was written from the cache."""
        if self._range is not None:
            with contextlib.suppress(OSError):
                os.posix_fadvise(self.fd, self.dropped, 0, os.POSIX_FADV_DONTNEED)


@functools.cache
def syncfs() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.syncfs  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None  # not Linux: os.sync() does the same for every file system


AT_FDCWD = -100
AT_SYMLINK_FOLLOW = 0x400
AT_EMPTY_PATH = 0x1000
#: what linkat answers where a link from a descriptor alone is not allowed: ENOENT (before Linux
#: 6.10, without CAP_DAC_READ_SEARCH), EPERM or EACCES (a security module), EINVAL (no such flag)
LINK_REFUSED = frozenset({errno.ENOENT, errno.EPERM, errno.EACCES, errno.EINVAL})


@functools.cache
def linkat() -> Callable[..., int] | None:
    """libc's ``linkat``: Python's ``os.link`` cannot follow ``/proc/self/fd`` links to name an
    unnamed file."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).linkat
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


def create_exclusive(folder: str | Path, suffix: str, mode: int = 0o644) -> tuple[int, str]:
    name = os.path.join(folder, f"{secrets.token_hex(16)}{suffix}")
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    return fd, name


def unlink_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def is_read_only(path: str | Path) -> bool:
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    return stat_mod.S_ISREG(st.st_mode) and not (st.st_mode & 0o222)


def read_file(path: str | Path, key: str, start: int, end: int | None, chunk: int) -> Iterator[bytes]:
    """The bytes ``[start, end)`` of the file at ``path`` (object ``key``), ``chunk`` at a time."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise NotFound(f"no object {key!r}") from None
    # plain descriptor reads: each asks for a whole chunk (or the rest), so a file object's
    # buffer would only copy, and its set-up costs system calls of its own
    try:
        stop = os.fstat(fd).st_size if end is None else min(end, os.fstat(fd).st_size)
        if start >= stop:
            return
        if start:
            os.lseek(fd, start, os.SEEK_SET)
        remaining = stop - start
        while remaining > 0:
            data = os.read(fd, min(chunk, remaining))
            if not data:
                # Shorter than when we looked: a concurrent writer truncated it.
                raise Conflict(f"{key!r} changed while it was being read")
            remaining -= len(data)
            yield data
    finally:
        os.close(fd)
