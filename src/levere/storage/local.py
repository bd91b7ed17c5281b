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
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import secrets
import stat as stat_mod
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from levere.domain.errors import (
    AlreadyExists,
    Conflict,
    InvalidPath,
    NotFound,
    StorageUnavailable,
    ValidationFailed,
)
from levere.storage.base import CHUNK, Backend, ObjectInfo, ObjectWriter, check_key

TMP_DIR = ".levere-tmp"
STAGING_DIR = ".levere-staging"
RESERVED = frozenset({TMP_DIR, STAGING_DIR})
_SESSION_ID = re.compile(r"^[0-9a-f]{32}$")
_GONE = "upload session not found (finished, aborted or never started)"


def check_user_key(key: str) -> str:
    """``check_key`` plus refusal of the helper folders. Every backend refuses the same names,
    so a key that is valid on one backend is valid on all (copies move between tiers)."""
    check_key(key)
    if key.split("/", 1)[0] in RESERVED:
        raise InvalidPath(f"invalid storage key {key!r}: {key.split('/', 1)[0]} is reserved")
    return key


def check_prefix(prefix: str) -> str:
    """A listing prefix may be empty or end in ``/``; otherwise it must be a valid key start."""
    if prefix:
        check_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


def check_range(start: int, end: int | None) -> None:
    if start < 0 or (end is not None and end < start):
        raise ValidationFailed({"range": f"invalid byte range [{start}, {end})"})


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(f: BinaryIO) -> None:
    f.flush()
    os.fsync(f.fileno())


class LocalWriter(ObjectWriter):
    def __init__(self, backend: LocalBackend, key: str, write_once: bool) -> None:
        self._backend = backend
        self._final = backend._path(key)
        self._key = key
        self._write_once = write_once
        tmp_dir = backend._helper_dir(TMP_DIR)
        fd, name = _create_exclusive(tmp_dir, ".tmp")
        self._tmp = Path(name)
        self._file: BinaryIO | None = os.fdopen(fd, "wb")

    def write(self, chunk: bytes) -> None:
        if self._file is None:
            raise Conflict(f"writer for {self._key!r} is already closed")
        self._file.write(chunk)

    def commit(self) -> None:
        if self._file is None:
            raise Conflict(f"writer for {self._key!r} is already closed")
        f, self._file = self._file, None
        try:
            _fsync_file(f)
        finally:
            f.close()
        try:
            self._backend._makedirs(self._final.parent)
            if self._write_once:
                os.chmod(self._tmp, 0o444)
                try:
                    os.link(self._tmp, self._final)
                except FileExistsError:
                    raise AlreadyExists(f"{self._key!r} already exists and is write-once") from None
                os.unlink(self._tmp)
            else:
                if _is_read_only(self._final):
                    raise AlreadyExists(f"{self._key!r} already exists and is write-once")
                os.replace(self._tmp, self._final)
            _fsync_dir(self._final.parent)
        finally:
            self._tmp.unlink(missing_ok=True)

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._tmp.unlink(missing_ok=True)


class LocalBackend(Backend):
    def __init__(self, root: Path, backend_id: str) -> None:
        self.root = Path(root)
        self.backend_id = backend_id

    def __repr__(self) -> str:
        return f"LocalBackend(root={str(self.root)!r}, backend_id={self.backend_id!r})"

    # --- paths ---------------------------------------------------------------------------------
    def _check_root(self) -> None:
        if not self.root.is_dir():
            raise StorageUnavailable(f"storage root {self.root} is not available (missing or not a folder)")

    def _path(self, key: str) -> Path:
        check_user_key(key)
        self._check_root()
        return self.root / key

    def _helper_dir(self, name: str) -> Path:
        self._check_root()
        path = self.root / name
        self._makedirs(path)
        return path

    def _makedirs(self, path: Path) -> None:
        """Create ``path`` and missing parents below root, fsyncing each new entry's parent."""
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
            _fsync_dir(d.parent)

    def prepare_prefix(self, prefix: str) -> None:
        """Create the folder for ``prefix`` so a project's area exists (and can be given
        permissions or a quota) before the first object arrives."""
        check_user_key(prefix.rstrip("/"))
        self._makedirs(self._path(prefix.rstrip("/")))

    # --- whole objects -------------------------------------------------------------------------
    def open_writer(
        self, key: str, *, size_hint: int | None = None, write_once: bool = False
    ) -> ObjectWriter:
        check_user_key(key)
        return LocalWriter(self, key, write_once)

    def read(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        check_range(start, end)
        path = self._path(key)
        # Checked now, not at the first next(), so callers can answer 404 before streaming.
        if not path.is_file():
            raise NotFound(f"no object {key!r}")
        return _read_file(path, key, start, end)

    def stat(self, key: str) -> ObjectInfo | None:
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
        if not force and _is_read_only(path):
            raise Conflict(f"{key!r} is write-once; deleting it needs force")
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return  # absent, or a folder of other objects: no object by that key
        _fsync_dir(path.parent)

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
        with open(meta, "x") as f:
            json.dump({"key": key, "length": length}, f)
            f.flush()
            os.fsync(f.fileno())
        with open(staging / f"{sid}.part", "xb") as f:
            os.fsync(f.fileno())
        _fsync_dir(staging)
        return json.dumps({"key": key, "id": sid})

    def staged_offset(self, session: str) -> int:
        _, part, meta = self._session_paths(session)
        self._session_length(meta)
        try:
            return part.stat().st_size
        except FileNotFoundError:
            raise NotFound(_GONE) from None

    def append_staged(self, session: str, offset: int, chunks: Iterable[bytes]) -> int:
        _, part, meta = self._session_paths(session)
        length = self._session_length(meta)
        try:
            # No O_CREAT: an append racing an abort must not bring the session back to life.
            fd = os.open(part, os.O_WRONLY | os.O_APPEND)
        except FileNotFoundError:
            raise NotFound(_GONE) from None
        with os.fdopen(fd, "ab") as f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise Conflict("another append to this upload is in progress") from None
                raise
            size = os.fstat(f.fileno()).st_size
            if offset != size:
                raise Conflict(
                    f"upload offset mismatch: request starts at {offset}, stored bytes end at {size}"
                )
            try:
                for chunk in chunks:
                    if size + len(chunk) > length:
                        raise Conflict(f"upload would exceed its declared length of {length} bytes")
                    f.write(chunk)
                    size += len(chunk)
            finally:
                # On success and on a dropped connection alike: what arrived is kept durably,
                # so the client can resume from the offset it will be told.
                _fsync_file(f)
            return size

    def read_staged(self, session: str) -> Iterator[bytes]:
        key, part, _ = self._session_paths(session)
        if not part.is_file():
            raise NotFound(_GONE)
        return _read_file(part, key, 0, None)

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
            if _is_read_only(final):
                raise AlreadyExists(f"{key!r} already exists and is write-once")
            self._makedirs(final.parent)
            os.replace(part, final)
        _fsync_dir(final.parent)
        meta.unlink(missing_ok=True)
        _fsync_dir(meta.parent)

    def abort_staged(self, session: str) -> None:
        _, part, meta = self._session_paths(session)
        part.unlink(missing_ok=True)
        meta.unlink(missing_ok=True)
        if meta.parent.is_dir():
            _fsync_dir(meta.parent)


def _create_exclusive(folder: Path, suffix: str) -> tuple[int, str]:
    name = str(folder / f"{secrets.token_hex(16)}{suffix}")
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    return fd, name


def _is_read_only(path: Path) -> bool:
    try:
        st = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return False
    return stat_mod.S_ISREG(st.st_mode) and not (st.st_mode & 0o222)


def _read_file(path: Path, key: str, start: int, end: int | None) -> Iterator[bytes]:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise NotFound(f"no object {key!r}") from None
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        stop = size if end is None else min(end, size)
        if start >= stop:
            return
        f.seek(start)
        remaining = stop - start
        while remaining > 0:
            data = f.read(min(CHUNK, remaining))
            if not data:
                # Shorter than when we looked: a concurrent writer truncated it.
                raise Conflict(f"{key!r} changed while it was being read")
            remaining -= len(data)
            yield data
