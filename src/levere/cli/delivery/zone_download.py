"""``levere download`` for the secure zone: files come as Crypt4GH files made for the reader's key.

Design notes
------------
* The service never sends plaintext: it makes a Crypt4GH header for the public key sent with each
  request and sends the stored body behind it. With ``--pubkey`` the public key is sent as it is
  and the file is saved as ``NAME.c4gh``, for the stock ``crypt4gh decrypt --sk``. With ``--seckey``
  the public key is derived here, the download is decrypted while it streams (each segment checked
  before its bytes are written) and the plaintext's SHA-256 and MD5 are compared with the listing's
  before the file takes its name. The secret key's passphrase comes from a callback, asked only if
  the key is locked.
* A file is written to ``NAME.part`` and renamed when complete (and, decrypted, verified); there is
  no resuming from a part: each download's header is made afresh for the request.
* ``TARGET`` names where the files are read: a shared disk (``disk-7``: its deliveries not released
  yet, a delivery named first in the path) or a users' secure project (``p1234``: released ones).
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from levere.cli.client import Client
from levere.cli.delivery.download import local_target, select
from levere.crypt4gh import PrivateKey, PublicKey, decrypt_file
from levere.crypt4gh.body import PiecesReader
from levere.domain.errors import ChecksumMismatch, ValidationFailed
from levere.domain.secure import DISK_NAME, SECURE_PROJECT

PART = ".part"


@dataclass
class ZoneSummary:
    files: int = 0
    bytes: int = 0  # what was written: Crypt4GH files, or the plaintext
    decrypted: bool = False
    target: str = ""
    saved: list[str] | None = None
    #: where the key the files are encrypted to came from, when it was not given on the command line
    recipient_from: str = ""


def _q(part: str) -> str:
    return quote(part, safe="")


class ZoneDownloader:
    def __init__(
        self,
        api: Client,
        where: str,
        *,
        pubkey: Path | None = None,
        seckey: Path | None = None,
        passphrase: Callable[[], str] | None = None,
    ) -> None:
        if pubkey is not None and seckey is not None:
            raise ValidationFailed({"--pubkey": "give either --pubkey FILE or --seckey FILE, not both"})
        self.api, self.where = api, where.strip().lower()
        if not (DISK_NAME.match(self.where) or SECURE_PROJECT.match(self.where)):
            raise ValidationFailed(
                {"TARGET": f"{where[:40]!r}: secure-zone files are read from a shared disk (disk-7) "
                           "or a users' secure project (p1234)"}
            )  # fmt: skip
        self._secret: PrivateKey | None = None
        self.recipient_from = ""
        if seckey is not None:
            self._secret = PrivateKey.from_crypt4gh(_read(seckey, "--seckey"), passphrase)
            self.recipient = self._secret.public_key
        elif pubkey is not None:
            self.recipient = PublicKey.from_pem(_read(pubkey, "--pubkey"))
        else:
            self.recipient, self.recipient_from = self._identity_key()

    def _identity_key(self) -> tuple[PublicKey, str]:
        """The first Crypt4GH key a sign-in identity of the user released (crypt4ghPublicKeys): the
        default recipient when no key is given."""
        released: list[dict[str, Any]] = self.api.get("/me/recipient-keys")
        if not released:
            raise ValidationFailed(
                {"--pubkey": "give --pubkey FILE (your Crypt4GH public key) or --seckey FILE: "
                             "no sign-in identity of yours released a Crypt4GH key"}
            )  # fmt: skip
        first = released[0]
        return PublicKey.from_pem(first["pem"]), f"{first['provider']} ({first['fingerprint']})"

    def _listing(self, path: str | None) -> list[dict[str, Any]]:
        delivery = path.strip("/").split("/", 1)[0] if path else None
        if DISK_NAME.match(self.where):
            if not delivery:
                raise ValidationFailed(
                    {"PATH": "name the delivery on the shared disk (DELIVERY or DELIVERY/PATH)"}
                )
            listed: list[dict[str, Any]] = self.api.get(
                f"/secure/disks/{_q(self.where)}/deliveries/{_q(delivery)}/files"
            )
            return listed
        params = {"delivery": delivery} if delivery else {}
        found: list[dict[str, Any]] = self.api.get(f"/secure/projects/{_q(self.where)}/files", params=params)
        return found

    def _data_path(self, remote: str) -> str:
        delivery, _, path = remote.partition("/")
        if DISK_NAME.match(self.where):
            return f"/secure/disks/{_q(self.where)}/deliveries/{_q(delivery)}/data/{quote(path)}"
        return f"/secure/projects/{_q(self.where)}/deliveries/{_q(delivery)}/data/{quote(path)}"

    def run(self, path: str | None, to: Path) -> ZoneSummary:
        entries, base = select(self._listing(path), path)
        summary = ZoneSummary(
            decrypted=self._secret is not None, target=str(to), saved=[], recipient_from=self.recipient_from
        )
        pem_line = self.recipient.to_pem().splitlines()[1]
        for entry in entries:
            local = local_target(to, entry["path"], base)
            if self._secret is None:
                local = local.with_name(local.name + ".c4gh")
            local.parent.mkdir(parents=True, exist_ok=True)
            part = local.with_name(local.name + PART)
            try:
                with (
                    self.api.stream(
                        "GET", self._data_path(entry["path"]), params={"pubkey": pem_line}
                    ) as answer,
                    part.open("wb") as out,
                ):
                    written = self._save(answer.iter_bytes(1 << 20), out, entry)
            except BaseException:
                part.unlink(missing_ok=True)  # a file cut short or not matching is not kept
                raise
            os.replace(part, local)
            summary.files += 1
            summary.bytes += written
            assert summary.saved is not None
            summary.saved.append(str(local))
        return summary

    def _save(self, pieces: Iterator[bytes], out: io.BufferedWriter, entry: dict[str, Any]) -> int:
        if self._secret is None:
            count = 0
            for piece in pieces:
                out.write(piece)
                count += len(piece)
            return count
        checked = _Hashing(out)
        decrypt_file(io.BufferedReader(PiecesReader(pieces), 1 << 20), self._secret, checked)  # type: ignore[arg-type]
        if checked.sha256.hexdigest() != entry["sha256"] or checked.md5.hexdigest() != entry["md5"]:
            raise ChecksumMismatch(
                f"{entry['path']} decrypted to {checked.count} bytes whose checksums are not the "
                "delivery's; nothing was kept",
                path=entry["path"],
            )
        return checked.count


def _read(path: Path, option: str) -> str:
    try:
        return path.read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        raise ValidationFailed({option: f"cannot read {path}: {exc.strerror}"}) from None


class _Hashing:
    """A sink that writes the plaintext on and hashes it in the same pass."""

    def __init__(self, out: io.BufferedWriter) -> None:
        self.out, self.count = out, 0
        self.sha256, self.md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self.out.write(data)
        self.sha256.update(data)
        self.md5.update(data)
        self.count += len(data)
        return len(data)
