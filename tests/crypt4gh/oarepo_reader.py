"""Decryption with ``oarepo-c4gh``, a Crypt4GH implementation of its own (PyNaCl underneath; it
shares no code with levere's nor with the stock ``crypt4gh`` library): a third reader the tests open
levere's files with, beside the stock tool and the specification reader (:mod:`spec_c4gh`)."""

from __future__ import annotations

import io

from oarepo_c4gh import Crypt4GH, SoftwareKey


class WrongKey(ValueError):
    """No header packet of the file is for this reader."""


def decrypt(encrypted: bytes, secret: bytes) -> bytes:
    """The plaintext of a whole Crypt4GH file, for the reader's 32-byte X25519 secret key.

    The library yields only the segments it could open; a file whose every segment opens has as
    many segments as its body holds, so a short answer is refused here rather than returned."""
    container = Crypt4GH(io.BytesIO(encrypted), SoftwareKey(secret))
    if container.header.deks.empty:
        raise WrongKey("no header packet of the file opens with this key (oarepo-c4gh)")
    blocks = list(container.data_blocks)
    if not all(block.is_deciphered for block in blocks):
        raise ValueError("oarepo-c4gh could not open every segment of the file")
    return b"".join(bytes(block.cleartext) for block in blocks)
