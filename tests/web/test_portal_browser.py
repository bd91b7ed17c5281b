"""Each role's journey through the portal in a real Chromium, against a real ``levere serve``.

Playwright drives Debian's ``chromium`` (``scripts/install-test-deps.sh``); without it these tests
skip and say why. The server is a child process on the test's database, stopped by its PID.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyotp
import pytest

from levere.config import Settings
from levere.context import Context
from levere.domain.roles import UserKind
from levere.services import batches, deliveries
from levere.transfer.pipe import ListSource
from tests.deliveries_support import Server
from tests.helpers import PASSWORD, make_facility, make_user

CHROMIUM = "/usr/bin/chromium"

pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None,
    reason=f"no browser at {CHROMIUM}: run scripts/install-test-deps.sh (Debian's chromium)",
)


@pytest.fixture
def portal(settings: Settings, tmp_path: Path) -> Iterator[Server]:
    server = Server(settings, tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    with sync_api.sync_playwright() as playwright:
        # as root in a container, Chromium's own sandbox cannot start; the pages are our own
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def _tar(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _sign_in(browser: Any, url: str, email: str, code: str = "", **context: Any) -> Any:
    page = browser.new_context(base_url=url, accept_downloads=True, **context).new_page()
    page.goto("/portal/")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    if code:
        page.get_by_label("One-time code").fill(code)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/portal/")
    return page


def test_apply_confirm_approve_deliver_download(
    ctx: Context, portal: Server, browser: Any, tmp_path: Path
) -> None:
    seq = make_facility(ctx, "seq-a")
    staff = make_user(ctx, "staff@seq-a.example.org", UserKind.FACILITY, seq)
    make_user(ctx, "pi@uni.example.org")
    make_user(ctx, "member@uni.example.org")
    make_user(ctx, "viewer@uni.example.org")
    desk = make_user(ctx, "desk@levere.test", UserKind.HELPDESK)
    secret = pyotp.random_base32()
    with ctx.tx() as session:
        merged = session.merge(desk)
        merged.totp_secret, merged.totp_enabled = secret, True

    # the facility fills in the form with the PI's details; a size it cannot read is marked
    page = _sign_in(browser, portal.url, "staff@seq-a.example.org")
    page.get_by_role("link", name="New application").click()
    page.get_by_label("Project title").fill("Cod genomes")
    page.get_by_label("PI's e-mail").fill("pi@uni.example.org")
    page.get_by_label("Data ownership").fill("University of Oslo")
    page.get_by_label("Funding source").fill("Research Council of Norway")
    page.get_by_label("Scientific description").fill("Resequencing of Atlantic cod.")
    page.get_by_label("Working area quota").fill("lots")
    page.get_by_label("Long-term storage quota").fill("2T")
    page.get_by_label("Member 1 e-mail").fill("member@uni.example.org")
    page.get_by_label("Member 2 e-mail").fill("viewer@uni.example.org")
    page.get_by_label("Member 2 role").select_option("viewer")
    assert page.get_by_role("button", name="Save and submit").count() == 0  # only the PI submits
    page.get_by_role("button", name="Save draft").click()
    error = page.locator("#e-quota_area_bytes")
    assert "is not a size" in error.inner_text()
    assert page.get_by_label("Working area quota").get_attribute("aria-invalid") == "true"
    assert page.get_by_label("Project title").input_value() == "Cod genomes"  # nothing typed is lost
    page.get_by_label("Working area quota").fill("50G")
    page.get_by_role("button", name="Save draft").click()
    page.wait_for_url("**/portal/applications/*")
    number = page.url.rsplit("/", 1)[1]
    assert page.locator("#application-state").inner_text() == "draft"

    # the PI confirms it
    page = _sign_in(browser, portal.url, "pi@uni.example.org")
    page.get_by_role("link", name=number, exact=True).click()
    page.get_by_role("button", name="Confirm and submit").click()
    assert page.locator("#application-state").inner_text() == "submitted"

    # the helpdesk approves it with more long-term space than asked for
    page = _sign_in(browser, portal.url, "desk@levere.test", code=pyotp.TOTP(secret).now())
    page.get_by_role("link", name="Review queue").click()
    page.get_by_role("link", name=number, exact=True).click()
    page.get_by_label("Long-term quota to grant").fill("3T")
    page.get_by_role("button", name="Approve and provision").click()
    assert page.locator("#application-state").inner_text() == "approved"
    identifier = page.locator("a[href^='/portal/projects/']").first.inner_text()
    page.get_by_role("link", name="Dashboard").click()
    assert page.get_by_role("link", name=identifier).count() == 1

    # the facility delivers a run (through the service; browser uploads are not there yet)
    deliveries.open_delivery(ctx, staff, identifier, "RUN1")
    reads = b"@r1\nACGT\n+\nIIII\n" * 100
    batches.ingest(
        ctx, staff, identifier, "RUN1", ListSource([_tar({"lane1/reads.fq": reads, "README": b"hi\n"})])
    )

    # a member finds the run and downloads a file and the manifest
    page = _sign_in(browser, portal.url, "member@uni.example.org")
    page.get_by_role("link", name=identifier).click()
    page.get_by_role("link", name="RUN1").click()
    page.get_by_label("Find files whose path contains").fill("lane1")
    page.get_by_role("button", name="Search").click()
    assert page.get_by_role("link", name="README").count() == 0
    with page.expect_download() as info:
        page.get_by_role("link", name="lane1/reads.fq").click()
    saved = tmp_path / "reads.fq"
    info.value.save_as(saved)
    assert saved.read_bytes() == reads
    with page.expect_download() as info:
        page.get_by_role("link", name="Download the manifest (md5sum)").click()
    manifest = tmp_path / "RUN1.md5"
    info.value.save_as(manifest)
    assert f"{hashlib.md5(reads).hexdigest()}  lane1/reads.fq" in manifest.read_text()

    # a viewer sees no edit controls, and a page that is not theirs says so
    page = _sign_in(browser, portal.url, "viewer@uni.example.org")
    page.goto(f"/portal/projects/{identifier}")
    assert page.locator("#my-role").inner_text() == "viewer"
    assert page.get_by_role("button", name="Add member").count() == 0
    assert page.get_by_role("button", name="Change role").count() == 0
    response = page.goto("/portal/dashboard")
    assert response is not None and response.status == 403
    assert page.get_by_role("heading", name="No access").count() == 1


def test_sign_in_page_fits_a_narrow_screen(ctx: Context, portal: Server, browser: Any) -> None:
    make_user(ctx, "ann@uni.example.org")
    page = _sign_in(browser, portal.url, "ann@uni.example.org", viewport={"width": 360, "height": 740})
    for url in ("/portal/", "/portal/applications/new", "/portal/account/tokens"):
        page.goto(url)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{url} is {overflow}px wider than a 360px screen"
    # keyboard: the first Tab reaches the skip link
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"


AXE = Path(__file__).parents[1] / "browser" / "node_modules" / "axe-core" / "axe.min.js"
#: what the check fails on (axe-core's impact levels); "minor" and "moderate" are reported only
SERIOUS = {"serious", "critical"}


def _axe(page: Any) -> list[str]:
    """axe-core's serious and critical findings on the page, one line each."""
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("async () => await axe.run(document)")
    return [
        f"{page.url}: {v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in result["violations"]
        if v["impact"] in SERIOUS
    ]


@pytest.mark.skipif(
    not AXE.exists(), reason="axe-core is not installed: `make test` runs npm ci in tests/browser"
)
def test_main_pages_have_no_serious_accessibility_violations(
    ctx: Context, portal: Server, browser: Any
) -> None:
    from tests.helpers import basic_world, provisioned_project

    world = basic_world(ctx)
    identifier = provisioned_project(ctx, world)
    deliveries.open_delivery(ctx, world.staff, identifier, "RUN1")
    batches.ingest(ctx, world.staff, identifier, "RUN1", ListSource([_tar({"a/r.fq": b"ACGT\n"})]))
    desk = make_user(ctx, "desk@levere.test", UserKind.HELPDESK)
    secret = pyotp.random_base32()
    with ctx.tx() as session:
        merged = session.merge(desk)
        merged.totp_secret, merged.totp_enabled = secret, True
    found: list[str] = []
    # the pages load only their own stylesheet, so the script is let in past the page's CSP
    anonymous = browser.new_context(base_url=portal.url, bypass_csp=True).new_page()
    anonymous.goto("/portal/sign-in")
    found += _axe(anonymous)
    page = _sign_in(browser, portal.url, "desk@levere.test", code=pyotp.TOTP(secret).now(), bypass_csp=True)
    for url in (
        "/portal/",
        "/portal/review",
        "/portal/dashboard",
        "/portal/people",
        "/portal/applications/new",
        "/portal/applications/1",
        f"/portal/projects/{identifier}",
        f"/portal/projects/{identifier}/deliveries/RUN1",
        "/portal/account/tokens",
        "/portal/account/two-factor",
    ):
        page.goto(url)
        found += _axe(page)
    assert not found, "\n".join(found)
