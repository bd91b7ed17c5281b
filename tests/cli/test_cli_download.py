"""``levere download``, ``ls``, ``deliveries`` and ``manifest`` against a live service."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from levere.cli.delivery.download import local_target, plan, select
from levere.context import Context
from levere.domain.errors import InvalidPath, NotFound
from tests.cli_live import (
    Env,
    MiB,
    levere,
    make_env,
    make_run,
    one_line_error,
    start_levere,
    tree,
)

# --- where files land, and what is refused (no service needed) ------------------------------------------


def entry(path: str, size: int = 1) -> dict[str, object]:
    return {"path": path, "size": size, "md5": "0" * 32, "sha256": "0" * 64}


ENTRIES = [entry("RUN1/a.fq"), entry("RUN1/lane/b.fq"), entry("RUN10/c.fq"), entry("RUN2/d.fq")]


def test_select_takes_a_file_a_folder_a_delivery_or_everything() -> None:
    assert select(ENTRIES, None) == (ENTRIES, "")
    assert select(ENTRIES, "RUN1") == (ENTRIES[:2], "")  # not RUN10, a namesake by prefix only
    assert select(ENTRIES, "RUN1/lane/") == ([ENTRIES[1]], "RUN1")
    assert select(ENTRIES, "RUN1/lane/b.fq") == ([ENTRIES[1]], "RUN1/lane")
    with pytest.raises(NotFound, match="nothing at RUN3"):
        select(ENTRIES, "RUN3")


def test_local_names_follow_cp_r(tmp_path: Path) -> None:
    assert local_target(tmp_path, "RUN1/lane/b.fq", "RUN1") == tmp_path / "lane" / "b.fq"
    assert local_target(tmp_path, "RUN1/lane/b.fq", "RUN1/lane") == tmp_path / "b.fq"
    assert local_target(tmp_path, "RUN1/lane/b.fq", "") == tmp_path / "RUN1" / "lane" / "b.fq"


@pytest.mark.parametrize(
    "bad", ["../etc/passwd", "RUN1/../../x", "/etc/passwd", "RUN1/./x", "a\\b", "RUN1//x"]
)
def test_server_paths_that_would_escape_the_target_are_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(InvalidPath):
        plan([entry(bad)], tmp_path, "")


@pytest.mark.parametrize("pair", [("RUN1/x", "RUN1/x"), ("RUN1/x", "RUN1/x.part"), ("RUN1/x.part", "RUN1/x")])
def test_two_server_paths_for_one_local_file_are_refused(tmp_path: Path, pair: tuple[str, str]) -> None:
    with pytest.raises(InvalidPath, match="would use the same local file"):
        plan([entry(pair[0]), entry(pair[1])], tmp_path, "")


# --- against the service ---------------------------------------------------------------------------------

FILES = {
    "S1_R1.fastq": 3 * MiB + 5,
    "lane2/S2_R1.fastq": 2 * MiB,
    "lane2/small.txt": 100,
    "empty.txt": 0,
    "lane3/big.fastq": 16 * MiB + 1,  # many body messages: a download of it can be caught half-way
}


@pytest.fixture
def delivered(ctx: Context, tmp_path: Path) -> Iterator[tuple[Env, Path]]:
    for env in make_env(ctx, tmp_path):
        run = make_run(tmp_path / "RUN5", {k: v for k, v in FILES.items() if v}, tiny=50)
        (run / "empty.txt").write_bytes(b"")
        done = levere(env.staff, "deliver", env.project, str(run), "--no-checksum-file")
        assert done.returncode == 0, done.stderr
        env.traffic.reset()
        yield env, run


def test_download_a_file_a_folder_and_the_whole_project(delivered: tuple[Env, Path], tmp_path: Path) -> None:
    env, run = delivered
    one = levere(env.member, "download", env.project, "RUN5/lane2/S2_R1.fastq", "--to", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr
    assert tree(tmp_path / "one") == {"S2_R1.fastq": (run / "lane2/S2_R1.fastq").read_bytes()}

    folder = levere(env.member, "download", env.project, "RUN5/lane2", "--to", str(tmp_path / "folder"))
    assert folder.returncode == 0, folder.stderr
    assert tree(tmp_path / "folder") == {f"lane2/{k}": v for k, v in tree(run / "lane2").items()}

    everything = levere(env.member, "--json", "download", env.project, "--to", str(tmp_path / "all"))
    assert everything.returncode == 0, everything.stderr
    summary = json.loads(everything.stdout)
    assert summary["files"] == len(tree(run)) and summary["fetched_files"] == summary["files"]
    assert tree(tmp_path / "all" / "RUN5") == tree(run)
    assert not list((tmp_path / "all").rglob("*.part"))

    again = levere(env.member, "--json", "download", env.project, "--to", str(tmp_path / "all"))
    assert json.loads(again.stdout)["already_there"] == summary["files"]


def test_a_partial_file_is_resumed_with_range(delivered: tuple[Env, Path], tmp_path: Path) -> None:
    env, run = delivered
    source = (run / "S1_R1.fastq").read_bytes()
    target = tmp_path / "dl"
    target.mkdir()
    (target / "S1_R1.fastq.part").write_bytes(source[: MiB + 3])
    got = levere(env.member, "download", env.project, "RUN5/S1_R1.fastq", "--to", str(target))
    assert got.returncode == 0, got.stderr
    assert (target / "S1_R1.fastq").read_bytes() == source
    assert not (target / "S1_R1.fastq.part").exists()
    assert [r for p, r in env.traffic.ranges if p.endswith("/S1_R1.fastq")] == [f"bytes={MiB + 3}-"]


def test_a_partial_file_of_other_bytes_is_fetched_again_from_zero(
    delivered: tuple[Env, Path], tmp_path: Path
) -> None:
    env, run = delivered
    target = tmp_path / "dl"
    target.mkdir()
    (target / "S1_R1.fastq.part").write_bytes(os.urandom(MiB))
    got = levere(env.member, "download", env.project, "RUN5/S1_R1.fastq", "--to", str(target))
    assert got.returncode == 0, got.stderr
    assert (target / "S1_R1.fastq").read_bytes() == (run / "S1_R1.fastq").read_bytes()
    assert [r for p, r in env.traffic.ranges if p.endswith("/S1_R1.fastq")] == [f"bytes={MiB}-", ""]


def test_an_interrupted_download_resumes_where_it_stopped(
    delivered: tuple[Env, Path], tmp_path: Path
) -> None:
    env, run = delivered
    target = tmp_path / "dl"
    part = target / "big.fastq.part"
    env.traffic.send_delay = 0.3
    proc = start_levere(env.member, "download", env.project, "RUN5/lane3/big.fastq", "--to", str(target))
    try:
        deadline = time.monotonic() + 60
        while not (part.exists() and part.stat().st_size > 0):
            assert proc.poll() is None and time.monotonic() < deadline, (
                proc.stderr.read() if proc.stderr else ""
            )
            time.sleep(0.01)
    finally:
        proc.kill()
        proc.wait()
    env.traffic.send_delay = 0
    kept = part.stat().st_size
    assert 0 < kept < FILES["lane3/big.fastq"]
    assert not (target / "big.fastq").exists()  # never a half file under the final name
    env.traffic.reset()
    got = levere(env.member, "download", env.project, "RUN5/lane3/big.fastq", "--to", str(target))
    assert got.returncode == 0, got.stderr
    assert (target / "big.fastq").read_bytes() == (run / "lane3/big.fastq").read_bytes()
    assert [r for p, r in env.traffic.ranges if p.endswith("/big.fastq")] == [f"bytes={kept}-"]


def test_a_local_file_that_differs_is_not_overwritten_unless_asked(
    delivered: tuple[Env, Path], tmp_path: Path
) -> None:
    env, run = delivered
    target = tmp_path / "dl"
    target.mkdir()
    (target / "small.txt").write_bytes(b"my own notes")
    refused = levere(env.member, "download", env.project, "RUN5/lane2/small.txt", "--to", str(target))
    assert "exists and is not RUN5/lane2/small.txt as stored" in one_line_error(refused)
    assert (target / "small.txt").read_bytes() == b"my own notes"
    forced = levere(
        env.member, "download", env.project, "RUN5/lane2/small.txt", "--to", str(target), "--overwrite"
    )
    assert forced.returncode == 0, forced.stderr
    assert (target / "small.txt").read_bytes() == (run / "lane2/small.txt").read_bytes()


def test_ls_deliveries_and_manifest(delivered: tuple[Env, Path], tmp_path: Path) -> None:
    env, run = delivered
    listing = levere(env.member, "ls", env.project, "RUN5/lane2", "--long")
    assert listing.returncode == 0, listing.stderr
    sha = hashlib.sha256((run / "lane2/S2_R1.fastq").read_bytes()).hexdigest()
    assert "RUN5/lane2/S2_R1.fastq" in listing.stdout and sha in listing.stdout
    assert "area" in listing.stdout  # which tier holds it
    short = levere(env.member, "ls", env.project, "RUN5/lane2")
    assert sha[:12] in short.stdout and sha not in short.stdout

    rows = json.loads(levere(env.member, "--json", "deliveries", "list", env.project).stdout)
    assert [(d["name"], d["state"]) for d in rows] == [("RUN5", "sealed")]
    shown = levere(env.member, "deliveries", "show", env.project, "RUN5")
    assert shown.returncode == 0 and "sealed" in shown.stdout and "lane2/small.txt" in shown.stdout

    as_sha = levere(env.member, "manifest", env.project, "RUN5", "--format", "sha256sum", "-o", "-")
    check = subprocess.run(
        ["sha256sum", "--quiet", "-c", "-"], input=as_sha.stdout, cwd=run, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    as_json = json.loads(
        levere(env.member, "manifest", env.project, "RUN5", "--format", "json", "-o", "-").stdout
    )
    assert as_json  # the service's JSON manifest, passed through unchanged

    missing = levere(env.member, "deliveries", "show", env.project, "NOPE")
    one_line_error(missing)
    assert missing.returncode == 4
