"""Standard analysis of a ~1 GB gzipped FASTQ: levere.qc against sequali's command on the same file.

The file is generated deterministically (seeded numpy) and kept in the bench folder
(``<bench dir>/qc-input/``, ``.bench`` unless ``LEVERE_BENCH_DIR`` names another), so a second run
reuses it. It looks like NovaSeq output: 150-base reads (15% shorter, as after adapter trimming),
qualities binned to 2/12/23/37 and falling along the read, N bases scattered and at some reads'
first position, and 8% of reads repeating a recent one.

Both tools read the whole file and write a JSON summary and an HTML report into a scratch folder:
sequali with its defaults (two threads: one inflating gzip, one computing), levere as
``analyse_fastq`` with ``to_json`` and ``to_html`` in a fresh Python process (python-isal inflating
in a thread, dnaio parsing in the calling thread, numpy adding each batch in a third). The file is read once before the rounds so that both
read it from the page cache. Rounds alternate sequali and levere; the figure is the median of the
per-round ratios of levere's time to sequali's. Goal: at most 1.5.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import MiB, run_timed, scratch

ROOT = Path(__file__).resolve().parent.parent
SEQUALI = str(Path(sys.executable).with_name("sequali"))
GOAL = 1.5
SEED = 1116
READ_LENGTH = 150
CHUNK_READS = 50_000
#: NovaSeq's binned qualities (Phred 2, 12, 23, 37) as Phred+33 characters
BINS = np.frombuffer(b"#-8F", dtype=np.uint8)
BASES = np.frombuffer(b"ACGT", dtype=np.uint8)


def _chunk(rng: np.random.Generator, first: int) -> bytes:
    """``CHUNK_READS`` FASTQ records, numbered from ``first``."""
    n, length = CHUNK_READS, READ_LENGTH
    seq = BASES[rng.choice(4, size=(n, length), p=[0.29, 0.21, 0.21, 0.29])]
    # the share of lower bins grows along the read
    fall = np.linspace(0.0, 0.25, length)
    draw = rng.random((n, length))
    qual = np.full((n, length), BINS[3], dtype=np.uint8)
    qual[draw < fall * 0.6] = BINS[2]
    qual[draw < fall * 0.15] = BINS[1]
    is_n = rng.random((n, length)) < 0.001
    is_n[rng.random(n) < 0.01, 0] = True
    seq[is_n] = ord("N")
    qual[is_n] = BINS[0]
    lengths = np.where(rng.random(n) < 0.15, rng.integers(35, length, n), length)
    repeat = rng.random(n) < 0.08
    source = np.maximum(np.arange(n) - rng.integers(1, 1000, n), 0)
    seq[repeat] = seq[source[repeat]]
    lengths[repeat] = lengths[source[repeat]]
    seq_rows, qual_rows = seq.tobytes(), qual.tobytes()
    records = []
    for i in range(n):
        start, size = i * length, int(lengths[i])
        records.append(
            b"@A00123:8:HXXXXDSXY:1:%d:%d:%d 1:N:0:ACGTACGT\n%s\n+\n%s\n"
            % (
                1101 + (first + i) // 4_000_000,
                (first + i) % 32_000,
                1000 + (first + i) % 29_000,
                seq_rows[start : start + size],
                qual_rows[start : start + size],
            )
        )
    return b"".join(records)


def make_input(target_bytes: int) -> Path:
    """The gzipped FASTQ of about ``target_bytes`` (compressed), generated once and kept."""
    from isal import igzip

    folder = Path(os.environ.get("LEVERE_BENCH_DIR", ROOT / ".bench")) / "qc-input"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"reads-{SEED}-{target_bytes // MiB}MiB.fastq.gz"
    if path.exists():
        return path
    part = path.with_suffix(".part")
    rng = np.random.default_rng(SEED)
    started = time.perf_counter()
    reads = 0
    with part.open("wb") as raw, igzip.IGzipFile(fileobj=raw, mode="wb", compresslevel=2) as out:
        while raw.tell() < target_bytes:
            out.write(_chunk(rng, reads))
            reads += CHUNK_READS
    part.rename(path)
    print(
        f"  generated {path.name}: {reads:,} reads, {path.stat().st_size / MiB:,.0f} MiB "
        f"in {time.perf_counter() - started:.0f} s",
        flush=True,
    )
    return path


def analyse(path: Path, out: Path) -> None:
    """levere's part, run in a process of its own: the analysis, and its two reports written out."""
    from levere.qc import analyse_fastq

    with path.open("rb") as stream:
        report = analyse_fastq(stream, name=path.name)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_bytes(report.to_json())
    (out / "report.html").write_bytes(report.to_html())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size-mib", type=int, default=1024, help="compressed size of the input")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--analyse", nargs=2, metavar=("FASTQ", "OUTDIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.analyse:
        analyse(Path(args.analyse[0]), Path(args.analyse[1]))
        return 0
    path = make_input(args.size_mib * MiB)
    with path.open("rb") as warm:  # into the page cache, for both tools alike
        while warm.read(16 * MiB):
            pass
    size = path.stat().st_size
    ratios, sequali_times, levere_times = [], [], []
    with scratch("qc") as folder:
        for i in range(args.rounds):
            theirs = run_timed([SEQUALI, "--outdir", str(folder / f"sequali-{i}"), str(path)])
            ours = run_timed(
                [sys.executable, __file__, "--analyse", str(path), str(folder / f"levere-{i}")],
                env=os.environ | {"PYTHONPATH": str(ROOT / "src")},
            )
            sequali_times.append(theirs.seconds)
            levere_times.append(ours.seconds)
            ratios.append(ours.seconds / theirs.seconds)
            print(
                f"  round {i + 1}: sequali {theirs.seconds:.1f} s ({theirs.cpu_seconds:.1f} s CPU, "
                f"{theirs.max_rss_kib / 1024:,.0f} MiB), levere {ours.seconds:.1f} s "
                f"({ours.cpu_seconds:.1f} s CPU, {ours.max_rss_kib / 1024:,.0f} MiB), "
                f"time ratio {ratios[-1]:.2f}",
                flush=True,
            )
    ratio = statistics.median(ratios)
    ok = ratio <= GOAL
    print(
        f"standard analysis of {size / MiB:,.0f} MiB gzipped FASTQ: sequali median "
        f"{statistics.median(sequali_times):.1f} s, levere median {statistics.median(levere_times):.1f} s; "
        f"median time ratio levere/sequali {ratio:.2f} (goal <= {GOAL}) {'OK' if ok else 'BELOW GOAL'}",
        flush=True,
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
