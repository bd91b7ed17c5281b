"""Crypt4GH bodies and headers: levere's files open with the stock `crypt4gh` tool and the reverse,
bodies stream in constant memory, and bad input is refused with nothing written."""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import subprocess
import sys
import threading
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crypt4gh import lib as stock_lib
from levere.crypt4gh import (
    BodyEncryptor,
    PrivateKey,
    PublicKey,
    accept_encrypted,
    body_size,
    decrypt_body,
    decrypt_file,
    encrypt_stream,
    iter_plaintext,
    make_header,
    open_plaintext,
    plaintext_size,
    read_data_key,
    read_header,
    reencrypt_header,
)
from levere.crypt4gh.body import CIPHER_SEGMENT, SEGMENT
from levere.domain.errors import CiphertextDamaged, EncryptedToAnotherKey, NotCrypt4GH

BIN = Path(sys.executable).parent
CRYPT4GH = str(BIN / "crypt4gh")
KEYGEN = str(BIN / "crypt4gh-keygen")
#: the sizes where segment boundaries can go wrong
EDGE_SIZES = [0, 1, SEGMENT - 1, SEGMENT, SEGMENT + 1, 16 * SEGMENT, 16 * SEGMENT + 1, 40 * SEGMENT + 7]


def _encrypt(plaintext: bytes, recipient: PublicKey) -> tuple[bytes, bytes]:
    body = io.BytesIO()
    result = encrypt_stream(io.BytesIO(plaintext), body)
    return make_header(result.data_key, recipient), body.getvalue()


def _keygen(folder: Path, name: str, passphrase: str | None = None) -> tuple[Path, Path]:
    """A key pair made by the stock ``crypt4gh-keygen``, as a member would make one."""
    sk, pk = folder / f"{name}.sec", folder / f"{name}.pub"
    command = [KEYGEN, "--sk", str(sk), "--pk", str(pk), "-f"]
    if passphrase is None:
        command.append("--nocrypt")
    # the tool asks twice on the terminal; in a session of its own it has none and reads standard input
    typed = f"{passphrase}\n{passphrase}\n".encode() if passphrase else b""
    subprocess.run(command, check=True, capture_output=True, input=typed, start_new_session=True)
    return sk, pk


def _stock_decrypt(secret_key: Path, encrypted: bytes, passphrase: str = "") -> bytes:
    env = dict(os.environ, C4GH_PASSPHRASE=passphrase)
    done = subprocess.run(
        [CRYPT4GH, "decrypt", "--sk", str(secret_key)], input=encrypted, capture_output=True, env=env
    )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


# --- interoperability with the stock crypt4gh tool ----------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, SEGMENT, 3 * SEGMENT + 5, 17 * SEGMENT + 1])
def test_the_stock_tool_decrypts_what_levere_encrypts(tmp_path: Path, size: int) -> None:
    member_sk, member_pk = _keygen(tmp_path, "member", passphrase="a member's passphrase")
    plaintext = os.urandom(size)
    header, body = _encrypt(plaintext, PublicKey.from_pem(member_pk.read_text()))
    assert len(body) == body_size(size)
    assert _stock_decrypt(member_sk, header + body, "a member's passphrase") == plaintext


def test_levere_accepts_a_file_the_stock_tool_encrypted_to_its_key(tmp_path: Path) -> None:
    """The facility encrypts to the shared disk's public key (as levere hands it out); levere splits
    header from body, checks and hashes it, and re-makes the header for a member, who decrypts the
    body as stored with the stock tool."""
    disk = PrivateKey.generate()
    (tmp_path / "disk.pub").write_text(disk.public_key.to_pem())
    plaintext = os.urandom(5 * SEGMENT + 123)
    encrypted = subprocess.run(
        [CRYPT4GH, "encrypt", "--recipient_pk", str(tmp_path / "disk.pub")],
        input=plaintext,
        capture_output=True,
        check=True,
    ).stdout

    stored_body = io.BytesIO()
    accepted = accept_encrypted(io.BytesIO(encrypted), disk, stored_body)
    assert encrypted == accepted.header + stored_body.getvalue()  # the body is kept byte for byte
    assert accepted.md5 == hashlib.md5(plaintext).hexdigest()
    assert accepted.sha256 == hashlib.sha256(plaintext).hexdigest()
    assert (accepted.plaintext_size, accepted.body_size) == (len(plaintext), len(stored_body.getvalue()))

    member_sk, member_pk = _keygen(tmp_path, "member")
    member_header = reencrypt_header(accepted.header, disk, PublicKey.from_pem(member_pk.read_bytes()))
    assert _stock_decrypt(member_sk, member_header + stored_body.getvalue()) == plaintext
    # the member's header gives the disk's key nothing
    with pytest.raises(EncryptedToAnotherKey):
        read_data_key(member_header, disk)


def test_a_file_the_stock_tool_encrypted_to_several_recipients_opens_with_the_disks_key(
    tmp_path: Path,
) -> None:
    disk = PrivateKey.generate()
    (tmp_path / "disk.pub").write_text(disk.public_key.to_pem())
    _, other_pk = _keygen(tmp_path, "other")
    plaintext = os.urandom(SEGMENT + 2)
    encrypted = subprocess.run(
        [CRYPT4GH, "encrypt", "--recipient_pk", str(other_pk), "--recipient_pk", str(tmp_path / "disk.pub")],
        input=plaintext,
        capture_output=True,
        check=True,
    ).stdout
    accepted = accept_encrypted(io.BytesIO(encrypted), disk, io.BytesIO())
    assert accepted.sha256 == hashlib.sha256(plaintext).hexdigest()


def test_levere_reads_secret_keys_made_by_crypt4gh_keygen(tmp_path: Path) -> None:
    locked_sk, locked_pk = _keygen(tmp_path, "locked", passphrase="correct horse")
    open_sk, open_pk = _keygen(tmp_path, "open")
    asked: list[str] = []

    def passphrase() -> str:
        asked.append("asked")
        return "correct horse"

    locked = PrivateKey.from_crypt4gh(locked_sk.read_text(), passphrase)
    assert locked.public_key == PublicKey.from_pem(locked_pk.read_text()) and asked == ["asked"]
    unlocked = PrivateKey.from_crypt4gh(open_sk.read_bytes())  # no passphrase asked for
    assert unlocked.public_key == PublicKey.from_pem(open_pk.read_text())

    # levere downloads and decrypts locally with the member's own key
    plaintext = os.urandom(2 * SEGMENT + 9)
    header, body = _encrypt(plaintext, locked.public_key)
    out = io.BytesIO()
    assert decrypt_file(io.BytesIO(header + body), locked, out) == len(plaintext)
    assert out.getvalue() == plaintext


def test_a_secret_key_levere_writes_opens_with_the_stock_tool(tmp_path: Path) -> None:
    key = PrivateKey.generate()
    (tmp_path / "member.sec").write_text(key.to_crypt4gh(passphrase="pass phrase", comment="a member"))
    assert PrivateKey.from_crypt4gh((tmp_path / "member.sec").read_text(), lambda: "pass phrase") == key
    plaintext = os.urandom(1000)
    header, body = _encrypt(plaintext, key.public_key)
    assert _stock_decrypt(tmp_path / "member.sec", header + body, "pass phrase") == plaintext


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    size=st.one_of(st.sampled_from(EDGE_SIZES), st.integers(min_value=0, max_value=20 * SEGMENT)),
    seed=st.binary(min_size=16, max_size=16),
    checksums=st.booleans(),
)
def test_any_size_round_trips_through_levere_and_the_stock_library(
    size: int, seed: bytes, checksums: bool
) -> None:
    plaintext = (hashlib.sha256(seed).digest() * (size // 32 + 1))[:size]
    plaintext = bytes(b ^ (i & 0xFF) for i, b in enumerate(plaintext[:4096])) + plaintext[4096:]
    member = PrivateKey.generate()
    body = io.BytesIO()
    result = encrypt_stream(io.BytesIO(plaintext), body, checksums=checksums)
    assert result.plaintext_size == size and result.body_size == len(body.getvalue()) == body_size(size)
    assert plaintext_size(result.body_size) == size
    if checksums:
        assert result.md5 == hashlib.md5(plaintext).hexdigest()
        assert result.sha256 == hashlib.sha256(plaintext).hexdigest()
    else:
        assert result.md5 is None and result.sha256 is None
    header = make_header(result.data_key, member.public_key)

    assert b"".join(iter_plaintext(io.BytesIO(body.getvalue()), read_data_key(header, member))) == plaintext
    stock_out = io.BytesIO()
    stock_lib.decrypt([(0, member.secret_bytes(), None)], io.BytesIO(header + body.getvalue()), stock_out)
    assert stock_out.getvalue() == plaintext


@settings(max_examples=25, deadline=None)
@given(
    cuts=st.lists(st.integers(min_value=0, max_value=3 * SEGMENT), max_size=12),
    size=st.sampled_from([0, 1, SEGMENT, 16 * SEGMENT, 16 * SEGMENT + 1, 50 * SEGMENT + 3]),
)
def test_plaintext_pushed_in_pieces_of_any_size_makes_a_valid_body(cuts: list[int], size: int) -> None:
    """An upload's request chunks arrive in any sizes; the body's segments do not depend on them."""
    plaintext = os.urandom(size)
    member = PrivateKey.generate()
    body = io.BytesIO()
    with BodyEncryptor(body) as encryptor:
        at = 0
        for cut in [*sorted(min(c, size) for c in cuts), size]:
            encryptor.write(plaintext[at:cut])
            at = cut
        result = encryptor.finish()
    assert (
        (result.plaintext_size, result.body_size) == (size, body_size(size)) == (size, len(body.getvalue()))
    )
    assert result.md5 == hashlib.md5(plaintext).hexdigest()
    out = io.BytesIO()
    header = make_header(result.data_key, member.public_key)
    stock_lib.decrypt([(0, member.secret_bytes(), None)], io.BytesIO(header + body.getvalue()), out)
    assert out.getvalue() == plaintext
    with pytest.raises(ValueError, match="finished"):
        encryptor.write(b"more")


def test_the_stock_library_encrypts_what_levere_decrypts_at_every_edge() -> None:
    member = PrivateKey.generate()
    for size in EDGE_SIZES:
        plaintext = os.urandom(size)
        encrypted = io.BytesIO()
        stock_lib.encrypt([(0, os.urandom(32), member.public_key.raw)], io.BytesIO(plaintext), encrypted)
        out = io.BytesIO()
        decrypt_file(io.BytesIO(encrypted.getvalue()), member, out)
        assert out.getvalue() == plaintext, size


def test_a_gzipped_fastq_is_read_through_decryption_with_plaintext_only_in_memory() -> None:
    """Analysis reads a Crypt4GH gzip FASTQ as a file: decrypted and unzipped while streaming."""
    records = b"".join(b"@read%d\nACGTNACGTA\n+\nIIIIIIIIII\n" % n for n in range(50_000))
    disk = PrivateKey.generate()
    header, body = _encrypt(gzip.compress(records), disk.public_key)
    with gzip.open(open_plaintext(io.BytesIO(header + body), disk)) as fastq:
        lines = fastq.read().splitlines()
    assert len(lines) == 200_000 and lines[-3] == b"ACGTNACGTA"

    damaged = bytearray(header + body)
    damaged[-5] ^= 1
    with (
        pytest.raises(CiphertextDamaged),
        gzip.open(open_plaintext(io.BytesIO(bytes(damaged)), disk)) as fastq,
    ):
        fastq.read()


# --- bad input -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"@read1\nACGT\n+\nIIII\n" * 100,
        gzip.compress(b"@read1\nACGT\n+\nIIII\n"),
        b"crypt4gh" + (2).to_bytes(4, "little") + (1).to_bytes(4, "little"),  # version 2
        b"crypt4gh" + (1).to_bytes(4, "little") + (1).to_bytes(4, "little") + (500).to_bytes(4, "little"),
        b"crypt4gh" + (1).to_bytes(4, "little") + (10**6).to_bytes(4, "little"),
    ],
    ids=["empty", "fastq", "gzip", "version-2", "cut-in-header", "too-many-packets"],
)
def test_a_file_that_is_not_crypt4gh_is_refused_before_anything_is_stored(content: bytes) -> None:
    sink = io.BytesIO()
    with pytest.raises(NotCrypt4GH) as refused:
        accept_encrypted(io.BytesIO(content), PrivateKey.generate(), sink)
    assert refused.value.code == "not_crypt4gh" and refused.value.http_status == 422
    assert sink.getvalue() == b""


def test_a_file_encrypted_to_another_key_is_refused_before_anything_is_stored() -> None:
    disk, other = PrivateKey.generate(), PrivateKey.generate()
    header, body = _encrypt(os.urandom(3000), other.public_key)
    sink = io.BytesIO()
    with pytest.raises(EncryptedToAnotherKey) as refused:
        accept_encrypted(io.BytesIO(header + body), disk, sink)
    assert refused.value.code == "encrypted_to_another_key"
    assert sink.getvalue() == b""


@pytest.mark.parametrize("damage", ["flip", "cut", "cut-to-a-stub", "extra-segment"])
def test_a_damaged_body_is_refused(damage: str) -> None:
    disk = PrivateKey.generate()
    header, body = _encrypt(os.urandom(3 * SEGMENT + 100), disk.public_key)
    if damage == "flip":
        changed = bytearray(body)
        changed[CIPHER_SEGMENT + 500] ^= 1
        body = bytes(changed)
    elif damage == "cut":
        body = body[:-1]
    elif damage == "cut-to-a-stub":
        body = body[: 3 * CIPHER_SEGMENT + 20]
    else:  # a segment from another file under another key
        body += _encrypt(os.urandom(50), disk.public_key)[1]
    with pytest.raises(CiphertextDamaged):
        accept_encrypted(io.BytesIO(header + body), disk, io.BytesIO())


def test_headers_are_read_exactly_and_nothing_more() -> None:
    disk = PrivateKey.generate()
    header, body = _encrypt(os.urandom(10), disk.public_key)
    stream = io.BytesIO(header + body)
    assert read_header(stream) == header and stream.read() == body
    with pytest.raises(NotCrypt4GH):
        read_data_key(header + b"x", disk)


# --- streaming -----------------------------------------------------------------------------------------


class _Zeros(io.RawIOBase):
    """A plaintext source that holds nothing in memory, reading short as a pipe does."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        size = min(len(buffer), self.left, 100_000)
        memoryview(buffer)[:size] = bytes(size)
        self.left -= size
        return size


class _Counter:
    def __init__(self) -> None:
        self.size = 0
        self.md5 = hashlib.md5()

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self.size += len(data)
        return len(data)


@pytest.mark.parametrize("checksums", [True, False])
def test_encryption_and_decryption_run_in_constant_memory(tmp_path: Path, checksums: bool) -> None:
    size = 96 * 1024 * 1024
    member = PrivateKey.generate()
    stored = tmp_path / "body"
    tracemalloc.start()
    try:
        with stored.open("wb") as body:
            result = encrypt_stream(_Zeros(size), body, checksums=checksums)
        encrypt_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        header = make_header(result.data_key, member.public_key)
        plain = _Counter()
        with stored.open("rb") as body:
            decrypt_body(body, read_data_key(header, member), plain)
        decrypt_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert stored.stat().st_size == body_size(size) and plain.size == size
    assert result.sha256 == (hashlib.sha256(bytes(size)).hexdigest() if checksums else None)
    # a few chunks of 1 MiB in flight, whatever the size
    assert encrypt_peak < 12 * 1024 * 1024, encrypt_peak
    assert decrypt_peak < 6 * 1024 * 1024, decrypt_peak


def test_no_thread_outlives_an_encryption_that_fails() -> None:
    class Broken:
        def write(self, data: object) -> int:
            raise OSError("disk full")

    before = {t.name for t in threading.enumerate()}
    with pytest.raises(OSError, match="disk full"):
        encrypt_stream(_Zeros(5 * SEGMENT * 16), Broken())
    encrypt_stream(io.BytesIO(b"x"), io.BytesIO())
    with pytest.raises(OSError, match="disk full"):
        encrypt_stream(_Zeros(5 * SEGMENT * 16), Broken(), checksums=False)
    assert not [t for t in threading.enumerate() if t.name == "crypt4gh-hash" and t.name not in before]


def test_no_key_and_no_plaintext_reach_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    disk, member = PrivateKey.generate(), PrivateKey.generate()
    plaintext = os.urandom(SEGMENT + 1)
    header, body = _encrypt(plaintext, disk.public_key)
    accepted = accept_encrypted(io.BytesIO(header + body), disk, io.BytesIO())
    reencrypt_header(accepted.header, disk, member.public_key)
    logged = caplog.text + repr(accepted) + repr(disk)
    for secret in (disk.secret_bytes(), member.secret_bytes(), plaintext[:32]):
        assert secret.hex() not in logged and secret.hex().upper() not in logged
    assert "DataKey(...)" in repr(accepted)
