"""How much of a delivery its run's checksum file covered, recorded when the delivery is sealed.

A checksum file (``md5sum.txt``) proves that a file arrived as the sequencer wrote it only for the
files it lists. A file it does not list, or a run without one, is checked only against the
checksums computed on arrival. The record says which, so that a receipt never claims more than
was checked: "3 of 4 files verified against md5sum.txt; 1 not listed: c.fastq".

On a shared disk, a file the facility encrypted itself (``x.fastq.gz.c4gh``) is covered by the
entry for its plaintext (``x.fastq.gz``). An entry naming the ``.c4gh`` file itself gives the MD5 of
the encrypted file as the facility holds it, which is not what the disk stores (the service keeps
the body and makes its own header): such a file counts as not covered, and the record names it
apart, so that the receipt says why.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from levere.domain.units import count

#: names of unlisted files kept in the record (the count is always exact)
KEEP_NAMES = 100
#: names of unlisted files shown in one line
SHOW_NAMES = 5


@dataclass(frozen=True)
class ChecksumCoverage:
    #: the checksum file's path in the delivery; None when the run had none
    checksum_file: str | None
    #: the delivery's files, the checksum file itself not counted
    files: int
    #: of them, those the checksum file lists (each verified against it)
    verified: int
    #: the first :data:`KEEP_NAMES` files it does not list, in path order
    unlisted: tuple[str, ...] = ()
    #: "levere" when the service read the checksum file at sealing, "client" when only the
    #: delivering client could read it (a form other than plain md5sum output)
    checked_by: str = "levere"
    #: of the unlisted files, those listed only by the MD5 of their encrypted form (first
    #: :data:`KEEP_NAMES`, in path order), which cannot be checked against what is stored
    encrypted_only: tuple[str, ...] = ()

    @classmethod
    def of(
        cls,
        checksum_file: str | None,
        paths: Iterable[str],
        listed: Iterable[str],
        checked_by: str = "levere",
        encrypted_only: Iterable[str] = (),
    ) -> ChecksumCoverage:
        """Coverage of the delivery's ``paths`` by a checksum file listing ``listed``;
        ``encrypted_only``: files it lists by their encrypted form only (not in ``listed``)."""
        names = set(listed)
        delivered = sorted(p for p in paths if p != checksum_file)
        if checksum_file is None:
            return cls(None, len(delivered), 0, tuple(delivered[:KEEP_NAMES]), checked_by)
        missing = [p for p in delivered if p not in names]
        return cls(
            checksum_file,
            len(delivered),
            len(delivered) - len(missing),
            tuple(missing[:KEEP_NAMES]),
            checked_by,
            tuple(sorted(set(encrypted_only) - names)[:KEEP_NAMES]),
        )

    @property
    def complete(self) -> bool:
        """Every file is listed in a checksum file."""
        return self.checksum_file is not None and self.verified == self.files

    @property
    def unlisted_count(self) -> int:
        return self.files - self.verified

    def summary(self) -> str:
        """One line for receipts and listings."""
        if self.checksum_file is None:
            return "no md5sum.txt: checksums computed on arrival only"
        name = self.checksum_file.rpartition("/")[2]
        if self.complete:
            return f"all {count(self.files, 'file')} verified against {name}"
        shown = ", ".join(self.unlisted[:SHOW_NAMES])
        more = self.unlisted_count - min(len(self.unlisted), SHOW_NAMES)
        line = (
            f"{self.verified:,} of {count(self.files, 'file')} verified against {name}; "
            f"{self.unlisted_count:,} not listed: {shown}{f' and {more:,} more' if more > 0 else ''}"
        )
        if self.encrypted_only:
            some = ", ".join(self.encrypted_only[:SHOW_NAMES])
            extra = len(self.encrypted_only) - SHOW_NAMES
            line += (
                f" (of them, {some}{f' and {extra:,} more' if extra > 0 else ''} listed only with the MD5 "
                "of the encrypted file, which the disk does not hold as such: not checked; list the "
                "plaintext's MD5 under the name without .c4gh)"
            )
        return line

    def as_record(self) -> dict[str, Any]:
        return {
            "checksum_file": self.checksum_file,
            "files": self.files,
            "verified": self.verified,
            "unlisted": list(self.unlisted),
            "checked_by": self.checked_by,
            "encrypted_only": list(self.encrypted_only),
        }

    @classmethod
    def from_record(cls, record: dict[str, Any] | None) -> ChecksumCoverage | None:
        if not record:
            return None
        return cls(
            record.get("checksum_file"),
            int(record["files"]),
            int(record["verified"]),
            tuple(record.get("unlisted") or ()),
            str(record.get("checked_by") or "levere"),
            tuple(record.get("encrypted_only") or ()),
        )
