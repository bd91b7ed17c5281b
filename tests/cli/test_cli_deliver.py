"""``levere deliver``: the folder scan, the tar stream and the resume plan (no service needed), and
whole deliveries against a live service (further down)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from levere.cli.client import Client, Credentials
from levere.cli.delivery import tarstream
from levere.cli.delivery.batch import split
from levere.cli.delivery.checksums import parse
from levere.cli.delivery.planning import ChecksumSource, check_listed, choose_checksum_file, make_plan
from levere.cli.delivery.progress import Quiet
from levere.cli.delivery.retry import Retry
from levere.cli.delivery.scan import FolderRefused, LocalFile, scan_folder
from levere.cli.delivery.tus import Expected, TusUpload
from levere.context import Context
from levere.domain.errors import Conflict, QuotaExceeded, ValidationFailed
from tests.cli_live import (
    Env,
    MiB,
    levere,
    make_env,
    make_run,
    one_line_error,
    start_levere,
    start_server_process,
    tree,
    wait_for_batches,
    wait_for_upload,
)
from tests.conftest import free_port


def write(folder: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return folder


# --- the folder scan -----------------------------------------------------------------------------------


def test_scan_lists_regular_files_with_sizes_sorted(tmp_path: Path) -> None:
    run = write(tmp_path / "RUN1", {"b.fq": b"12345", "a/x.fq": b"", "a/y/z.txt": b"zz"})
    assert [(f.path, f.size) for f in scan_folder(run)] == [("a/x.fq", 0), ("a/y/z.txt", 2), ("b.fq", 5)]


def test_symlinks_pointing_outside_are_refused_by_name_before_anything(tmp_path: Path) -> None:
    secret = write(tmp_path / "elsewhere", {"passwd": b"secret"})
    run = write(tmp_path / "RUN1", {"ok.fq": b"x"})
    (run / "leak").symlink_to(secret / "passwd")
    (run / "sub").mkdir()
    (run / "sub" / "up").symlink_to("../../elsewhere")
    (run / "dangling").symlink_to(tmp_path / "missing")
    with pytest.raises(FolderRefused) as refused:
        scan_folder(run)
    message = refused.value.message
    assert "RUN1 has 3 symbolic links pointing outside the folder, so nothing was sent" in message
    for name in ("leak ->", "sub/up -> ../../elsewhere", "dangling ->"):
        assert name in message


def test_symlinks_inside_the_folder_are_delivered_as_their_targets_and_loops_refused(tmp_path: Path) -> None:
    run = write(tmp_path / "RUN1", {"data/a.fq": b"abc"})
    (run / "alias.fq").symlink_to("data/a.fq")
    (run / "same").symlink_to("data")
    assert [(f.path, f.size) for f in scan_folder(run)] == [
        ("alias.fq", 3),
        ("data/a.fq", 3),
        ("same/a.fq", 3),
    ]
    (run / "data" / "loop").symlink_to("..")
    with pytest.raises(FolderRefused, match=r"data/loop -> \.\. \(a loop\)"):
        scan_folder(run)


def test_names_levere_cannot_store_are_refused_all_at_once(tmp_path: Path) -> None:
    # (a name over 255 bytes cannot be made on Linux file systems; the same check refuses it)
    run = write(tmp_path / "RUN1", {"fine.fq": b"x", "tab\there.fq": b"x", "sub/back\\slash": b"x"})
    with pytest.raises(FolderRefused) as refused:
        scan_folder(run)
    message = refused.value.message
    assert "2 names levere cannot store" in message
    assert "'tab\\there.fq' contains a NUL or control character" in message
    assert "backslash" in message


def test_a_name_of_exactly_255_bytes_is_fine(tmp_path: Path) -> None:
    name = "é" * 127 + "x"  # 255 bytes in UTF-8
    run = write(tmp_path / "RUN1", {name: b"x"})
    assert [f.path for f in scan_folder(run)] == [name]


def test_special_files_are_refused(tmp_path: Path) -> None:
    run = write(tmp_path / "RUN1", {"a.fq": b"x"})
    os.mkfifo(run / "pipe")
    with pytest.raises(FolderRefused, match=r"1 entries that are not regular files.*pipe"):
        scan_folder(run)


def test_a_missing_folder_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="does not exist"):
        scan_folder(tmp_path / "nope")


# --- the tar stream ------------------------------------------------------------------------------------


def local(folder: Path) -> list[LocalFile]:
    return scan_folder(folder)


def test_tar_stream_is_read_by_gnu_tar_and_pythons_tarfile_with_checksums(tmp_path: Path) -> None:
    long_name = "deep/" + "n" * 120 + ".fq"
    files = {"a.txt": b"hello", "empty": b"", long_name: os.urandom(3000), "ünï/cödé.txt": b"\x00" * 512}
    run = write(tmp_path / "RUN1", files)
    scanned = local(run)
    sent: list[tarstream.Sent] = []
    data = b"".join(tarstream.stream(scanned, lambda p: None, lambda p: None, sent.append))
    # the Content-Length sent up front is exact
    assert len(data) == tarstream.archive_size(scanned, lambda p: None)
    assert {s.path for s in sent} == set(files)

    with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as archive:
        for member in archive:
            content = archive.extractfile(member).read()  # type: ignore[union-attr]
            assert content == files[member.name]
            # the client sends the SHA-256 it computed; an MD5 only where a checksum file lists one
            assert "LEVERE.md5" not in member.pax_headers
            assert member.pax_headers["LEVERE.sha256"] == hashlib.sha256(content).hexdigest()

    out = tmp_path / "untarred"
    out.mkdir()
    subprocess.run(["tar", "-x", "-f", "-", "-C", str(out)], input=data, check=True)
    for name, content in files.items():
        assert (out / name).read_bytes() == content


def test_tar_members_carry_the_checksum_files_md5_when_it_lists_the_file(tmp_path: Path) -> None:
    run = write(tmp_path / "RUN1", {"a.txt": b"actual bytes"})
    listed = "0" * 32
    data = b"".join(tarstream.stream(local(run), lambda p: listed, lambda p: None, lambda s: None))
    assert len(data) == tarstream.archive_size(local(run), lambda p: listed)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as archive:
        member = next(iter(archive))
        assert member.pax_headers["LEVERE.md5"] == listed  # so the service refuses the file
        assert member.pax_headers["LEVERE.sha256"] == hashlib.sha256(b"actual bytes").hexdigest()


def test_tar_stream_of_thousands_of_files_keeps_memory_flat(tmp_path: Path) -> None:
    run = tmp_path / "RUN1"
    run.mkdir()
    block = os.urandom(4096)
    for i in range(3000):
        (run / f"f{i:05d}.txt").write_bytes(block)
    scanned = local(run)
    total = 0
    tracemalloc.start()
    try:
        for chunk in tarstream.stream(scanned, lambda p: None, lambda p: None, lambda s: None):
            total += len(chunk)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == tarstream.archive_size(scanned, lambda p: None) > 12 * 1024 * 1024
    assert peak < 4 * 1024 * 1024, f"streaming {total} bytes peaked at {peak} bytes"


def test_a_file_that_changes_size_during_the_stream_stops_it_with_its_name(tmp_path: Path) -> None:
    run = write(tmp_path / "RUN1", {"a.txt": b"12345"})
    scanned = local(run)
    (run / "a.txt").write_bytes(b"123456")
    with pytest.raises(tarstream.FileChanged, match=r"a\.txt changed while it was being delivered"):
        b"".join(tarstream.stream(scanned, lambda p: None, lambda p: None, lambda s: None))


def test_batches_are_split_by_count_and_bytes_and_give_parallel_streams_work() -> None:
    files = [LocalFile(f"f{i}", "", 4096) for i in range(50_000)]
    assert [len(b) for b in split(files, parallel=1)] == [20_000, 20_000, 10_000]
    assert [len(b) for b in split(files[:20_000], parallel=2)] == [10_000, 10_000]
    assert [len(b) for b in split(files[:2000], parallel=2)] == [1000, 1000]
    assert [len(b) for b in split(files[:100], parallel=2)] == [100]
    big = [LocalFile(f"g{i}", "", 600 * 1024) for i in range(1000)]
    assert all(sum(f.size for f in b) <= 256 * 1024 * 1024 for b in split(big, parallel=2))
    assert sum(len(b) for b in split(big, parallel=2)) == 1000


# --- resuming: what is sent again ----------------------------------------------------------------------


def stored(path: str, data: bytes) -> dict[str, Any]:
    return {"path": path, "size": len(data), "md5": hashlib.md5(data).hexdigest(),
            "sha256": hashlib.sha256(data).hexdigest()}  # fmt: skip


def test_plan_skips_stored_files_resumes_uploads_and_sorts_small_from_large() -> None:
    mib = 1024 * 1024
    files = [
        LocalFile("done.fq", "", 3),
        LocalFile("big.fq", "", 5 * mib),
        LocalFile("half.fq", "", 4 * mib),
        LocalFile("tiny.txt", "", 10),
        LocalFile("grown.fq", "", 2 * mib),
    ]
    delivery = {
        "files": [stored("done.fq", b"abc")],
        "uploads": [
            {"path": "half.fq", "length": 4 * mib, "offset": mib, "url": "/api/tus/1"},
            {"path": "grown.fq", "length": mib, "offset": 10, "url": "/api/tus/2"},  # the file changed since
            {"path": "gone.fq", "length": 7, "offset": 0, "url": "/api/tus/3"},  # no longer in the folder
        ],
    }
    plan = make_plan(files, delivery, None, small_file=mib)
    assert [f.path for f in plan.skipped] == ["done.fq"]
    assert [(f.path, u and u["url"]) for f, u in plan.large] == [
        ("big.fq", None),
        ("half.fq", "/api/tus/1"),
        ("grown.fq", None),
    ]
    assert [f.path for f in plan.small] == ["tiny.txt"]
    assert sorted(u["url"] for u in plan.stale_uploads) == ["/api/tus/2", "/api/tus/3"]
    assert plan.done_bytes == 3 + mib


def test_plan_refuses_a_stored_file_that_differs_from_the_folder() -> None:
    files = [LocalFile("a.fq", "", 4), LocalFile("b.fq", "", 3)]
    delivery = {"files": [stored("a.fq", b"abc"), stored("b.fq", b"xyz")], "uploads": []}
    listing = ChecksumSource(parse(f"{hashlib.md5(b'abc').hexdigest()}  b.fq\n", "md5sum.txt"), "md5sum.txt")
    with pytest.raises(Conflict) as refused:
        make_plan(files, delivery, listing, small_file=1024)
    assert "a.fq (stored 3 bytes, the folder has 4)" in refused.value.message
    assert "b.fq (stored with another checksum than md5sum.txt lists)" in refused.value.message


def test_a_checksum_file_inside_a_subfolder_lists_names_relative_to_it(tmp_path: Path) -> None:
    run = write(
        tmp_path / "RUN1",
        {"lane1/a.fq": b"a", "lane1/md5sum.txt": f"{hashlib.md5(b'a').hexdigest()}  a.fq\n".encode()},
    )
    files = scan_folder(run)
    source = choose_checksum_file(run, run / "lane1" / "md5sum.txt", True, files)
    assert source is not None and source.delivery_path == "lane1/md5sum.txt" and source.extra is None
    assert source.listing.md5("lane1/a.fq") == hashlib.md5(b"a").hexdigest()
    check_listed(source, files, run)


def test_a_checksum_file_from_outside_travels_at_the_top_of_the_delivery(tmp_path: Path) -> None:
    run = write(tmp_path / "RUN1", {"a.fq": b"a", "b.fq": b"b"})
    outside = tmp_path / "RUN1.md5"
    outside.write_text(f"{hashlib.md5(b'a').hexdigest()}  a.fq\n{hashlib.md5(b'c').hexdigest()}  c.fq\n")
    files = scan_folder(run)
    source = choose_checksum_file(run, outside, True, files)
    assert source is not None and source.delivery_path == "RUN1.md5"
    assert source.extra is not None and source.extra.source == str(outside)
    with pytest.raises(FolderRefused, match=r"RUN1\.md5 lists 1 file that RUN1 does not hold.*c\.fq"):
        check_listed(source, files, run)
    (run / "RUN1.md5").write_text("something else entirely\n")
    with pytest.raises(ValidationFailed, match=r"already holds a different RUN1\.md5"):
        choose_checksum_file(run, outside, True, scan_folder(run))


# --- whole deliveries against a live service ---------------------------------------------------------------


@pytest.fixture
def env(ctx: Context, tmp_path: Path) -> Iterator[Env]:
    yield from make_env(ctx, tmp_path)


def test_deliver_a_run_folder_then_download_it_back_byte_for_byte(env: Env, tmp_path: Path) -> None:
    run = make_run(
        tmp_path / "RUN42",
        {"S1_R1.fastq": 3 * MiB + 17, "S1_R2.fastq": 2 * MiB, "lane1/S2_R1.fastq": 5 * MiB,
         "odd names/R1 #1 ?%20 ü.fastq": MiB + 1, "odd names/small #%3F.txt": 10},
        tiny=2000,
    )  # fmt: skip
    sheet = tmp_path / "SampleSheet.csv"
    sheet.write_text("[Data]\nSample_ID,Index\nS1,ACGT\nS2,TTGA\n")

    done = levere(env.staff, "deliver", env.project, str(run), "--metadata", str(sheet))
    assert done.returncode == 0, done.stderr
    assert "delivered and sealed RUN42" in done.stdout
    delivery = env.api(env.staff, f"/projects/{env.project}/deliveries/RUN42")
    assert delivery["state"] == "sealed"
    assert delivery["file_count"] == 2006 and len(delivery["files"]) == 2006
    assert delivery["manifest_sha256"] in done.stdout
    assert delivery["metadata"]["sample_sheet"]["text"].startswith("[Data]")
    # small files went in batches, large ones through tus: far fewer requests than files
    assert env.traffic.calls("POST", "/batch") <= 4
    assert env.traffic.calls("PATCH", "/api/tus/") == 8  # each large file: its body, then its last piece

    back = tmp_path / "back"
    got = levere(env.member, "download", env.project, "RUN42", "--to", str(back))
    assert got.returncode == 0, got.stderr
    assert tree(back / "RUN42") == tree(run)

    # the exported manifest checks the download with md5sum -c
    manifest = levere(
        env.member,
        "manifest",
        env.project,
        "RUN42",
        "--format",
        "md5sum",
        "--output",
        str(tmp_path / "m.md5"),
    )
    assert manifest.returncode == 0, manifest.stderr
    check = subprocess.run(
        ["md5sum", "--quiet", "-c", str(tmp_path / "m.md5")],
        cwd=back / "RUN42",
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert len((tmp_path / "m.md5").read_text().splitlines()) == 2006

    listing = levere(env.member, "--json", "ls", env.project, "RUN42/lane1")
    entries = json.loads(listing.stdout)
    assert [e["path"] for e in entries] == ["RUN42/lane1/S2_R1.fastq"]
    assert entries[0]["sha256"] == hashlib.sha256((run / "lane1/S2_R1.fastq").read_bytes()).hexdigest()

    again = levere(env.staff, "deliver", env.project, str(run))
    assert again.returncode == 0, again.stderr
    assert "already delivered and sealed" in again.stdout


def test_an_interrupted_delivery_resumes_and_sends_nothing_twice(env: Env, tmp_path: Path) -> None:
    size = 96 * MiB
    run = make_run(tmp_path / "RUN7", {"S1_R1.fastq": size}, tiny=300)
    env.traffic.delay = 0.002
    first = start_levere(env.staff, "deliver", env.project, str(run), "--jobs", "2", "--chunk-size", "32M")
    try:
        upload = wait_for_upload(env, "RUN7")
    finally:
        first.kill()  # SIGKILL: no chance to clean up
        first.wait(timeout=10)
    assert first.returncode == -9
    env.traffic.delay = 0
    wait_for_batches(env, "RUN7")
    # HEAD answers with the bytes the service durably holds, once the cut request is finished with
    before = env.api(env.staff, f"/projects/{env.project}/deliveries/RUN7")
    [pending] = before["uploads"]
    head = httpx.head(
        f"{env.service.url}{pending['url']}",
        headers={"Authorization": f"Bearer {env.staff['LEVERE_TOKEN']}", "Tus-Resumable": "1.0.0"},
        timeout=30,
    )
    held = {pending["path"]: int(head.headers["Upload-Offset"])}
    assert before["state"] == "open"
    assert 0 < held["S1_R1.fastq"] < size
    stored_before = {f["path"] for f in before["files"]}
    small_left = [f for f in scan_folder(run) if f.size < MiB and f.path not in stored_before]
    env.traffic.reset()

    second = levere(env.staff, "deliver", env.project, str(run), "--chunk-size", "32M")
    assert second.returncode == 0, second.stderr
    # the large file continued from the service's offset; small files already stored were not resent
    assert env.traffic.bytes("PATCH", "/api/tus/") == size - held["S1_R1.fastq"]
    assert env.traffic.calls("POST", "/api/tus") == 0
    # md5sum.txt lists every file but itself: those members carry the listed MD5
    sent = tarstream.archive_size(small_left, lambda p: None if p == "md5sum.txt" else "listed")
    assert env.traffic.bytes("POST", "/batch") == (sent if small_left else 0)
    after = env.api(env.staff, f"/projects/{env.project}/deliveries/RUN7")
    assert after["state"] == "sealed" and after["file_count"] == 302
    big = next(f for f in after["files"] if f["path"] == "S1_R1.fastq")
    assert big["sha256"] == hashlib.sha256((run / "S1_R1.fastq").read_bytes()).hexdigest()
    assert upload["url"]  # the same upload was resumed, not a new one made


def test_a_service_killed_and_restarted_during_a_delivery_is_waited_out(env: Env, tmp_path: Path) -> None:
    port = free_port()
    staff = env.staff | {"LEVERE_URL": f"http://127.0.0.1:{port}"}
    # one large file only: a batch cut by the crash would leave its reservation behind (see below)
    run = make_run(tmp_path / "RUN8", {"S1_R1.fastq": 48 * MiB}, checksum_file=False)
    server = start_server_process(env.ctx, port, delay=0.002)
    client = start_levere(staff, "deliver", env.project, str(run), "--chunk-size", "16M")
    try:
        wait_for_upload(env, "RUN8", least=0)
        time.sleep(0.3)  # well inside the first PATCH, which the delay makes last seconds
        server.kill()  # SIGKILL: connections drop, nothing is answered
        server.wait()
        during = env.api(env.staff, f"/projects/{env.project}/deliveries/RUN8")
        assert during["state"] == "open" and [u["path"] for u in during["uploads"]] == ["S1_R1.fastq"]
        time.sleep(1.0)
        server = start_server_process(env.ctx, port, delay=0)
        _out, err = client.communicate(timeout=120)
    finally:
        client.kill()
        server.kill()
        server.wait()
    assert client.returncode == 0, err
    delivery = env.api(env.staff, f"/projects/{env.project}/deliveries/RUN8")
    assert delivery["state"] == "sealed"
    big = next(f for f in delivery["files"] if f["path"] == "S1_R1.fastq")
    assert big["md5"] == hashlib.md5((run / "S1_R1.fastq").read_bytes()).hexdigest()


def test_a_wrong_md5_in_the_checksum_file_fails_naming_the_files(env: Env, tmp_path: Path) -> None:
    run = make_run(tmp_path / "RUN9", {"good.fastq": 2 * MiB, "bad.fastq": 2 * MiB}, tiny=20)
    listing = (run / "md5sum.txt").read_text()
    wrong = "0" * 32
    lines = [
        (wrong + line[32:]) if line.endswith(("  bad.fastq", "tile_00003.json")) else line
        for line in listing.splitlines()
    ]
    (run / "md5sum.txt").write_text("\n".join(lines) + "\n")

    failed = levere(env.staff, "deliver", env.project, str(run))
    message = one_line_error(failed)
    assert failed.returncode == 5
    assert "bad.fastq: its MD5 is" in message and f"but md5sum.txt lists {wrong}" in message
    assert "stats/lane3/tile_00003.json" in message
    delivery = env.api(env.staff, f"/projects/{env.project}/deliveries/RUN9")
    assert delivery["state"] != "sealed"
    stored = {f["path"] for f in delivery["files"]}
    assert "good.fastq" in stored
    assert "bad.fastq" not in stored and "stats/lane3/tile_00003.json" not in stored
    assert delivery["uploads"] == []  # the refused upload gave its reserved space back


def test_a_symlink_pointing_outside_fails_before_anything_is_sent(env: Env, tmp_path: Path) -> None:
    outside = tmp_path / "private.txt"
    outside.write_text("not for the project")
    run = make_run(tmp_path / "RUN10", {"S1.fastq": 1000})
    (run / "notes.txt").symlink_to(outside)
    env.traffic.reset()
    failed = levere(env.staff, "deliver", env.project, str(run))
    message = one_line_error(failed)
    assert f"notes.txt -> {outside}" in message and "nothing was sent" in message
    assert env.traffic.requests == {}  # not even a request to open the delivery
    assert env.api(env.staff, f"/projects/{env.project}/deliveries") == []


@pytest.fixture
def small_quota_env(ctx: Context, tmp_path: Path) -> Iterator[Env]:
    yield from make_env(ctx, tmp_path, quota_area_bytes=3 * MiB)


def test_a_delivery_that_cannot_fit_is_refused_with_the_numbers_before_sending(
    small_quota_env: Env, tmp_path: Path
) -> None:
    env = small_quota_env
    run = make_run(tmp_path / "RUN11", {"S1.fastq": 4 * MiB}, checksum_file=False)
    failed = levere(env.staff, "deliver", env.project, str(run))
    message = one_line_error(failed)
    assert failed.returncode == 6
    assert "needs 4.0 MiB more but only 3.0 MiB of the 3.0 MiB area quota" in message
    assert env.traffic.calls("POST", "/api/tus") == 0 and env.traffic.calls("POST", "/batch") == 0
    assert env.api(env.staff, f"/projects/{env.project}/deliveries") == []  # not even opened


def test_the_services_507_reaches_the_user_with_its_numbers(small_quota_env: Env, tmp_path: Path) -> None:
    # the service is the judge: past the client's own check (another upload may take the space
    # meanwhile), its refusal before any byte moves must come through whole
    env = small_quota_env
    run = make_run(tmp_path / "RUN12", {"S1.fastq": 4 * MiB}, checksum_file=False)
    api = Client(Credentials(url=env.service.url, token=env.staff["LEVERE_TOKEN"]))
    assert env.api(env.staff, f"/projects/{env.project}/deliveries") == []
    api.post(f"/projects/{env.project}/deliveries", {"name": "RUN12"})
    upload = TusUpload(api, Retry(attempts=1), Quiet(), env.project, "RUN12", scan_folder(run)[0], Expected())
    with pytest.raises(QuotaExceeded) as refused:
        upload.run()
    assert "3.0 MiB" in refused.value.message and "4.0 MiB" in refused.value.message
    assert env.traffic.bytes("PATCH", "/api/tus/") == 0
    delivery = env.api(env.staff, f"/projects/{env.project}/deliveries/RUN12")
    assert delivery["files"] == [] and delivery["uploads"] == []


def test_no_seal_leaves_the_delivery_open_and_a_second_run_only_seals(env: Env, tmp_path: Path) -> None:
    run = make_run(tmp_path / "RUN13", {"S1.fastq": 2 * MiB}, tiny=5)
    name = "RUN 13 #x?"  # any one path component is a name: it must travel quoted
    first = levere(env.staff, "--json", "deliver", env.project, str(run), "--no-seal", "--name", name)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["state"] == "open"
    env.traffic.reset()
    second = levere(env.staff, "--json", "deliver", env.project, str(run), "--name", name)
    assert second.returncode == 0, second.stderr
    receipt = json.loads(second.stdout)
    assert receipt["delivery"] == name
    assert (receipt["state"], receipt["sent_files"], receipt["sent_bytes"]) == ("sealed", 0, 0)
    assert receipt["checksum_file"] == "md5sum.txt" and receipt["checked_by_service"] is True
    assert env.traffic.calls("POST", "/batch") == 0 and env.traffic.calls("POST", "/api/tus") == 0


def test_a_batch_broken_by_a_service_crash_is_finished_in_the_same_run(env: Env, tmp_path: Path) -> None:
    # 2 streams of 4,500 small files; the service commits every 2,000, so a crash mid-batch leaves
    # some files stored and the rest to be sent again once it is back
    port = free_port()
    staff = env.staff | {"LEVERE_URL": f"http://127.0.0.1:{port}"}
    run = make_run(tmp_path / "RUN14", {}, tiny=9000, checksum_file=False)

    def held() -> int:
        listed = env.api(env.staff, f"/projects/{env.project}/deliveries")
        return next((d["file_count"] for d in listed if d["name"] == "RUN14"), 0)

    server = start_server_process(env.ctx, port, delay=0.03)
    client = start_levere(staff, "deliver", env.project, str(run), "--no-seal")
    try:
        deadline = time.monotonic() + 60
        while held() == 0:
            assert time.monotonic() < deadline and client.poll() is None, "no batch got under way"
            time.sleep(0.02)
        server.kill()
        server.wait()
        assert 0 < held() < 9000
        time.sleep(1.0)
        server = start_server_process(env.ctx, port, delay=0)
        _out, err = client.communicate(timeout=120)
    finally:
        client.kill()
        server.kill()
        server.wait()
    assert client.returncode == 0, err
    delivery = env.api(env.staff, f"/projects/{env.project}/deliveries/RUN14")
    assert delivery["file_count"] == 9000
    assert {f["path"]: f["size"] for f in delivery["files"]} == {f.path: f.size for f in scan_folder(run)}

    sealed = levere(env.staff, "deliver", env.project, str(run))
    if sealed.returncode != 0 and "upload(s) still in progress" in sealed.stderr:
        # known service bug: the crashed process's batch reservations stay active (and block the
        # seal) until their lease runs out; the client cannot see or cancel them
        pytest.xfail("service: reservations of batches cut by a crash block sealing until they expire")
    assert sealed.returncode == 0, sealed.stderr
    assert env.api(env.staff, f"/projects/{env.project}/deliveries/RUN14")["state"] == "sealed"
