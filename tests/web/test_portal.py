"""The web portal through HTTP: sessions, CSRF, the no-access page, and each role's main pages.

The browser journeys (Chromium, Playwright) are in ``tests/web/test_portal_browser.py``.
"""

from __future__ import annotations

import pyotp
from fastapi.testclient import TestClient

from levere.context import Context
from levere.domain.roles import UserKind
from levere.services import accounts
from tests.helpers import PASSWORD, basic_world, make_facility, make_user, provisioned_project
from tests.portal_support import csrf_of, post_form, sign_in


def test_root_and_pages_lead_an_anonymous_browser_to_sign_in(client: TestClient) -> None:
    assert client.get("/", follow_redirects=False).headers["location"] == "/portal/"
    response = client.get("/portal/review?x=1", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/portal/sign-in?next=%2Fportal%2Freview%3Fx%3D1"
    page = client.get("/portal/sign-in")
    assert page.status_code == 200
    assert '<label for="email">' in page.text and 'name="csrf"' in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]


def test_sign_in_sets_a_safe_session_cookie_and_sign_out_ends_it(ctx: Context, client: TestClient) -> None:
    make_user(ctx, "ann@uni.example.org")
    response = sign_in(client, "ann@uni.example.org")
    assert response.status_code == 303 and response.headers["location"] == "/portal/"
    cookie = response.headers["set-cookie"]
    assert "levere_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "Path=/portal" in cookie
    home = client.get("/portal/")
    assert home.status_code == 200 and "ann@uni.example.org" in home.text
    token = client.cookies.get("levere_session")
    out = client.post("/portal/sign-out", data={"csrf": csrf_of(home.text)}, follow_redirects=False)
    assert out.status_code == 303
    # the session's token is revoked, so a copy of the cookie no longer works either
    client.cookies.set("levere_session", token or "", path="/portal")
    assert client.get("/portal/", follow_redirects=False).status_code == 303


def test_secure_cookie_outside_development(ctx: Context, client: TestClient) -> None:
    make_user(ctx, "ann@uni.example.org")
    object.__setattr__(ctx.settings, "mode", "production")
    try:
        response = sign_in(client, "ann@uni.example.org")
    finally:
        object.__setattr__(ctx.settings, "mode", "development")
    assert "Secure" in response.headers["set-cookie"]


def test_wrong_password_is_said_on_the_form(ctx: Context, client: TestClient) -> None:
    make_user(ctx, "ann@uni.example.org")
    response = sign_in(client, "ann@uni.example.org", password="not the password")
    assert response.status_code == 401
    assert "Wrong e-mail or password" in response.text
    assert 'value="ann@uni.example.org"' in response.text  # kept for the next try


def test_a_form_without_its_csrf_token_changes_nothing(ctx: Context, client: TestClient) -> None:
    make_user(ctx, "ann@uni.example.org")
    sign_in(client, "ann@uni.example.org")
    response = client.post("/portal/account/tokens", data={"name": "x"}, follow_redirects=False)
    assert response.status_code == 403 and "this form has expired" in response.text.lower()
    forged = client.post(
        "/portal/account/tokens", data={"name": "x", "csrf": "0" * 64}, follow_redirects=False
    )
    assert forged.status_code == 403
    with ctx.tx() as session:
        user = accounts.get_user_by_email(session, "ann@uni.example.org")
        assert [t.name for t in accounts.list_tokens(session, user)] == ["portal session"]
    # an anonymous sign-in form from another site is refused too
    client.cookies.clear()
    refused = client.post("/portal/sign-in", data={"email": "ann@uni.example.org", "password": PASSWORD})
    assert refused.status_code == 403


def test_session_expires(ctx: Context, client: TestClient) -> None:
    from datetime import timedelta

    from levere.db.models import ApiToken, utcnow

    make_user(ctx, "ann@uni.example.org")
    sign_in(client, "ann@uni.example.org")
    with ctx.tx() as session:
        record = session.query(ApiToken).filter_by(name="portal session").one()
        assert record.expires_at <= utcnow() + timedelta(minutes=ctx.settings.portal_session_minutes)
        record.expires_at = utcnow() - timedelta(seconds=1)
    response = client.get("/portal/", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].startswith("/portal/sign-in")


def test_helpdesk_must_enrol_a_second_factor_with_a_qr_code(ctx: Context, client: TestClient) -> None:
    make_user(ctx, "desk@levere.test", UserKind.HELPDESK)
    assert sign_in(client, "desk@levere.test").status_code == 303
    gate = client.get("/portal/review", follow_redirects=False)
    assert gate.headers["location"] == "/portal/account/two-factor"
    started = post_form(client, "/portal/account/two-factor", "/portal/account/two-factor", {})
    assert 'src="data:image/svg+xml;base64,' in started.text
    secret = started.text.split('id="totp-secret">')[1].split("<")[0]
    wrong = client.post(
        "/portal/account/two-factor/confirm", data={"csrf": csrf_of(started.text), "code": "000000"}
    )
    assert wrong.status_code == 422 and 'aria-invalid="true"' in wrong.text
    done = client.post(
        "/portal/account/two-factor/confirm",
        data={"csrf": csrf_of(started.text), "code": pyotp.TOTP(secret).now()},
        follow_redirects=False,
    )
    assert done.status_code == 303
    assert client.get("/portal/review").status_code == 200
    # from now on signing in needs the code, and the page says so in its own words
    client.cookies.clear()
    without = sign_in(client, "desk@levere.test")
    assert without.status_code == 401 and "give the one-time code" in without.text
    assert "--totp" not in without.text


def test_no_access_page_in_the_users_words(ctx: Context, client: TestClient) -> None:
    world = basic_world(ctx)
    identifier = provisioned_project(ctx, world)
    make_user(ctx, "stranger@uni.example.org")
    sign_in(client, "stranger@uni.example.org")
    response = client.get(f"/portal/projects/{identifier}")
    assert response.status_code == 403
    assert "<h1>No access</h1>" in response.text and "You do not have access to this page" in response.text
    assert client.get("/portal/dashboard").status_code == 403
    missing = client.get("/portal/no-such-page")
    assert missing.status_code == 404 and "there is no such page" in missing.text.lower()


def test_invitation_sets_a_password_in_the_browser(ctx: Context, client: TestClient) -> None:
    from levere.services import invitations

    with ctx.tx() as session:
        user = accounts.create_user(session, None, "new@uni.example.org")
        _, secret = invitations.create_invitation(ctx, session, None, user.email)
    url = f"/portal/invite/{secret}"
    assert f'href="{url}"' in client.get(f"/invite/{secret}").text  # the e-mailed link leads here
    assert client.get(url).status_code == 200
    differ = post_form(client, url, url, {"password": "long enough 123", "repeat": "other 1234567"})
    assert differ.status_code == 422 and "the two passwords differ" in differ.text
    done = post_form(client, url, url, {"password": "long enough 123", "repeat": "long enough 123"})
    assert done.status_code == 303
    assert client.get(url).status_code == 410
    assert sign_in(client, "new@uni.example.org", "long enough 123").status_code == 303


def test_api_tokens_made_and_revoked(ctx: Context, client: TestClient) -> None:
    make_user(ctx, "ann@uni.example.org")
    sign_in(client, "ann@uni.example.org")
    made = post_form(
        client,
        "/portal/account/tokens",
        "/portal/account/tokens",
        {"name": "laptop", "days": "7", "scopes": "read"},
    )
    token = made.text.split('id="new-token">')[1].split("<")[0]
    assert client.get("/api/projects", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    token_id = token.split("_")[1]
    revoked = post_form(client, "/portal/account/tokens", f"/portal/account/tokens/{token_id}/revoke", {})
    assert revoked.status_code == 303
    assert client.get("/api/projects", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_application_from_draft_to_approval(ctx: Context, client: TestClient, mailbox: object) -> None:
    make_facility(ctx, "seq-a")
    make_user(ctx, "pi@uni.example.org")
    desk = make_user(ctx, "desk@levere.test", UserKind.HELPDESK)
    sign_in(client, "pi@uni.example.org")
    form = {
        "title": "Cod genomes",
        "pi_email": "pi@uni.example.org",
        "data_ownership": "University of Oslo",
        "funding_source": "RCN",
        "description": "Resequencing.",
        "facility": "seq-a",
        "quota_area_bytes": "50Q",
        "quota_longterm_bytes": "2T",
        "member_rows": "2",
        "member_email_0": "not-an-address",
        "member_role_0": "viewer",
        "member_email_1": "",
        "intent": "draft",
    }
    bad = post_form(client, "/portal/applications/new", "/portal/applications/new", form)
    assert bad.status_code == 422
    assert 'id="e-quota_area_bytes"' in bad.text and "is not a size" in bad.text
    assert 'id="m-error-0"' in bad.text and 'value="Cod genomes"' in bad.text  # kept as typed
    form |= {"quota_area_bytes": "50G", "member_email_0": "viewer@uni.example.org"}
    saved = post_form(client, "/portal/applications/new", "/portal/applications/new", form)
    assert saved.status_code == 303
    number = saved.headers["location"].rsplit("/", 1)[1]
    shown = client.get(f"/portal/applications/{number}")
    assert "draft" in shown.text and "50 GiB" in shown.text.replace("50.0", "50")
    submitted = post_form(
        client, f"/portal/applications/{number}", f"/portal/applications/{number}/submit", {}
    )
    assert submitted.status_code == 303
    # the helpdesk approves with another quota
    with ctx.tx() as session:
        merged = session.merge(desk)
        merged.totp_secret = pyotp.random_base32()
        merged.totp_enabled = True
        secret = merged.totp_secret
    client.cookies.clear()
    assert sign_in(client, "desk@levere.test", code=pyotp.TOTP(secret).now()).status_code == 303
    assert f"/portal/applications/{number}" in client.get("/portal/review").text
    approved = post_form(
        client, f"/portal/applications/{number}", f"/portal/applications/{number}/approve", {"area": "100G"}
    )
    assert approved.status_code == 303
    page = client.get(f"/portal/applications/{number}").text
    assert "approved" in page and "granted 100" in page
    assert "Dashboard" in client.get("/portal/dashboard").text


def test_the_pi_answers_a_request_for_changes(ctx: Context, client: TestClient) -> None:
    from levere.services import applications
    from tests.helpers import complete_form

    staff = make_user(ctx, "staff@seq-a.example.org", UserKind.FACILITY, make_facility(ctx, "seq-a"), None)
    pi = make_user(ctx, "pi@uni.example.org")
    desk = make_user(ctx, "desk@levere.test", UserKind.HELPDESK, password=None)
    sent = applications.create(ctx, staff, complete_form("seq-a", pi.email))
    applications.submit(ctx, pi, str(sent.number))
    applications.request_changes(ctx, desk, str(sent.number), "Say which species.")
    sign_in(client, pi.email)
    url = f"/portal/applications/{sent.number}"
    page = client.get(url).text
    assert "Changes requested by the helpdesk" in page and "Say which species." in page
    form = client.get(f"{url}/edit").text
    assert 'value="submit"' in form  # the PI may submit from the form
    answer = {
        "title": "Atlantic cod genomes",
        "pi_email": pi.email,
        "data_ownership": "UiO",
        "funding_source": "RCN",
        "description": "Species: Gadus morhua.",
        "facility": "seq-a",
        "quota_area_bytes": "1T",
        "quota_longterm_bytes": "2T",
        "member_rows": "0",
        "intent": "submit",
    }
    assert post_form(client, f"{url}/edit", f"{url}/edit", answer).status_code == 303
    assert applications.show(ctx, pi, str(sent.number)).state == "submitted"
    assert "Species: Gadus morhua." in client.get(url).text


def test_delivery_page_pages_searches_and_gives_the_manifest(ctx: Context, client: TestClient) -> None:
    import hashlib
    import io
    import re
    import tarfile

    from levere.services import batches, deliveries
    from levere.transfer.pipe import ListSource

    world = basic_world(ctx)
    identifier = provisioned_project(ctx, world)
    deliveries.open_delivery(ctx, world.staff, identifier, "RUN1")
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for i in range(150):
            data = f"read {i}\n".encode()
            info = tarfile.TarInfo(f"lane{i % 2}/s{i:03d}.fq")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    batches.ingest(ctx, world.staff, identifier, "RUN1", ListSource([out.getvalue()]))
    make_user(ctx, "desk@levere.test", UserKind.HELPDESK)  # sees every project, without a second factor
    with ctx.tx() as session:
        desk = accounts.get_user_by_email(session, "desk@levere.test")
        token = accounts.issue_token(ctx, session, desk, "portal session").token
    client.cookies.set("levere_session", token, path="/portal")
    base = f"/portal/projects/{identifier}/deliveries/RUN1"
    links = re.compile(r'href="' + re.escape(base) + r'/files/([^"]+)"')
    first, second = client.get(base).text, client.get(f"{base}?page=2").text
    assert len(links.findall(first)) == 100 and len(links.findall(second)) == 50
    assert (
        "lane0/s000.fq" in links.findall(first)
        and "lane1/s149.fq" in links.findall(second)
        and 'rel="next"' in first
    )
    found = client.get(f"{base}?q=s14").text
    assert sorted(links.findall(found)) == sorted(f"lane{i % 2}/s{i}.fq" for i in range(140, 150))
    manifest = client.get(f"{base}/manifest.md5")
    assert manifest.headers["content-disposition"].endswith("RUN1.md5")
    seventh = hashlib.md5(b"read 7\n").hexdigest()
    assert f"{seventh}  lane1/s007.fq\n" in manifest.text
    download = client.get(f"{base}/files/lane1/s007.fq")
    assert download.content == b"read 7\n" and "attachment" in download.headers["content-disposition"]
    dashboard = client.get("/portal/dashboard?q=nothing-like-it").text
    assert "No project" in dashboard


def test_helpdesk_adds_an_account_and_sees_every_one(
    ctx: Context, client: TestClient, mailbox: object
) -> None:
    make_facility(ctx, "seq-a")
    make_user(ctx, "desk@levere.test", UserKind.HELPDESK)
    with ctx.tx() as session:
        desk = accounts.get_user_by_email(session, "desk@levere.test")
        client.cookies.set("levere_session", accounts.issue_token(ctx, session, desk, "portal session").token)
    refused = post_form(
        client, "/portal/people", "/portal/people", {"email": "kari@seq-a.example.org", "kind": "facility"}
    )
    assert refused.status_code == 422 and 'id="p-facility-error"' in refused.text  # staff need a facility
    assert 'value="kari@seq-a.example.org"' in refused.text
    made = post_form(
        client,
        "/portal/people",
        "/portal/people",
        {"email": "kari@seq-a.example.org", "kind": "facility", "facility": "seq-a", "name": "Kari"},
    )
    assert made.status_code == 303
    page = client.get(made.headers["location"]).text
    assert "kari@seq-a.example.org has an account now" in page
    assert "<td>kari@seq-a.example.org</td><td>Kari</td><td>facility</td><td>seq-a</td>" in page
    mailbox.wait_for("kari@seq-a.example.org", "")  # type: ignore[attr-defined]
