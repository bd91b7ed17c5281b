"""X25519 key pairs in the formats of the ``crypt4gh`` tools.

Public keys are written and read as ``crypt4gh-keygen`` writes them (a PEM-like block around the
32 raw bytes in base64), so the stock ``crypt4gh`` command reads the keys levere hands out. Secret
keys that members make with ``crypt4gh-keygen`` (``c4gh-v1``, with or without a passphrase) are read
here too, for ``levere download``'s local decryption; the passphrase comes from a callback at the
point of use, never through a call chain.

A :class:`PrivateKey` keeps its bytes to itself: its repr names only the public key's fingerprint,
and it cannot be pickled (a process pool would otherwise copy it into a pipe).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from levere.domain.errors import InvalidPublicKey, InvalidSecretKey

KEY_BYTES = 32
_PUBLIC_BEGIN = "-----BEGIN CRYPT4GH PUBLIC KEY-----"
_PUBLIC_END = "-----END CRYPT4GH PUBLIC KEY-----"
_PRIVATE_BEGIN = "-----BEGIN CRYPT4GH PRIVATE KEY-----"
_PRIVATE_END = "-----END CRYPT4GH PRIVATE KEY-----"
_C4GH_MAGIC = b"c4gh-v1"
#: salt size and rounds ``crypt4gh-keygen`` uses for each key-derivation function
_KDFS = {b"scrypt": (16, 0), b"bcrypt": (16, 100), b"pbkdf2_hmac_sha256": (16, 100_000)}


@dataclass(frozen=True)
class PublicKey:
    """A recipient's X25519 public key (32 bytes)."""

    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != KEY_BYTES:
            raise InvalidPublicKey(f"a Crypt4GH public key has {KEY_BYTES} bytes, this one {len(self.raw)}")
        # A low-order point gives every sender the same all-zero shared secret: anyone could read
        # what is encrypted to it. The exchange refuses such points, so try one.
        try:
            X25519PrivateKey.generate().exchange(X25519PublicKey.from_public_bytes(self.raw))
        except ValueError:
            raise InvalidPublicKey("this is not a usable X25519 public key (a low-order point)") from None

    @classmethod
    def from_pem(cls, text: str | bytes) -> PublicKey:
        """Read a public key as ``crypt4gh-keygen`` writes it (also a bare base64 line)."""
        if isinstance(text, bytes):
            try:
                text = text.decode("ascii")
            except UnicodeDecodeError:
                raise InvalidPublicKey("a Crypt4GH public key is text; this is binary data") from None
        lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
        if lines and lines[0].startswith("-----BEGIN"):
            if lines[0] != _PUBLIC_BEGIN or lines[-1] != _PUBLIC_END:
                if "PRIVATE" in lines[0]:
                    raise InvalidPublicKey("this is a private key: give the public key (the .pub file)")
                raise InvalidPublicKey(f"a Crypt4GH public key starts with {_PUBLIC_BEGIN}")
            lines = lines[1:-1]
        if len(lines) != 1:
            raise InvalidPublicKey("a Crypt4GH public key is one line of base64 between its two marks")
        try:
            raw = base64.b64decode(lines[0], validate=True)
        except ValueError:
            raise InvalidPublicKey("a Crypt4GH public key is base64, and this is not") from None
        return cls(raw)

    def to_pem(self) -> str:
        return f"{_PUBLIC_BEGIN}\n{base64.b64encode(self.raw).decode()}\n{_PUBLIC_END}\n"

    @property
    def fingerprint(self) -> str:
        """A short name for the key, safe to show and log."""
        return hashlib.sha256(self.raw).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"PublicKey({self.fingerprint})"


class PrivateKey:
    """An X25519 private key; its bytes never appear in a repr, a string or a pickle."""

    __slots__ = ("_raw", "public_key")

    def __init__(self, raw: bytes) -> None:
        if len(raw) != KEY_BYTES:
            raise InvalidSecretKey(f"an X25519 private key has {KEY_BYTES} bytes")
        self._raw = bytes(raw)
        self.public_key = PublicKey(
            X25519PrivateKey.from_private_bytes(self._raw).public_key().public_bytes_raw()
        )

    @classmethod
    def generate(cls) -> PrivateKey:
        return cls(os.urandom(KEY_BYTES))

    def exchange(self, peer: PublicKey) -> bytes:
        """The raw X25519 shared point with ``peer`` (for the header's key exchange)."""
        return X25519PrivateKey.from_private_bytes(self._raw).exchange(
            X25519PublicKey.from_public_bytes(peer.raw)
        )

    def secret_bytes(self) -> bytes:
        """The key's bytes, for wrapping under the master key; nothing else should need them."""
        return self._raw

    def __repr__(self) -> str:
        return f"PrivateKey(public={self.public_key.fingerprint})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PrivateKey) and hmac.compare_digest(self._raw, other._raw)

    def __hash__(self) -> int:
        return hash(self.public_key)

    def __reduce__(self) -> NoReturn:
        raise TypeError("a private key is not pickled; pass its wrapped form")

    # --- the crypt4gh-keygen secret key file -------------------------------------------------------

    @classmethod
    def from_crypt4gh(cls, text: str | bytes, passphrase: Callable[[], str] | None = None) -> PrivateKey:
        """Read a secret key file made by ``crypt4gh-keygen``; ``passphrase`` is asked only if the
        key is locked with one."""
        data = _pem_body(text)
        if not data.startswith(_C4GH_MAGIC):
            raise InvalidSecretKey("this is not a Crypt4GH secret key (made by crypt4gh-keygen)")
        fields = _Fields(data[len(_C4GH_MAGIC) :])
        kdf = fields.next()
        if kdf == b"none":
            if fields.next() != b"none":
                raise InvalidSecretKey("this Crypt4GH secret key names a cipher but no passphrase method")
            return cls(fields.next())
        if kdf not in _KDFS:
            raise InvalidSecretKey(f"this Crypt4GH secret key uses an unknown passphrase method {kdf!r}")
        options = fields.next()
        rounds, salt = int.from_bytes(options[:4], "big"), options[4:]
        if fields.next() != b"chacha20_poly1305":
            raise InvalidSecretKey("this Crypt4GH secret key uses a cipher other than chacha20_poly1305")
        sealed = fields.next()
        if passphrase is None:
            raise InvalidSecretKey("this Crypt4GH secret key is locked with a passphrase; none was given")
        derived = _derive(kdf, passphrase().encode(), salt, rounds)
        try:
            return cls(ChaCha20Poly1305(derived).decrypt(sealed[:12], sealed[12:], None))
        except InvalidTag:
            raise InvalidSecretKey("the passphrase does not unlock this Crypt4GH secret key") from None

    def to_crypt4gh(self, passphrase: str | None = None, comment: str | None = None) -> str:
        """This key as a ``crypt4gh-keygen`` secret key file (locked with scrypt if a passphrase is
        given), for members who let levere make their key pair and for tests."""
        if passphrase:
            salt = os.urandom(16)
            derived = _derive(b"scrypt", passphrase.encode(), salt, 0)
            nonce = os.urandom(12)
            body = (
                _C4GH_MAGIC
                + _string(b"scrypt")
                + _string((0).to_bytes(4, "big") + salt)
                + _string(b"chacha20_poly1305")
                + _string(nonce + ChaCha20Poly1305(derived).encrypt(nonce, self._raw, None))
            )
        else:
            body = _C4GH_MAGIC + _string(b"none") + _string(b"none") + _string(self._raw)
        if comment is not None:
            body += _string(comment.encode())
        return f"{_PRIVATE_BEGIN}\n{base64.b64encode(body).decode()}\n{_PRIVATE_END}\n"


def _pem_body(text: str | bytes) -> bytes:
    if isinstance(text, bytes):
        text = text.decode("ascii", errors="replace")
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if len(lines) < 3 or not lines[0].startswith("-----BEGIN ") or not lines[-1].startswith("-----END "):
        raise InvalidSecretKey("a secret key file starts with a -----BEGIN line and ends with -----END")
    if lines[0] != _PRIVATE_BEGIN:
        raise InvalidSecretKey(f"a Crypt4GH secret key starts with {_PRIVATE_BEGIN}")
    try:
        return base64.b64decode("".join(lines[1:-1]), validate=True)
    except ValueError:
        raise InvalidSecretKey("the secret key's body is not base64") from None


class _Fields:
    """The length-prefixed fields of a ``c4gh-v1`` key."""

    def __init__(self, data: bytes) -> None:
        self._data, self._at = data, 0

    def next(self) -> bytes:
        head = self._data[self._at : self._at + 2]
        size = int.from_bytes(head, "big")
        value = self._data[self._at + 2 : self._at + 2 + size]
        if len(head) != 2 or len(value) != size:
            raise InvalidSecretKey("this Crypt4GH secret key is cut short")
        self._at += 2 + size
        return value


def _string(value: bytes) -> bytes:
    return len(value).to_bytes(2, "big") + value


def _derive(kdf: bytes, passphrase: bytes, salt: bytes, rounds: int) -> bytes:
    if kdf == b"scrypt":
        return hashlib.scrypt(passphrase, salt=salt, n=1 << 14, r=8, p=1, dklen=32)
    if kdf == b"bcrypt":
        import bcrypt  # installed with crypt4gh; only old keys use it

        derived: bytes = bcrypt.kdf(passphrase, salt, 32, rounds, ignore_few_rounds=True)
        return derived
    return hashlib.pbkdf2_hmac("sha256", passphrase, salt, rounds, dklen=32)
