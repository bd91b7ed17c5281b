"""The standard analysis (levere.qc) against established QC tools on the same reads.

Each test file is generated here, deterministically: reads of varied lengths (some shorter than the
duplication fingerprint), N bases scattered and in runs, and duplicated reads, written plain and gzip.
sequali (from PyPI) and fastp (Debian) read the same file and write JSON; the figures must agree
exactly where the definitions agree (counts, per-position N, per-position mean Phred) and within a
stated tolerance where a tool estimates (duplication).
"""

from __future__ import annotations

import gzip
import html
import io
import json
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from levere.domain.errors import ChecksumMismatch, CiphertextDamaged, InvalidFastq, TruncatedFastq
from levere.qc import QcReport, analyse_fastq

SEQUALI = Path(sys.executable).with_name("sequali")
FASTP = shutil.which("fastp")
#: how far an estimated duplicate fraction may lie from the share of duplicates the file was made with
DUPLICATION_TOLERANCE = 0.02


def make_fastq(seed: int, reads: int = 4000, *, duplicate_every: int = 5) -> tuple[bytes, int]:
    """FASTQ bytes and how many of their reads repeat an earlier read's sequence."""
    rng = random.Random(seed)
    kept: list[str] = []
    duplicates = 0
    out = []
    for number in range(reads):
        if kept and number % duplicate_every == 0:
            sequence = rng.choice(kept)
            duplicates += 1
        else:
            length = 100 if rng.random() < 0.6 else rng.randint(12, 150)
            sequence = "".join(rng.choices("ACGTN", weights=[30, 20, 20, 29, 1], k=length))
            if number % 97 == 0:  # a run of N, as a failed cycle leaves
                start = rng.randrange(max(1, length - 5))
                sequence = sequence[:start] + "N" * 5 + sequence[start + 5 :]
                sequence = sequence[:length]
            if sequence in kept:
                duplicates += 1
            kept.append(sequence)
        qualities = "".join(
            "#" if base == "N" else chr(33 + max(2, min(41, int(40 - position / 6 + rng.gauss(0, 5)))))
            for position, base in enumerate(sequence)
        )
        out.append(f"@read{number} 1:N:0:ACGTACGT\n{sequence}\n+\n{qualities}\n")
    return "".join(out).encode(), duplicates


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, int]:
    folder = tmp_path_factory.mktemp("qc")
    data, duplicates = make_fastq(seed=16)
    plain = folder / "sample.fastq"
    plain.write_bytes(data)
    packed = folder / "sample.fastq.gz"
    packed.write_bytes(gzip.compress(data, compresslevel=6))
    return plain, packed, duplicates


def analyse_file(path: Path) -> QcReport:
    with path.open("rb") as stream:
        return analyse_fastq(stream, name=path.name)


def run_sequali(path: Path, folder: Path) -> dict:
    out = folder / f"{path.name}.sequali"
    subprocess.run(
        [str(SEQUALI), "--outdir", str(out), "--json", "report.json", "--html", "report.html", str(path)],
        check=True,
        capture_output=True,
    )
    return json.loads((out / "report.json").read_text())


def run_fastp(path: Path, folder: Path) -> dict:
    out = folder / f"{path.name}.fastp.json"
    subprocess.run(
        [FASTP, "-i", str(path), "-j", str(out), "-h", str(folder / "fastp.html"), "-w", "1"],
        check=True,
        capture_output=True,
    )
    return json.loads(out.read_text())


def naive_figures(data: bytes) -> dict:
    """The per-position figures computed the slow, obvious way, to check the batched numpy code."""
    lines = data.decode().splitlines()
    sequences, qualities = lines[1::4], lines[3::4]
    longest = max(map(len, sequences))
    sums, ns, cover = [0] * longest, [0] * longest, [0] * longest
    for sequence, quality in zip(sequences, qualities, strict=True):
        for position, (base, q) in enumerate(zip(sequence, quality, strict=True)):
            sums[position] += ord(q) - 33
            ns[position] += base in "Nn"
            cover[position] += 1
    return {
        "mean_per_position": [s / c for s, c in zip(sums, cover, strict=True)],
        "n_per_position": [n / c for n, c in zip(ns, cover, strict=True)],
        "gc": sum(s.upper().count("G") + s.upper().count("C") for s in sequences),
    }


@pytest.mark.parametrize("packed", [False, True], ids=["plain", "gzip"])
def test_figures_agree_with_sequali(sample: tuple[Path, Path, int], tmp_path: Path, packed: bool) -> None:
    plain, gz, duplicates = sample
    path = gz if packed else plain
    ours = analyse_file(path).summary()
    theirs = run_sequali(path, tmp_path)
    summary = theirs["summary"]
    assert ours["file"]["compression"] == ("gzip" if packed else "none")
    assert ours["reads"] == summary["total_reads"] == 4000
    assert ours["bases"] == summary["total_bases"]
    assert ours["gc"]["bases"] == summary["total_gc_bases"]
    assert ours["n_content"]["bases"] == summary["total_n_bases"]
    assert ours["quality"]["q20_bases"] == summary["q20_bases"]
    assert ours["length"]["min"] == summary["minimum_length"]
    assert ours["length"]["max"] == summary["maximum_length"]
    assert ours["length"]["mean"] == pytest.approx(summary["mean_length"], abs=1e-6)
    # sequali labels each length on its own up to these lengths; a label is a length, its count the reads
    distribution = theirs["sequence_length_distribution"]
    assert all(re.fullmatch(r"\d+", label) for label in distribution["length_ranges"])
    theirs_by_length = {
        int(label): count
        for label, count in zip(distribution["length_ranges"], distribution["counts"], strict=True)
        if count
    }
    assert dict(map(tuple, ours["length"]["distribution"])) == theirs_by_length
    n_content = theirs["per_position_n_content"]
    assert n_content["x_labels"] == [str(p) for p in range(1, ours["length"]["max"] + 1)]
    assert ours["n_content"]["per_position"] == pytest.approx(n_content["n_content"], abs=1e-6)
    # sequali estimates duplication from fingerprints of 16 bases; both must be near the true share
    truth = duplicates / 4000
    theirs_duplicates = 1 - theirs["duplication_fractions"]["remaining_fraction"]
    assert ours["duplication"]["exact"] is True
    assert ours["duplication"]["duplicate_fraction"] == pytest.approx(truth, abs=1e-6)
    assert ours["duplication"]["duplicate_fraction"] == pytest.approx(
        theirs_duplicates, abs=DUPLICATION_TOLERANCE
    )


@pytest.mark.skipif(FASTP is None, reason="fastp is not installed (scripts/install-test-deps.sh)")
@pytest.mark.parametrize("packed", [False, True], ids=["plain", "gzip"])
def test_figures_agree_with_fastp(sample: tuple[Path, Path, int], tmp_path: Path, packed: bool) -> None:
    plain, gz, _ = sample
    path = gz if packed else plain
    ours = analyse_file(path).summary()
    theirs = run_fastp(path, tmp_path)
    before = theirs["summary"]["before_filtering"]
    read1 = theirs["read1_before_filtering"]
    assert ours["reads"] == before["total_reads"]
    assert ours["bases"] == before["total_bases"]
    assert ours["quality"]["q20_bases"] == before["q20_bases"]
    assert ours["quality"]["q30_bases"] == before["q30_bases"]
    # fastp writes six significant digits: the same figures, up to half a unit of the sixth digit
    assert ours["gc"]["fraction"] == pytest.approx(before["gc_content"], abs=1e-6)
    assert len(ours["quality"]["mean_per_position"]) == read1["total_cycles"]
    assert ours["quality"]["mean_per_position"] == pytest.approx(read1["quality_curves"]["mean"], rel=5e-6)
    assert ours["n_content"]["per_position"] == pytest.approx(read1["content_curves"]["N"], abs=1e-6)
    assert ours["duplication"]["duplicate_fraction"] == pytest.approx(
        theirs["duplication"]["rate"], abs=DUPLICATION_TOLERANCE
    )


@pytest.mark.parametrize(
    "lengths",
    [[60] * 300, [5, 17, 32, 33, 64, 65, 90] * 40, [10] * 200 + [5000] * 2, [0, 3, 0, 40]],
    ids=["one-length", "varied", "long-and-short", "empty-reads"],
)
def test_per_position_figures_match_a_plain_computation(lengths: list[int]) -> None:
    rng = random.Random(sum(lengths))
    records = []
    for number, length in enumerate(lengths):
        sequence = "".join(rng.choices("ACGTNacgtn", weights=[25, 25, 25, 25, 3, 2, 2, 2, 2, 1], k=length))
        quality = "".join(chr(33 + rng.randint(0, 41)) for _ in range(length))
        records.append(f"@r{number}\n{sequence}\n+\n{quality}\n")
    data = "".join(records).encode()
    ours = analyse_fastq(io.BytesIO(data), name="x.fastq").summary()
    expected = naive_figures(data)
    assert ours["reads"] == len(lengths)
    assert ours["bases"] == sum(lengths)
    assert ours["gc"]["bases"] == expected["gc"]
    assert ours["quality"]["mean_per_position"] == pytest.approx(expected["mean_per_position"], abs=1e-6)
    assert ours["n_content"]["per_position"] == pytest.approx(expected["n_per_position"], abs=1e-6)
    assert sum(ours["gc"]["per_read_percent"]) == sum(1 for n in lengths if n)


class Trickle(io.RawIOBase):
    """A stream that is not seekable, has no ``readinto`` of its own callers could rely on, and hands
    out a few bytes at a time, as a decrypting stream may."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._at = 0
        self._step = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        self._step = self._step % 7 + 1
        size = self._step if size < 0 else min(size, self._step * 4093)
        chunk = bytes(self._data[self._at : self._at + size])
        self._at += len(chunk)
        return chunk

    readinto = None  # type: ignore[assignment]


def test_any_readable_stream_gives_the_same_summary(sample: tuple[Path, Path, int]) -> None:
    plain, gz, _ = sample
    from_file = analyse_file(plain).summary()
    from_trickle = analyse_fastq(Trickle(plain.read_bytes()), name=plain.name).summary()
    from_gzip_trickle = analyse_fastq(Trickle(gz.read_bytes()), name=plain.name).summary()
    assert from_trickle == from_file
    assert from_gzip_trickle == {**from_file, "file": {"name": plain.name, "compression": "gzip"}}


def test_nothing_is_written_to_disk(sample: tuple[Path, Path, int]) -> None:
    """Plaintext stays in memory: no file is opened for writing while a stream is analysed."""
    _, gz, _ = sample
    opened_for_writing: list[object] = []
    watching = [True]

    def hook(event: str, args: tuple) -> None:
        if watching and event == "open":
            path, mode, flags = args
            writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (flags or 0) & 0o3
            if writes:
                opened_for_writing.append(path)

    sys.addaudithook(hook)  # hooks cannot be removed: this one stops watching at the end
    try:
        report = analyse_fastq(io.BytesIO(gz.read_bytes()), name=gz.name)
        report.to_json()
        report.to_html()
    finally:
        watching.clear()
    assert report.reads == 4000
    assert opened_for_writing == []


def test_duplication_is_estimated_from_a_sample_past_its_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """With room for only 500 distinct fingerprints, 20,000 reads are sampled by hash, and the
    estimate stays near the true share of duplicates."""
    import levere.qc.duplication as duplication

    monkeypatch.setattr(duplication, "MAX_TRACKED", 500)
    monkeypatch.setattr(duplication.DuplicationEstimator.__init__, "__defaults__", (500,))
    data, duplicates = make_fastq(seed=7, reads=20000, duplicate_every=4)
    ours = analyse_fastq(io.BytesIO(data), name="many.fastq").summary()["duplication"]
    assert ours["exact"] is False
    assert ours["distinct_in_sample"] <= 500
    assert ours["sampled_reads"] < 20000
    assert ours["duplicate_fraction"] == pytest.approx(duplicates / 20000, abs=0.04)


GOOD = b"".join(b"@r%d\nACGTNACGGTTTAGC\n+\nIIIIIIIII#IIIII\n" % n for n in range(3000))


def damaged_gzip() -> bytes:
    packed = bytearray(gzip.compress(GOOD))
    packed[len(packed) // 2 : len(packed) // 2 + 40] = b"\xff" * 40
    return bytes(packed)


@pytest.mark.parametrize(
    ("data", "kind", "code"),
    [
        (b"hello, this is not sequencing data\n" * 20, InvalidFastq, "invalid_fastq"),
        (bytes(range(256)) * 10, InvalidFastq, "invalid_fastq"),
        (b">r1\nACGT\n>r2\nACGT\n", InvalidFastq, "invalid_fastq"),
        (gzip.compress(b"%PDF-1.7\n" * 100), InvalidFastq, "invalid_fastq"),
        (gzip.compress(GOOD)[:-30], TruncatedFastq, "truncated_fastq"),
        (gzip.compress(GOOD)[:10], TruncatedFastq, "truncated_fastq"),
        (damaged_gzip(), InvalidFastq, "invalid_fastq"),
        (GOOD[:-5], TruncatedFastq, "truncated_fastq"),
        (GOOD[:-25], TruncatedFastq, "truncated_fastq"),
        (gzip.compress(GOOD[:-5]), TruncatedFastq, "truncated_fastq"),
        (GOOD[:3000] + b"@bad\nACGT\n-\nIIII\n" + GOOD[3000:], InvalidFastq, "invalid_fastq"),
        (b"@r\nACGT\n+\nII\x1fI\n", InvalidFastq, "invalid_fastq"),
        (b"@r\nAC\xc3\xa9T\n+\nIIIII\n", InvalidFastq, "invalid_fastq"),
    ],
    ids=[
        "text",
        "binary",
        "fasta",
        "gzip-not-fastq",
        "truncated-gzip",
        "gzip-header-only",
        "damaged-gzip",
        "record-cut-in-qualities",
        "record-cut-in-sequence",
        "gzip-record-cut",
        "bad-separator-line",
        "quality-below-phred33",
        "non-ascii",
    ],
)
def test_bad_input_is_a_clear_error(data: bytes, kind: type[InvalidFastq], code: str) -> None:
    with pytest.raises(InvalidFastq) as caught:
        analyse_fastq(io.BytesIO(data), name="run1_R1.fastq.gz")
    assert type(caught.value) is kind
    assert caught.value.code == code
    assert caught.value.http_status == 422
    assert str(caught.value).startswith("run1_R1.fastq.gz: ")
    assert caught.value.details["file"] == "run1_R1.fastq.gz"


class BreaksHalfway(io.RawIOBase):
    """A stream whose source fails half-way, as a decrypting stream does on a damaged segment."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self._at > len(self._data) // 2:
            raise ChecksumMismatch("segment 12 does not decrypt")
        size = min(len(buffer), 1000, len(self._data) - self._at)
        buffer[:size] = self._data[self._at : self._at + size]
        self._at += size
        return size


@pytest.mark.parametrize("packed", [False, True], ids=["plain", "gzip"])
def test_the_streams_own_error_comes_through_unchanged(packed: bool) -> None:
    """An error of the caller's stream is the caller's to report: it is neither hidden nor called bad
    FASTQ, also when it happens in the thread that inflates gzip."""
    data = gzip.compress(GOOD * 10) if packed else GOOD * 10
    with pytest.raises(ChecksumMismatch, match="segment 12"):
        analyse_fastq(BreaksHalfway(data), name="x.fastq")


def test_a_crypt4gh_file_is_analysed_through_a_decrypting_stream(sample: tuple[Path, Path, int]) -> None:
    """The secure zone's case: a gzipped FASTQ encrypted with Crypt4GH, decrypted while it is read;
    the figures are those of the plaintext file, and damaged ciphertext is the decryption's error."""
    from levere.crypt4gh import PrivateKey, encrypt_stream, make_header, open_plaintext

    plain, gz, _ = sample
    disk = PrivateKey.generate()
    body = io.BytesIO()
    encrypted = encrypt_stream(io.BytesIO(gz.read_bytes()), body)
    c4gh = make_header(encrypted.data_key, disk.public_key) + body.getvalue()
    report = analyse_fastq(open_plaintext(io.BytesIO(c4gh), disk), name=plain.name)
    assert report.summary() == {
        **analyse_file(plain).summary(),
        "file": {"name": plain.name, "compression": "gzip"},
    }

    damaged = bytearray(c4gh)
    damaged[len(damaged) // 2] ^= 1
    with pytest.raises(CiphertextDamaged):
        analyse_fastq(open_plaintext(io.BytesIO(bytes(damaged)), disk), name=plain.name)


def test_an_empty_stream_is_an_empty_report() -> None:
    report = analyse_fastq(io.BytesIO(b""), name="empty.fastq")
    summary = json.loads(report.to_json())
    assert (summary["reads"], summary["bases"], summary["length"]["distribution"]) == (0, 0, [])
    assert summary["duplication"]["duplicate_fraction"] == 0.0
    assert b"no reads" in report.to_html()


def documented_keys() -> set[str]:
    """The keys in the table of the section "The JSON summary" (one file's summary)."""
    text = (Path(__file__).parents[2] / "docs" / "qc.md").read_text()
    section = text.split("\n## The JSON summary\n", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([A-Za-z0-9_.]+)` \|", section, flags=re.MULTILINE))


def key_paths(value: object, prefix: str = "") -> set[str]:
    if not isinstance(value, dict):
        return set()
    paths = set()
    for key, inner in value.items():
        path = f"{prefix}{key}"
        paths.add(path)
        paths |= key_paths(inner, path + ".")
    return paths


def test_every_json_key_is_documented_and_nothing_else(sample: tuple[Path, Path, int]) -> None:
    summary = json.loads(analyse_file(sample[1]).to_json())
    assert summary["schema"] == "levere.qc/1"
    assert key_paths(summary) == documented_keys()


def test_html_page_is_self_contained_and_escaped() -> None:
    name = '<script>alert("x")</script> & R1.fastq'
    data, _ = make_fastq(seed=3, reads=500)
    page = analyse_fastq(io.BytesIO(data), name=name).to_html().decode()
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page  # the name's tag is escaped, and the page has no script of its own
    assert html.escape(name) in page
    assert not re.search(r"<link|src=|url\(|@import", page)
    # the only address is the SVG namespace, which is a name, not a fetch
    assert set(re.findall(r"https?://[^\s\"']+", page)) == {"http://www.w3.org/2000/svg"}
    charts = re.findall(r'<svg [^>]*aria-label="([^"]+)"', page)
    assert charts == [
        "Mean quality per position",
        "N content per position",
        "Read length distribution",
        "GC content per read",
        "Duplication levels",
    ]
    assert page.count("<polyline") == 3  # the two per-position charts, and 100+ read lengths
    assert '<th>Reads</th><td class="n">500</td>' in page
