"""A NUL character in an address (path or query, percent-encoded) is refused with a clear 422 before
any route runs: no name, path or search in levere holds one, and PostgreSQL cannot compare text
with one (the files listing's search answered 500 there)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from levere.context import Context
from levere.services import deliveries
from tests.helpers import auth, basic_world, provisioned_project, token_for


def test_a_nul_in_a_search_or_a_name_is_refused_clearly(ctx: Context, client: TestClient) -> None:
    world = basic_world(ctx)
    identifier = provisioned_project(ctx, world)
    deliveries.open_delivery(ctx, world.staff, identifier, "RUN1")
    staff = auth(token_for(ctx, world.staff))
    files = f"/api/projects/{identifier}/deliveries/RUN1/files"

    assert client.get(files, params={"search": "lane1"}, headers=staff).status_code == 200
    for address in (f"{files}?search=%28%00G", f"/api/projects/{identifier}/deliveries/RU%00N1/files"):
        answer = client.get(address, headers=staff)
        assert answer.status_code == 422, answer.text
        body = answer.json()
        assert body["error"] == "validation_failed" and "NUL character" in body["message"]

    page = client.get(f"/portal/projects/{identifier}?q=%00")
    assert page.status_code == 400 and "NUL character" in page.text
