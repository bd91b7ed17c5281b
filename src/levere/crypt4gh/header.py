"""Crypt4GH headers (GA4GH Crypt4GH 1.0, section 3): one recipient each, kept apart from the body.

A header is ``crypt4gh`` + version 1 + a packet count, then packets each encrypted to one recipient
with X25519 + ChaCha20-Poly1305. levere writes one packet per header (the data key for recipient
method 0, ChaCha20-Poly1305 segments) from a fresh writer key pair, as ``crypt4gh encrypt`` does
without ``--sk``; headers made together for one recipient (a batch's files, a release) share one
writer key pair, made for them and kept in memory only (:class:`HeaderMaker`), as ``crypt4gh
encrypt --sk`` shares its sender's: the key exchange is done once, each packet has its own nonce. The shared key is libsodium's ``crypto_kx``: the first 32 bytes of
BLAKE2b-512(X25519 point || recipient public key || writer public key).

Headers are made here rather than with the ``crypt4gh`` library's functions because those log
secret keys at debug level.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import os
from typing import BinaryIO, NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from levere.crypt4gh.keys import KEY_BYTES, PrivateKey, PublicKey
from levere.domain.errors import EncryptedToAnotherKey, InvalidPublicKey, NotCrypt4GH

MAGIC = b"crypt4gh"
VERSION = 1
_METHOD_X25519_CHACHA20 = (0).to_bytes(4, "little")
_PACKET_DATA_KEY = (0).to_bytes(4, "little")
_PACKET_EDIT_LIST = (1).to_bytes(4, "little")
_BODY_CHACHA20_POLY1305 = (0).to_bytes(4, "little")
#: a header levere accepts holds a few packets of about a hundred bytes; a bigger one is refused
#: before it is read, so a hostile upload cannot make the server buffer it
MAX_HEADER_BYTES = 64 * 1024
MAX_PACKETS = 64


class DataKey:
    """The symmetric key of one body; like a private key, never shown or pickled."""

    __slots__ = ("_raw",)

    def __init__(self, raw: bytes) -> None:
        if len(raw) != KEY_BYTES:
            raise ValueError("a data key has 32 bytes")
        self._raw = bytes(raw)

    @classmethod
    def generate(cls) -> DataKey:
        return cls(os.urandom(KEY_BYTES))

    def cipher(self) -> ChaCha20Poly1305:
        return ChaCha20Poly1305(self._raw)

    def secret_bytes(self) -> bytes:
        """The raw key, for wrapping under a master key (:meth:`MasterKeys.wrap_data_key`)."""
        return self._raw

    def __repr__(self) -> str:
        return "DataKey(...)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DataKey) and hmac.compare_digest(self._raw, other._raw)

    def __hash__(self) -> int:
        return id(self)

    def __reduce__(self) -> NoReturn:
        raise TypeError("a data key is not pickled")

    def _packet(self) -> bytes:
        return _PACKET_DATA_KEY + _BODY_CHACHA20_POLY1305 + self._raw


class HeaderMaker:
    """Headers for one recipient from one fresh writer key pair: the key exchange is done once,
    when the maker is made, and each header's packet is sealed under its own random nonce."""

    __slots__ = ("_cipher", "_writer")

    def __init__(self, recipient: PublicKey) -> None:
        writer = PrivateKey.generate()
        shared = _shared_key(writer.exchange(recipient), reader=recipient, writer=writer.public_key)
        self._cipher = ChaCha20Poly1305(shared)
        self._writer = writer.public_key.raw

    def __call__(self, data_key: DataKey) -> bytes:
        """A header that gives the recipient ``data_key``."""
        nonce = os.urandom(12)
        sealed = self._cipher.encrypt(nonce, data_key._packet(), None)
        packet = _METHOD_X25519_CHACHA20 + self._writer + nonce + sealed
        return MAGIC + VERSION.to_bytes(4, "little") + (1).to_bytes(4, "little") + _framed(packet)

    def __repr__(self) -> str:
        return "HeaderMaker(...)"

    def __reduce__(self) -> NoReturn:
        raise TypeError("a header maker holds a shared key and is not pickled")


def make_header(data_key: DataKey, recipient: PublicKey) -> bytes:
    """A header that gives ``recipient`` the body's data key (from a writer key pair of its own)."""
    return HeaderMaker(recipient)(data_key)


def read_data_key(header: bytes, private_key: PrivateKey) -> DataKey:
    """The data key from a header for ``private_key``.

    Raises :class:`NotCrypt4GH` if ``header`` is not a Crypt4GH header, and
    :class:`EncryptedToAnotherKey` if no packet opens with this key.
    """
    keys: list[bytes] = []
    for packet in _packets(header):
        opened = _open(packet, private_key)
        if opened is None:
            continue
        kind = opened[:4]
        if kind == _PACKET_EDIT_LIST:
            raise NotCrypt4GH("this Crypt4GH file has an edit list, which levere does not accept")
        if kind != _PACKET_DATA_KEY:
            raise NotCrypt4GH(f"this Crypt4GH header has a packet of unknown type {kind.hex()}")
        if opened[4:8] != _BODY_CHACHA20_POLY1305 or len(opened) != 8 + KEY_BYTES:
            raise NotCrypt4GH("this Crypt4GH file's body uses a cipher other than ChaCha20-Poly1305")
        keys.append(opened[8:])
    if not keys:
        raise EncryptedToAnotherKey(
            "this Crypt4GH file is encrypted to another key",
            public_key=private_key.public_key.fingerprint,
        )
    if any(key != keys[0] for key in keys[1:]):
        raise NotCrypt4GH("this Crypt4GH file has several data keys, which levere does not accept")
    return DataKey(keys[0])


def reencrypt_header(header: bytes, private_key: PrivateKey, recipient: PublicKey) -> bytes:
    """A header for ``recipient`` made from one ``private_key`` opens; the body is not touched."""
    return make_header(read_data_key(header, private_key), recipient)


def read_header(stream: BinaryIO) -> bytes:
    """Read exactly one header from the start of ``stream`` and return its bytes, leaving the
    stream at the first byte of the body. Raises :class:`NotCrypt4GH` for anything else."""
    start = _read_exactly(stream, 16)
    if len(start) < 16 or start[:8] != MAGIC:
        raise NotCrypt4GH("this is not a Crypt4GH file (it does not start with the crypt4gh mark)")
    if int.from_bytes(start[8:12], "little") != VERSION:
        raise NotCrypt4GH("this Crypt4GH file has a version other than 1")
    count = int.from_bytes(start[12:16], "little")
    if not 1 <= count <= MAX_PACKETS:
        raise NotCrypt4GH(f"this Crypt4GH header claims {count} packets")
    parts = [start]
    size = 16
    for _ in range(count):
        length_bytes = _read_exactly(stream, 4)
        length = int.from_bytes(length_bytes, "little")
        size += length
        if len(length_bytes) < 4 or length < 4 or size > MAX_HEADER_BYTES:
            raise NotCrypt4GH("this Crypt4GH header is damaged (a packet's length is impossible)")
        body = _read_exactly(stream, length - 4)
        if len(body) < length - 4:
            raise NotCrypt4GH("this Crypt4GH file ends inside its header")
        parts += [length_bytes, body]
    return b"".join(parts)


def _packets(header: bytes) -> list[bytes]:
    stream = io.BytesIO(header)
    read_header(stream)
    if stream.read(1):
        raise NotCrypt4GH("these bytes are more than one Crypt4GH header")
    packets, at = [], 16
    while at < len(header):
        length = int.from_bytes(header[at : at + 4], "little")
        packets.append(header[at + 4 : at + length])
        at += length
    return packets


def _open(packet: bytes, private_key: PrivateKey) -> bytes | None:
    """The packet's content if it is for ``private_key``, else None."""
    if packet[:4] != _METHOD_X25519_CHACHA20 or len(packet) < 4 + 32 + 12 + 16:
        return None
    writer_raw, nonce, sealed = packet[4:36], packet[36:48], packet[48:]
    try:
        writer = PublicKey(writer_raw)
        shared = _shared_key(private_key.exchange(writer), reader=private_key.public_key, writer=writer)
        return ChaCha20Poly1305(shared).decrypt(nonce, sealed, None)
    except (InvalidTag, InvalidPublicKey):  # a packet for another key, or not a valid one
        return None


def _shared_key(point: bytes, *, reader: PublicKey, writer: PublicKey) -> bytes:
    return hashlib.blake2b(point + reader.raw + writer.raw, digest_size=64).digest()[:32]


def _framed(packet: bytes) -> bytes:
    return (len(packet) + 4).to_bytes(4, "little") + packet


def _read_exactly(stream: BinaryIO, size: int) -> bytes:
    parts, missing = [], size
    while missing:
        part = stream.read(missing)
        if not part:
            break
        parts.append(part)
        missing -= len(part)
    return b"".join(parts)
