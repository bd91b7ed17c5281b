"""An estimate of read duplication in bounded memory, by distinct sampling over a hash of each read.

Design notes: each read gets a 64-bit fingerprint hash of its length, its first 32 and its last 32
bases (all of it for reads up to 64 bases), computed with numpy over a whole batch. Only hashes at or
below a limit are tracked, with how often each was seen; when more than ``max_tracked`` distinct hashes
are tracked, the limit is halved and the hashes above it dropped. A hash's value does not depend on how
often its read occurs, so the tracked reads are a uniform sample of the distinct sequences with all
their copies, and the share of duplicates in the sample estimates the share in the file. While the limit
was never lowered the figure is exact (up to hash collisions, about one in 10^8 at 2^18 distinct reads).
Two reads that differ only between their first and last 32 bases count as duplicates, as in the
fingerprints other QC tools use; the report says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FINGERPRINT_END = 32
#: enough for a duplicate share within about 0.002 of the file's; more only makes merging slower
MAX_TRACKED = 1 << 18
_ALL = np.uint64(0xFFFF_FFFF_FFFF_FFFF)
_GOLDEN = np.uint64(0x9E37_79B9_7F4A_7C15)
_MIX1 = np.uint64(0xBF58_476D_1CE4_E5B9)
_MIX2 = np.uint64(0x94D0_49BB_1331_11EB)

U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]


def fingerprint_hashes(sequence: U8, starts: I64, lengths: I64) -> U64:
    """One hash per read, of its length and its first and last ``FINGERPRINT_END`` bases.

    ``sequence`` holds the batch's reads one after another; read ``i`` starts at ``starts[i]``.
    """
    end = FINGERPRINT_END
    windows = np.lib.stride_tricks.sliding_window_view(
        np.concatenate([sequence, np.zeros(end, np.uint8)]), end
    )
    front = windows[starts]
    back = windows[np.maximum(starts + lengths - end, starts)]
    fingerprint = np.concatenate([front, back], axis=1)
    short = lengths < end
    if short.any():  # a short read's window runs into the next reads: keep the read's own bases
        fingerprint[short] *= np.tile(np.arange(end) < lengths[short][:, None], 2)
    words = np.ascontiguousarray(fingerprint).view(np.uint64)
    hashes = lengths.astype(np.uint64) * _GOLDEN
    for column in range(words.shape[1]):
        hashes ^= words[:, column]
        hashes *= _MIX1
        hashes ^= hashes >> np.uint64(31)
    hashes *= _MIX2
    hashes ^= hashes >> np.uint64(29)
    return hashes


@dataclass(frozen=True)
class DuplicationEstimate:
    sampled_reads: int
    distinct_in_sample: int
    exact: bool
    #: how many distinct sequences of the sample occur once, twice, ... (key: copies)
    copies: dict[int, int]

    @property
    def duplicate_fraction(self) -> float:
        """The share of reads that repeat an earlier read (0 for an empty file)."""
        if self.sampled_reads == 0:
            return 0.0
        return 1.0 - self.distinct_in_sample / self.sampled_reads


class DuplicationEstimator:
    def __init__(self, max_tracked: int = MAX_TRACKED) -> None:
        self._max_tracked = max_tracked
        self._limit = _ALL
        self._hashes: U64 = np.empty(0, dtype=np.uint64)
        self._counts: I64 = np.empty(0, dtype=np.int64)
        self._pending: list[U64] = []
        self._pending_size = 0

    def add(self, hashes: U64) -> None:
        kept = hashes if self._limit == _ALL else hashes[hashes <= self._limit]
        self._pending.append(kept)
        self._pending_size += len(kept)
        if self._pending_size >= self._max_tracked:
            self._merge()

    def _merge(self) -> None:
        if not self._pending:
            return
        hashes = np.concatenate([self._hashes, *self._pending])
        counts = np.concatenate([self._counts, np.ones(self._pending_size, dtype=np.int64)])
        self._pending, self._pending_size = [], 0
        unique, where = np.unique(hashes, return_inverse=True)
        summed = np.bincount(where, weights=counts, minlength=len(unique)).astype(np.int64)
        while len(unique) > self._max_tracked:
            self._limit >>= np.uint64(1)
            keep = unique <= self._limit
            unique, summed = unique[keep], summed[keep]
        self._hashes, self._counts = unique, summed

    def estimate(self) -> DuplicationEstimate:
        self._merge()
        copies, distinct = np.unique(self._counts, return_counts=True)
        return DuplicationEstimate(
            sampled_reads=int(self._counts.sum()),
            distinct_in_sample=len(self._hashes),
            exact=bool(self._limit == _ALL),
            copies={int(c): int(n) for c, n in zip(copies, distinct, strict=True)},
        )
