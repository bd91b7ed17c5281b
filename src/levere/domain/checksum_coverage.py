"""How much of a delivery its run's checksum file covered, recorded when the delivery is sealed.

A checksum file (``md5sum.txt``) proves that a file arrived as the sequencer wrote it only for the
files it lists. A file it does not list, or a run without one, is checked only against the
checksums computed on arrival. The record says which, so that a receipt never claims more than
was checked: "3 of 4 files verified against md5sum.txt; 1 not listed: c.fastq".
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

    @classmethod
    def of(
        cls,
        checksum_file: str | None,
        paths: Iterable[str],
        listed: Iterable[str],
        checked_by: str = "levere",
    ) -> ChecksumCoverage:
        """Coverage of the delivery's ``paths`` by a checksum file listing ``listed``."""
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
        return (
            f"{self.verified:,} of {count(self.files, 'file')} verified against {name}; "
            f"{self.unlisted_count:,} not listed: {shown}{f' and {more:,} more' if more > 0 else ''}"
        )

    def as_record(self) -> dict[str, Any]:
        return {
            "checksum_file": self.checksum_file,
            "files": self.files,
            "verified": self.verified,
            "unlisted": list(self.unlisted),
            "checked_by": self.checked_by,
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
        )
