"""Crypt4GH keys: public keys checked as the stock tools write them, private keys that never show,
and private keys at rest wrapped under master keys that can be rotated without touching data."""

from __future__ import annotations

import base64
import io
import os
import pickle
from pathlib import Path

import pytest

from levere.config import Settings
from levere.crypt4gh import MasterKeys, PrivateKey, PublicKey, encrypt_stream, make_header, read_data_key
from levere.domain.errors import ConfigurationError, InvalidPublicKey, InvalidSecretKey

# --- public keys ---------------------------------------------------------------------------------------


def test_a_public_key_reads_back_from_its_pem() -> None:
    key = PrivateKey.generate().public_key
    pem = key.to_pem()
    assert pem.startswith("-----BEGIN CRYPT4GH PUBLIC KEY-----\n")
    assert PublicKey.from_pem(pem) == key == PublicKey.from_pem(pem.encode())
    assert PublicKey.from_pem(base64.b64encode(key.raw).decode()) == key  # a bare line, as pasted


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not a key",
        base64.b64encode(os.urandom(31)).decode(),
        "-----BEGIN CRYPT4GH PUBLIC KEY-----\n!!!!\n-----END CRYPT4GH PUBLIC KEY-----\n",
        "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VuAyEA\n-----END PUBLIC KEY-----\n",
        PrivateKey.generate().to_crypt4gh(),
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl someone",
        # low-order points: every sender would share an all-zero secret with them
        base64.b64encode(bytes(32)).decode(),
        base64.b64encode((1).to_bytes(32, "little")).decode(),
    ],
    ids=["empty", "words", "31-bytes", "not-base64", "x509-pem", "private-key", "ssh", "zero", "one"],
)
def test_a_public_key_that_is_not_a_crypt4gh_x25519_key_is_refused(text: str) -> None:
    with pytest.raises(InvalidPublicKey) as refused:
        PublicKey.from_pem(text)
    assert refused.value.code == "invalid_public_key" and refused.value.http_status == 422


# --- private keys ------------------------------------------------------------------------------------


def test_a_private_key_never_shows_its_bytes() -> None:
    key = PrivateKey.generate()
    raw = key.secret_bytes()
    shown = repr(key) + str(key) + f"{key}" + repr([key]) + repr(key.public_key)
    for spelling in (raw.hex(), raw.hex().upper(), base64.b64encode(raw).decode(), repr(raw)):
        assert spelling not in shown
    assert key.public_key.fingerprint in repr(key)
    with pytest.raises(TypeError):
        pickle.dumps(key)
    result = encrypt_stream(io.BytesIO(b"x"), io.BytesIO())
    with pytest.raises(TypeError):
        pickle.dumps(result.data_key)
    assert repr(result.data_key) == "DataKey(...)"


def test_a_wrong_passphrase_or_a_damaged_secret_key_is_a_clear_error() -> None:
    key = PrivateKey.generate()
    locked = key.to_crypt4gh(passphrase="right")
    with pytest.raises(InvalidSecretKey, match="passphrase does not unlock"):
        PrivateKey.from_crypt4gh(locked, lambda: "wrong")
    with pytest.raises(InvalidSecretKey, match="locked with a passphrase"):
        PrivateKey.from_crypt4gh(locked)
    with pytest.raises(InvalidSecretKey):
        PrivateKey.from_crypt4gh(key.public_key.to_pem())
    lines = locked.splitlines()
    cut = "\n".join([lines[0], base64.b64encode(base64.b64decode(lines[1])[:30]).decode(), lines[2]])
    with pytest.raises(InvalidSecretKey, match="cut short"):
        PrivateKey.from_crypt4gh(cut, lambda: "right")


# --- master keys and wrapping -------------------------------------------------------------------------


def _key_file(tmp_path: Path, *lines: str, mode: int = 0o600) -> Path:
    path = tmp_path / "master.keys"
    path.write_text("# levere master keys\n\n" + "".join(lines))
    path.chmod(mode)
    return path


def test_a_wrapped_key_opens_only_with_its_master_key_and_context(tmp_path: Path) -> None:
    keys = MasterKeys.from_file(_key_file(tmp_path, MasterKeys.new_line("2026-12")))
    project_key = PrivateKey.generate()
    wrapped = keys.wrap(project_key, context="secure-project:p1234")
    assert wrapped.startswith("c4gh-wrap-v1:2026-12:")
    assert project_key.secret_bytes().hex() not in wrapped
    assert base64.b64encode(project_key.secret_bytes()).decode() not in wrapped
    assert keys.unwrap(wrapped, "secure-project:p1234") == project_key
    with pytest.raises(ConfigurationError, match="does not open"):
        keys.unwrap(wrapped, "secure-project:p9999")  # copied onto another project's row
    other = MasterKeys.parse(MasterKeys.new_line("2026-12"))
    with pytest.raises(ConfigurationError, match="does not open"):
        other.unwrap(wrapped, "secure-project:p1234")
    assert "2026-12" in repr(keys)
    with pytest.raises(TypeError):
        pickle.dumps(keys)


def test_master_key_rotation_rewraps_keys_without_touching_data(tmp_path: Path) -> None:
    old_line, new_line = MasterKeys.new_line("2026-01"), MasterKeys.new_line("2026-12")
    old = MasterKeys.from_file(_key_file(tmp_path, old_line))
    disk_key = PrivateKey.generate()
    stored = old.wrap(disk_key, "shared-disk:7")
    # data encrypted to the disk's key before the rotation
    body = io.BytesIO()
    header = make_header(encrypt_stream(io.BytesIO(b"sensitive"), body).data_key, disk_key.public_key)

    # step 1: the new key on top, the old one kept: old wraps still open, new ones use the new key
    both = MasterKeys.from_file(_key_file(tmp_path, new_line, old_line))
    assert both.current_id == "2026-12" and both.needs_rewrap(stored)
    assert both.unwrap(stored, "shared-disk:7") == disk_key
    # step 2: re-wrap
    rewrapped = both.rewrap(stored, "shared-disk:7")
    assert not both.needs_rewrap(rewrapped) and both.rewrap(rewrapped, "shared-disk:7") == rewrapped
    # step 3: the old key gone; what was re-wrapped opens, what was not is named
    new = MasterKeys.from_file(_key_file(tmp_path, new_line))
    opened = new.unwrap(rewrapped, "shared-disk:7")
    assert read_data_key(header, opened) is not None  # the same private key: headers and bodies as they were
    with pytest.raises(ConfigurationError, match="'2026-01'"):
        new.unwrap(stored, "shared-disk:7")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "holds no key"),
        ("only-an-id\n", "a key id and a key"),
        ("k1 not*base64\n", "not base64"),
        (f"k1 {base64.b64encode(os.urandom(16)).decode()}\n", "not 32 bytes"),
        (f"bad/id {base64.b64encode(os.urandom(32)).decode()}\n", "characters other than"),
        (MasterKeys.new_line("k1") + MasterKeys.new_line("k1"), "twice"),
    ],
)
def test_a_bad_master_key_file_is_refused_with_its_reason(tmp_path: Path, content: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        MasterKeys.from_file(_key_file(tmp_path, content))


def test_a_master_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = _key_file(tmp_path, MasterKeys.new_line("k1"), mode=0o644)
    with pytest.raises(ConfigurationError, match="chmod 600"):
        MasterKeys.from_file(path)


def test_the_master_key_file_is_a_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _key_file(tmp_path, MasterKeys.new_line("k1"))
    monkeypatch.setenv("LEVERE_SECURE__MASTER_KEY_FILE", str(path))
    settings = Settings()
    assert MasterKeys.from_setting(settings.secure.master_key_file).current_id == "k1"
    with pytest.raises(ConfigurationError, match=r"\[secure\] master_key_file"):
        MasterKeys.from_setting(None)
