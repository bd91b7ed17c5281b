"""The secure zone's journey in a real Chromium against a real ``levere serve`` (with its worker):
the helpdesk sees the disk it opened, the facility starts the analysis, reads the report and
releases behind the confirmation, the PI downloads a file encrypted to a pasted key that the stock
``crypt4gh`` tool opens, and the facility is refused afterwards; axe-core and a 360 px screen."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyotp
import pytest

from levere.config import Settings
from levere.context import Context
from levere.db.models import User
from levere.domain.roles import UserKind
from tests.deliveries_support import Server
from tests.helpers import World, make_facility, make_user
from tests.secure.test_zone_download import _key_pair, _stock_decrypt
from tests.secure.zone_support import USERS, make_zone
from tests.web.test_portal_browser import AXE, _axe, _sign_in, pytestmark  # noqa: F401 (skips without Chromium)

FASTQ = b"@read1\nACGTACGTTTGAACGT\n+\nIIIIIIIIIIIIIIII\n" * 3000


@pytest.fixture
def zone_portal(settings: Settings, tmp_path: Path) -> Iterator[Server]:
    """``levere serve`` with its job worker (the analysis runs there) and the test's master key."""
    server = Server(settings, tmp_path)
    assert settings.secure.master_key_file is not None
    server.start(worker=True, LEVERE_SECURE__MASTER_KEY_FILE=str(settings.secure.master_key_file))
    yield server
    server.stop()


def _with_totp(ctx: Context, user: User) -> str:
    secret = pyotp.random_base32()
    with ctx.tx() as session:
        row = session.get(User, user.id)
        assert row is not None
        row.totp_secret, row.totp_enabled = secret, True
    return secret


def _fits(page: Any) -> None:
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{page.url} is {overflow}px wider than a 360px screen"


def test_disk_analysis_release_and_download_in_the_browser(
    ctx: Context, zone_portal: Server, browser: Any, tmp_path: Path
) -> None:
    facility = make_facility(ctx)
    world = World(
        helpdesk=make_user(ctx, "helpdesk@levere.test", UserKind.HELPDESK),
        facility=facility,
        staff=make_user(ctx, "staff@norseq.example.org", UserKind.FACILITY, facility),
        pi=make_user(ctx, "pi@uib.example.org"),
    )
    zone = make_zone(ctx, {"lane1/s1.fastq": FASTQ, "notes.txt": b"a note\n"}, world=world)
    codes = {u.email: _with_totp(ctx, u) for u in (world.helpdesk, world.staff, world.pi)}
    found: list[str] = []
    axe = AXE.exists()
    narrow = {"viewport": {"width": 360, "height": 740}, "bypass_csp": True}

    # the helpdesk opened the disk (the fixture) and finds it in the zone
    page = _sign_in(browser, zone_portal.url, world.helpdesk.email,
                    code=pyotp.TOTP(codes[world.helpdesk.email]).now(), bypass_csp=True)  # fmt: skip
    page.get_by_role("link", name="Secure zone").click()
    page.get_by_role("link", name=zone.disk).click()
    assert page.locator("#disk-state").inner_text() == "open"
    assert page.get_by_role("button", name="Start analysis of RUN1").count() == 0
    found += _axe(page) if axe else []

    # the facility sees its files, starts the analysis and opens the report
    page = _sign_in(browser, zone_portal.url, world.staff.email,
                    code=pyotp.TOTP(codes[world.staff.email]).now(), **narrow)  # fmt: skip
    page.get_by_role("link", name="Secure zone").click()
    page.get_by_role("link", name=zone.disk).click()
    assert page.get_by_role("cell", name="lane1/s1.fastq").count() == 1
    page.get_by_role("button", name="Start analysis of RUN1").click()
    assert "was started" in page.locator("#message").inner_text()
    report = page.get_by_role("link", name="Open the report of lane1/s1.fastq")
    deadline = time.monotonic() + 60
    while report.count() == 0 and time.monotonic() < deadline:
        time.sleep(0.5)
        page.reload()
    assert report.count() == 1, "the analysis did not finish in a minute"
    assert "3,000" in page.locator("table.report").inner_text()
    _fits(page)
    found += _axe(page) if axe else []
    disk_url = page.url
    page.goto(report.get_attribute("href"))
    assert page.locator("svg").count() > 0
    page.goto(disk_url)

    # release behind a confirmation that says what will happen
    page.get_by_role("link", name="Release RUN1").click()
    effects = page.locator("#release-effects").inner_text()
    assert "to the users' secure project " + USERS in effects
    assert "for good" in effects and "destroyed" in effects
    _fits(page)
    found += _axe(page) if axe else []
    page.get_by_role("button", name=f"Release RUN1 to {USERS}").click()
    assert "The release of RUN1 was started (job " in page.locator("#message").inner_text()
    released = page.locator(".no-access")
    deadline = time.monotonic() + 60
    while released.count() == 0 and time.monotonic() < deadline:
        time.sleep(0.5)
        page.reload()
    assert released.count() == 1, "the release did not finish in a minute"
    assert "Released: no access" in released.inner_text()
    assert page.get_by_role("cell", name="lane1/s1.fastq").count() == 0

    # the PI downloads from the users' project, encrypted to a pasted key
    _, sec, pub = _key_pair(tmp_path)
    page = _sign_in(browser, zone_portal.url, world.pi.email,
                    code=pyotp.TOTP(codes[world.pi.email]).now(), **narrow)  # fmt: skip
    page.get_by_role("link", name="Secure zone").click()
    page.get_by_role("link", name=USERS).click()
    _fits(page)
    found += _axe(page) if axe else []
    page.get_by_label("File", exact=True).select_option("RUN1/lane1/s1.fastq")
    page.get_by_label("Or paste a Crypt4GH public key").fill(pub.read_text())
    with page.expect_download() as info:
        page.get_by_role("button", name="Download encrypted").click()
    assert info.value.suggested_filename == "s1.fastq.c4gh"
    saved = tmp_path / "s1.fastq.c4gh"
    info.value.save_as(saved)
    assert _stock_decrypt(saved.read_bytes(), sec) == FASTQ

    # the facility is refused the released delivery's report and files
    # (the next step's code: the one used above does not work twice)
    staff = _sign_in(browser, zone_portal.url, world.staff.email,
                     code=pyotp.TOTP(codes[world.staff.email]).at(time.time() + 30))  # fmt: skip
    response = staff.goto(f"/portal/projects/{zone.project}/deliveries/RUN1")
    assert response is not None and response.status == 403
    assert "released: no access" in staff.locator("main").inner_text()
    assert not found, "\n".join(found)
