"""The Crypt4GH core of the secure zone (GA4GH Crypt4GH 1.0, readable by the stock ``crypt4gh``).

- :mod:`.keys`: X25519 key pairs in the ``crypt4gh-keygen`` formats; private keys that never show.
- :mod:`.wrapping`: private keys at rest, wrapped under master keys from configuration, and the
  rotation of those master keys (described there).
- :mod:`.header`: headers, one per recipient, kept apart from the body: make one from a data key,
  read the data key back, re-make it for another recipient without touching the body.
- :mod:`.body`: bodies, streamed in constant memory: accept a file uploaded already encrypted
  (split, checked, hashed), decrypt to plaintext in memory.
- :mod:`.encryptor`: encrypt plaintext while computing its MD5 and SHA-256, on both cores (with the
  helper process of :mod:`.segment_worker`).
"""

from levere.crypt4gh.body import (
    AcceptedUpload,
    accept_encrypted,
    body_size,
    decrypt_body,
    decrypt_file,
    iter_plaintext,
    open_plaintext,
    plaintext_size,
)
from levere.crypt4gh.encryptor import BodyEncryptor, EncryptedBody, encrypt_stream
from levere.crypt4gh.header import (
    DataKey,
    HeaderMaker,
    make_header,
    read_data_key,
    read_header,
    reencrypt_header,
)
from levere.crypt4gh.keys import PrivateKey, PublicKey
from levere.crypt4gh.wrapping import MasterKeys

__all__ = [
    "AcceptedUpload",
    "BodyEncryptor",
    "DataKey",
    "EncryptedBody",
    "HeaderMaker",
    "MasterKeys",
    "PrivateKey",
    "PublicKey",
    "accept_encrypted",
    "body_size",
    "decrypt_body",
    "decrypt_file",
    "encrypt_stream",
    "iter_plaintext",
    "make_header",
    "open_plaintext",
    "plaintext_size",
    "read_data_key",
    "read_header",
    "reencrypt_header",
]
