"""The reader and writer written from the Crypt4GH specification (``spec_c4gh``) agree with the stock
``crypt4gh`` library in both directions and with levere's own, and refuse what they must: another
reader's key, a changed bit, a file cut short, an edit list."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crypt4gh import keys as stock_keys
from crypt4gh import lib as stock_lib
from levere.crypt4gh import PrivateKey, PublicKey, decrypt_file, encrypt_stream, make_header
from tests.crypt4gh import oarepo_reader
from tests.crypt4gh import spec_c4gh as spec

SEGMENT = 65536
#: empty, one byte, one whole segment, one byte past it, and about a MiB that ends mid-segment
SIZES = [0, 1, SEGMENT, SEGMENT + 1, 16 * SEGMENT + 4321]
KEYGEN = str(Path(sys.executable).parent / "crypt4gh-keygen")


def _stock_encrypt(plaintext: bytes, *recipients: bytes) -> bytes:
    out = io.BytesIO()
    writer = os.urandom(32)
    stock_lib.encrypt([(0, writer, r) for r in recipients], io.BytesIO(plaintext), out)
    return out.getvalue()


def _stock_decrypt(encrypted: bytes, secret: bytes) -> bytes:
    out = io.BytesIO()
    stock_lib.decrypt([(0, secret, None)], io.BytesIO(encrypted), out)
    return out.getvalue()


def _levere_encrypt(plaintext: bytes, reader: PrivateKey) -> bytes:
    """A whole Crypt4GH file for ``reader`` made by levere's code: its header, then its body."""
    body = io.BytesIO()
    made = encrypt_stream(io.BytesIO(plaintext), body)
    return make_header(made.data_key, reader.public_key) + body.getvalue()


def _reader() -> tuple[bytes, bytes]:
    secret = spec.new_secret_key()
    return secret, spec.public_key(secret)


@pytest.mark.parametrize("size", SIZES)
def test_the_stock_library_and_the_spec_reader_writer_open_each_others_files(size: int) -> None:
    plaintext = os.urandom(size)
    secret, public = _reader()
    by_stock = _stock_encrypt(plaintext, public)
    assert spec.decrypt(by_stock, secret) == plaintext
    assert spec.decrypt(io.BytesIO(by_stock), secret) == plaintext  # a stream reads the same
    by_spec = spec.encrypt(plaintext, public)
    assert _stock_decrypt(by_spec, secret) == plaintext
    # the layout the specification fixes: 16 bytes, one packet of 4+4+32+12+(4+4+32)+16, 28 more per segment
    segments = -(-size // SEGMENT)
    assert len(by_spec) == len(by_stock) == 16 + 108 + size + 28 * segments
    assert by_spec[:12] == b"crypt4gh\x01\x00\x00\x00"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=3 * SEGMENT + 17) | st.integers(0, 3 * SEGMENT + 17).map(os.urandom))
def test_any_plaintext_round_trips_between_the_stock_library_and_the_spec(plaintext: bytes) -> None:
    secret, public = _reader()
    assert spec.decrypt(_stock_encrypt(plaintext, public), secret) == plaintext
    assert _stock_decrypt(spec.encrypt(plaintext, public), secret) == plaintext


@pytest.mark.parametrize("size", [0, SEGMENT + 1])
def test_levere_and_the_spec_reader_writer_open_each_others_files(size: int) -> None:
    plaintext = os.urandom(size)
    member = PrivateKey.generate()
    by_levere = _levere_encrypt(plaintext, member)
    assert spec.decrypt(by_levere, member.secret_bytes()) == plaintext
    out = io.BytesIO()
    decrypt_file(io.BytesIO(spec.encrypt(plaintext, member.public_key.raw)), member, out)
    assert out.getvalue() == plaintext


def test_a_packet_for_another_reader_is_skipped_and_the_one_for_this_reader_opens() -> None:
    plaintext = os.urandom(SEGMENT + 99)
    first, second = _reader(), _reader()
    for_both = _stock_encrypt(plaintext, first[1], second[1])
    assert spec.decrypt(for_both, second[0]) == plaintext
    assert spec.decrypt(for_both, first[0]) == plaintext


def test_public_key_files_are_read_by_the_stock_tool_levere_and_the_spec_alike(tmp_path: Path) -> None:
    _, public = _reader()
    written = tmp_path / "spec.pub"
    written.write_text(spec.public_key_file(public))
    assert stock_keys.get_public_key(str(written)) == public
    assert PublicKey.from_pem(written.read_text()).raw == public
    sk, pk = tmp_path / "stock.sec", tmp_path / "stock.pub"
    subprocess.run([KEYGEN, "--sk", str(sk), "--pk", str(pk), "-f", "--nocrypt"], check=True, timeout=60)
    read = spec.read_public_key_file(pk.read_text())
    assert read == PrivateKey.from_crypt4gh(sk.read_text()).public_key.raw
    for bad in (
        "",
        "AAAA",
        spec.public_key_file(public[:31]),
        spec.public_key_file(public).replace("PUBLIC", "PRIVATE"),
    ):
        with pytest.raises(ValueError, match="Crypt4GH public key"):
            spec.read_public_key_file(bad)


def test_another_readers_key_is_refused_as_the_wrong_key() -> None:
    plaintext = os.urandom(1000)
    _, public = _reader()
    stranger, _ = _reader()
    for encrypted in (_stock_encrypt(plaintext, public), spec.encrypt(plaintext, public)):
        with pytest.raises(spec.WrongKey, match="none of the 1 header packets opens"):
            spec.decrypt(encrypted, stranger)
    with pytest.raises(spec.WrongKey):  # an empty file needs its data key all the same
        spec.decrypt(spec.encrypt(b"", public), stranger)


def test_a_changed_bit_in_a_segment_is_refused_by_the_spec_reader_and_the_stock_library() -> None:
    plaintext = os.urandom(2 * SEGMENT + 5)
    secret, public = _reader()
    for encrypted in (_stock_encrypt(plaintext, public), spec.encrypt(plaintext, public)):
        header = len(encrypted) - len(plaintext) - 3 * 28
        for at in (header + 5, header + 12 + SEGMENT + 28 + 100, len(encrypted) - 1):  # nonce, data, MAC
            damaged = bytearray(encrypted)
            damaged[at] ^= 0x10
            with pytest.raises(spec.DamagedSegment, match="authenticates with no data key"):
                spec.decrypt(bytes(damaged), secret)
            with pytest.raises(ValueError):
                _stock_decrypt(bytes(damaged), secret)


def test_a_damaged_or_cut_header_and_a_cut_body_are_each_a_clear_error() -> None:
    plaintext = os.urandom(SEGMENT + 10)
    secret, public = _reader()
    encrypted = spec.encrypt(plaintext, public)
    with pytest.raises(spec.NotCrypt4GH, match="magic"):
        spec.decrypt(b"@read1\nACGT\n+\nIIII\n", secret)
    with pytest.raises(spec.NotCrypt4GH, match="version 2"):
        spec.decrypt(encrypted[:8] + b"\x02" + encrypted[9:], secret)
    for cut in (5, 14, 20, 16 + 107):  # in the magic, the packet count, a packet's length, its MAC
        with pytest.raises(spec.Truncated):
            spec.decrypt(encrypted[:cut], secret)
    with pytest.raises(spec.DamagedHeader, match="less than its own fields"):
        spec.decrypt(encrypted[:16] + b"\x03\x00\x00\x00" + encrypted[20:], secret)
    with pytest.raises(spec.WrongKey):  # a changed bit in the packet's sealed payload: it opens for no one
        spec.decrypt(encrypted[:100] + bytes([encrypted[100] ^ 1]) + encrypted[101:], secret)
    whole_segment = 16 + 108 + 12 + SEGMENT + 16
    with pytest.raises(spec.Truncated, match="less than its nonce and MAC"):
        spec.decrypt(encrypted[: whole_segment + 20], secret)
    with pytest.raises(spec.DamagedSegment, match="cut short"):
        spec.decrypt(encrypted[:-3], secret)
    # cut at a segment boundary, a file shows nothing wrong: the format does not count its segments
    assert spec.decrypt(encrypted[:whole_segment], secret) == plaintext[:SEGMENT]


def test_a_file_with_an_edit_list_is_refused_clearly() -> None:
    plaintext = os.urandom(3 * SEGMENT)
    secret, public = _reader()
    rearranged = io.BytesIO()  # the stock library adds an edit list to keep a byte range
    stock_lib.rearrange(
        [(0, secret, public)], io.BytesIO(_stock_encrypt(plaintext, public)), rearranged, 70_000, 500
    )
    assert _stock_decrypt(rearranged.getvalue(), secret) == plaintext[70_000:70_500]
    with pytest.raises(spec.Unsupported, match="data edit list"):
        spec.decrypt(rearranged.getvalue(), secret)


@pytest.mark.parametrize("size", SIZES)
def test_files_levere_and_the_spec_writer_make_open_with_a_third_party_implementation(size: int) -> None:
    plaintext = os.urandom(size)
    member = PrivateKey.generate()
    by_levere = _levere_encrypt(plaintext, member)
    assert oarepo_reader.decrypt(by_levere, member.secret_bytes()) == plaintext
    secret, public = _reader()
    assert oarepo_reader.decrypt(spec.encrypt(plaintext, public), secret) == plaintext


def test_the_third_party_implementation_refuses_another_readers_file() -> None:
    member, other = PrivateKey.generate(), PrivateKey.generate()
    by_levere = _levere_encrypt(b"@r1\nACGT\n+\nIIII\n", member)
    with pytest.raises(oarepo_reader.WrongKey):
        oarepo_reader.decrypt(by_levere, other.secret_bytes())
