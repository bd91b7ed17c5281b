"""The pages with charts, trails and per-tier columns on a 360 px screen, in a real Chromium."""

from __future__ import annotations

from typing import Any

import pyotp

from levere.context import Context
from levere.db.models import User
from levere.domain.roles import UserKind
from tests.deliveries_support import Server
from tests.helpers import make_user
from tests.sync_support import deliver, random_files, setup_project
from tests.web.test_portal_browser import _axe, _sign_in, pytestmark  # noqa: F401 (skips without Chromium)


def test_project_delivery_and_dashboard_fit_a_narrow_screen(
    ctx: Context, portal: Server, browser: Any
) -> None:
    s = setup_project(ctx, sync_mode="auto")
    deliver(ctx, s, "RUN1", random_files(3, 2000, folder="a-rather-long-folder-name-for-a-narrow-screen"))
    desk = make_user(ctx, "desk@levere.test", UserKind.HELPDESK)
    secret = pyotp.random_base32()
    with ctx.tx() as session:
        row = session.get(User, desk.id)
        assert row is not None
        row.totp_secret, row.totp_enabled = secret, True
    page = _sign_in(
        browser,
        portal.url,
        desk.email,
        code=pyotp.TOTP(secret).now(),
        viewport={"width": 360, "height": 740},
        bypass_csp=True,  # for axe-core's script
    )
    found: list[str] = []
    for url in (
        f"/portal/projects/{s.project}",
        f"/portal/projects/{s.project}/deliveries/RUN1",
        "/portal/dashboard",
    ):
        page.goto(url)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        wide = page.evaluate(
            "[...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > 361)"
            ".slice(0, 8).map(e => e.tagName + '.' + e.className + '#' + e.id + ' ' + e.getBoundingClientRect().right)"
        )
        assert overflow <= 0, f"{url} is {overflow}px wider than a 360px screen: {wide}"
        found += _axe(page)
    assert not found, "\n".join(found)
    page.goto(f"/portal/projects/{s.project}")
    assert page.locator("#use svg").count() == 2 and page.locator("#trail tbody tr").count() > 0
