"""Sample requests for the permission walk (``tests/api/test_permissions.py``), one per route.

The walk sends each sample with every role's token and checks the answer against the permission
table, so every route of the API needs a sample here or in a ``permission_samples_*`` module.

Adding samples for your own routes (e.g. deliveries, sync)
----------------------------------------------------------
Create ``tests/permission_samples_<area>.py`` (it is found and merged automatically) with::

    from tests.permission_samples import Sample

    SAMPLES = {
        ("POST", "/api/projects/{identifier}/deliveries"): Sample(
            on="project",
            path=lambda w, role: {"identifier": w.project},
            json=lambda w, role: {"name": f"run-{role}"},
        ),
        ("GET", "/api/projects/{identifier}/deliveries/{name}"): Sample(
            on="project",
            path=lambda w, role: {"identifier": w.project, "name": w.extra["sealed_delivery"]},
        ),
    }

    def extend_world(ctx, world):  # optional: runs once per world, after it is built
        world.extra["sealed_delivery"] = make_sealed_delivery(ctx, world)  # through your services

Keys are ``(METHOD, path template)`` exactly as the app serves them (with the ``/api`` prefix).
``headers`` and ``content`` carry protocol headers and a raw body where JSON does not fit (tus). ``on`` says whose
relation decides the check: ``"project"`` (``world.project``), ``"application"`` (the applications
in the world) or ``"global"`` (only the user's kind). The body must be valid, so that a denial is
never hidden behind a 422. Samples are sent in the order of the app's routes, each role in a fresh
world; a state change made by an allowed role (approving, removing the target member) may turn a
later sample into a 404 or 409 for that role, which counts as allowed.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tests.helpers import PASSWORD, PermissionWorld

PathFn = Callable[[PermissionWorld, str], dict[str, str]]
BodyFn = Callable[[PermissionWorld, str], Any]


def _no_path(_world: PermissionWorld, _role: str) -> dict[str, str]:
    return {}


@dataclass(frozen=True)
class Sample:
    on: Literal["global", "project", "application"] = "global"
    path: PathFn = _no_path
    json: BodyFn | None = None
    query: dict[str, str] = field(default_factory=dict)
    #: extra request headers (e.g. tus's ``Tus-Resumable``, ``Upload-Length``); the token is added
    headers: Callable[[PermissionWorld, str], dict[str, str]] | None = None
    #: a raw body instead of JSON (e.g. a tus PATCH's bytes)
    content: Callable[[PermissionWorld, str], bytes] | None = None
    #: a portal form's fields (sent form-encoded, with the session's CSRF token added)
    form: BodyFn | None = None
    #: the portal session to send instead of the role's own (e.g. for signing out)
    session: Callable[[PermissionWorld, str], str] | None = None
    #: answers without a token (sign-in, invitations, health)
    public: bool = False
    #: some role gets a 2xx with this sample (checked after the whole walk), so that a sample that
    #: only ever meets a 404 or 422 cannot pass for a permission check; False only where success
    #: needs what a sample cannot know (say why)
    succeeds: bool = True


def _project(w: PermissionWorld, _role: str) -> dict[str, str]:
    return {"identifier": w.project}


def _draft(w: PermissionWorld, _role: str) -> dict[str, str]:
    return {"ref": w.draft_application}


def _submitted(review: str) -> PathFn:
    return lambda w, _role: {"ref": w.submitted[review]}


def _target(w: PermissionWorld, _role: str) -> dict[str, str]:
    return {"identifier": w.project, "email": w.target_email}


APPLICATION_BODY = {
    "title": "Cod genome resequencing",
    "pi_email": "pi@uni.example.org",
    "data_ownership": "University of Oslo",
    "funding_source": "Research Council of Norway",
    "grant_id": "RCN-1",
    "description": "Whole-genome resequencing of Atlantic cod.",
    "facility": "seq-a",
    "quota_area_bytes": "1T",
    "quota_longterm_bytes": "2T",
    "members": [{"email": "someone@uni.example.org", "role": "viewer"}],
}

SAMPLES: dict[tuple[str, str], Sample] = {
    ("GET", "/api/health"): Sample(public=True),
    # accounts
    ("POST", "/api/auth/login"): Sample(
        public=True, json=lambda w, _r: {"email": w.password_user_email, "password": PASSWORD}
    ),
    ("POST", "/api/invitations/accept"): Sample(
        public=True, json=lambda w, _r: {"secret": w.invitation_secret, "password": "long enough 123"}
    ),
    ("GET", "/api/me"): Sample(),
    # only the one user with a password (see PermissionWorld) can succeed; the others get a 422
    ("POST", "/api/me/password"): Sample(json=lambda _w, _r: {"current": PASSWORD, "new": PASSWORD}),
    ("GET", "/api/me/tokens"): Sample(),
    ("POST", "/api/me/tokens"): Sample(json=lambda _w, r: {"name": f"extra-{r}", "scopes": ["read"]}),
    ("DELETE", "/api/me/tokens/{token_id}"): Sample(
        path=lambda w, r: {"token_id": w.spare_token_ids.get(r, "0000000000000000")}
    ),
    ("POST", "/api/me/totp"): Sample(),
    # a valid code needs the secret that POST /api/me/totp made: the sample checks the gate only
    ("POST", "/api/me/totp/confirm"): Sample(json=lambda _w, _r: {"code": "000000"}, succeeds=False),
    ("GET", "/api/me/notifications"): Sample(),
    ("POST", "/api/me/notifications/read"): Sample(),
    # administration
    ("GET", "/api/users"): Sample(),
    ("GET", "/api/dashboard"): Sample(),
    ("POST", "/api/users"): Sample(json=lambda _w, r: {"email": f"made-by-{r}@uni.example.org"}),
    ("GET", "/api/facilities"): Sample(),
    ("POST", "/api/facilities"): Sample(
        json=lambda _w, r: {"name": f"new-{r}".replace("_", "-"), "contact_email": "c@new.example.org"}
    ),
    ("PATCH", "/api/facilities/{name}"): Sample(
        path=lambda w, _r: {"name": w.other_facility}, json=lambda _w, _r: {"require_checksum_file": True}
    ),
    ("POST", "/api/facilities/{name}/staff"): Sample(
        path=lambda w, _r: {"name": w.other_facility},
        json=lambda _w, r: {"email": f"staff-by-{r}@seq-b.example.org"},
    ),
    ("GET", "/api/audit"): Sample(query={"limit": "5"}),
    ("GET", "/api/audit/verify"): Sample(),
    ("POST", "/api/audit/anchor"): Sample(),
    # applications
    ("POST", "/api/applications"): Sample(json=lambda _w, _r: APPLICATION_BODY),
    ("GET", "/api/applications"): Sample(),
    ("GET", "/api/applications/queue"): Sample(),
    ("GET", "/api/applications/{ref}"): Sample(on="application", path=_draft),
    ("PATCH", "/api/applications/{ref}"): Sample(
        on="application", path=_draft, json=lambda _w, _r: {"grant_id": "RCN-2"}
    ),
    ("POST", "/api/applications/{ref}/submit"): Sample(on="application", path=_draft),
    ("POST", "/api/applications/{ref}/approve"): Sample(
        on="application", path=_submitted("approve"), json=lambda _w, _r: {"area_quota": "500G"}
    ),
    ("POST", "/api/applications/{ref}/reject"): Sample(
        on="application", path=_submitted("reject"), json=lambda _w, _r: {"reason": "out of scope"}
    ),
    # in each role's own world the draft is withdrawn by its PI or author; nothing later needs it
    ("POST", "/api/applications/{ref}/withdraw"): Sample(on="application", path=_draft),
    ("POST", "/api/applications/{ref}/request-changes"): Sample(
        on="application",
        path=_submitted("request-changes"),
        json=lambda _w, _r: {"reason": "add the grant id"},
    ),
    # projects
    ("GET", "/api/projects"): Sample(),
    ("GET", "/api/projects/{identifier}"): Sample(on="project", path=_project),
    ("GET", "/api/projects/{identifier}/overview"): Sample(on="project", path=_project),
    ("PATCH", "/api/projects/{identifier}"): Sample(
        on="project", path=_project, json=lambda _w, _r: {"sync_mode": "manual"}
    ),
    ("PUT", "/api/projects/{identifier}/quotas/{tier}"): Sample(
        on="project",
        path=lambda w, _r: {"identifier": w.project, "tier": "area"},
        json=lambda _w, _r: {"limit": "600G"},
    ),
    ("GET", "/api/projects/{identifier}/members"): Sample(on="project", path=_project),
    ("POST", "/api/projects/{identifier}/members"): Sample(
        on="project", path=_project, json=lambda w, _r: {"email": w.new_member_email, "role": "viewer"}
    ),
    ("PUT", "/api/projects/{identifier}/members/{email}"): Sample(
        on="project", path=_target, json=lambda _w, _r: {"role": "viewer"}
    ),
    ("DELETE", "/api/projects/{identifier}/members/{email}"): Sample(on="project", path=_target),
    ("POST", "/api/projects/{identifier}/facilities"): Sample(
        on="project", path=_project, json=lambda w, _r: {"facility": w.other_facility}
    ),
}

WorldHook = Callable[[Any, PermissionWorld], None]


def load_all() -> tuple[dict[tuple[str, str], Sample], list[WorldHook]]:
    """These samples plus every ``permission_samples_*`` module's, and their world hooks."""
    samples = dict(SAMPLES)
    hooks: list[WorldHook] = []
    here = Path(__file__).parent
    for info in sorted(pkgutil.iter_modules([str(here)]), key=lambda i: i.name):
        if not info.name.startswith("permission_samples_"):
            continue
        module = importlib.import_module(f"tests.{info.name}")
        for key, sample in getattr(module, "SAMPLES", {}).items():
            if key in samples:
                raise AssertionError(f"{info.name} gives a second sample for {key}")
            samples[key] = sample
        if hasattr(module, "extend_world"):
            hooks.append(module.extend_world)
    return samples, hooks
