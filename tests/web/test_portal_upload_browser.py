"""Uploading from the delivery page in a real Chromium with tus-js-client, resumed after a reload."""

from __future__ import annotations

import hashlib
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from levere.context import Context
from levere.db.models import StoredFile, Upload
from levere.domain.roles import ProjectRole, UserKind
from levere.services import deliveries, projects
from levere.web.uploads import has_asset
from tests.deliveries_support import Server
from tests.helpers import basic_world, make_user, provisioned_project
from tests.web.test_portal_browser import _axe, _sign_in, pytestmark  # noqa: F401 (skips without Chromium)

needs_assets = pytest.mark.skipif(
    not has_asset("tus.min.js"), reason="the portal's assets are missing: run `make portal-assets`"
)
MiB = 1024 * 1024


@needs_assets
def test_facility_uploads_from_the_page_and_resumes_after_a_reload(
    ctx: Context, portal: Server, browser: Any, tmp_path: Path
) -> None:
    world = basic_world(ctx)
    identifier = provisioned_project(ctx, world)
    staff = make_user(ctx, "kari@norseq.example.org", UserKind.FACILITY, world.facility)
    deliveries.open_delivery(ctx, staff, identifier, "RUN9")
    small, big = tmp_path / "SampleSheet.csv", tmp_path / "reads.bam"
    small.write_bytes(b"lane,sample\n1,cod\n")
    big.write_bytes(os.urandom(40 * MiB))

    page = _sign_in(browser, portal.url, staff.email)
    page.goto(f"/portal/projects/{identifier}/deliveries/RUN9")
    page.locator("#upload-files").set_input_files(str(small))
    page.get_by_role("button", name="Upload", exact=True).click()
    page.locator(".upload-done").wait_for()

    # a large file, cut off by a reload once some of it is in, then chosen again
    page.locator("#upload-files").set_input_files(str(big))
    page.get_by_role("button", name="Upload", exact=True).click()
    bar = page.locator("#upload-progress li").last.locator("progress")
    deadline = time.monotonic() + 30
    while float(bar.get_attribute("value") or 0) < 8 * MiB:  # the first chunk is in
        assert time.monotonic() < deadline, "the upload did not start"
        time.sleep(0.05)
    # progress in binary units, as people read them
    assert re.fullmatch(
        r"\d+\.\d MiB of 40\.0 MiB",
        page.locator("#upload-progress li").last.locator("span").last.inner_text(),
    )
    page.reload()
    page.locator("#upload-files").set_input_files(str(big))
    page.get_by_role("button", name="Upload", exact=True).click()
    page.locator("#upload-progress .upload-done").wait_for(timeout=60_000)
    assert page.locator("#upload-progress li").last.get_attribute("data-resumed") == "true"

    with ctx.tx() as session:
        stored = {f.path: f.md5 for f in session.execute(select(StoredFile)).scalars()}
        tries = session.execute(select(Upload.id).where(Upload.path == "reads.bam")).all()
    assert stored == {
        "SampleSheet.csv": hashlib.md5(small.read_bytes()).hexdigest(),
        "reads.bam": hashlib.md5(big.read_bytes()).hexdigest(),
    }
    assert len(tries) == 1  # resumed, not started again
    page.reload()
    assert page.get_by_role("link", name="reads.bam").count() == 1
    assert hashlib.md5(big.read_bytes()).hexdigest() in page.content()


def test_the_page_says_how_to_get_the_upload_client_when_it_is_missing(
    ctx: Context, portal: Server, browser: Any
) -> None:
    world = basic_world(ctx)
    identifier = provisioned_project(ctx, world)
    staff = make_user(ctx, "kari@norseq.example.org", UserKind.FACILITY, world.facility)
    deliveries.open_delivery(ctx, staff, identifier, "RUN9")
    page = _sign_in(browser, portal.url, staff.email, bypass_csp=True)
    page.goto(f"/portal/projects/{identifier}/deliveries/RUN9")
    if has_asset("tus.min.js"):
        assert page.get_by_role("button", name="Upload", exact=True).count() == 1
    else:
        assert "make portal-assets" in page.locator("#upload-unavailable").inner_text()
    assert not _axe(page)
    # a member of the project sees no upload form
    member = make_user(ctx, "ola@uib.example.org")
    projects.add_member(ctx, world.helpdesk, identifier, member.email, ProjectRole.MEMBER)
    page = _sign_in(browser, portal.url, member.email)
    page.goto(f"/portal/projects/{identifier}/deliveries/RUN9")
    assert page.locator("#send").count() == 0
