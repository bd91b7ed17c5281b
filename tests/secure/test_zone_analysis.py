"""The standard analysis in the secure zone: the job the facility starts on a shared disk's delivery,
its reports stored encrypted with the delivery, and who reads them before and after release."""

from __future__ import annotations

import hashlib
import io
import json
import re
from datetime import timedelta
from pathlib import Path

import pyotp
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from levere.context import Context
from levere.db.models import ApiToken, AuditEvent, FileHeader, JobRun, Replica, SharedDisk, StoredFile, utcnow
from levere.domain.analysis import SUMMARY_PATH, is_fastq
from levere.domain.errors import AccessDenied, DiskReadOnly, NoHeader
from levere.domain.roles import UserKind
from levere.qc import analyse_fastq
from levere.services import secure, zone_analysis
from tests.cli_live import Cli
from tests.conftest import LiveServer, job
from tests.helpers import PASSWORD, auth, make_facility, make_user, token_for
from tests.plaintext_scan import scan_paths
from tests.secure.qc_support import (
    Zone,
    add_zone_file,
    body_path,
    gzipped,
    make_fastq,
    make_zone,
    release,
    with_totp,
    zone_delivery,
)

RUN = "RUN7"


def _expected(name: str, data: bytes) -> dict[str, object]:
    return analyse_fastq(io.BytesIO(data), name=name).summary()


@pytest.fixture
def zone(ctx: Context) -> Zone:
    made = make_zone(ctx)
    zone_delivery(ctx, made, RUN)
    return made


def test_the_job_analyses_plain_and_gzip_fastq_and_agrees_with_levere_qc_on_the_plaintext(
    ctx: Context, zone: Zone
) -> None:
    plain, packed = make_fastq(1), gzipped(make_fastq(2))
    add_zone_file(ctx, zone, RUN, "lane1/a_R1.fastq", plain)
    add_zone_file(ctx, zone, RUN, "lane1/b_R1.fq.gz", packed)
    add_zone_file(ctx, zone, RUN, "SampleSheet.csv", b"Sample_ID,Lane\nA,1\n")  # not FASTQ: left out
    started = zone_analysis.request_analysis(ctx, zone.world.staff, zone.disk, RUN)
    run = job(ctx, started.id)  # the queue runs jobs at once in tests
    assert (run.kind, run.state, run.error) == ("analysis", "done", "")
    assert (run.files_total, run.files_done, run.files_failed) == (2, 2, 0)
    assert run.bytes_total == run.bytes_done == len(plain) + len(packed)
    assert [f["state"] for f in run.report["files"]] == ["done", "done"]

    report = zone_analysis.qc_report(ctx, zone.world.staff, zone.disk, RUN)
    assert [f.path for f in report.files] == ["lane1/a_R1.fastq", "lane1/b_R1.fq.gz"]
    by_path = {e["path"]: e["summary"] for e in report.summary["files"]}
    assert by_path["lane1/a_R1.fastq"] == _expected("lane1/a_R1.fastq", plain)
    assert by_path["lane1/b_R1.fq.gz"] == _expected("lane1/b_R1.fq.gz", packed)
    assert by_path["lane1/b_R1.fq.gz"]["file"]["compression"] == "gzip"
    first = report.files[0]
    assert first.reads == 600 and first.gc_fraction == by_path["lane1/a_R1.fastq"]["gc"]["fraction"]
    # both sides of the disk read it before release: the users' project admin (the PI) too
    assert zone_analysis.qc_report(ctx, zone.world.pi, zone.disk, RUN).summary == report.summary
    page = zone_analysis.qc_page(ctx, zone.world.pi, zone.disk, RUN, "lane1/b_R1.fq.gz")
    assert page.html == analyse_fastq(io.BytesIO(packed), name="lane1/b_R1.fq.gz").to_html()
    with ctx.tx() as session:
        reads = session.execute(
            select(AuditEvent.action).where(AuditEvent.action.like("analysis.%")).order_by(AuditEvent.seq)
        ).scalars()
        assert list(reads) == [
            "analysis.requested", "analysis.finished", "analysis.report_read",
            "analysis.report_read", "analysis.page_read",
        ]  # fmt: skip


def test_the_reports_are_zone_files_encrypted_at_rest_with_a_header_for_the_disk(
    ctx: Context, zone: Zone
) -> None:
    data = make_fastq(3)
    add_zone_file(ctx, zone, RUN, "s.fastq", data)
    zone_analysis.request_analysis(ctx, zone.world.staff, zone.disk, RUN)
    html = zone_analysis.qc_page(ctx, zone.world.staff, zone.disk, RUN, "s.fastq").html
    summary = zone_analysis.qc_report(ctx, zone.world.staff, zone.disk, RUN).summary
    # the figures, as the stored summary holds them (the job's id and the disk's name around them
    # are not sensitive: the audit log names them too)
    figures = json.dumps(summary["files"][0]["summary"]).encode()
    assert figures in json.dumps(summary).encode()
    with ctx.tx() as session:
        reports = {
            f.path: f
            for f in session.execute(select(StoredFile).where(StoredFile.path.like("levere-qc/%"))).scalars()
        }
        assert set(reports) == {SUMMARY_PATH, "levere-qc/s.fastq.html"}
        for file in reports.values():
            headers = session.execute(select(FileHeader).where(FileHeader.file_id == file.id)).scalars().all()
            assert [h.holder_kind for h in headers] == ["disk"]
            replica = session.execute(select(Replica).where(Replica.file_id == file.id)).scalar_one()
            assert (replica.tier, replica.state) == ("secure", "present")
        page_file = reports["levere-qc/s.fastq.html"]
        assert (page_file.size, page_file.sha256) == (len(html), hashlib.sha256(html).hexdigest())
        page_id = page_file.id
    body = body_path(ctx, page_id).read_bytes()
    with ctx.tx() as session:
        stored = session.get(StoredFile, page_id)
        assert stored is not None
        assert (stored.body_size, stored.body_sha256) == (len(body), hashlib.sha256(body).hexdigest())
    # no 32-byte stretch of the reports or of the reads lies anywhere levere stored bytes
    root = ctx.settings.data_dir
    assert body_path(ctx, page_id).is_relative_to(root)  # the scan reads the secure tier
    database = ctx.settings.database_url.removeprefix("sqlite:///")
    # on SQLite, the database file and its write-ahead log too
    places = [
        root,
        *(
            Path(database).parent.glob(Path(database).name + "*")
            if database != ctx.settings.database_url
            else []
        ),
    ]
    for secret in (html, figures, data):
        assert scan_paths(places, secret) == []


def test_a_damaged_body_fails_that_file_clearly_and_the_others_are_analysed(ctx: Context, zone: Zone) -> None:
    good = make_fastq(4)
    add_zone_file(ctx, zone, RUN, "good.fastq.gz", gzipped(good))
    broken = add_zone_file(ctx, zone, RUN, "broken.fastq", make_fastq(5))
    path = body_path(ctx, broken)
    damaged = bytearray(path.read_bytes())
    damaged[70_000] ^= 0x01  # inside the second segment
    path.write_bytes(bytes(damaged))
    run = job(ctx, zone_analysis.request_analysis(ctx, zone.world.staff, zone.disk, RUN).id)
    assert (run.state, run.files_done, run.files_failed) == ("failed", 1, 1)
    assert run.error.startswith("1 of 2 file(s) could not be analysed: broken.fastq: ")
    assert "damaged" in run.error
    failed = {f["path"]: f for f in run.report["files"]}["broken.fastq"]
    assert (failed["state"], failed["error"]) == ("failed", "ciphertext_damaged")
    report = zone_analysis.qc_report(ctx, zone.world.staff, zone.disk, RUN)
    states = {f.path: (f.state, f.error) for f in report.files}
    assert states == {"broken.fastq": ("failed", "ciphertext_damaged"), "good.fastq.gz": ("done", "")}
    with pytest.raises(Exception, match="no analysis report"):
        zone_analysis.qc_page(ctx, zone.world.staff, zone.disk, RUN, "broken.fastq")


def test_a_new_run_replaces_the_reports_and_bad_fastq_is_a_failure_of_its_file(
    ctx: Context, zone: Zone
) -> None:
    add_zone_file(ctx, zone, RUN, "a.fq", make_fastq(6))
    first = zone_analysis.request_analysis(ctx, zone.world.staff, zone.disk, RUN).id
    add_zone_file(ctx, zone, RUN, "b.fq", b"this is not FASTQ\n")
    second = zone_analysis.request_analysis(ctx, zone.world.staff, zone.disk, RUN).id
    report = zone_analysis.qc_report(ctx, zone.world.staff, zone.disk, RUN)
    assert report.job == second != first
    assert {f.path: f.error for f in report.files} == {"a.fq": "", "b.fq": "invalid_fastq"}
    with ctx.tx() as session:
        paths = session.execute(select(StoredFile.path).where(StoredFile.path.like("levere-qc/%"))).scalars()
        assert sorted(paths) == ["levere-qc/a.fq.html", SUMMARY_PATH]  # one of each, the first run's gone


def test_only_the_facility_side_starts_it_and_not_on_a_closed_disk(ctx: Context, zone: Zone) -> None:
    add_zone_file(ctx, zone, RUN, "a.fastq", make_fastq(7))
    elsewhere = make_facility(ctx, "seq-elsewhere")
    other = make_user(ctx, "other@elsewhere.example.org", UserKind.FACILITY, elsewhere, password=None)
    for actor in (zone.world.pi, zone.world.helpdesk, other):
        with pytest.raises(AccessDenied):
            zone_analysis.request_analysis(ctx, actor, zone.disk, RUN)
    with ctx.tx() as session:
        assert session.execute(select(JobRun)).first() is None
    with ctx.tx() as session:
        session.execute(update(SharedDisk).values(ends_at=utcnow()))
    with pytest.raises(DiskReadOnly):
        zone_analysis.request_analysis(ctx, zone.world.staff, zone.disk, RUN)


def test_the_helpdesk_reads_no_report_unless_let_into_the_users_secure_project(
    ctx: Context, zone: Zone
) -> None:
    add_zone_file(ctx, zone, RUN, "a.fastq", make_fastq(12))
    zone_analysis.request_analysis(ctx, zone.world.staff, zone.disk, RUN)
    outsider = make_user(ctx, "someone@uib.example.org", password=None)
    for reader in (zone.world.helpdesk, outsider):
        with pytest.raises(AccessDenied):
            zone_analysis.qc_report(ctx, reader, zone.disk, RUN)
        with pytest.raises(AccessDenied):
            zone_analysis.qc_page(ctx, reader, zone.disk, RUN, "a.fastq")
    secure.invite_member(
        ctx, zone.world.pi, zone.users, zone.world.helpdesk.email, utcnow() + timedelta(days=2)
    )
    assert [f.path for f in zone_analysis.qc_report(ctx, zone.world.helpdesk, zone.disk, RUN).files] == [
        "a.fastq"
    ]


def test_after_release_the_users_read_the_report_and_the_facility_is_told_released_no_access(
    ctx: Context, zone: Zone
) -> None:
    data = make_fastq(8)
    add_zone_file(ctx, zone, RUN, "a.fastq", data)
    zone_analysis.request_analysis(ctx, zone.world.staff, zone.disk, RUN)
    before = zone_analysis.qc_report(ctx, zone.world.pi, zone.disk, RUN).summary
    release(ctx, zone, RUN)
    assert zone_analysis.qc_report(ctx, zone.world.pi, zone.disk, RUN).summary == before
    page = zone_analysis.qc_page(ctx, zone.world.pi, zone.disk, RUN, "a.fastq").html
    assert page == analyse_fastq(io.BytesIO(data), name="a.fastq").to_html()
    for call in (
        lambda: zone_analysis.qc_report(ctx, zone.world.staff, zone.disk, RUN),
        lambda: zone_analysis.qc_page(ctx, zone.world.staff, zone.disk, RUN, "a.fastq"),
        lambda: zone_analysis.request_analysis(ctx, zone.world.staff, zone.disk, RUN),
    ):
        with pytest.raises(NoHeader, match="released: no access"):
            call()


def test_over_the_api_the_zone_routes_need_the_second_factor_and_the_page_is_html(
    ctx: Context, client: TestClient, zone: Zone
) -> None:
    add_zone_file(ctx, zone, RUN, "a.fastq", make_fastq(9))
    base = f"/api/secure/disks/{zone.disk}/deliveries/{RUN}"
    staff, pi = token_for(ctx, zone.world.staff), token_for(ctx, zone.world.pi)
    refused = client.post(f"{base}/analysis", headers=auth(staff))
    assert refused.status_code == 403 and refused.json()["details"]["reason"] == "second_factor_required"
    with ctx.tx() as session:
        assert session.execute(select(JobRun)).first() is None
        session.execute(update(ApiToken).values(second_factor=True))  # as if signed in with a code
    denied = client.post(f"{base}/analysis", headers=auth(pi))
    assert denied.status_code == 403 and denied.json()["error"] == "access_denied"
    started = client.post(f"{base}/analysis", headers=auth(staff))
    assert started.status_code == 202, started.text
    assert started.json()["kind"] == "analysis"
    report = client.get(f"{base}/qc", headers=auth(pi))
    assert report.status_code == 200
    assert [f["path"] for f in report.json()["files"]] == ["a.fastq"]
    page = client.get(f"{base}/qc/page", params={"file": "a.fastq"}, headers=auth(pi))
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-store"
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert b"<h1>Quality report: a.fastq</h1>" in page.content
    missing = client.get(f"{base}/qc/page", params={"file": "nope.fastq"}, headers=auth(pi))
    assert missing.status_code == 404
    with ctx.tx() as session:
        session.execute(update(ApiToken).values(second_factor=False))
    no_factor = client.get(f"{base}/qc", headers=auth(pi))
    assert no_factor.status_code == 403 and no_factor.json()["details"]["reason"] == "second_factor_required"


def test_the_cli_starts_the_analysis_and_prints_the_report_and_a_page(
    ctx: Context, live_server: LiveServer, tmp_path: Path, zone: Zone
) -> None:
    data = make_fastq(10)
    add_zone_file(ctx, zone, RUN, "a.fastq", data)
    add_zone_file(ctx, zone, RUN, "b.fq", b"no FASTQ here\n")
    analyst = make_user(ctx, "analyst@norseq.example.org", UserKind.FACILITY, zone.world.facility)
    secret = with_totp(ctx, analyst.id)
    cli = Cli(url=live_server.url, home=tmp_path / "cli")
    cli.ok(
        "analyst", "login", "--email", analyst.email, "--totp", pyotp.TOTP(secret).now(), password=PASSWORD
    )
    ran = cli.run("analyst", "secure", "analyse", zone.disk, RUN)
    assert ran.returncode == 1
    assert "1 of 2 file(s) could not be analysed: b.fq" in ran.stdout and "Files not analysed" in ran.stdout
    shown = cli.ok("analyst", "secure", "qc", zone.disk, RUN)
    assert "a.fastq" in shown and "600" in shown and "failed: b.fq: not FASTQ" in shown
    listed = cli.json("analyst", "secure", "qc", zone.disk, RUN)
    assert [f["state"] for f in listed["files"]] == ["done", "failed"]
    out = tmp_path / "a.html"
    cli.ok("analyst", "secure", "qc", zone.disk, RUN, "--page", "a.fastq", "--output", str(out))
    assert out.read_bytes() == analyse_fastq(io.BytesIO(data), name="a.fastq").to_html()


def test_every_key_of_the_delivery_summary_is_documented(ctx: Context, zone: Zone) -> None:
    add_zone_file(ctx, zone, RUN, "a.fastq", make_fastq(11))
    add_zone_file(ctx, zone, RUN, "b.fastq", b"")  # empty: a FASTQ file with no reads
    add_zone_file(ctx, zone, RUN, "c.fastq", b">fasta\nACGT\n")
    zone_analysis.request_analysis(ctx, zone.world.staff, zone.disk, RUN)
    summary = zone_analysis.qc_report(ctx, zone.world.staff, zone.disk, RUN).summary
    found = set(summary) | {f"files.{key}" for entry in summary["files"] for key in entry}
    text = (Path(__file__).parents[2] / "docs" / "qc.md").read_text()
    section = text.split("\n### The delivery's summary\n", 1)[1].split("\n## ", 1)[0]
    assert found == set(re.findall(r"^\| `([A-Za-z0-9_.]+)` \|", section, flags=re.MULTILINE))
    assert [f["state"] for f in summary["files"]] == ["done", "done", "failed"]


@pytest.mark.parametrize(
    ("path", "read"),
    [
        ("lane1/S1_R1.fastq.gz", True),
        ("S1.FQ", True),
        ("S1_R2.fq.gz.c4gh", True),
        ("S1.fastq.c4gh", True),
        ("S1.bam", False),
        ("S1.fastq.gz.md5", False),
        ("notes.c4gh", False),
        ("levere-qc/S1.fastq", False),  # levere's own folder is never analysed
    ],
)
def test_which_files_the_analysis_reads(path: str, read: bool) -> None:
    assert is_fastq(path) is read
