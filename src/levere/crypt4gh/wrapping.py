"""Private keys at rest: wrapped under a master key from configuration, never stored in clear.

The master key file (``[secure] master_key_file``) holds one or more master keys, one a line::

    2026-12 GhlPyN2q2kS2c0V4mM3n7Y1c3x8sOa0d5Kx0rTt3Q3E=

a key id (letters, digits, ``.``, ``_``, ``-``) then 32 random bytes in base64; blank lines and
lines starting with ``#`` are ignored. The first key wraps; every key in the file unwraps. A wrapped
key is the text ``c4gh-wrap-v1:<key id>:<base64 nonce + ciphertext>``, sealed with
ChaCha20-Poly1305 over the key id and a *context* the caller chooses (say, the secure project's id),
so a wrapped key copied onto another row does not open.

Rotation, without touching any data (bodies and headers stay as they are):

1. put a new line at the top of the file, keeping the old key below it, and restart levere:
   new keys are wrapped under the new master key, old ones still open;
2. re-wrap every stored private key with :meth:`MasterKeys.rewrap` (it opens with whichever key
   wrapped it and seals under the first; :meth:`MasterKeys.needs_rewrap` says which rows remain);
3. when none remains, delete the old line and restart.

The file must be readable by levere's user only (mode 0600 or stricter): a file others can read is
refused at start.
"""

from __future__ import annotations

import base64
import os
import re
import stat
from pathlib import Path
from typing import NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from levere.crypt4gh.header import DataKey
from levere.crypt4gh.keys import KEY_BYTES, PrivateKey
from levere.domain.errors import ConfigurationError

PREFIX = "c4gh-wrap-v1"
_KEY_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class MasterKeys:
    """The master keys of ``master_key_file``; the first one wraps."""

    __slots__ = ("_keys", "current_id")

    def __init__(self, keys: list[tuple[str, bytes]]) -> None:
        if not keys:
            raise ConfigurationError("the master key file holds no key")
        ids = [key_id for key_id, _ in keys]
        if len(set(ids)) != len(ids):
            raise ConfigurationError("the master key file names a key id twice")
        for key_id, raw in keys:
            if not _KEY_ID.match(key_id):
                raise ConfigurationError(
                    f"master key id {key_id!r} has characters other than A-Z a-z 0-9 . _ -"
                )
            if len(raw) != KEY_BYTES:
                raise ConfigurationError(f"master key {key_id!r} is not 32 bytes")
        self._keys = dict(keys)
        self.current_id = ids[0]

    @classmethod
    def from_setting(cls, path: Path | None) -> MasterKeys:
        """The master keys of ``[secure] master_key_file``; a clear error if it is not set."""
        if path is None:
            raise ConfigurationError(
                "the secure zone needs master keys: set [secure] master_key_file (see docs/configuration.md)"
            )
        return cls.from_file(path)

    @classmethod
    def from_file(cls, path: Path) -> MasterKeys:
        try:
            mode = path.stat().st_mode
            text = path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigurationError(f"cannot read the master key file {path}: {error}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigurationError(
                f"the master key file {path} can be read by others: make it readable by levere only (chmod 600)"
            )
        return cls.parse(text)

    @classmethod
    def parse(cls, text: str) -> MasterKeys:
        keys = []
        for number, line in enumerate(text.splitlines(), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) != 2:
                raise ConfigurationError(f"master key file line {number}: expected a key id and a key")
            try:
                raw = base64.b64decode(parts[1], validate=True)
            except ValueError:
                raise ConfigurationError(f"master key file line {number}: the key is not base64") from None
            keys.append((parts[0], raw))
        return cls(keys)

    @staticmethod
    def new_line(key_id: str) -> str:
        """A line for the master key file with a fresh random key."""
        if not _KEY_ID.match(key_id):
            raise ConfigurationError(f"master key id {key_id!r} has characters other than A-Z a-z 0-9 . _ -")
        return f"{key_id} {base64.b64encode(os.urandom(KEY_BYTES)).decode()}\n"

    def wrap(self, private_key: PrivateKey, context: str) -> str:
        """``private_key`` sealed under the current master key, bound to ``context``."""
        return self._seal(private_key.secret_bytes(), context)

    def wrap_data_key(self, data_key: DataKey, context: str) -> str:
        """A body's data key sealed as a private key is (an upload in progress carries it)."""
        return self._seal(data_key.secret_bytes(), context)

    def unwrap_data_key(self, wrapped: str, context: str) -> DataKey:
        return DataKey(self._open(wrapped, context))

    def _seal(self, raw: bytes, context: str) -> str:
        nonce = os.urandom(12)
        sealed = ChaCha20Poly1305(self._keys[self.current_id]).encrypt(
            nonce, raw, _aad(self.current_id, context)
        )
        return f"{PREFIX}:{self.current_id}:{base64.b64encode(nonce + sealed).decode()}"

    def unwrap(self, wrapped: str, context: str) -> PrivateKey:
        return PrivateKey(self._open(wrapped, context))

    def _open(self, wrapped: str, context: str) -> bytes:
        key_id, blob = _split(wrapped)
        master = self._keys.get(key_id)
        if master is None:
            raise ConfigurationError(
                f"a private key is wrapped under master key {key_id!r}, which the master key file no longer holds"
            )
        try:
            raw = ChaCha20Poly1305(master).decrypt(blob[:12], blob[12:], _aad(key_id, context))
        except InvalidTag:
            raise ConfigurationError(
                f"a wrapped private key does not open with master key {key_id!r} (changed, or not for {context!r})"
            ) from None
        return raw

    @property
    def key_ids(self) -> frozenset[str]:
        """The ids of every master key in the file (the keys themselves never leave this object)."""
        return frozenset(self._keys)

    def needs_rewrap(self, wrapped: str) -> bool:
        return _split(wrapped)[0] != self.current_id

    def rewrap(self, wrapped: str, context: str) -> str:
        """The same private key wrapped under the current master key (unchanged if it already is)."""
        if not self.needs_rewrap(wrapped):
            return wrapped
        return self.wrap(self.unwrap(wrapped, context), context)

    def __repr__(self) -> str:
        return f"MasterKeys(current={self.current_id!r}, ids={sorted(self._keys)!r})"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("master keys are not pickled")


def _aad(key_id: str, context: str) -> bytes:
    return f"{PREFIX}\0{key_id}\0{context}".encode()


def _split(wrapped: str) -> tuple[str, bytes]:
    parts = wrapped.split(":")
    if len(parts) != 3 or parts[0] != PREFIX:
        raise ConfigurationError("a stored private key is not in levere's wrapped form")
    try:
        blob = base64.b64decode(parts[2], validate=True)
    except ValueError:
        raise ConfigurationError("a stored wrapped private key is damaged (not base64)") from None
    if len(blob) != 12 + KEY_BYTES + 16:
        raise ConfigurationError("a stored wrapped private key is damaged (wrong length)")
    return parts[1], blob
