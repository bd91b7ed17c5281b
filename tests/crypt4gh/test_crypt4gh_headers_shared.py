"""Headers made together for one recipient (a batch's files, a release) share one writer key pair:
each opens with the recipient's key alone, in levere and in the stock library, gives its own data
key, and no two share a nonce."""

from __future__ import annotations

import io

from crypt4gh import lib as stock_lib
from levere.crypt4gh import DataKey, HeaderMaker, PrivateKey, read_data_key
from levere.crypt4gh.body import body_size
from levere.crypt4gh.encryptor import encrypt_stream


def test_headers_from_one_maker_each_open_with_the_recipients_key() -> None:
    reader, stranger = PrivateKey.generate(), PrivateKey.generate()
    maker = HeaderMaker(reader.public_key)
    keys = [DataKey.generate() for _ in range(50)]
    headers = [maker(key) for key in keys]

    assert [read_data_key(h, reader) for h in headers] == keys
    writers = {h[16 + 8 : 16 + 8 + 32] for h in headers}  # packet: length, method, writer's public key
    nonces = {h[16 + 8 + 32 : 16 + 8 + 32 + 12] for h in headers}
    assert len(writers) == 1 and len(nonces) == 50
    assert HeaderMaker(reader.public_key)(keys[0])[24:56] not in writers  # another maker, another writer

    plaintext = b"ACGT" * 50_000
    body = io.BytesIO()
    made = encrypt_stream(io.BytesIO(plaintext), body, data_key=keys[7], checksums=False)
    assert made.body_size == body_size(len(plaintext))
    out = io.BytesIO()
    stock_lib.decrypt([(0, reader.secret_bytes(), None)], io.BytesIO(headers[7] + body.getvalue()), out)
    assert out.getvalue() == plaintext
    try:
        read_data_key(headers[0], stranger)
    except Exception as exc:
        assert type(exc).__name__ == "EncryptedToAnotherKey"
    else:
        raise AssertionError("a header opened with another key")
