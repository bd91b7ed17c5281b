"""Reading a FASTQ stream once and keeping the figures of the standard analysis.

Design notes: dnaio parses and checks the records (four lines, '@' and '+', as many qualities as
bases, ASCII only); the figures are then computed with numpy over batches of records, so Python does
per-read work only to hand dnaio's strings over. Per-position sums use a matrix of the batch's reads
padded to its longest read when padding costs little (reads of one length, as from Illumina, need no
padding at all), and a position index per base otherwise (long reads of very different lengths).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from gzip import BadGzipFile
from itertools import islice
from typing import IO, BinaryIO, cast

import dnaio
import numpy as np
import numpy.typing as npt
from isal.isal_zlib import IsalError

from levere.domain.errors import InvalidFastq, TruncatedFastq
from levere.qc.duplication import DuplicationEstimator, fingerprint_hashes
from levere.qc.reading import TailWatch, open_fastq
from levere.qc.report import QcReport

#: small enough that numpy's passes over a batch stay in the processor's caches
BATCH_READS = 8192
#: a batch holds about this many bases at most, so that long reads (nanopore) keep memory flat too
BATCH_BASES = 2 << 20
#: what python-isal raises for gzip data it cannot inflate (its exception is not typed as one)
_GZIP_ERRORS: tuple[type[BaseException], ...] = (cast(type[BaseException], IsalError), BadGzipFile)
PHRED_OFFSET = 33
_LOWER_N = np.uint8(ord("n"))  # N and n, once bit 0x20 is set
_LOWER = np.uint8(0x20)

#: the bytes counted one by one; all others are counted together under ``_OTHER``
_COUNTED = b"ACGTNacgtn"
_OTHER = 0

I64 = npt.NDArray[np.int64]


def _is_gc(seq: npt.NDArray[np.uint8]) -> npt.NDArray[np.bool_]:
    # C, G, c and g, and no other byte, are 0x43 once bits 0x04 and 0x20 are cleared
    found: npt.NDArray[np.bool_] = np.equal(seq & np.uint8(0xDB), np.uint8(0x43))
    return found


def _gc_in_rows(seq2d: npt.NDArray[np.uint8]) -> I64:
    counts: I64 = _is_gc(seq2d).view(np.uint8).sum(axis=1, dtype=np.uint32).astype(np.int64)
    return counts


def _grow_add(total: I64, part: npt.NDArray[np.int64] | npt.NDArray[np.intp]) -> I64:
    """``total + part``, element by element, the shorter one read as padded with zeros."""
    if len(part) > len(total):
        total = np.concatenate([total, np.zeros(len(part) - len(total), dtype=np.int64)])
    total[: len(part)] += part
    return total


class _Figures:
    """The running sums; :meth:`report` turns them into a :class:`QcReport`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.reads = 0
        self.bases = 0
        self.lengths: I64 = np.zeros(0, dtype=np.int64)  # reads by length
        self.symbols: I64 = np.zeros(256, dtype=np.int64)  # bases by byte value
        self.q20 = 0  # bases of quality 20 or more
        self.q30 = 0
        self.quality_sums: I64 = np.zeros(0, dtype=np.int64)  # Phred sums by position
        self.n_counts: I64 = np.zeros(0, dtype=np.int64)  # N by position
        self.gc_percent: I64 = np.zeros(101, dtype=np.int64)  # reads by GC percentage
        self.duplication = DuplicationEstimator()

    def add(self, sequences: list[str], qualities: list[str]) -> None:
        count = len(sequences)
        lengths = np.fromiter(map(len, sequences), dtype=np.int64, count=count)
        seq = np.frombuffer("".join(sequences).encode("ascii"), dtype=np.uint8)
        qual = np.frombuffer("".join(qualities).encode("ascii"), dtype=np.uint8)
        if qual.size and int(qual.min()) < PHRED_OFFSET:
            first_bad = int(np.argmax(qual < PHRED_OFFSET))
            raise InvalidFastq(
                f"{self.name}: a quality character lies below '!', the lowest of Phred+33",
                file=self.name,
                reason="quality_out_of_range",
                record=self.reads + 1 + int(np.searchsorted(np.cumsum(lengths), first_bad, "right")),
            )
        ends = np.cumsum(lengths)
        starts = ends - lengths
        self.reads += count
        self.bases += seq.size
        self.lengths = _grow_add(self.lengths, np.bincount(lengths))
        self._count_symbols(seq)
        self.q20 += int(np.count_nonzero(qual >= PHRED_OFFSET + 20))
        self.q30 += int(np.count_nonzero(qual >= PHRED_OFFSET + 30))
        gc = self._add_positions(seq, qual, starts, lengths)
        nonempty = lengths > 0
        percent = (200 * gc[nonempty] + lengths[nonempty]) // (2 * lengths[nonempty])  # rounded half up
        self.gc_percent += np.bincount(percent, minlength=101)
        self.duplication.add(fingerprint_hashes(seq, starts, lengths))

    def _count_symbols(self, seq: npt.NDArray[np.uint8]) -> None:
        counted = 0
        lower_case = bool(np.count_nonzero(seq & _LOWER))  # seldom: only then are a, c, ... counted
        for symbol in _COUNTED:
            if symbol & 0x20 and not lower_case:
                continue
            found = int(np.count_nonzero(seq == np.uint8(symbol)))
            self.symbols[symbol] += found
            counted += found
        self.symbols[_OTHER] += seq.size - counted

    def _add_positions(
        self, seq: npt.NDArray[np.uint8], qual: npt.NDArray[np.uint8], starts: I64, lengths: I64
    ) -> I64:
        """Adds the per-position sums; returns the number of G and C in each read."""
        count = len(lengths)
        longest = int(lengths.max()) if count else 0
        if longest == 0:
            return np.zeros(count, dtype=np.int64)
        if int(lengths.min()) == longest:
            seq2d, qual2d = seq.reshape(count, longest), qual.reshape(count, longest)
        elif count * longest <= 3 * seq.size:
            inside = np.arange(longest) < lengths[:, None]
            seq2d = np.zeros((count, longest), dtype=np.uint8)  # padding is neither N nor G nor C
            seq2d[inside] = seq
            qual2d = np.full((count, longest), PHRED_OFFSET, dtype=np.uint8)  # and of quality 0
            qual2d[inside] = qual
        else:
            return self._add_positions_by_index(seq, qual, starts, lengths, longest)
        # sums in 32 bits are exact here: a batch has at most BATCH_READS reads of quality <= 93
        phred_sums = qual2d.sum(axis=0, dtype=np.uint32).astype(np.int64) - PHRED_OFFSET * count
        is_n = np.equal(seq2d | _LOWER, _LOWER_N)
        n_counts = is_n.view(np.uint8).sum(axis=0, dtype=np.uint32).astype(np.int64)
        self.quality_sums = _grow_add(self.quality_sums, phred_sums)
        self.n_counts = _grow_add(self.n_counts, n_counts)
        return _gc_in_rows(seq2d)

    def _add_positions_by_index(
        self, seq: npt.NDArray[np.uint8], qual: npt.NDArray[np.uint8], starts: I64, lengths: I64, longest: int
    ) -> I64:
        """The same for reads of very different lengths, where padding would cost too much."""
        position = np.arange(seq.size, dtype=np.int64) - np.repeat(starts, lengths)
        phred = qual.astype(np.int64) - PHRED_OFFSET
        is_n = np.equal(seq | _LOWER, _LOWER_N)
        phred_sums = np.bincount(position, weights=phred, minlength=longest).astype(np.int64)
        self.quality_sums = _grow_add(self.quality_sums, phred_sums)
        self.n_counts = _grow_add(self.n_counts, np.bincount(position[is_n], minlength=longest))
        is_gc = np.zeros(seq.size + 1, dtype=np.uint8)  # one more, for an empty last read to point at
        is_gc[:-1] = _is_gc(seq)
        gc = np.add.reduceat(is_gc, starts, dtype=np.int64)
        gc[lengths == 0] = 0
        return gc

    def report(self, compression: str) -> QcReport:
        # reads covering each position: those longer than it
        by_length = self.lengths
        covering = (by_length[::-1].cumsum()[::-1])[1:] if len(by_length) else by_length
        return QcReport.from_sums(
            name=self.name,
            compression=compression,
            reads=self.reads,
            reads_by_length=by_length,
            bases_by_symbol=self.symbols,
            q20_bases=self.q20,
            q30_bases=self.q30,
            quality_sums=self.quality_sums,
            n_counts=self.n_counts,
            covering=covering,
            reads_by_gc_percent=self.gc_percent,
            duplication=self.duplication.estimate(),
        )


def _format_error(error: dnaio.FastqFormatError, name: str, tail: TailWatch) -> InvalidFastq:
    line = getattr(error, "line", None)
    where = {"line": line + 1} if isinstance(line, int) else {}
    text = str(error.message if hasattr(error, "message") else error)
    # a record cut inside its qualities reads to dnaio as qualities shorter than the sequence
    if "Premature end of file" in text or tail.cut_off():
        return TruncatedFastq(f"{name}: the file ends inside a FASTQ record", file=name, **where)
    detail = text.split(":", 1)[-1].strip() if text.startswith("Error in FASTQ") else text
    return InvalidFastq(
        f"{name}: not a valid FASTQ record: {detail}", file=name, reason="malformed_record", **where
    )


def _read_batches(
    records: Iterator[dnaio.SequenceRecord], figures: _Figures, progress: Callable[[int], None] | None
) -> None:
    size = 1024  # the first batch learns the read lengths
    while batch := list(islice(records, size)):
        # a FASTQ record always has qualities (dnaio's type allows None for FASTA)
        figures.add([r.sequence for r in batch], cast(list[str], [r.qualities for r in batch]))
        size = max(1, min(BATCH_READS, BATCH_BASES // max(1, figures.bases // figures.reads)))
        if progress is not None:
            progress(figures.reads)


def analyse_fastq(stream: IO[bytes], *, name: str, progress: Callable[[int], None] | None = None) -> QcReport:
    """The standard analysis of one FASTQ stream (plain or gzip), read once from where it stands.

    ``name`` is the file's name for the report and the error messages. ``progress``, if given, is
    called with the number of reads read so far after each batch. Raises :class:`InvalidFastq` (or
    :class:`TruncatedFastq`) for input that is not complete FASTQ.
    """
    figures = _Figures(name)
    try:
        with open_fastq(stream) as (fastq, compression):
            first = fastq.peek(1)[:1]
            if first and first != b"@":
                raise InvalidFastq(
                    f"{name}: not FASTQ: a FASTQ file starts with '@'", file=name, reason="not_fastq"
                )
            tail = TailWatch(fastq)
            try:
                with dnaio.FastqReader(
                    cast(BinaryIO, tail), buffer_size=4 << 20, _close_file=False
                ) as reader:
                    _read_batches(iter(reader), figures, progress)
            except dnaio.FastqFormatError as error:
                raise _format_error(error, name, tail) from None
    except EOFError:
        raise TruncatedFastq(f"{name}: the gzip data ends before its end marker", file=name) from None
    except _GZIP_ERRORS as error:
        raise InvalidFastq(f"{name}: damaged gzip data ({error})", file=name, reason="damaged_gzip") from None
    return figures.report(compression)
