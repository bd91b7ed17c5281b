"""Reading a FASTQ stream once and keeping the figures of the standard analysis.

Design notes: dnaio parses and checks the records (four lines, '@' and '+', as many qualities as
bases, ASCII only); the figures are then computed with numpy over batches of records, so Python does
per-read work only to hand dnaio's strings over. Per-position sums use a matrix of the batch's reads
padded to its longest read when padding costs little (reads of one length, as from Illumina, need no
padding at all), and a position index per base otherwise (long reads of very different lengths).
"""

from __future__ import annotations

import queue
import threading
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
#: batches parsed ahead of the adding thread
_BATCHES_AHEAD = 2
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


def _rows(data: npt.NDArray[np.uint8], starts: I64, width: int) -> npt.NDArray[np.uint8]:
    """A matrix with a row of ``width`` bytes from each start on (past the end: zeros), copied
    row by row from a window over the data, which costs far less than scattering through a mask."""
    padded = np.concatenate([data, np.zeros(width, dtype=np.uint8)])
    rows: npt.NDArray[np.uint8] = np.lib.stride_tricks.sliding_window_view(padded, width)[starts]
    return rows


def join_batch(
    sequences: list[str], qualities: list[str]
) -> tuple[I64, npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """A batch's read lengths, and its bases and qualities one read after another, as arrays."""
    lengths = np.fromiter(map(len, sequences), dtype=np.int64, count=len(sequences))
    seq = np.frombuffer("".join(sequences).encode("ascii"), dtype=np.uint8)
    qual = np.frombuffer("".join(qualities).encode("ascii"), dtype=np.uint8)
    return lengths, seq, qual


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
        self.add_joined(*join_batch(sequences, qualities))

    def add_joined(self, lengths: I64, seq: npt.NDArray[np.uint8], qual: npt.NDArray[np.uint8]) -> None:
        """Adds a batch of reads given one after another (``lengths`` tells them apart)."""
        count = len(lengths)
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
            seq2d, qual2d = _rows(seq, starts, longest), _rows(qual, starts, longest)
            # a shorter read's row ran on into the next reads: pad it with a byte that is neither
            # N nor G nor C, and with quality 0
            short = np.flatnonzero(lengths < longest)
            outside = np.arange(longest) >= lengths[short][:, None]
            seq2d[short] = np.where(outside, np.uint8(0), seq2d[short])
            qual2d[short] = np.where(outside, np.uint8(PHRED_OFFSET), qual2d[short])
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


class _Adder:
    """Adds batches to the figures in a thread of its own, while the calling thread parses the next
    ones: numpy releases the GIL during its passes over a batch, so parsing and adding share the
    cores with the inflating thread. A batch's error is raised in the calling thread."""

    def __init__(self, figures: _Figures) -> None:
        self._figures = figures
        self._queue: queue.Queue[tuple[I64, npt.NDArray[np.uint8], npt.NDArray[np.uint8]] | None] = (
            queue.Queue(maxsize=_BATCHES_AHEAD)
        )
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="qc-add", daemon=True)
        self._thread.start()

    def put(self, batch: tuple[I64, npt.NDArray[np.uint8], npt.NDArray[np.uint8]]) -> None:
        self._raise()
        self._queue.put(batch)

    def close(self) -> None:
        """Wait for the batches given; raise the error one of them raised."""
        self._queue.put(None)
        self._thread.join()
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while (batch := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._figures.add_joined(*batch)
                except BaseException as error:
                    self._error = error


def _read_batches(
    records: Iterator[dnaio.SequenceRecord], figures: _Figures, progress: Callable[[int], None] | None
) -> None:
    size = 1024  # the first batch learns the read lengths
    reads = bases = 0
    adder = _Adder(figures)
    try:
        while batch := list(islice(records, size)):
            # a FASTQ record always has qualities (dnaio's type allows None for FASTA)
            joined = join_batch([r.sequence for r in batch], cast(list[str], [r.qualities for r in batch]))
            adder.put(joined)
            reads, bases = reads + len(batch), bases + joined[1].size
            size = max(1, min(BATCH_READS, BATCH_BASES // max(1, bases // reads)))
            if progress is not None:
                progress(reads)
    finally:
        adder.close()


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
