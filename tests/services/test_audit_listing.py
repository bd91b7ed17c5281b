"""The audit listing names each object as people know it, in the API and in ``levere audit list``."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient

from levere.context import Context
from levere.domain.roles import ProjectRole
from levere.services import accounts, applications, deliveries, projects
from tests.cli_live import cli_env, levere
from tests.conftest import LiveServer
from tests.helpers import auth, basic_world, complete_form, token_for

UUID = re.compile(r"[0-9a-f]{8}-?[0-9a-f]{4}")


def _story(ctx: Context) -> tuple[str, int, str]:
    world = basic_world(ctx)
    app = applications.create(ctx, world.staff, complete_form(world.facility.name, world.pi.email))
    applications.submit(ctx, world.pi, str(app.number))
    _, project = applications.approve(ctx, world.helpdesk, str(app.number))
    projects.add_member(ctx, world.pi, project.identifier, "late@uib.example.org", ProjectRole.VIEWER)
    deliveries.open_delivery(ctx, world.staff, project.identifier, "RUN42")
    with ctx.tx() as session:
        accounts.update_facility(
            session, session.merge(world.helpdesk), world.facility.name, require_checksum_file=True
        )
    return project.identifier, app.number, token_for(ctx, world.helpdesk)


def test_the_api_labels_each_event_by_the_identifier_people_know(ctx: Context, client: TestClient) -> None:
    identifier, number, token = _story(ctx)
    events = client.get("/api/audit", params={"limit": 100}, headers=auth(token)).json()
    labels = {(e["action"], e["object_label"]) for e in events}
    assert ("application.created", f"application {number}") in labels
    assert ("application.approved", f"application {number}") in labels
    assert ("project.provisioned", identifier) in labels
    assert ("member.added", identifier) in labels
    assert ("delivery.opened", f"{identifier}/RUN42") in labels
    assert ("user.created", "staff@norseq.example.org") in labels
    assert ("facility.updated", "norseq-oslo") in labels
    assert not [e for e in events if UUID.search(e["object_label"])], "an internal id was shown"
    # and an object is found by the same names
    about = client.get("/api/audit", params={"object_id": identifier}, headers=auth(token)).json()
    assert about and {e["object_label"] for e in about} == {identifier}
    about = client.get("/api/audit", params={"object_id": str(number)}, headers=auth(token)).json()
    assert {e["action"] for e in about} >= {"application.created", "application.approved"}


def test_levere_audit_list_shows_identifiers_not_ids(live_server: LiveServer, tmp_path: Path) -> None:
    identifier, number, token = _story(live_server.ctx)
    env = cli_env(tmp_path, live_server.url, token, "helpdesk")
    shown = levere(env, "audit", "list", "--limit", "30")
    assert shown.returncode == 0, shown.stderr
    assert identifier in shown.stdout and f"application {number}" in shown.stdout
    assert f"{identifier}/RUN42" in shown.stdout
    assert not UUID.search(shown.stdout), shown.stdout
    about = levere(env, "audit", "list", "--object", identifier)
    assert (
        about.returncode == 0
        and "project.provisioned" in about.stdout
        and "application.created" not in about.stdout
    )
