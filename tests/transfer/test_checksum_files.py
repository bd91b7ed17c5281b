"""Checksum files as facilities ship them: written by the real md5sum/sha256sum, and by hand."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from levere.cli.delivery import checksums
from levere.domain.errors import InvalidPath, LevereError, ValidationFailed

MD5_A = hashlib.md5(b"a").hexdigest()
MD5_B = hashlib.md5(b"b").hexdigest()

needs_coreutils = pytest.mark.skipif(shutil.which("md5sum") is None, reason="GNU coreutils not installed")


def run_folder(tmp_path: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return tmp_path


@needs_coreutils
def test_reads_what_md5sum_writes_in_text_and_binary_mode(tmp_path: Path) -> None:
    folder = run_folder(tmp_path, {"R1.fastq.gz": b"a", "lane 2/R2.fastq.gz": b"b", "ünïcode.txt": b"c"})
    names = ["R1.fastq.gz", "lane 2/R2.fastq.gz", "ünïcode.txt"]
    text = subprocess.run(["md5sum", *names], cwd=folder, capture_output=True, check=True).stdout
    binary = subprocess.run(["md5sum", "-b", *names], cwd=folder, capture_output=True, check=True).stdout
    assert b" *R1.fastq.gz" in binary  # the real binary marker is exercised
    for output in (text, binary):
        parsed = checksums.parse(output.decode(), "md5sum.txt")
        assert {p: e.digest for p, e in parsed.entries.items()} == {
            "R1.fastq.gz": MD5_A,
            "lane 2/R2.fastq.gz": MD5_B,
            "ünïcode.txt": hashlib.md5(b"c").hexdigest(),
        }
        assert {e.algorithm for e in parsed.entries.values()} == {"md5"}
        assert parsed.plain_md5sum


@needs_coreutils
def test_reads_md5sum_tag_format_and_sha256sum(tmp_path: Path) -> None:
    folder = run_folder(tmp_path, {"x.bam": b"a"})
    tagged = subprocess.run(["md5sum", "--tag", "x.bam"], cwd=folder, capture_output=True, check=True).stdout
    parsed = checksums.parse(tagged.decode(), "MD5SUMS")
    assert parsed.md5("x.bam") == MD5_A
    assert not parsed.plain_md5sum  # verified by the client; the service reads plain md5sum only
    sha = subprocess.run(["sha256sum", "x.bam"], cwd=folder, capture_output=True, check=True).stdout
    parsed = checksums.parse(sha.decode(), "SHA256SUMS")
    assert parsed.sha256("x.bam") == hashlib.sha256(b"a").hexdigest()
    assert parsed.md5("x.bam") is None
    assert not parsed.plain_md5sum


@needs_coreutils
def test_escaped_names_are_unescaped_exactly_as_md5sum_escapes_them(tmp_path: Path) -> None:
    names = ["back\\slash", "new\nline", "carriage\rreturn"]
    folder = run_folder(tmp_path, dict.fromkeys(names, b"a"))
    output = subprocess.run(["md5sum", *names], cwd=folder, capture_output=True, check=True).stdout.decode()
    lines = output.splitlines()
    assert all(line.startswith("\\") for line in lines)  # md5sum did escape them
    unescaped = {checksums.parse_line(line, "md5sum.txt")[2] for line in lines}  # type: ignore[index]
    assert unescaped == set(names)
    # levere itself refuses such names as delivery paths, naming the line
    with pytest.raises(InvalidPath, match=r"md5sum.txt line 1: .*backslash"):
        checksums.parse(lines[0] + "\n", "md5sum.txt")


def test_crlf_comments_blank_lines_dot_slash_and_upper_case(tmp_path: Path) -> None:
    text = (
        "\ufeff# made by hand on Windows\r\n"
        "\r\n"
        f"{MD5_A.upper()}  ./R1.fastq.gz\r\n"
        f"   # an indented comment\r\n"
        f"{MD5_B} *sub/R2.fastq.gz\r\n"
    )
    (tmp_path / "md5sum.txt").write_text(text, newline="")
    parsed = checksums.read(tmp_path / "md5sum.txt")
    assert parsed.entries.keys() == {"R1.fastq.gz", "sub/R2.fastq.gz"}
    assert parsed.md5("R1.fastq.gz") == MD5_A  # lower-cased
    assert parsed.entries["sub/R2.fastq.gz"].line == 5


def test_single_space_separator_and_names_starting_with_a_space() -> None:
    parsed = checksums.parse(f"{MD5_A} one.txt\n{MD5_B}    two.txt\n", "md5.txt")
    assert parsed.md5("one.txt") == MD5_A
    assert parsed.md5("  two.txt") == MD5_B  # text-mode separator is two spaces; the rest is the name


def test_names_are_relative_to_the_folder_that_holds_the_checksum_file() -> None:
    parsed = checksums.parse(f"{MD5_A}  R1.fq\n", "md5sum.txt", prefix="lane1")
    assert parsed.md5("lane1/R1.fq") == MD5_A


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not a checksum line\n", r"md5sum.txt line 1 is not '<md5>  <file name>'"),
        (f"{MD5_A[:-1]}  short.txt\n", r"line 1 is not"),
        (
            f"{MD5_A}  a.txt\n\n{MD5_B}  a.txt\n",
            r"lists a.txt twice with different checksums \(lines 1 and 3\)",
        ),
        (f"{MD5_A}  ../escape.txt\n", r"md5sum.txt line 1: .*climbs out"),
        (f"{MD5_A}  /etc/passwd\n", r"md5sum.txt line 1: .*absolute"),
        (f"\\{MD5_A}  bad\\qescape\n", r"unknown escape"),
    ],
)
def test_bad_lines_are_refused_with_their_line_number(text: str, message: str) -> None:
    with pytest.raises(LevereError, match=message):
        checksums.parse(text, "md5sum.txt")


def test_the_same_file_listed_twice_with_the_same_sum_is_fine() -> None:
    parsed = checksums.parse(f"{MD5_A}  a.txt\n{MD5_A}  ./a.txt\n", "md5sum.txt")
    assert list(parsed.entries) == ["a.txt"]


def test_a_name_that_is_not_utf8_is_refused_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "md5sum.txt"
    path.write_bytes(f"{MD5_A}  fine.txt\n{MD5_B}  ".encode() + b"caf\xe9.txt\n")
    with pytest.raises(ValidationFailed, match=r"md5sum\.txt line 2 is not UTF-8"):
        checksums.read(path)


def test_detect_prefers_well_known_names_then_a_single_md5_file(tmp_path: Path) -> None:
    assert checksums.detect(tmp_path) is None
    (tmp_path / "R1.fastq.gz.md5").write_text(f"{MD5_A}  R1.fastq.gz\n")
    assert checksums.detect(tmp_path) == tmp_path / "R1.fastq.gz.md5"
    (tmp_path / "R2.fastq.gz.md5").write_text(f"{MD5_B}  R2.fastq.gz\n")
    with pytest.raises(LevereError, match=r"several checksum files \(R1.fastq.gz.md5, R2.fastq.gz.md5\)"):
        checksums.detect(tmp_path)
    (tmp_path / "MD5SUMS").write_text("")
    assert checksums.detect(tmp_path) == tmp_path / "MD5SUMS"
    (tmp_path / "md5sum.txt").write_text("")
    assert checksums.detect(tmp_path) == tmp_path / "md5sum.txt"
