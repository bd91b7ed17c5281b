"""The portal's secure-zone pages: shared disks, a disk with its files and reports, the release
behind its confirmation, the users' secure project with downloads encrypted to the reader's key, and
the step-up to a second factor every zone page needs."""

from __future__ import annotations

import hashlib
import re
from datetime import date, timedelta
from pathlib import Path

import pyotp
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from levere.context import Context
from levere.db.models import AuditEvent, FederatedIdentity, User
from levere.domain.roles import UserKind
from levere.services import accounts
from tests.helpers import make_user
from tests.portal_support import csrf_of
from tests.secure.test_zone_download import _key_pair, _stock_decrypt
from tests.secure.zone_support import USERS, add_delivery, make_zone

FASTQ = b"@read1\nACGTACGTTTGAACGT\n+\nIIIIIIIIIIIIIIII\n" * 3000
FILES = {"lane1/s1.fastq": FASTQ, "notes.txt": b"a note\n"}


def _session(ctx: Context, client: TestClient, user: User, *, second_factor: bool = True) -> str:
    with ctx.tx() as session:
        row = session.get(User, user.id)  # not merge: the test may have changed the row since
        assert row is not None
        issued = accounts.issue_token(ctx, session, row, "portal session")
        issued.record.second_factor = second_factor
        token = issued.token
    client.cookies.clear()
    client.cookies.set("levere_session", token, path="/portal")
    return token


def _events(ctx: Context, action: str) -> int:
    with ctx.tx() as session:
        return session.execute(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.action == action)
        ).scalar_one()


def test_facility_sees_its_disk_analyses_and_releases_behind_a_confirmation(
    ctx: Context, client: TestClient
) -> None:
    zone = make_zone(ctx, FILES)
    add_delivery(ctx, zone, "RUN2", {"b.fastq": FASTQ[:3400]})
    staff, pi = zone.world.staff, zone.world.pi

    _session(ctx, client, zone.world.helpdesk)
    listing = client.get("/portal/zone")
    assert listing.status_code == 200 and zone.disk in listing.text
    helpdesk_view = client.get(f"/portal/zone/disks/{zone.disk}")
    # the helpdesk sees the deliveries, not their files, and may neither analyse nor release
    assert "RUN1" in helpdesk_view.text and "lane1/s1.fastq" not in helpdesk_view.text
    assert "Start analysis" not in helpdesk_view.text and ">Release<" not in helpdesk_view.text

    _session(ctx, client, staff)
    page = client.get(f"/portal/zone/disks/{zone.disk}")
    assert page.status_code == 200
    assert "lane1/s1.fastq" in page.text and hashlib.sha256(FASTQ).hexdigest() in page.text
    assert "No analysis report yet." in page.text
    started = client.post(
        f"/portal/zone/disks/{zone.disk}/deliveries/RUN1/analysis",
        data={"csrf": csrf_of(page.text)},
        follow_redirects=False,
    )
    assert started.status_code == 303
    page = client.get(started.headers["location"])
    assert "was started" in page.text and "Open the report of lane1/s1.fastq" in page.text
    assert "3,000" in page.text  # the reads, from the JSON summary
    assert "sealed, 2 files)" in page.text  # the files as delivered; the reports are the report
    report = client.get(
        f"/portal/zone/disks/{zone.disk}/deliveries/RUN1/qc", params={"file": "lane1/s1.fastq"}
    )
    assert report.status_code == 200 and report.headers["cache-control"] == "no-store"
    assert b"<svg" in report.content

    confirm = client.get(f"/portal/zone/disks/{zone.disk}/deliveries/RUN1/release")
    assert confirm.status_code == 200
    effects = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", confirm.text))
    # the analysis added its reports to the delivery: 2 files + summary + one page
    assert "4 files" in effects and "2 of them the analysis' reports" in effects
    assert USERS in effects and "for good" in effects
    assert "keep " + zone.disk + " open" in effects  # RUN2 is still on it
    assert _events(ctx, "delivery.released") == 0  # the confirmation changes nothing
    done = client.post(
        f"/portal/zone/disks/{zone.disk}/deliveries/RUN1/release",
        data={"csrf": csrf_of(confirm.text)},
        follow_redirects=False,
    )
    assert done.status_code == 303
    after = client.get(done.headers["location"])
    # a job (run at once in tests): the flash names it, the disk's page shows its outcome
    assert re.search(r"The release of RUN1 was started \(job [0-9a-f-]+\)", after.text)
    assert done.headers["location"].endswith("#delivery-RUN1")
    assert "Released: no access" in after.text and "lane1/s1.fastq" not in after.text
    assert client.get(f"/portal/zone/disks/{zone.disk}/deliveries/RUN1/release").status_code == 403
    # the last delivery: the confirmation says the disk's key goes
    last = client.get(f"/portal/zone/disks/{zone.disk}/deliveries/RUN2/release")
    assert "destroyed" in last.text

    # the PI (project admin) reads the released files on the users' project page
    _session(ctx, client, pi)
    users_page = client.get(f"/portal/zone/projects/{USERS}")
    assert users_page.status_code == 200 and "RUN1/lane1/s1.fastq" in users_page.text


def test_downloads_are_encrypted_to_the_identity_key_or_a_pasted_one(
    ctx: Context, client: TestClient, tmp_path: Path
) -> None:
    from levere.services import zone_release

    zone = make_zone(ctx, FILES)
    zone_release.release(ctx, zone.world.staff, zone.disk, zone.delivery)
    pi = zone.world.pi
    _, sec, pub = _key_pair(tmp_path, "id")
    _, sec2, pub2 = _key_pair(tmp_path, "pasted")
    _session(ctx, client, pi)
    base = f"/portal/zone/projects/{USERS}/download"
    # no key from the sign-in and none pasted: the page says what to do
    refused = client.get(base, params={"file": "RUN1/lane1/s1.fastq"})
    assert refused.status_code == 422 and "paste your Crypt4GH public key" in refused.text
    bad = client.get(base, params={"file": "RUN1/lane1/s1.fastq", "pubkey": "not a key"})
    assert bad.status_code == 422 and 'aria-invalid="true"' in bad.text
    pasted = client.get(base, params={"file": "RUN1/lane1/s1.fastq", "pubkey": pub2.read_text()})
    assert pasted.status_code == 200
    assert pasted.headers["content-disposition"].endswith("s1.fastq.c4gh")
    assert _stock_decrypt(pasted.content, sec2) == FASTQ
    with ctx.tx() as session:
        session.add(
            FederatedIdentity(
                user_id=pi.id, provider="lifescience", issuer="https://login.example.org/oidc/",
                subject="ola@lifescience.example", crypt4gh_public_keys=[pub.read_text()],
            )
        )  # fmt: skip
    page = client.get(f"/portal/zone/projects/{USERS}")
    assert "The links below use the key your sign-in gave levere (lifescience" in page.text
    found = client.get(base, params={"file": "RUN1/lane1/s1.fastq"})
    assert found.status_code == 200 and _stock_decrypt(found.content, sec) == FASTQ


def test_admin_lets_staff_in_until_a_day_and_removes_them(ctx: Context, client: TestClient) -> None:
    zone = make_zone(ctx, FILES)
    helper = make_user(ctx, "helper@levere.test", UserKind.HELPDESK, password=None)
    _session(ctx, client, zone.world.pi)
    page = client.get(f"/portal/zone/projects/{USERS}")
    day = (date.today() + timedelta(days=10)).isoformat()
    wrong = client.post(
        f"/portal/zone/projects/{USERS}/members",
        data={"csrf": csrf_of(page.text), "email": zone.world.pi.email, "ends_at": day},
    )
    assert wrong.status_code == 422 and "only helpdesk operators and facility staff" in wrong.text
    made = client.post(
        f"/portal/zone/projects/{USERS}/members",
        data={"csrf": csrf_of(page.text), "email": helper.email, "ends_at": day},
        follow_redirects=False,
    )
    assert made.status_code == 303
    page = client.get(f"/portal/zone/projects/{USERS}")
    assert helper.email in page.text and f"{day} 23:59 UTC" in page.text and ">active<" in page.text
    removed = client.post(
        f"/portal/zone/projects/{USERS}/members/{helper.email}/remove",
        data={"csrf": csrf_of(page.text)},
        follow_redirects=False,
    )
    assert removed.status_code == 303
    assert "removed " in client.get(f"/portal/zone/projects/{USERS}").text
    # a member of the research project sees the staff list but no controls
    member = make_user(ctx, "researcher@uib.example.org", password=None)
    from levere.domain.roles import ProjectRole
    from levere.services import invitations, projects

    with invitations.handover():
        projects.add_member(ctx, zone.world.pi, zone.project, member.email, ProjectRole.MEMBER)
    _session(ctx, client, member)
    page = client.get(f"/portal/zone/projects/{USERS}")
    assert helper.email in page.text and "Let in" not in page.text and "Remove" not in page.text


def test_zone_pages_ask_for_a_second_factor_and_the_step_up_gives_it(
    ctx: Context, client: TestClient
) -> None:
    zone = make_zone(ctx, FILES)
    user = make_user(ctx, "ann@uib.example.org", password=None)
    secret = pyotp.random_base32()
    with ctx.tx() as session:
        row = session.get(User, zone.world.staff.id)
        assert row is not None
        row.totp_secret, row.totp_enabled = secret, True
    _session(ctx, client, zone.world.staff, second_factor=False)
    sent = client.get(f"/portal/zone/disks/{zone.disk}", follow_redirects=False)
    assert sent.status_code == 303
    assert sent.headers["location"] == f"/portal/account/step-up?next=%2Fportal%2Fzone%2Fdisks%2F{zone.disk}"
    form = client.get(sent.headers["location"])
    wrong = client.post("/portal/account/step-up", data={"csrf": csrf_of(form.text), "code": "000000",
                                                        "next": f"/portal/zone/disks/{zone.disk}"})  # fmt: skip
    assert wrong.status_code == 422 and "wrong" in wrong.text, wrong.text[-900:]
    done = client.post(
        "/portal/account/step-up",
        data={
            "csrf": csrf_of(form.text),
            "code": pyotp.TOTP(secret).now(),
            "next": f"/portal/zone/disks/{zone.disk}",
        },
        follow_redirects=False,
    )
    assert done.status_code == 303 and done.headers["location"] == f"/portal/zone/disks/{zone.disk}"
    assert client.get(done.headers["location"]).status_code == 200
    # without two-factor sign-in set up, the step-up page says how to get it
    _session(ctx, client, user, second_factor=False)
    assert "Set up two-factor sign-in" in client.get("/portal/account/step-up").text
    # with it, a page that is not theirs answers "no access"
    _session(ctx, client, user)
    refused = client.get(f"/portal/zone/disks/{zone.disk}")
    assert refused.status_code == 403 and "<h1>No access</h1>" in refused.text


def test_a_destroyed_disk_lists_its_files_and_reads_no_report(ctx: Context, client: TestClient) -> None:
    from levere.services import secure_disks, zone_analysis

    zone = make_zone(ctx, FILES)
    zone_analysis.request_analysis(ctx, zone.world.staff, zone.disk, zone.delivery)  # runs at once
    secure_disks.destroy(ctx, zone.world.helpdesk, zone.disk)
    _session(ctx, client, zone.world.staff)
    page = client.get(f"/portal/zone/disks/{zone.disk}")
    assert page.status_code == 200 and "destroyed, with its keys" in page.text
    assert "lane1/s1.fastq" in page.text and "Open the report" not in page.text
    assert "Start analysis" not in page.text and ">Release<" not in page.text


def test_a_release_under_way_shows_its_progress_and_no_second_release_button(
    ctx: Context, producer: Context, client: TestClient
) -> None:
    from levere.services import zone_release

    zone = make_zone(ctx, FILES)
    queued = zone_release.request_release(producer, zone.world.staff, zone.disk, "RUN1")  # no worker
    _session(ctx, client, zone.world.staff)
    disk_page = client.get(f"/portal/zone/disks/{zone.disk}")
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", disk_page.text))
    assert f"Release in progress (job {queued.id}, queued): 0 of 2 files done." in text
    assert 'aria-label="Release RUN1"' not in disk_page.text
    assert 'aria-label="Start analysis of RUN1"' not in disk_page.text
    # the confirmation's form sent again (a second tab): the same job, not a second one
    confirm = client.get(f"/portal/zone/disks/{zone.disk}/deliveries/RUN1/release")
    again = client.post(
        f"/portal/zone/disks/{zone.disk}/deliveries/RUN1/release",
        data={"csrf": csrf_of(confirm.text)},
        follow_redirects=False,
    )
    assert again.status_code == 303
    assert f"(job {queued.id})" in client.get(again.headers["location"]).text
    assert _events(ctx, "delivery.release_requested") == 1
