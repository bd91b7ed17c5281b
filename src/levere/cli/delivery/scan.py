"""Reading a run folder before anything is sent: which files, how big, and whether they may go.

Design notes
------------
Everything that would make a delivery fail half-way is found here, before the first byte moves:
symbolic links that point outside the folder (or nowhere), names the service would refuse (control
characters, names that are not UTF-8, names over 255 bytes, backslashes), special files, unreadable
files, and two names that become the same path once normalised (NFC), whether files or folders: a
file ``été`` beside a folder ``été`` spelt with a combining accent would otherwise pass here and fail
on the service half-way, when the folder's files arrive under a path that is a file. All offenders
are named in one message (names that are not UTF-8 shown with those bytes escaped, ``\xff``), so one
run fixes them.

A symbolic link whose target is inside the folder is delivered as the file it points to, and a link to
a folder inside is walked, as ``cp -rL`` would; a link back to an ancestor is a loop and is refused.
Folders are walked by their real paths, so every file's ``source`` is a real path: callers compare
sources as they are (``os.path.realpath`` costs tens of microseconds a file).
"""

from __future__ import annotations

import os
import stat
import unicodedata
from pathlib import Path
from typing import NamedTuple

from levere.domain.errors import InvalidPath, LevereError
from levere.domain.paths import check_relative_path, readable

MAX_LISTED = 5
_UID = os.geteuid()


class LocalFile(NamedTuple):
    """A file to send (a tuple: a run folder can hold hundreds of thousands, and a tuple is made in
    half the time of a frozen dataclass)."""

    path: str  # the delivery path: relative, "/"-separated, NFC
    source: str  # where to read it: a real path (symbolic links resolved)
    size: int
    mtime: int = 0


class FolderRefused(InvalidPath):
    """The folder holds entries that cannot be delivered; every one is named."""


def _listing(problems: list[str]) -> str:
    shown = "; ".join(problems[:MAX_LISTED])
    more = len(problems) - MAX_LISTED
    return shown + (f"; and {more} more" if more > 0 else "")


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _display(rel: str) -> str:
    # repr() shows control characters as escapes instead of printing them to the terminal
    return repr(rel) if any(ord(c) < 32 or ord(c) == 127 for c in rel) else readable(rel)


def _spelt(rel: str, folder: bool) -> str:
    """A name and how it is spelt, for two that look alike: ``été/ (a folder, NFD)``."""
    if unicodedata.is_normalized("NFC", rel):
        form = "NFC"
    elif unicodedata.is_normalized("NFD", rel):
        form = "NFD"
    else:
        form = "neither NFC nor NFD"
    return f"{_display(rel)}{'/' if folder else ''} (a {'folder' if folder else 'file'}, {form})"


def _info(entry: os.DirEntry[str]) -> os.stat_result | OSError | None:
    """An entry's own status, or None for a symbolic link (followed by the caller), or the error
    that prevented looking."""
    try:
        return None if entry.is_symlink() else entry.stat(follow_symlinks=False)
    except OSError as exc:
        return exc


def _readable(source: str, info: os.stat_result) -> bool:
    # its owner can read it when the owner's read bit is set (an access list never narrows the
    # owner), which spares asking the system for each file; anyone else asks
    if info.st_uid == _UID and info.st_mode & stat.S_IRUSR:
        return True
    return os.access(source, os.R_OK)


def scan_folder(folder: Path) -> list[LocalFile]:
    """Every regular file under ``folder``, sorted by path, or :class:`FolderRefused` naming offenders."""
    try:
        root = os.path.realpath(folder, strict=True)
    except OSError:
        raise LevereError(f"{folder} does not exist") from None
    if not os.path.isdir(root):
        raise LevereError(f"{folder} is not a folder")
    outside: list[str] = []
    bad_names: list[str] = []
    special: list[str] = []
    unreadable: list[str] = []
    found: dict[str, LocalFile] = {}
    duplicates: list[str] = []
    # every delivery path taken so far, file or folder: its name as found and whether it is a folder
    taken: dict[str, tuple[str, bool]] = {}
    # (real directory, its path inside the delivery, its path as found, the real directories above it)
    pending: list[tuple[str, str, str, frozenset[str]]] = [(root, "", "", frozenset())]

    def take(checked: str, raw: str, folder: bool) -> bool:
        """Claim ``checked`` for ``raw``; False (and the clash noted) if another name has it."""
        other = taken.setdefault(checked, (raw, folder))
        if other[0] == raw:
            return True
        duplicates.append(f"{_spelt(other[0], other[1])} and {_spelt(raw, folder)}")
        return False

    while pending:
        directory, prefix, raw_prefix, ancestors = pending.pop()
        # listed through an open descriptor, so that each entry's stat looks up its name in the
        # folder rather than walking its whole path again
        try:
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            unreadable.append(f"{prefix or '.'}/ ({exc.strerror})")
            continue
        try:
            entries = [(entry, _info(entry)) for entry in os.scandir(fd)]
        except OSError as exc:
            unreadable.append(f"{prefix or '.'}/ ({exc.strerror})")
            continue
        finally:
            os.close(fd)
        base = directory.rstrip(os.sep) + os.sep
        for entry, info in entries:
            rel = f"{prefix}/{entry.name}" if prefix else entry.name
            raw = f"{raw_prefix}/{entry.name}" if raw_prefix else entry.name
            try:
                checked = check_relative_path(rel)
            except InvalidPath as exc:
                bad_names.append(exc.message)
                continue
            if isinstance(info, OSError):  # gone since it was listed, say
                unreadable.append(f"{_display(rel)} ({info.strerror})")
                continue
            source = here = base + entry.name
            try:
                if info is None:  # a symbolic link
                    target = os.path.realpath(here)
                    if not _inside(target, root):
                        link = os.readlink(here)
                        outside.append(f"{_display(rel)} -> {link}")
                        continue
                    info = os.stat(target)
                    source = target
            except FileNotFoundError:
                outside.append(f"{_display(rel)} -> {os.readlink(here)} (missing)")
                continue
            except OSError as exc:
                unreadable.append(f"{_display(rel)} ({exc.strerror})")
                continue
            if stat.S_ISDIR(info.st_mode):
                real = os.path.realpath(source)
                if real in ancestors or real == directory:
                    outside.append(f"{_display(rel)} -> {os.readlink(here)} (a loop)")
                elif take(checked, raw, folder=True):
                    pending.append((real, checked, raw, ancestors | {directory}))
            elif not stat.S_ISREG(info.st_mode):
                special.append(_display(rel))
            elif not _readable(source, info):
                unreadable.append(f"{_display(rel)} (permission denied)")
            elif take(checked, raw, folder=False):
                found[checked] = LocalFile(checked, source, info.st_size, int(info.st_mtime))
    problems = [
        (outside, "symbolic links pointing outside the folder"),
        (bad_names, "names levere cannot store"),
        (special, "entries that are not regular files"),
        (unreadable, "unreadable entries"),
        (duplicates, "names that are the same once Unicode-normalised"),
    ]
    for offenders, what in problems:
        if offenders:
            raise FolderRefused(
                f"{_display(folder.name)} has {len(offenders)} {what}, so nothing was sent: "
                f"{_listing(sorted(offenders))}"
            )
    return sorted(found.values(), key=lambda f: f.path)
