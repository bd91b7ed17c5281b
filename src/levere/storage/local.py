"""A storage backend on a local or network-mounted POSIX file system.

Design notes
------------
* Layout under ``root``: published objects at ``root/<key>``; whole-object writes in flight in
  ``root/.levere-tmp/``; resumable sessions in ``root/.levere-staging/<id>.part`` with a small
  ``<id>.json`` sidecar holding the key and declared length. Both helper folders are on the same
  file system as the objects, so publishing is a rename, never a copy.
* Durability: data is fsynced before the rename that publishes it, and the directory is fsynced
  after, so a crash leaves either the old state or the new one. Directories created for nested
  keys are fsynced into their parents too.
* The root itself is never created: if it is missing (an unmounted share), every call raises
  ``StorageUnavailable`` rather than silently filling the mount point's parent disk.
* Write-once objects are published read-only (0o444) with ``link()``, which fails if the name
  exists, so two writers can never both "win". Read-only is how ``delete`` recognises them.
* Appends to a session hold an exclusive ``flock`` on the ``.part`` file so two concurrent PATCH
  requests for one upload cannot interleave bytes.
* Big writes are paced (:class:`posix.WriteBack`): each completed step is sent to the disk at once and
  dropped from the page cache a step later, so a 100 GB upload or copy keeps ~two steps of cache,
  the fsync that ends it has little left to wait for, and the same few cached pages are used over
  and over. (On a virtual machine whose host backs guest memory lazily, writing into pages the
  guest has not used lately costs several times more than writing into recently freed ones.)
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import json
import os
import re
import secrets
import stat as stat_mod
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from levere.domain.errors import (
    AlreadyExists,
    Conflict,
    NotFound,
    StorageUnavailable,
    ValidationFailed,
)
from levere.domain.paths import KeyLimits
from levere.storage import posix
from levere.storage.base import CHUNK, Backend, Capability, ObjectInfo, ObjectWriter, SmallWrite
from levere.storage.keys import RESERVED, STAGING_DIR, TMP_DIR, check_prefix, check_range, check_user_key
from levere.storage.local_small import SmallFiles

_WRITE_BUFFER = 1024 * 1024
_SESSION_ID = re.compile(r"^[0-9a-f]{32}$")
_GONE = "upload session not found (finished, aborted or never started)"


class LocalWriter(ObjectWriter):
    # Paths are plain strings here: a sync of many small files opens one writer per file, and
    # pathlib's object juggling cost more than the system calls.
    def __init__(self, backend: LocalBackend, key: str, write_once: bool, durable: bool = True) -> None:
        self._backend = backend
        # no root check of its own: finding the temporary folder inside root (below) is one
        check_user_key(key)
        self._final = os.path.join(backend._root, key)
        self._key = key
        self._write_once = write_once
        self._durable = durable
        # born read-only when write-once (the open descriptor still writes): no chmod at commit
        with posix.space_errors(f"write {key}"):
            fd, self._tmp = posix.create_exclusive(backend._tmp_dir(), ".tmp", 0o444 if write_once else 0o644)
        self._tmp_left = True
        # an explicit buffer size spares io.open its isatty and block-size probes
        self._file: BinaryIO | None = os.fdopen(fd, "wb", buffering=_WRITE_BUFFER)
        self._written = 0
        # small files (a batch's) never reach a step; big durable ones are paced
        self._pace = posix.WriteBack(fd) if durable else None

    def write(self, chunk: bytes) -> None:
        if self._file is None:
            raise Conflict(f"writer for {self._key!r} is already closed")
        with posix.space_errors(f"write {self._key}"):
            self._file.write(chunk)
            self._written += len(chunk)
            if self._pace is not None and self._written - self._pace.sent >= posix.WriteBack.STEP:
                self._file.flush()
                self._pace.written(self._written)

    def commit(self) -> None:
        if self._file is None:
            raise Conflict(f"writer for {self._key!r} is already closed")
        f, self._file = self._file, None
        with posix.space_errors(f"write {self._key}"):
            self._commit(f)

    def _commit(self, f: BinaryIO) -> None:
        try:
            if self._durable:
                posix.fsync_file(f)
                if self._pace is not None:
                    self._pace.synced()
            f.close()  # writes out what is still buffered
        except OSError:
            with contextlib.suppress(OSError):  # the error that matters is the one above
                f.close()
            self._drop_tmp()
            raise
        parent = os.path.dirname(self._final)
        try:
            if not os.path.isdir(parent):
                self._backend._makedirs(Path(parent))
            if self._write_once:
                try:
                    os.link(self._tmp, self._final)
                except FileExistsError:
                    raise AlreadyExists(f"{self._key!r} already exists and is write-once") from None
                os.unlink(self._tmp)
            else:
                if posix.is_read_only(self._final):
                    raise AlreadyExists(f"{self._key!r} already exists and is write-once")
                os.replace(self._tmp, self._final)
            self._tmp_left = False
            if self._durable:
                posix.fsync_dir(Path(parent))
        finally:
            self._drop_tmp()

    def abort(self) -> None:
        if self._file is not None:
            # closing flushes what is buffered, which fails again on a full disk: the bytes are
            # dropped anyway
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        self._drop_tmp()

    def _drop_tmp(self) -> None:
        if self._tmp_left:
            posix.unlink_quietly(self._tmp)
            self._tmp_left = False


class LocalBackend(Backend):
    capabilities = frozenset({Capability.WORKER_PROCESSES, Capability.WRITE_ONCE})

    def __init__(self, root: Path, backend_id: str) -> None:
        self.root = Path(root)
        self._root = str(self.root)
        self.backend_id = backend_id
        self._limits: KeyLimits | None = None

    def __repr__(self) -> str:
        return f"LocalBackend(root={str(self.root)!r}, backend_id={self.backend_id!r})"

    def check_ready(self) -> None:
        self._check_root()
        try:  # as root, permission bits do not tell (os.access): a read-only mount shows on a write
            fd, probe = tempfile.mkstemp(prefix=".levere-probe-", dir=self._root)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise StorageUnavailable(f"storage root {self.root} is not writable: {exc.strerror}") from None

    # --- paths ---------------------------------------------------------------------------------
    def key_limits(self) -> KeyLimits:
        """The kernel takes whole paths of at most ``PATH_MAX`` bytes (with their final NUL) and
        names of at most ``NAME_MAX``; an object's path is the root, a slash and its key. (The
        helper folders' names are short and fixed, so whatever fits as an object fits there.)"""
        if self._limits is None:
            try:
                path_max = os.pathconf(self._root, "PC_PATH_MAX")
                name_max = os.pathconf(self._root, "PC_NAME_MAX")
            except OSError:  # the root is away: the usual Linux values, until it is back
                return KeyLimits(4095 - len(os.fsencode(self._root)) - 1, 255, "the local storage")
            self._limits = KeyLimits(
                path_max - 1 - len(os.fsencode(self._root)) - 1, name_max, "the local storage"
            )
        return self._limits

    def _check_root(self) -> None:
        if not os.path.isdir(self._root):
            raise StorageUnavailable(f"storage root {self.root} is not available (missing or not a folder)")

    def _path(self, key: str) -> Path:
        check_user_key(key)
        self._check_root()
        return self.root / key

    def _file_path(self, key: str) -> str:
        """``_path`` as a string, for the per-object hot paths."""
        check_user_key(key)
        self._check_root()
        return os.path.join(self._root, key)

    def _tmp_dir(self) -> str:
        """The folder for whole-object writes in flight. It lives inside root, so finding it
        also shows that root is there."""
        path = os.path.join(self._root, TMP_DIR)
        if not os.path.isdir(path):
            self._check_root()
            self._makedirs(Path(path))
        return path

    def _helper_dir(self, name: str) -> Path:
        self._check_root()
        path = self.root / name
        self._makedirs(path)
        return path

    def _makedirs(self, path: Path) -> None:
        """Create ``path`` and missing parents below root, fsyncing each new entry's parent."""
        with posix.space_errors("make a folder"):
            self._make_missing(path)

    def _make_missing(self, path: Path) -> None:
        missing: list[Path] = []
        p = path
        while not p.is_dir():
            if p == self.root or p == p.parent:
                self._check_root()
                break
            missing.append(p)
            p = p.parent
        for d in reversed(missing):
            try:
                d.mkdir()
            except FileExistsError:
                if not d.is_dir():
                    where = d.relative_to(self.root)
                    raise Conflict(f"cannot create folder {where}: a file has that name") from None
                continue
            posix.fsync_dir(d.parent)

    def prepare_prefix(self, prefix: str) -> None:
        """Create the folder for ``prefix`` so a project's area exists (and can be given
        permissions or a quota) before the first object arrives."""
        check_user_key(prefix.rstrip("/"))
        self._makedirs(self._path(prefix.rstrip("/")))

    # --- whole objects -------------------------------------------------------------------------
    def open_writer(
        self, key: str, *, size_hint: int | None = None, write_once: bool = False, durable: bool = True
    ) -> ObjectWriter:
        check_user_key(key)
        return LocalWriter(self, key, write_once, durable)

    def flush(self) -> None:
        """One ``syncfs`` of the root's file system covers every non-durable commit at once, which
        is far cheaper than an fsync per small file."""
        self._check_root()
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            syncfs = posix.syncfs()
            if syncfs is None or syncfs(fd) != 0:
                os.sync()
        finally:
            os.close(fd)

    def write_small(self, key: str, data: bytes, write_once: bool = False) -> str | None:
        with self.small_writes(write_once) as write:
            return write(key, data)

    @contextlib.contextmanager
    def small_writes(self, write_once: bool = False) -> Iterator[SmallWrite]:
        """Each file an unnamed file (``O_TMPFILE``) in its own folder, given its name once written
        (:class:`~levere.storage.local_small.SmallFiles`)."""
        if posix.linkat() is None or not getattr(os, "O_TMPFILE", 0):
            yield functools.partial(Backend.write_small, self, write_once=write_once)
            return
        files = SmallFiles(self, write_once)
        try:
            yield files.write
        finally:
            files.close()

    def read(
        self, key: str, start: int = 0, end: int | None = None, *, version: str | None = None
    ) -> Iterator[bytes]:
        # a folder keeps no versions: a write-once object is its only version
        check_range(start, end)
        check_user_key(key)
        path = os.path.join(self._root, key)
        # Checked now, not at the first next(), so callers can answer 404 before streaming. One
        # stat when the object is there; the root is looked at only when it is not.
        try:
            found = stat_mod.S_ISREG(os.stat(path).st_mode)
        except (FileNotFoundError, NotADirectoryError):
            found = False
        if not found:
            self._check_root()
            raise NotFound(f"no object {key!r}")
        return posix.read_file(path, key, start, end, CHUNK)

    def stat(self, key: str, *, version: str | None = None) -> ObjectInfo | None:
        path = self._path(key)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not stat_mod.S_ISREG(st.st_mode):
            return None
        return ObjectInfo(key=key, size=st.st_size)

    def delete(self, key: str, *, force: bool = False) -> None:
        path = self._path(key)
        if not force and posix.is_read_only(path):
            raise Conflict(f"{key!r} is write-once; deleting it needs force")
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return  # absent, or a folder of other objects: no object by that key
        posix.fsync_dir(path.parent)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        check_prefix(prefix)
        self._check_root()
        return self._walk(self.root, "", prefix)

    def _walk(self, folder: Path, base: str, prefix: str) -> Iterator[ObjectInfo]:
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            return
        # Sorting folders as "name/" makes a depth-first walk come out in plain string order of
        # the full keys ("a-b" < "a/c" because "-" < "/").
        decorated = []
        for entry in entries:
            if not base and entry.name in RESERVED:
                continue
            is_dir = entry.is_dir(follow_symlinks=False)
            decorated.append((entry.name + "/" if is_dir else entry.name, is_dir, entry))
        decorated.sort(key=lambda t: t[0])
        for name, is_dir, entry in decorated:
            key = base + name
            if is_dir:
                if key.startswith(prefix) or prefix.startswith(key):
                    yield from self._walk(Path(entry.path), key, prefix)
            elif key.startswith(prefix) and entry.is_file(follow_symlinks=False):
                try:
                    size = entry.stat(follow_symlinks=False).st_size
                except FileNotFoundError:
                    continue
                yield ObjectInfo(key=key, size=size)

    # --- resumable staging sessions ------------------------------------------------------------
    def _session_paths(self, session: str) -> tuple[str, Path, Path]:
        try:
            data = json.loads(session)
            key, sid = data["key"], data["id"]
        except (ValueError, KeyError, TypeError):
            raise NotFound("unknown upload session") from None
        if not isinstance(key, str) or not isinstance(sid, str) or not _SESSION_ID.match(sid):
            raise NotFound("unknown upload session")
        check_user_key(key)
        self._check_root()
        staging = self.root / STAGING_DIR
        return key, staging / f"{sid}.part", staging / f"{sid}.json"

    def _session_length(self, meta: Path) -> int:
        try:
            length = json.loads(meta.read_text())["length"]
        except FileNotFoundError:
            raise NotFound(_GONE) from None
        if not isinstance(length, int):
            raise Conflict(f"upload session metadata {meta.name} is damaged")
        return length

    def start_staged(self, key: str, length: int) -> str:
        check_user_key(key)
        if length < 0:
            raise ValidationFailed({"length": "must not be negative"})
        staging = self._helper_dir(STAGING_DIR)
        sid = secrets.token_hex(16)
        meta = staging / f"{sid}.json"
        try:
            with posix.space_errors(f"start the upload of {key}"):
                with open(meta, "x") as f:
                    json.dump({"key": key, "length": length}, f)
                    f.flush()
                    os.fsync(f.fileno())
                with open(staging / f"{sid}.part", "xb") as f:
                    os.fsync(f.fileno())
                posix.fsync_dir(staging)
        except BaseException:
            (staging / f"{sid}.part").unlink(missing_ok=True)
            meta.unlink(missing_ok=True)
            raise
        return json.dumps({"key": key, "id": sid})

    def staged_offset(self, session: str) -> int:
        _, part, meta = self._session_paths(session)
        self._session_length(meta)
        try:
            return part.stat().st_size
        except FileNotFoundError:
            raise NotFound(_GONE) from None

    def append_staged(self, session: str, offset: int, chunks: Iterable[bytes]) -> int:
        key, part, meta = self._session_paths(session)
        length = self._session_length(meta)
        try:
            # No O_CREAT: an append racing an abort must not bring the session back to life.
            fd = os.open(part, os.O_WRONLY | os.O_APPEND)
        except FileNotFoundError:
            raise NotFound(_GONE) from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise Conflict("another append to this upload is in progress") from None
                raise
            size = os.fstat(fd).st_size
            if offset != size:
                raise Conflict(
                    f"upload offset mismatch: request starts at {offset}, stored bytes end at {size}"
                )
            try:
                return self._append(fd, size, length, chunks)
            except OSError as exc:
                full = posix.full_error(exc, f"store more of {key}")
                if full is None:
                    raise
                # No room: nothing of this call is kept, so that the space it took is free again
                # and the upload resumes from where the call began.
                os.ftruncate(fd, offset)
                os.fsync(fd)
                raise full from exc
        finally:
            os.close(fd)

    @staticmethod
    def _append(fd: int, size: int, length: int, chunks: Iterable[bytes]) -> int:
        pace = posix.WriteBack(fd, size)
        try:
            for chunk in chunks:
                if size + len(chunk) > length:
                    raise Conflict(f"upload would exceed its declared length of {length} bytes")
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
                size += len(chunk)
                if size - pace.sent >= posix.WriteBack.STEP:
                    pace.written(size)
        finally:
            # On success and on a dropped connection alike: what arrived is kept durably,
            # so the client can resume from the offset it will be told.
            os.fsync(fd)
            pace.synced()
        return size

    def truncate_staged(self, session: str, offset: int) -> int:
        _, part, meta = self._session_paths(session)
        self._session_length(meta)
        try:
            fd = os.open(part, os.O_WRONLY)
        except FileNotFoundError:
            raise NotFound(_GONE) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            if size > offset:
                os.ftruncate(fd, offset)
                os.fsync(fd)
            return min(size, offset)
        finally:
            os.close(fd)

    def read_staged(self, session: str) -> Iterator[bytes]:
        key, part, _ = self._session_paths(session)
        if not part.is_file():
            raise NotFound(_GONE)
        return posix.read_file(part, key, 0, None, CHUNK)

    def finish_staged(self, session: str) -> None:
        key, part, meta = self._session_paths(session)
        length = self._session_length(meta)
        final = self._path(key)
        try:
            fd = os.open(part, os.O_RDONLY)
        except FileNotFoundError:
            raise NotFound(_GONE) from None
        with os.fdopen(fd, "rb") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            size = os.fstat(f.fileno()).st_size
            if size != length:
                raise Conflict(f"upload is incomplete: {size} of {length} bytes received")
            if posix.is_read_only(final):
                raise AlreadyExists(f"{key!r} already exists and is write-once")
            self._makedirs(final.parent)
            with posix.space_errors(f"publish {key}"):
                os.replace(part, final)
        posix.fsync_dir(final.parent)
        meta.unlink(missing_ok=True)
        posix.fsync_dir(meta.parent)

    def abort_staged(self, session: str) -> None:
        _, part, meta = self._session_paths(session)
        part.unlink(missing_ok=True)
        meta.unlink(missing_ok=True)
        if meta.parent.is_dir():
            posix.fsync_dir(meta.parent)
