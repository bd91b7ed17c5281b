"""Names ``levere deliver`` cannot send as they are: two that are one path once Unicode-normalised
(file or folder, in any pairing) and names that are not UTF-8. Each is refused by the folder scan,
before any request, naming the files readably; and then against a live service."""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest

from levere.cli.delivery.scan import FolderRefused, scan_folder
from levere.context import Context
from levere.domain.errors import InvalidPath
from levere.domain.paths import check_relative_path
from tests.cli_live import Env, levere, make_env, make_run, one_line_error

NFC = unicodedata.normalize("NFC", "été")
NFD = unicodedata.normalize("NFD", "été")
NOT_UTF8 = os.fsdecode(b"\xff.fastq")  # how Python names a file called b"\xff.fastq"


def refused(run: Path) -> str:
    with pytest.raises(FolderRefused) as caught:
        scan_folder(run)
    return caught.value.message


@pytest.mark.parametrize(
    ("first", "second", "said"),
    [
        ("file", "folder", ["été (a file, NFC)", "été/ (a folder, NFD)"]),
        ("file", "file", ["été (a file, NFC)", "été (a file, NFD)"]),
        ("folder", "file", ["été/ (a folder, NFC)", "été (a file, NFD)"]),
        ("folder", "folder", ["été/ (a folder, NFC)", "été/ (a folder, NFD)"]),
    ],
)
def test_names_equal_once_normalised_are_refused_whatever_they_name(
    tmp_path: Path, first: str, second: str, said: list[str]
) -> None:
    run = tmp_path / "RUN1"
    run.mkdir()
    (run / "ok.fastq").write_bytes(b"x")
    for name, kind in ((NFC, first), (NFD, second)):
        if kind == "file":
            (run / name).write_bytes(b"data")
        else:
            (run / name).mkdir()
            (run / name / f"{kind}-{len(name)}.fastq").write_bytes(b"inside")
    message = refused(run)
    assert "RUN1 has 1 names that are the same once Unicode-normalised, so nothing was sent" in message
    for text in said:
        assert unicodedata.normalize("NFC", text) in unicodedata.normalize("NFC", message)
    assert "NFC" in message and "NFD" in message  # the two spellings are told apart


def test_a_clash_deeper_down_is_named_with_its_folder(tmp_path: Path) -> None:
    run = tmp_path / "RUN1"
    (run / "lane1").mkdir(parents=True)
    (run / "lane1" / NFC).write_bytes(b"a")
    (run / "lane1" / NFD).mkdir()
    (run / "lane1" / NFD / "x.fastq").write_bytes(b"b")
    message = refused(run)
    assert "lane1/" in message and "(a folder, NFD)" in message and "(a file, NFC)" in message


def test_a_name_that_is_not_utf8_is_refused_escaped(tmp_path: Path) -> None:
    run = tmp_path / "RUN1"
    (run / "sub").mkdir(parents=True)
    (run / NOT_UTF8).write_bytes(b"x")
    (run / "sub" / os.fsdecode(b"caf\xe9.txt")).write_bytes(b"latin-1")
    (run / "fine.fastq").write_bytes(b"x")
    message = refused(run)
    assert "RUN1 has 2 names levere cannot store, so nothing was sent" in message
    assert r"\xff.fastq is not valid UTF-8" in message
    assert r"sub/caf\xe9.txt is not valid UTF-8" in message
    message.encode("utf-8")  # printable as it is: no lone surrogates left in the message


def test_the_service_refuses_a_path_that_is_not_utf8_too() -> None:
    # a JSON string may carry a lone surrogate ("\udcff"): a clear refusal, not an encoding crash
    with pytest.raises(InvalidPath, match=r"is not valid UTF-8"):
        check_relative_path("run/\udcff.fastq")
    with pytest.raises(InvalidPath, match=r"is not valid UTF-8"):
        check_relative_path("\ud800")


# --- against a live service -------------------------------------------------------------------------


@pytest.fixture
def env(ctx: Context, tmp_path: Path) -> Iterator[Env]:
    yield from make_env(ctx, tmp_path)


def test_a_file_and_a_folder_spelt_alike_fail_before_anything_is_sent(env: Env, tmp_path: Path) -> None:
    run = make_run(tmp_path / "RUN20", {"S1.fastq": 1000, f"{NFD}/S2.fastq": 1000})
    (run / NFC).write_bytes(b"a file named like the folder")
    env.traffic.reset()
    message = one_line_error(levere(env.staff, "deliver", env.project, str(run)))
    assert "names that are the same once Unicode-normalised" in message and "nothing was sent" in message
    assert "(a file, NFC)" in message and "(a folder, NFD)" in message
    assert env.traffic.requests == {}  # not even a request to open the delivery
    assert env.api(env.staff, f"/projects/{env.project}/deliveries") == []


def test_a_name_that_is_not_utf8_fails_before_anything_is_sent(env: Env, tmp_path: Path) -> None:
    run = make_run(tmp_path / "RUN21", {"S1.fastq": 1000})
    (run / NOT_UTF8).write_bytes(b"x")
    env.traffic.reset()
    failed = levere(env.staff, "deliver", env.project, str(run))
    message = one_line_error(failed)
    assert failed.returncode not in (0, 70)  # a refusal, not an internal error
    assert r"\xff.fastq is not valid UTF-8" in message and "nothing was sent" in message
    assert "internal error" not in message
    assert env.traffic.requests == {}
    assert env.api(env.staff, f"/projects/{env.project}/deliveries") == []


def test_a_run_folder_whose_own_name_is_not_utf8_is_refused(env: Env, tmp_path: Path) -> None:
    run = make_run(tmp_path / os.fsdecode(b"RUN\xfe"), {"S1.fastq": 1000})
    env.traffic.reset()
    message = one_line_error(levere(env.staff, "deliver", env.project, str(run)))
    assert r"RUN\xfe is not valid UTF-8" in message
    assert env.traffic.requests == {}
