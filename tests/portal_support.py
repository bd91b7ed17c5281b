"""Helpers for the portal's tests: signing in through the form, and forms with their CSRF token."""

from __future__ import annotations

import re
from typing import Any

from fastapi.testclient import TestClient

from tests.helpers import PASSWORD

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


def post_form(client: TestClient, page_url: str, action: str, data: dict[str, Any]) -> Any:
    """Open ``page_url`` (for its CSRF token), then send the form to ``action`` without following."""
    token = csrf_of(client.get(page_url).text)
    return client.post(action, data={"csrf": token, **data}, follow_redirects=False)


def sign_in(client: TestClient, email: str, password: str = PASSWORD, code: str = "") -> Any:
    response = post_form(
        client, "/portal/sign-in", "/portal/sign-in", {"email": email, "password": password, "code": code}
    )
    return response
