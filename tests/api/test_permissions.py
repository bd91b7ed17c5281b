"""Every route of the API, with every role, against the permission table.

The expected answer is computed from :data:`levere.domain.roles.PERMISSIONS` with
:func:`~levere.domain.roles.allowed`; each role's relation to the objects is stated here (not taken
from the services' ``subject_for``, which would check the code against itself). Each role walks the
routes in a world of its own, so that what one role changes (an approval, a removed member) cannot
hide a denial for another; and because services check permission before state, a denied request is
a 403 whatever the state.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import BaseRoute, Route

from levere.api.app import create_app
from levere.context import Context
from levere.domain.roles import Action, ProjectRole, Subject, UserKind, allowed
from levere.http_deps import ACTION_KEY
from levere.web.session import PRESESSION_COOKIE, SESSION_COOKIE, csrf_for_presession, csrf_for_session
from tests.helpers import ROLES, permission_world
from tests.permission_samples import Sample, load_all

H, F, U = UserKind.HELPDESK, UserKind.FACILITY, UserKind.USER


def _same(subject: Subject) -> dict[str, Subject]:
    return {"global": subject, "project": subject, "application": subject}


#: each role's relation to the world's objects: "global" (none), its project, its applications
RELATIONS: dict[str, dict[str, Subject]] = {
    "helpdesk": _same(Subject(kind=H)),
    "facility_assigned": {
        "global": Subject(kind=F),
        "project": Subject(kind=F, facility_assigned=True),
        # the staff member drafted the applications, for the facility they name
        "application": Subject(kind=F, facility_assigned=True, is_author=True),
    },
    "facility_other": _same(Subject(kind=F)),
    "admin": _same(Subject(kind=U)) | {"project": Subject(kind=U, project_role=ProjectRole.ADMIN)},
    "member": _same(Subject(kind=U)) | {"project": Subject(kind=U, project_role=ProjectRole.MEMBER)},
    "viewer": _same(Subject(kind=U)) | {"project": Subject(kind=U, project_role=ProjectRole.VIEWER)},
    "pi": _same(Subject(kind=U)) | {"application": Subject(kind=U, is_pi=True)},
    "outsider": _same(Subject(kind=U)),
}
#: routes FastAPI adds itself (the OpenAPI document and its viewer): public, no action
FRAMEWORK_PATHS = {"/api/openapi.json", "/api/docs", "/api/docs/oauth2-redirect"}

SAMPLES, WORLD_HOOKS = load_all()
#: what the role walks saw, for the check after them: which roles walked, which samples succeeded
WALKED: set[str] = set()
SUCCEEDED: dict[tuple[str, str], set[str]] = {}


@dataclass(frozen=True)
class WalkedRoute:
    path: str  # as the app serves it, with every router prefix
    methods: frozenset[str]
    route: APIRoute


def _flattened(app: FastAPI) -> list[tuple[str, frozenset[str], BaseRoute]]:
    """Every route with its full path; newer FastAPI keeps included routers as lazy branches."""
    try:
        from fastapi.routing import iter_route_contexts  # type: ignore[attr-defined]
    except ImportError:  # FastAPI before lazy routers: app.routes is flat
        return [(getattr(r, "path", ""), frozenset(getattr(r, "methods", ()) or ()), r) for r in app.routes]
    return [
        (c.path or "", frozenset(c.methods or ()), c.original_route) for c in iter_route_contexts(app.routes)
    ]


def api_routes(app: FastAPI) -> list[WalkedRoute]:
    found = []
    for path, methods, route in _flattened(app):
        if isinstance(route, APIRoute):
            found.append(WalkedRoute(path, methods, route))
        elif not (isinstance(route, Route) and path in FRAMEWORK_PATHS):
            raise AssertionError(
                f"{route!r} at {path} is not an APIRoute: the permission walk cannot see what it does; "
                "declare it with a router method and openapi_extra=acts(...)"
            )
    return found


def route_action(walked: WalkedRoute) -> Action | None:
    extra = walked.route.openapi_extra or {}
    assert ACTION_KEY in extra, f"{walked.path} does not name its action (openapi_extra=acts(...))"
    value = extra[ACTION_KEY]
    return None if value is None else Action(value)


def test_every_route_names_an_action_and_has_a_sample(ctx: Context) -> None:
    app = create_app(ctx, start_worker=False)
    routes = api_routes(app)
    assert len(routes) >= 30  # the walk below really walks the API
    problems = []
    seen = set()
    for route in routes:
        extra = route.route.openapi_extra or {}
        if ACTION_KEY not in extra:
            problems.append(f"{route.path}: no {ACTION_KEY} (openapi_extra=acts(...))")
            continue
        value = extra[ACTION_KEY]
        if value is not None and value not in {a.value for a in Action}:
            problems.append(f"{route.path}: {value!r} is not an Action")
        for method in route.methods:
            seen.add((method, route.path))
            if (method, route.path) not in SAMPLES:
                problems.append(f"{method} {route.path}: no sample request in tests/permission_samples*.py")
    stale = sorted(set(SAMPLES) - seen)
    problems += [f"{m} {p}: a sample for a route that does not exist" for m, p in stale]
    assert not problems, "\n".join(problems)
    # the action is in the OpenAPI document too, where clients and reviewers see it
    document = app.openapi()
    assert document["paths"]["/api/applications/{ref}/approve"]["post"][ACTION_KEY] == "application.review"


def expected_allowed(role: str, sample: Sample, action: Action | None) -> bool:
    if role == "anonymous":
        return sample.public
    if action is None:
        return True
    return bool(allowed(RELATIONS[role][sample.on], action))


def is_portal(path: str) -> bool:
    return path == "/" or path.startswith("/portal/")


def _send_portal(client: TestClient, world: Any, role: str, method: str, url: str, sample: Sample) -> Any:
    """As a browser would: the session in a cookie, forms with the session's CSRF token."""
    ctx = client.app.state.ctx  # type: ignore[attr-defined]
    token = sample.session(world, role) if sample.session and role in world.tokens else world.tokens.get(role)
    cookies = {PRESESSION_COOKIE: "walk"}
    csrf = csrf_for_presession(ctx, "walk")
    if token:
        cookies[SESSION_COOKIE] = token
        csrf = csrf_for_session(ctx, token)
    client.cookies.clear()
    headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())}
    data = None if sample.form is None else {"csrf": csrf, **sample.form(world, role)}
    # the delivery page's tus client sends the page's CSRF token in a header, and raw bytes
    headers |= {"Levere-Csrf": csrf, **(sample.headers(world, role) if sample.headers else {})}
    content = sample.content(world, role) if sample.content else None
    return client.request(
        method, url, data=data, content=content, params=sample.query, headers=headers, follow_redirects=False
    )


def _to_sign_in(response: Any) -> bool:
    """Sent to sign in first (and back afterwards), as every page does without a session."""
    return response.status_code == 303 and response.headers["location"].startswith("/portal/sign-in?next=")


def _send(client: TestClient, world: Any, role: str, method: str, route: WalkedRoute, sample: Sample) -> Any:
    params = sample.path(world, role)
    # "{name}" or "{name:path}": a path convertor keeps its slashes
    url = re.sub(
        r"\{(\w+)(:\w+)?\}",
        lambda m: quote(params[m.group(1)], safe="@/" if m.group(2) == ":path" else "@"),
        route.path,
    )
    if is_portal(route.path):
        return _send_portal(client, world, role, method, url, sample)
    headers = (sample.headers(world, role) if sample.headers else {}) | world.headers(role)
    if sample.content is not None:
        content = sample.content(world, role)
        return client.request(method, url, content=content, params=sample.query, headers=headers)
    body = sample.json(world, role) if sample.json else None
    return client.request(method, url, json=body, params=sample.query, headers=headers)


@pytest.mark.parametrize("role", ROLES)
def test_every_route_with_role(role: str, ctx: Context, client: TestClient) -> None:
    world = permission_world(ctx)
    for hook in WORLD_HOOKS:
        hook(ctx, world)
    failures = []
    tried = 0
    for route in api_routes(client.app):  # type: ignore[arg-type]
        for method in sorted(route.methods):
            sample = SAMPLES.get((method, route.path))
            if sample is None:
                continue  # test_every_route_names_an_action_and_has_a_sample fails for it
            action = route_action(route)
            response = _send(client, world, role, method, route, sample)
            tried += 1
            status = response.status_code
            portal = is_portal(route.path)
            # a portal form that worked answers with a redirect to the next page (303)
            if status < 300 or (portal and status == 303 and not _to_sign_in(response)):
                SUCCEEDED.setdefault((method, route.path), set()).add(role)
            where = f"{role} {method} {route.path} ({action.value if action else 'open'}): {status}"
            if status >= 500:
                failures.append(f"{where} server error {response.text[:200]}")
            elif portal:
                failures += _portal_failures(where, role, sample, action, response)
            elif role == "anonymous" and not sample.public:
                if status != 401:
                    failures.append(f"{where}, expected 401 without a token")
            elif expected_allowed(role, sample, action):
                if status in (401, 403):
                    failures.append(f"{where}, expected allowed: {response.text[:200]}")
            elif status != 403 or (method != "HEAD" and response.json().get("error") != "access_denied"):
                failures.append(f"{where}, expected 403 access_denied: {response.text[:200]}")
    assert tried >= 30
    WALKED.add(role)
    assert not failures, "\n".join(failures)


def _portal_failures(
    where: str, role: str, sample: Sample, action: Action | None, response: Any
) -> list[str]:
    """A browser is sent to sign in, or shown the "no access" page; never a bare 401 or JSON."""
    status = response.status_code
    if role == "anonymous" and not sample.public:
        return [] if _to_sign_in(response) else [f"{where}, expected a redirect to the sign-in page"]
    if expected_allowed(role, sample, action):
        if status in (401, 403) or _to_sign_in(response):
            return [f"{where}, expected allowed: {response.text[:300]}"]
        return []
    if " /portal/tus/" in where:  # a tus client is answered in the protocol's way, as the API's
        if status != 403 or (response.text and response.json().get("error") != "access_denied"):
            return [f"{where}, expected 403 access_denied: {response.text[:300]}"]
        return []
    if status != 403 or "<h1>No access</h1>" not in response.text:
        return [f"{where}, expected 403 with the no-access page: {response.text[:300]}"]
    return []


def test_every_sample_succeeds_for_some_role() -> None:
    """A sample that every role meets with a 404 or 422 checks no permission: some role must succeed."""
    if set(ROLES) != WALKED:
        pytest.skip("needs the whole walk (every role) in this run")
    never = sorted(key for key, sample in SAMPLES.items() if sample.succeeds and key not in SUCCEEDED)
    assert not never, "no role got a 2xx with the sample of: " + ", ".join(f"{m} {p}" for m, p in never)


def test_the_relations_stated_here_cover_every_role() -> None:
    assert set(RELATIONS) | {"anonymous"} == set(ROLES)
