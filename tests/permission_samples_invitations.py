"""Sample requests for the invitation routes: the helpdesk's list and resend, and the link's page."""

from __future__ import annotations

from typing import Any

from levere.services import accounts, invitations
from tests.helpers import PermissionWorld
from tests.permission_samples import Sample

PENDING = "pending@uni.example.org"


def extend_world(ctx: Any, world: PermissionWorld) -> None:
    """Someone invited who has not set a password, and a link of their own for the page (the world's
    ``invitation_secret`` is used up by the accept sample, which the walk sends first)."""
    with ctx.tx() as session:
        invited = accounts.create_user(session, None, PENDING)
        _, world.extra["page_secret"] = invitations.create_invitation(ctx, session, None, invited.email)


SAMPLES: dict[tuple[str, str], Sample] = {
    ("GET", "/api/invitations"): Sample(),
    ("POST", "/api/invitations/{email}/resend"): Sample(path=lambda _w, _r: {"email": PENDING}),
    # the page opened by an invitation link: as open as the link itself, and it changes nothing
    ("GET", "/invite/{token}"): Sample(public=True, path=lambda w, _r: {"token": w.extra["page_secret"]}),
}
