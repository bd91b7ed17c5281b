"""Sample requests for the federated sign-in routes (routes/federation.py).

The world gets a provider in its settings that is never contacted (linking, listing and unlinking
identities need only its issuer), and one linked identity per role to unlink."""

from __future__ import annotations

from typing import Any

from levere.config import OidcProviderSettings, OidcSettings
from levere.services import federation
from tests.helpers import PermissionWorld
from tests.permission_samples import Sample

TARGET_SUBJECT = "target-subject"


def extend_world(ctx: Any, world: PermissionWorld) -> None:
    ctx.settings.oidc = OidcSettings(
        providers=[OidcProviderSettings(name="op", issuer="https://op.example", client_id="levere")]
    )
    helpdesk = world.users["helpdesk"]
    for role, user in world.users.items():
        federation.link_identity(ctx, helpdesk, user.email, "op", f"subject-{role}")
    federation.link_identity(ctx, helpdesk, world.target_email, "op", TARGET_SUBJECT)


SAMPLES: dict[tuple[str, str], Sample] = {
    ("GET", "/api/auth/providers"): Sample(public=True),
    # starting and finishing a sign-in needs a provider that answers: tests/test_oidc*.py use a real
    # one; here an unknown provider, state or handle (404) checks that the routes are open
    ("POST", "/api/auth/oidc/{provider}/browser"): Sample(
        public=True,
        path=lambda _w, _r: {"provider": "unknown"},
        json=lambda _w, _r: {"redirect_uri": "http://127.0.0.1:5000/callback"},
        succeeds=False,
    ),
    ("POST", "/api/auth/oidc/callback"): Sample(
        public=True, json=lambda _w, _r: {"state": "no-such-state", "code": "x"}, succeeds=False
    ),
    ("POST", "/api/auth/oidc/{provider}/device"): Sample(
        public=True, path=lambda _w, _r: {"provider": "unknown"}, json=lambda _w, _r: {}, succeeds=False
    ),
    ("POST", "/api/auth/oidc/device/poll"): Sample(
        public=True, json=lambda _w, _r: {"handle": "no-such-handle"}, succeeds=False
    ),
    # the portal's side: the button's form (an unknown provider, as above), the callback the provider
    # sends the browser to (a redirect to the portal's page) and that page (without a state this
    # browser started, refused); tests/web/test_portal_oidc.py signs in through them for real
    ("POST", "/portal/auth/oidc/{provider}"): Sample(
        public=True, path=lambda _w, _r: {"provider": "unknown"}, form=lambda _w, _r: {}, succeeds=False
    ),
    ("GET", "/auth/oidc/callback"): Sample(public=True, query={"state": "s", "code": "c"}, succeeds=False),
    ("GET", "/portal/auth/oidc/callback"): Sample(
        public=True, query={"state": "no-such-state", "code": "x"}, succeeds=False
    ),
    # a valid code needs a TOTP secret enrolled first: the sample checks the gate only
    ("POST", "/api/me/step-up"): Sample(json=lambda _w, _r: {"code": "000000"}, succeeds=False),
    ("GET", "/api/me/identities"): Sample(),
    ("GET", "/api/me/recipient-keys"): Sample(),
    ("DELETE", "/api/me/identities/{provider}/{subject}"): Sample(
        path=lambda _w, r: {"provider": "op", "subject": f"subject-{r}"}
    ),
    ("GET", "/api/users/{email}/identities"): Sample(path=lambda w, _r: {"email": w.target_email}),
    ("POST", "/api/users/{email}/identities"): Sample(
        path=lambda w, _r: {"email": w.target_email},
        json=lambda _w, r: {"provider": "op", "subject": f"new-by-{r}"},
    ),
    ("DELETE", "/api/users/{email}/identities/{provider}/{subject}"): Sample(
        path=lambda w, _r: {"email": w.target_email, "provider": "op", "subject": TARGET_SUBJECT}
    ),
}
