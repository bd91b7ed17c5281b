"""A project's page and a delivery's page in the portal: use over time per tier, the viewer's
notifications about the project, its audit trail (for its admins and the helpdesk), and each file's
copy on each tier."""

from __future__ import annotations

import os
import re

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from levere.context import Context
from levere.db.models import Replica, User
from levere.domain.roles import ProjectRole, UserKind
from levere.services import accounts, audit, deliveries, invitations, projects
from levere.services.project_history import TRAIL_PAGE, history
from levere.transfer.wire import encode_metadata
from tests.helpers import auth, make_user, token_for
from tests.sync_support import deliver, random_files, setup_project


def _session_for(ctx: Context, client: TestClient, user: User) -> None:
    with ctx.tx() as session:
        token = accounts.issue_token(ctx, session, session.merge(user), "portal session").token
    client.cookies.set("levere_session", token, path="/portal")


def test_project_page_charts_use_lists_notifications_and_pages_the_trail(
    ctx: Context, client: TestClient
) -> None:
    s = setup_project(ctx, sync_mode="auto")
    files = random_files(3, 4000)
    deliver(ctx, s, "RUN1", files)  # sealed, then synced to long-term at once
    total = sum(len(d) for d in files.values())
    viewer = make_user(ctx, "viewer@uni.example.org", password=None)
    with invitations.handover():
        projects.add_member(ctx, s.world.pi, s.project, viewer.email, ProjectRole.VIEWER)

    # the series end today with each tier's recorded use, built from the stored files and copies
    shown = history(ctx, s.world.pi, s.project)
    by_tier = {series.tier: series for series in shown.series}
    assert by_tier["area"].points[-1].bytes == total and by_tier["longterm"].points[-1].bytes == total
    assert "delivered" in by_tier["area"].basis and "verified" in by_tier["longterm"].basis

    _session_for(ctx, client, s.world.pi)  # the PI is the project's admin
    page = client.get(f"/portal/projects/{s.project}").text
    assert page.count("<svg") == 2 and page.count("<polyline") == 2
    assert 'id="use-area"' in page and 'id="use-longterm"' in page
    assert f"New data in {s.project}: delivery RUN1" in page  # the sealing notice
    assert f"{s.project}/RUN1 is safely on long-term storage" in page
    trail = re.findall(r'<table class="trail">.*?</table>', page, re.S)
    assert trail and "delivery sealed" in trail[0] and "delivery synced" in trail[0]
    assert f"{s.project}/RUN1" in trail[0]  # events named as people name the delivery

    # the viewer sees the charts and their own notifications, not the trail
    _session_for(ctx, client, viewer)
    page = client.get(f"/portal/projects/{s.project}").text
    assert page.count("<svg") == 2 and 'id="trail"' not in page
    assert f"You have joined project {s.project} as viewer" in page
    assert "safely on long-term storage" not in page  # nobody else's notifications

    # the trail is paged, newest first
    with ctx.tx() as session:
        project = projects.get_project(session, s.project)
        for i in range(TRAIL_PAGE + 5):
            audit.record(session, None, "project.noted", "project", project.id, after={"n": i})
    _session_for(ctx, client, s.world.helpdesk)
    first = client.get(f"/portal/projects/{s.project}").text
    assert first.count("project noted") == TRAIL_PAGE and 'rel="next"' in first
    second = client.get(f"/portal/projects/{s.project}?trail=2").text
    assert "project noted" in second and "delivery sealed" in second and 'rel="prev"' in second
    assert 'rel="next"' not in second


def test_delivery_page_shows_each_files_copy_on_each_tier(ctx: Context, client: TestClient) -> None:
    s = setup_project(ctx, sync_mode="auto")
    deliver(ctx, s, "RUN1", {"a.fq": os.urandom(100), "b.fq": os.urandom(200)})
    with ctx.tx() as session:
        project = projects.get_project(session, s.project)
        session.execute(
            update(Replica)
            .where(Replica.tier == "longterm", Replica.key == f"{project.identifier}/RUN1/b.fq")
            .values(state="failed", reason="disk full")
        )
    _session_for(ctx, client, make_user(ctx, "desk@levere.test", UserKind.HELPDESK, password=None))
    page = client.get(f"/portal/projects/{s.project}/deliveries/RUN1").text
    heads = re.findall(r'<th scope="col">([^<]+)</th>', page)
    assert heads[-2:] == ["The project area", "Long-term storage"]
    rows = {
        m.group(1): re.findall(
            r'<td class="copy[^"]*"><span class="tier-name">[^<]+</span>([^<]+)</td>', m.group(0)
        )
        for m in re.finditer(r"<tr>\s*<td><a [^>]*>([^<]+)</a>.*?</tr>", page, re.S)
    }
    assert rows == {"a.fq": ["present", "present"], "b.fq": ["present", "failed"]}
    assert 'class="copy copy-bad"' in page


def test_delivery_page_lists_uploads_in_flight_and_its_listing_follows_them(
    ctx: Context, client: TestClient
) -> None:
    s = setup_project(ctx)
    deliveries.open_delivery(ctx, s.world.staff, s.project, "RUN2")
    staff = {**auth(token_for(ctx, s.world.staff)), "Tus-Resumable": "1.0.0"}
    meta = encode_metadata({"project": s.project, "delivery": "RUN2", "path": "big/reads.fq"})
    created = client.post("/api/tus/", headers={**staff, "Upload-Length": "1000", "Upload-Metadata": meta})
    assert created.status_code == 201, created.text
    _session_for(ctx, client, s.world.pi)
    base = f"/portal/projects/{s.project}/deliveries/RUN2"
    page = client.get(base).text
    assert 'data-poll="' + base + '/uploads"' in page and "/static/uploads.js" in page
    assert re.search(r'big/reads.fq</span> <progress max="1000" value="0"', page)
    assert client.get(f"{base}/uploads").json() == {
        "uploads": [{"path": "big/reads.fq", "offset": 0, "length": 1000}]
    }
    sent = client.patch(
        created.headers["location"],
        content=b"x" * 400,
        headers={**staff, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"},
    )
    assert sent.status_code == 204, sent.text
    assert client.get(f"{base}/uploads").json()["uploads"][0]["offset"] == 400
    assert "400 B of 1000 B (40%)" in client.get(base).text
    # the listing is the delivery's: the same rule as its page
    _session_for(ctx, client, make_user(ctx, "outsider@uni.example.org", password=None))
    assert client.get(f"{base}/uploads").status_code == 403


def test_without_the_portal_assets_the_page_says_how_to_get_browser_uploads(
    ctx: Context, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import levere.web.projects
    import levere.web.uploads

    s = setup_project(ctx)
    deliveries.open_delivery(ctx, s.world.staff, s.project, "RUN3")
    for module in (levere.web.projects, levere.web.uploads):
        monkeypatch.setattr(module, "has_asset", lambda _name: False)
    _session_for(ctx, client, s.world.staff)
    page = client.get(f"/portal/projects/{s.project}/deliveries/RUN3").text
    assert 'id="upload-unavailable"' in page and "make portal-assets" in page
    assert "tus.min.js" not in page and 'id="upload-form"' not in page
    missing = client.get("/portal/assets/tus.min.js")
    assert missing.status_code == 404 and "make portal-assets" in missing.text
    # the project's members get no upload form at all (only the facility uploads)
    _session_for(ctx, client, s.world.pi)
    assert 'id="send"' not in client.get(f"/portal/projects/{s.project}/deliveries/RUN3").text
