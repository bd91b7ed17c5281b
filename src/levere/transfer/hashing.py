"""MD5 and SHA-256 of a byte stream in one pass, with a state that can be saved and restored.

Design notes
------------
* A tus upload may be continued by another process (after a crash, or behind a load balancer), and
  an unfinished S3 multipart upload cannot be read back, so the running checksum state itself must
  be saved with the upload. ``hashlib`` cannot export its state. OpenSSL's MD5 and SHA-256 contexts
  are plain structs declared in its public headers, so levere drives them through ctypes, from the
  very libcrypto that Python's own ``hashlib`` is linked to, and saves their bytes.
* The saved form names the machine architecture and the struct sizes; a state from another kind
  of machine is refused rather than misread. A self-test at first use checks that a saved and
  restored state gives hashlib's answer.
* If libcrypto cannot be used that way, hashing falls back to ``hashlib`` and :meth:`StreamHash.export`
  returns ``None``: callers then rebuild the state by reading the stored bytes back, where the
  backend can.
* ctypes releases the GIL for each call, and callers hand over buffers of a MiB or more, so hashing
  runs in parallel with the event loop receiving the next bytes, and MD5 (the slower of the two)
  can run on a helper thread beside SHA-256.
"""

from __future__ import annotations

import base64
import ctypes
import hashlib
import platform
import threading
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Protocol

from levere.transfer import wire

Buffer = bytes | bytearray | memoryview

_MD5_CTX_SIZE = 92  # MD5_CTX: A B C D Nl Nh (6 x 32 bit), data[16] (32 bit), num
_SHA256_CTX_SIZE = 112  # SHA256_CTX: h[8] Nl Nh (10 x 32 bit), data[16], num, md_len
_CTX_ALLOC = 256
_STATE_TAG = f"openssl1:{platform.machine()}:{_MD5_CTX_SIZE}:{_SHA256_CTX_SIZE}"


@dataclass(frozen=True)
class Digests:
    """Hex MD5 and SHA-256 of a whole file."""

    md5: str
    sha256: str

    def header(self) -> str:
        """The ``Levere-Checksum`` header value."""
        return wire.format_checksums(self.md5, self.sha256)


EMPTY = Digests(
    md5=hashlib.md5(b"", usedforsecurity=False).hexdigest(), sha256=hashlib.sha256(b"").hexdigest()
)


class StreamHash(Protocol):
    #: how many bytes went in
    offset: int

    def update(self, data: Buffer, helper: Executor | None = None) -> None:
        """Add ``data``; with ``helper``, MD5 runs on it while SHA-256 runs here (both release the
        GIL, so on two cores the pair costs the time of MD5 alone)."""

    def digests(self) -> Digests:
        """The checksums of what went in so far (the state stays usable)."""

    def export(self) -> str | None:
        """The state as text, or ``None`` when this implementation cannot save it."""


# --- OpenSSL through ctypes -----------------------------------------------------------------------


class _LibCrypto:
    def __init__(self, lib: Any) -> None:
        self.md5_init: Callable[..., int] = lib.MD5_Init
        self.md5_update: Callable[..., int] = lib.MD5_Update
        self.md5_final: Callable[..., int] = lib.MD5_Final
        self.sha256_init: Callable[..., int] = lib.SHA256_Init
        self.sha256_update: Callable[..., int] = lib.SHA256_Update
        self.sha256_final: Callable[..., int] = lib.SHA256_Final


_lib: _LibCrypto | None = None
_lib_checked = False
_lib_lock = threading.Lock()


def _load() -> _LibCrypto | None:
    """libcrypto as linked into Python's ``_hashlib``, if its MD5 and SHA-256 contexts round-trip."""
    global _lib, _lib_checked
    if _lib_checked:
        return _lib
    with _lib_lock:
        if not _lib_checked:
            try:
                import _hashlib

                candidate = _LibCrypto(ctypes.CDLL(_hashlib.__file__))
                _lib = candidate if _self_test(candidate) else None
            except (ImportError, OSError, AttributeError):
                _lib = None
            _lib_checked = True
    return _lib


def _self_test(lib: _LibCrypto) -> bool:
    data = bytes(range(256)) * 5
    first = _OpenSSLHash(lib)
    first.update(data[:333])
    state = first.export()
    if state is None:
        return False
    second = _OpenSSLHash.restore(lib, first.offset, state)
    second.update(bytearray(data[333:]))
    return second.digests() == Digests(
        hashlib.md5(data, usedforsecurity=False).hexdigest(), hashlib.sha256(data).hexdigest()
    )


def _pointer(data: Buffer) -> tuple[Any, int]:
    """An argument ctypes passes as ``const void *`` without copying the bytes, where it can."""
    if isinstance(data, bytes):
        return data, len(data)
    view = memoryview(data)
    if view.readonly or not view.contiguous:
        raw = bytes(view)
        return raw, len(raw)
    return (ctypes.c_char * view.nbytes).from_buffer(view), view.nbytes


class _OpenSSLHash:
    def __init__(self, lib: _LibCrypto) -> None:
        self._lib = lib
        self._md5 = ctypes.create_string_buffer(_CTX_ALLOC)
        self._sha = ctypes.create_string_buffer(_CTX_ALLOC)
        lib.md5_init(self._md5)
        lib.sha256_init(self._sha)
        self.offset = 0

    @classmethod
    def restore(cls, lib: _LibCrypto, offset: int, state: str) -> _OpenSSLHash:
        tag, _, payload = state.partition(";")
        if tag != _STATE_TAG:
            raise ValueError(f"checksum state from another kind of machine ({tag})")
        raw = base64.b64decode(payload)
        if len(raw) != _MD5_CTX_SIZE + _SHA256_CTX_SIZE:
            raise ValueError("checksum state has the wrong size")
        made = cls(lib)
        ctypes.memmove(made._md5, raw[:_MD5_CTX_SIZE], _MD5_CTX_SIZE)
        ctypes.memmove(made._sha, raw[_MD5_CTX_SIZE:], _SHA256_CTX_SIZE)
        made.offset = offset
        return made

    def update(self, data: Buffer, helper: Executor | None = None) -> None:
        arg, size = _pointer(data)
        if not size:
            return
        if helper is None:
            self._lib.md5_update(self._md5, arg, ctypes.c_size_t(size))
            self._lib.sha256_update(self._sha, arg, ctypes.c_size_t(size))
        else:
            md5 = helper.submit(self._lib.md5_update, self._md5, arg, ctypes.c_size_t(size))
            self._lib.sha256_update(self._sha, arg, ctypes.c_size_t(size))
            md5.result()
        self.offset += size

    def digests(self) -> Digests:
        md5 = ctypes.create_string_buffer(self._md5.raw, _CTX_ALLOC)
        sha = ctypes.create_string_buffer(self._sha.raw, _CTX_ALLOC)
        out = ctypes.create_string_buffer(32)
        self._lib.md5_final(out, md5)
        md5_hex = out.raw[:16].hex()
        self._lib.sha256_final(out, sha)
        return Digests(md5=md5_hex, sha256=out.raw[:32].hex())

    def export(self) -> str:
        raw = self._md5.raw[:_MD5_CTX_SIZE] + self._sha.raw[:_SHA256_CTX_SIZE]
        return f"{_STATE_TAG};{base64.b64encode(raw).decode()}"


# --- hashlib (no saved state) ---------------------------------------------------------------------


class _HashlibHash:
    def __init__(self) -> None:
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._sha = hashlib.sha256()
        self.offset = 0

    def update(self, data: Buffer, helper: Executor | None = None) -> None:
        if helper is None:
            self._md5.update(data)
        else:
            md5 = helper.submit(self._md5.update, data)
        self._sha.update(data)
        if helper is not None:
            md5.result()
        self.offset += memoryview(data).nbytes

    def digests(self) -> Digests:
        return Digests(md5=self._md5.hexdigest(), sha256=self._sha.hexdigest())

    def export(self) -> None:
        return None


def new_hash(*, exportable: bool = True) -> StreamHash:
    """A fresh MD5 + SHA-256; with a savable state when this machine allows it."""
    lib = _load() if exportable else None
    return _OpenSSLHash(lib) if lib is not None else _HashlibHash()


def restore_hash(offset: int, state: str | None) -> StreamHash | None:
    """The hash saved by :meth:`StreamHash.export` after ``offset`` bytes, or ``None`` if it cannot
    be restored here (no state was saved, or it came from another kind of machine)."""
    if offset == 0:
        return new_hash()
    lib = _load()
    if state is None or lib is None:
        return None
    try:
        return _OpenSSLHash.restore(lib, offset, state)
    except ValueError:
        return None


def state_exportable() -> bool:
    return _load() is not None
