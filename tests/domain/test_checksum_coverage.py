"""What a run's checksum file covered: said on the receipt and kept on the delivery, and a facility
that requires a complete checksum file has any other delivery refused (by the CLI before sending,
by the service at sealing)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from levere.context import Context
from levere.db.models import AuditEvent, Facility
from levere.domain.checksum_coverage import ChecksumCoverage
from levere.domain.roles import UserKind
from tests.cli_live import Env, cli_env, levere, make_env, one_line_error
from tests.helpers import make_user, token_for

FILES = {
    "a.fastq": b"@a\nACGT\n+\nIIII\n",
    "b.fastq": b"@b\nGGCC\n+\nIIII\n",
    "c.fastq": b"@c\nTTAA\n+\nIIII\n",
}
PARTIAL = "2 of 3 files verified against md5sum.txt; 1 not listed: c.fastq"
NONE = "no md5sum.txt: checksums computed on arrival only"


@pytest.fixture
def env(ctx: Context, tmp_path: Path) -> Iterator[Env]:
    yield from make_env(ctx, tmp_path)


def run_folder(root: Path, name: str, listed: list[str] | None, tool: str = "md5sum") -> Path:
    """A run folder with FILES and, unless ``listed`` is None, a checksum file listing those names."""
    folder = root / name
    folder.mkdir(parents=True)
    for path, data in FILES.items():
        (folder / path).write_bytes(data)
    if listed is not None:
        out = subprocess.run([tool, *listed], cwd=folder, capture_output=True, check=True).stdout
        (folder / ("md5sum.txt" if tool == "md5sum" else "SHA256SUMS")).write_bytes(out)
    return folder


def require_checksum_file(env: Env, tmp_path: Path, on: bool = True) -> subprocess.CompletedProcess[str]:
    with env.ctx.tx() as session:
        name = session.execute(select(Facility.name)).scalar_one()  # the one facility of the world
    operator = make_user(env.ctx, f"operator-{on}@levere.test", UserKind.HELPDESK, password=None)
    helpdesk_env = cli_env(tmp_path, env.service.url, token_for(env.ctx, operator), f"helpdesk-{on}")
    flag = "--require-checksum-file" if on else "--no-require-checksum-file"
    return levere(helpdesk_env, "facilities", "update", name, flag)


# --- the record and the receipt ----------------------------------------------------------------


def test_the_summary_says_what_was_and_was_not_verified() -> None:
    paths = ["a.fastq", "b.fastq", "c.fastq", "md5sum.txt"]
    assert ChecksumCoverage.of("md5sum.txt", paths, ["a.fastq", "b.fastq"]).summary() == PARTIAL
    assert (
        ChecksumCoverage.of("md5sum.txt", paths, paths[:3]).summary()
        == "all 3 files verified against md5sum.txt"
    )
    assert ChecksumCoverage.of(None, paths[:3], ()).summary() == NONE
    many = ChecksumCoverage.of("run/md5sum.txt", [f"f{i:03}" for i in range(300)], ["f000"])
    assert many.summary().startswith("1 of 300 files verified against md5sum.txt; 299 not listed: f001, f002")
    assert many.summary().endswith("f005 and 294 more") and len(many.unlisted) == 100
    assert ChecksumCoverage.from_record(many.as_record()) == many


def test_a_file_missing_from_md5sum_txt_is_said_on_the_receipt_and_the_delivery(
    env: Env, tmp_path: Path
) -> None:
    run = run_folder(tmp_path, "RUN1", ["a.fastq", "b.fastq"])
    done = levere(env.staff, "deliver", env.project, str(run))
    assert done.returncode == 0, done.stderr
    assert PARTIAL in done.stdout and "verified against md5sum.txt" in done.stdout
    assert "all 3 files" not in done.stdout
    delivery = env.api(env.member, f"/projects/{env.project}/deliveries/RUN1")
    assert delivery["state"] == "sealed"
    assert delivery["checksum_coverage"] == {
        "checksum_file": "md5sum.txt", "files": 3, "verified": 2, "unlisted": ["c.fastq"],
        "checked_by": "levere", "encrypted_only": [], "summary": PARTIAL,
    }  # fmt: skip
    shown = levere(env.member, "deliveries", "show", env.project, "RUN1")
    assert shown.returncode == 0 and PARTIAL in shown.stdout, shown.stderr
    listed = levere(env.member, "ls", env.project, "RUN1/")
    assert listed.returncode == 0 and f"RUN1: {PARTIAL}" in listed.stdout, listed.stderr
    listing = levere(env.member, "deliveries", "list", env.project)
    assert listing.returncode == 0 and PARTIAL in listing.stdout, listing.stdout
    with env.ctx.tx() as session:
        sealed = session.execute(
            select(AuditEvent).where(AuditEvent.action == "delivery.sealed")
        ).scalar_one()
        assert sealed.after is not None and sealed.after["checksum_coverage"] == PARTIAL


def test_a_run_without_a_checksum_file_says_so(env: Env, tmp_path: Path) -> None:
    run = run_folder(tmp_path, "RUN2", None)
    done = levere(env.staff, "--json", "deliver", env.project, str(run))
    assert done.returncode == 0, done.stderr
    receipt = json.loads(done.stdout)
    assert receipt["checksum_coverage"]["summary"] == NONE and receipt["checksum_coverage"]["verified"] == 0
    text = levere(env.staff, "deliver", env.project, str(run))  # sealed already: says the same
    assert (
        text.returncode == 0 and NONE in levere(env.member, "deliveries", "show", env.project, "RUN2").stdout
    )


def test_a_complete_sha256sum_file_is_recorded_as_checked_by_the_client(env: Env, tmp_path: Path) -> None:
    run = run_folder(tmp_path, "RUN3", list(FILES), tool="sha256sum")
    done = levere(env.staff, "deliver", env.project, str(run), "--checksum-file", str(run / "SHA256SUMS"))
    assert done.returncode == 0, done.stderr
    assert "all 3 files verified against SHA256SUMS" in done.stdout
    coverage = env.api(env.member, f"/projects/{env.project}/deliveries/RUN3")["checksum_coverage"]
    assert coverage["checked_by"] == "client" and coverage["verified"] == 3


# --- a facility that requires a complete checksum file -------------------------------------------


def test_a_facility_can_require_a_complete_checksum_file(env: Env, tmp_path: Path) -> None:
    changed = require_checksum_file(env, tmp_path)
    assert changed.returncode == 0 and "requires a checksum file" in changed.stdout, changed.stderr
    for name, listed in (("RUN4", ["a.fastq", "b.fastq"]), ("RUN5", None)):
        run = run_folder(tmp_path, name, listed)
        env.traffic.reset()
        refused = levere(env.staff, "deliver", env.project, str(run))
        line = one_line_error(refused)
        assert refused.returncode == 5 and "requires a checksum file that lists every delivered file" in line
        assert (PARTIAL if listed else NONE) in line and "nothing was sent" in line
        assert env.traffic.calls("POST", "/deliveries") == 0  # refused before anything was made
    complete = run_folder(tmp_path, "RUN6", list(FILES))
    done = levere(env.staff, "deliver", env.project, str(complete))
    assert done.returncode == 0 and "all 3 files verified against md5sum.txt" in done.stdout, done.stderr
    # switched off again: a partial checksum file is accepted, and said so
    assert require_checksum_file(env, tmp_path, on=False).returncode == 0
    assert levere(env.staff, "deliver", env.project, str(tmp_path / "RUN4")).returncode == 0


def test_the_service_refuses_the_seal_and_leaves_the_delivery_open(env: Env, tmp_path: Path) -> None:
    """A client that does not check first (any HTTP client) is refused at sealing."""
    import httpx

    run = run_folder(tmp_path, "RUN7", ["a.fastq", "b.fastq"])
    assert levere(env.staff, "deliver", env.project, str(run), "--no-seal").returncode == 0
    assert require_checksum_file(env, tmp_path).returncode == 0
    url = f"{env.service.url}/api/projects/{env.project}/deliveries/RUN7/seal"
    headers = {"Authorization": f"Bearer {env.staff['LEVERE_TOKEN']}"}
    answer = httpx.post(url, json={"checksum_file": "md5sum.txt"}, headers=headers)
    assert answer.status_code == 409, answer.text
    body = answer.json()
    assert body["error"] == "checksum_file_required" and PARTIAL in body["message"]
    assert body["details"]["coverage"]["unlisted"] == ["c.fastq"]
    assert env.api(env.staff, f"/projects/{env.project}/deliveries/RUN7")["state"] == "open"
    # nor can a client claim a checksum file covers what it does not
    claimed = httpx.post(
        url,
        json={"client_checked": {"checksum_file": "md5sum.txt", "unlisted_count": 5, "unlisted": []}},
        headers=headers,
    )
    assert claimed.status_code == 422, claimed.text
    assert env.api(env.staff, f"/projects/{env.project}/deliveries/RUN7")["state"] == "open"


def test_only_the_helpdesk_changes_a_facility(env: Env, tmp_path: Path) -> None:
    refused = levere(env.staff, "facilities", "update", "norseq-oslo", "--require-checksum-file")
    assert refused.returncode == 3 and "change a facility's settings" in one_line_error(refused)
    assert require_checksum_file(env, tmp_path).returncode == 0
    facilities = levere(env.staff, "--json", "facilities", "list")
    assert json.loads(facilities.stdout)[0]["require_checksum_file"] is True
    with env.ctx.tx() as session:
        event = session.execute(
            select(AuditEvent).where(AuditEvent.action == "facility.updated")
        ).scalar_one()
        assert event.after == {"require_checksum_file": True}
