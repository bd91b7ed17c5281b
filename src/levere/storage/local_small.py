"""The local backend's way of publishing many small files: each an unnamed file in its own folder,
named once written (:class:`SmallFiles`)."""

from __future__ import annotations

import ctypes
import errno
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from levere.domain.errors import AlreadyExists
from levere.storage import posix
from levere.storage.base import Backend
from levere.storage.keys import TMP_DIR, check_user_key

if TYPE_CHECKING:
    from levere.storage.local import LocalBackend


class SmallFiles:
    """Publishes a group of small files, each as an unnamed file (``O_TMPFILE``) in the object's
    own folder, given its name once written. Small files in a batch otherwise cost a rename from
    the temporary folder into theirs, and renames across folders serialise on a file-system-wide
    lock (measured on ext4: about half the files per second). Nothing is ever visible under a
    temporary name, and a crash leaves nothing behind. Where the file system has no unnamed files
    the backend writes them as usual.

    This runs once per file of a batch, so it asks the file system as little as it can: each
    folder is opened once per group and the file is made and named relative to it (a third less
    system time per file than by whole paths); the root is only looked at when a folder is
    missing, and an existing name only when the link fails. The link is made from the descriptor
    itself (``AT_EMPTY_PATH``) where the system allows it, or else through ``/proc/self/fd``.
    """

    #: whether this system lets a process link a file it opened from the descriptor alone
    #: (Linux 6.10 and newer, or a process allowed to read any folder); learnt at the first refusal
    empty_path_links = True

    def __init__(self, backend: LocalBackend, write_once: bool = False) -> None:
        self.backend = backend
        self.write_once = write_once
        # born read-only when write-once (the open descriptor still writes)
        self.mode = 0o444 if write_once else 0o644
        self.folders: dict[str, int] = {}

    def close(self) -> None:
        for fd in self.folders.values():
            os.close(fd)
        self.folders.clear()

    def _folder(self, parent: str) -> int:
        fd = self.folders.get(parent)
        if fd is None:
            try:
                fd = os.open(parent, os.O_PATH | os.O_DIRECTORY)
            except (FileNotFoundError, NotADirectoryError):
                self.backend._check_root()  # a vanished root is the storage being away
                self.backend._makedirs(Path(parent))  # a file in the folder's place is refused here
                fd = os.open(parent, os.O_PATH | os.O_DIRECTORY)
            self.folders[parent] = fd
        return fd

    def write(self, key: str, data: bytes) -> str | None:
        check_user_key(key)
        with posix.space_errors(f"write {key}"):
            return self._write(key, data)

    def _write(self, key: str, data: bytes) -> str | None:
        final = os.path.join(self.backend._root, key)
        parent, name = os.path.split(final)
        folder = self._folder(parent)
        try:
            fd = os.open(".", os.O_TMPFILE | os.O_WRONLY, self.mode, dir_fd=folder)
        except OSError as e:
            if e.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                return self._as_usual(key, data)  # no unnamed files here
            raise
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            try:
                self._link(fd, folder, os.fsencode(name), final)
            except FileNotFoundError:
                if os.path.isdir(parent):  # no /proc to name the file through
                    return self._as_usual(key, data)
                raise
            except FileExistsError:
                if self.write_once or posix.is_read_only(final):
                    raise AlreadyExists(f"{key!r} already exists and is write-once") from None
                # replacing an object: a short name beside it (the object's own may be as long as
                # a name can be), then an atomic rename over it
                beside = os.path.join(parent, f".{secrets.token_hex(8)}{TMP_DIR}")
                self._link(fd, posix.AT_FDCWD, os.fsencode(beside), beside)
                os.replace(beside, final)
        finally:
            os.close(fd)
        return None

    def _as_usual(self, key: str, data: bytes) -> str | None:
        """Through a temporary file, where this file system has no unnamed ones."""
        return Backend.write_small(self.backend, key, data, self.write_once)

    def _link(self, fd: int, folder: int, name: bytes, path: str) -> None:
        link = posix.linkat()
        assert link is not None
        if SmallFiles.empty_path_links:
            if link(fd, b"", folder, name, posix.AT_EMPTY_PATH) == 0:
                return
            code = ctypes.get_errno()
            if code not in posix.LINK_REFUSED:
                raise OSError(code, os.strerror(code), path)
            # refused (or the folder is gone: then the link below fails the same way)
        if link(posix.AT_FDCWD, f"/proc/self/fd/{fd}".encode(), folder, name, posix.AT_SYMLINK_FOLLOW) == 0:
            SmallFiles.empty_path_links = False
            return
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), path)
