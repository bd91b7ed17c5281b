"""A Crypt4GH reader and writer made from the GA4GH File Encryption Standard (Crypt4GH 1.0) alone.

The tests check levere's files against it so that "another implementation opens it" means more
than levere agreeing with itself or with the one library it was built beside: this module shares no
code with ``levere.crypt4gh`` nor with the stock ``crypt4gh`` library, and uses only the primitives
the specification names (X25519 and ChaCha20-IETF-Poly1305 from ``cryptography``, BLAKE2b from
``hashlib``). It works on whole files in memory: it is for test data, not for a 100 GB run.

Section titles below are the specification's. Secret keys are the raw 32 bytes of an X25519 key;
public keys travel in the key file the stock tool writes (not part of the standard itself).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import struct
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

MAGIC, VERSION = b"crypt4gh", 1
SEGMENT = 65536  # plaintext bytes per segment ("Segmenting the input")
NONCE, MAC, KEY = 12, 16, 32
X25519_CHACHA20_IETF_POLY1305 = 0  # the one header packet encryption method
CHACHA20_IETF_POLY1305 = 0  # the data encryption method of version 1
DATA_ENCRYPTION_PARAMETERS, DATA_EDIT_LIST = 0, 1  # header packet types
PUBLIC_BEGIN, PUBLIC_END = "-----BEGIN CRYPT4GH PUBLIC KEY-----", "-----END CRYPT4GH PUBLIC KEY-----"


class SpecError(Exception):
    """What this reader refuses, each kind its own class so that tests can tell them apart."""


class NotCrypt4GH(SpecError):
    """No ``crypt4gh`` magic, or a version other than 1."""


class DamagedHeader(SpecError):
    """The header's layout is impossible (a packet too short, an unknown packet type)."""


class Truncated(SpecError):
    """The file ends inside its header, or inside a segment's nonce and MAC."""


class WrongKey(SpecError):
    """No header packet opens with the reader's key: encrypted to someone else (or its packets damaged)."""


class Unsupported(SpecError):
    """Valid Crypt4GH this reader does not handle: an edit list, another data encryption method."""


class DamagedSegment(SpecError):
    """A segment that no data key authenticates: its bytes were changed, or the file was cut inside it."""


# --- keys -----------------------------------------------------------------------------------------


def new_secret_key() -> bytes:
    """A reader's secret key, 32 random bytes ("Selection of Keys": from a secure generator)."""
    return X25519PrivateKey.generate().private_bytes_raw()


def public_key(secret: bytes) -> bytes:
    """K_p = X25519(K_s, 9) (section "X25519_chacha20_ietf_poly1305 Encryption")."""
    return (
        X25519PrivateKey.from_private_bytes(secret).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    )


def public_key_file(key: bytes) -> str:
    """The public key file the stock tool reads and levere accepts: a PEM-like frame around base64."""
    return f"{PUBLIC_BEGIN}\n{base64.b64encode(key).decode()}\n{PUBLIC_END}\n"


def read_public_key_file(text: str) -> bytes:
    lines = [line.strip() for line in text.strip().splitlines()]
    if len(lines) != 3 or lines[0] != PUBLIC_BEGIN or lines[2] != PUBLIC_END:
        raise ValueError("not a Crypt4GH public key file")
    try:
        key = base64.b64decode(lines[1], validate=True)
    except binascii.Error as error:
        raise ValueError("a Crypt4GH public key file whose key is not base64") from error
    if len(key) != KEY:
        raise ValueError(f"a Crypt4GH public key is {KEY} bytes, not {len(key)}")
    return key


def _shared_key(dh: bytes, reader_pk: bytes, writer_pk: bytes) -> bytes:
    # K_shared = Blake2b(K_dh || K_pr || K_pw), the 64-byte BLAKE2b of which ChaCha20 takes the first
    # 32 bytes; the same for writer and reader, whichever secret key made K_dh
    return hashlib.blake2b(dh + reader_pk + writer_pk, digest_size=64).digest()[:KEY]


# --- writing --------------------------------------------------------------------------------------


def encrypt(plaintext: bytes, recipient_pk: bytes) -> bytes:
    """A whole Crypt4GH file of ``plaintext`` for ``recipient_pk``: a fresh writer key pair, one
    data encryption parameters packet with a fresh data key, then 64 KiB segments."""
    writer = X25519PrivateKey.generate()
    writer_pk = writer.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    # K_dh = X25519(K_sw, K_pr); the writer's secret key is dropped after this packet, as allowed
    shared = _shared_key(
        writer.exchange(X25519PublicKey.from_public_bytes(recipient_pk)), recipient_pk, writer_pk
    )
    data_key = os.urandom(KEY)
    # "Header packet encrypted payload": packet type, data encryption method, K_data
    payload = struct.pack("<II", DATA_ENCRYPTION_PARAMETERS, CHACHA20_IETF_POLY1305) + data_key
    nonce = os.urandom(NONCE)
    # "Header Packets": length (counting itself), method, K_pw, nonce, sealed payload with its MAC
    packet = struct.pack("<I", X25519_CHACHA20_IETF_POLY1305) + writer_pk + nonce
    packet += ChaCha20Poly1305(shared).encrypt(nonce, payload, None)
    header = MAGIC + struct.pack("<II", VERSION, 1) + struct.pack("<I", 4 + len(packet)) + packet
    # "Encrypted Data": each segment is its own random nonce, then ciphertext and MAC, no AAD
    cipher, out = ChaCha20Poly1305(data_key), [header]
    for start in range(0, len(plaintext), SEGMENT):
        nonce = os.urandom(NONCE)
        out.append(nonce + cipher.encrypt(nonce, plaintext[start : start + SEGMENT], None))
    return b"".join(out)


# --- reading --------------------------------------------------------------------------------------


def decrypt(source: bytes | bytearray | BinaryIO, reader_secret: bytes) -> bytes:
    """The plaintext of a whole Crypt4GH file, read with the reader's raw secret key."""
    data = bytes(source) if isinstance(source, bytes | bytearray) else source.read()
    # "Header": magic, version, packet count, all in the clear and little-endian
    if not data or data[: len(MAGIC)] != MAGIC[: len(data)]:
        raise NotCrypt4GH("no crypt4gh magic at the start")
    if len(data) < 16:
        raise Truncated("the file ends inside its magic, version and packet count")
    version, count = struct.unpack_from("<II", data, 8)
    if version != VERSION:
        raise NotCrypt4GH(f"Crypt4GH version {version}; only version 1 is read")
    keys, position = _read_packets(data, count, reader_secret)
    return _read_segments(data[position:], keys)


def _read_packets(data: bytes, count: int, reader_secret: bytes) -> tuple[list[bytes], int]:
    reader = X25519PrivateKey.from_private_bytes(reader_secret)
    reader_pk = reader.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    keys: list[bytes] = []
    position = 16
    for number in range(count):
        if position + 8 > len(data):
            raise Truncated(f"the file ends before header packet {number} of {count}")
        length, method = struct.unpack_from("<II", data, position)
        if length < 8:
            raise DamagedHeader(f"header packet {number} claims {length} bytes, less than its own fields")
        if position + length > len(data):
            raise Truncated(f"the file ends inside header packet {number}")
        packet, position = data[position + 8 : position + length], position + length
        if method != X25519_CHACHA20_IETF_POLY1305:
            continue  # a method this reader does not know cannot be for it: ignored, as unreadable
        if len(packet) < KEY + NONCE + MAC:
            raise DamagedHeader(f"header packet {number} is too short for its key, nonce and MAC")
        writer_pk, nonce, sealed = packet[:KEY], packet[KEY : KEY + NONCE], packet[KEY + NONCE :]
        try:  # K_dh = X25519(K_sr, K_pw), refused by the library for a low-order writer key
            shared = _shared_key(
                reader.exchange(X25519PublicKey.from_public_bytes(writer_pk)), reader_pk, writer_pk
            )
            payload = ChaCha20Poly1305(shared).decrypt(nonce, sealed, None)
        except (InvalidTag, ValueError):
            continue  # "Encoding For Multiple Public/Secret Key Pairs": another reader's packet, skipped
        keys.append(_data_key(payload, number))
    if not keys:
        # "Reading the header": an error when no data encryption parameters packet opened
        raise WrongKey(f"none of the {count} header packets opens with this key")
    return keys, position


def _data_key(payload: bytes, number: int) -> bytes:
    if len(payload) < 4:
        raise DamagedHeader(f"header packet {number} opens to less than a packet type")
    (kind,) = struct.unpack_from("<I", payload)
    if kind == DATA_EDIT_LIST:
        # levere never writes one; applying it is a reader's feature this helper has no test for
        raise Unsupported(f"header packet {number} is a data edit list, which this reader refuses")
    if kind != DATA_ENCRYPTION_PARAMETERS:
        raise DamagedHeader(f"header packet {number} has the unknown packet type {kind}")
    if len(payload) < 8 + KEY:  # padding after the key is allowed ("Header Packets"), less is not
        raise DamagedHeader(f"header packet {number} is too short for a data key")
    (method,) = struct.unpack_from("<I", payload, 4)
    if method != CHACHA20_IETF_POLY1305:
        raise Unsupported(f"header packet {number} names data encryption method {method}, not 0")
    return payload[8 : 8 + KEY]


def _read_segments(body: bytes, keys: list[bytes]) -> bytes:
    # "chacha20_ietf_poly1305 Decryption": each segment is tried with every data key in turn, and
    # one that none authenticates is an error
    ciphers, out = [ChaCha20Poly1305(key) for key in keys], []
    for number, start in enumerate(range(0, len(body), NONCE + SEGMENT + MAC)):
        segment = body[start : start + NONCE + SEGMENT + MAC]
        if len(segment) < NONCE + MAC:
            raise Truncated(f"segment {number} has {len(segment)} bytes, less than its nonce and MAC")
        for cipher in ciphers:
            try:
                out.append(cipher.decrypt(segment[:NONCE], segment[NONCE:], None))
                break
            except InvalidTag:
                continue
        else:
            raise DamagedSegment(f"segment {number} authenticates with no data key (changed, or cut short)")
    return b"".join(out)
