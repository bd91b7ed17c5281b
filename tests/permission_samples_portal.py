"""Samples for the web portal's pages (``/portal/...``), walked like the API's routes.

A portal request carries the role's token as the session cookie and its forms the session's CSRF
token. The walk expects what a browser meets: an anonymous visitor is sent to the sign-in page, a
forbidden page answers 403 with the "no access" page, and an allowed form redirects (303).
"""

from __future__ import annotations

from datetime import timedelta

from levere.context import Context
from levere.db.models import utcnow
from levere.domain.roles import ProjectRole
from levere.services import accounts, applications, invitations, projects, uploads
from levere.transfer.wire import encode_metadata
from levere.web.uploads import has_asset
from tests.helpers import PASSWORD, PermissionWorld, complete_form
from tests.permission_samples import PathFn, Sample
from tests.permission_samples_secure import HELPER, READS, RUN, USERS
from tests.permission_samples_zone import PORTAL_RELEASE, PUBKEY

#: a member the portal's member-management samples change and remove (the API's remove theirs)
PORTAL_TARGET = "portal-target@uni.example.org"
APPLICATION_FORM = {
    "title": "Cod genome resequencing",
    "pi_email": "pi@uni.example.org",
    "data_ownership": "University of Oslo",
    "funding_source": "Research Council of Norway",
    "description": "Whole-genome resequencing of Atlantic cod.",
    "facility": "seq-a",
    "quota_area_bytes": "1T",
    "quota_longterm_bytes": "2T",
    "member_rows": "1",
    "member_email_0": "someone@uni.example.org",
    "member_role_0": "viewer",
    "intent": "draft",
}


def _project(w: PermissionWorld, _r: str) -> dict[str, str]:
    return {"identifier": w.project}


def _draft(w: PermissionWorld, _r: str) -> dict[str, str]:
    return {"number": w.extra["portal_draft"]}


def _submitted(review: str) -> PathFn:
    return lambda w, _r: {"number": w.extra["portal_submitted"][review]}


def _delivery(w: PermissionWorld, _r: str) -> dict[str, str]:
    return {"identifier": w.project, "name": w.extra["delivery"]}


def _disk(w: PermissionWorld, _r: str) -> dict[str, str]:
    return {"name": w.extra["disk"]}


def _qc_run(w: PermissionWorld, _r: str) -> dict[str, str]:
    return {"name": w.extra["disk"], "delivery": RUN}


def _to_release(w: PermissionWorld, _r: str) -> dict[str, str]:
    """A sealed delivery on the disk that only the portal's release samples release."""
    return {"name": w.extra["disk"], "delivery": PORTAL_RELEASE}


def _users(_w: PermissionWorld, _r: str) -> dict[str, str]:
    return {"identifier": USERS}


def _day(days: int) -> str:
    return (utcnow() + timedelta(days=days)).date().isoformat()


TUS = {"Tus-Resumable": "1.0.0"}


def _upload(w: PermissionWorld, _r: str) -> dict[str, str]:
    return {"upload_id": w.extra["portal_upload"]}


def _tus_create(w: PermissionWorld, role: str) -> dict[str, str]:
    meta = encode_metadata(
        {"project": w.project, "delivery": w.extra["delivery"], "path": f"page-{role}.bin"}
    )
    return {**TUS, "Upload-Length": "10", "Upload-Metadata": meta}


SAMPLES: dict[tuple[str, str], Sample] = {
    ("GET", "/"): Sample(public=True, succeeds=False),  # a redirect to the portal for everyone
    ("GET", "/portal/"): Sample(),
    ("GET", "/portal/static/{name}"): Sample(public=True, path=lambda _w, _r: {"name": "uploads.js"}),
    ("GET", "/portal/sign-in"): Sample(public=True),
    ("POST", "/portal/sign-in"): Sample(
        public=True, form=lambda w, _r: {"email": w.password_user_email, "password": PASSWORD}
    ),
    # with a session of its own, so that the walk's session lives on
    ("POST", "/portal/sign-out"): Sample(
        session=lambda w, r: w.extra["portal_spare"][r], form=lambda _w, _r: {}
    ),
    ("GET", "/portal/account/two-factor"): Sample(),
    ("POST", "/portal/account/two-factor"): Sample(form=lambda _w, _r: {}),
    # a valid code needs the secret the enrolment page showed: the sample checks the gate only
    ("POST", "/portal/account/two-factor/confirm"): Sample(
        form=lambda _w, _r: {"code": "000000"}, succeeds=False
    ),
    ("GET", "/portal/invite/{secret}"): Sample(
        public=True, path=lambda w, _r: {"secret": w.extra["portal_invitation"]}
    ),
    ("POST", "/portal/invite/{secret}"): Sample(
        public=True,
        path=lambda w, _r: {"secret": w.extra["portal_invitation"]},
        form=lambda _w, _r: {"password": "long enough 123", "repeat": "long enough 123"},
    ),
    ("GET", "/portal/account/tokens"): Sample(),
    ("POST", "/portal/account/tokens"): Sample(form=lambda _w, r: {"name": f"made-{r}", "days": "5"}),
    ("POST", "/portal/account/tokens/{token_id}/revoke"): Sample(
        path=lambda w, r: {"token_id": w.spare_token_ids.get(r, "0000000000000000")}, form=lambda _w, _r: {}
    ),
    ("GET", "/portal/applications/new"): Sample(),
    ("POST", "/portal/applications/new"): Sample(form=lambda _w, _r: APPLICATION_FORM),
    ("GET", "/portal/applications/{number}"): Sample(on="application", path=_draft),
    ("GET", "/portal/applications/{number}/edit"): Sample(on="application", path=_draft),
    ("POST", "/portal/applications/{number}/edit"): Sample(
        on="application", path=_draft, form=lambda _w, _r: APPLICATION_FORM
    ),
    ("POST", "/portal/applications/{number}/submit"): Sample(
        on="application", path=_draft, form=lambda _w, _r: {}
    ),
    ("POST", "/portal/applications/{number}/withdraw"): Sample(
        on="application", path=_draft, form=lambda _w, _r: {}
    ),
    ("POST", "/portal/applications/{number}/approve"): Sample(
        on="application", path=_submitted("approve"), form=lambda _w, _r: {"area": "2T"}
    ),
    ("POST", "/portal/applications/{number}/request-changes"): Sample(
        on="application", path=_submitted("request-changes"), form=lambda _w, _r: {"reason": "more detail"}
    ),
    ("POST", "/portal/applications/{number}/reject"): Sample(
        on="application", path=_submitted("reject"), form=lambda _w, _r: {"reason": "out of scope"}
    ),
    ("GET", "/portal/review"): Sample(),
    ("GET", "/portal/projects/{identifier}"): Sample(on="project", path=_project),
    ("POST", "/portal/projects/{identifier}/members"): Sample(
        on="project",
        path=_project,
        form=lambda _w, _r: {"email": "portal-newcomer@uni.example.org", "role": "viewer"},
    ),
    ("POST", "/portal/projects/{identifier}/members/{email}/role"): Sample(
        on="project",
        path=lambda w, _r: {"identifier": w.project, "email": PORTAL_TARGET},
        form=lambda _w, _r: {"role": "viewer"},
    ),
    ("POST", "/portal/projects/{identifier}/members/{email}/remove"): Sample(
        on="project",
        path=lambda w, _r: {"identifier": w.project, "email": PORTAL_TARGET},
        form=lambda _w, _r: {},
    ),
    ("GET", "/portal/projects/{identifier}/deliveries/{name}"): Sample(on="project", path=_delivery),
    ("GET", "/portal/projects/{identifier}/deliveries/{name}/uploads"): Sample(on="project", path=_delivery),
    ("GET", "/portal/projects/{identifier}/deliveries/{name}/manifest.md5"): Sample(
        on="project", path=_delivery
    ),
    ("GET", "/portal/projects/{identifier}/deliveries/{name}/files/{path:path}"): Sample(
        on="project", path=lambda w, r: _delivery(w, r) | {"path": w.extra["file"]}
    ),
    # the delivery page's tus client (headers as a stock client sends them; the walk adds the CSRF header)
    ("POST", "/portal/tus/"): Sample(on="project", headers=_tus_create),
    ("HEAD", "/portal/tus/{upload_id}"): Sample(on="project", path=_upload, headers=lambda _w, _r: TUS),
    ("PATCH", "/portal/tus/{upload_id}"): Sample(
        on="project",
        path=_upload,
        headers=lambda _w, _r: {
            **TUS,
            "Upload-Offset": "0",
            "Content-Type": "application/offset+octet-stream",
        },
        content=lambda _w, _r: b"0123456789",
    ),
    ("DELETE", "/portal/tus/{upload_id}"): Sample(on="project", path=_upload, headers=lambda _w, _r: TUS),
    # present once `make portal-assets` has run (`make test` runs it)
    ("GET", "/portal/assets/{name}"): Sample(
        public=True, path=lambda _w, _r: {"name": "tus.min.js"}, succeeds=has_asset("tus.min.js")
    ),
    # the step-up to a second factor: a valid code needs the account's secret, so the gate only
    ("GET", "/portal/account/step-up"): Sample(),
    ("POST", "/portal/account/step-up"): Sample(form=lambda _w, _r: {"code": "000000"}, succeeds=False),
    # the secure zone's pages (the world of tests/permission_samples_secure.py and _zone.py)
    ("GET", "/portal/zone"): Sample(),
    ("GET", "/portal/zone/disks/{name}"): Sample(on="project", path=_disk),
    ("POST", "/portal/zone/disks/{name}/deliveries/{delivery}/analysis"): Sample(
        on="project", path=_qc_run, form=lambda _w, _r: {}
    ),
    ("GET", "/portal/zone/disks/{name}/deliveries/{delivery}/qc"): Sample(
        on="project", path=_qc_run, query={"file": READS}
    ),
    ("GET", "/portal/zone/disks/{name}/deliveries/{delivery}/release"): Sample(
        on="project", path=_to_release
    ),
    ("POST", "/portal/zone/disks/{name}/deliveries/{delivery}/release"): Sample(
        on="project", path=_to_release, form=lambda _w, _r: {}
    ),
    ("GET", "/portal/zone/projects/{identifier}"): Sample(on="project", path=_users),
    ("POST", "/portal/zone/projects/{identifier}/members"): Sample(
        on="project", path=_users, form=lambda _w, _r: {"email": HELPER, "ends_at": _day(5)}
    ),
    ("POST", "/portal/zone/projects/{identifier}/members/{email}/remove"): Sample(
        on="project", path=lambda _w, _r: {"identifier": USERS, "email": HELPER}, form=lambda _w, _r: {}
    ),
    ("GET", "/portal/zone/projects/{identifier}/download"): Sample(
        on="project", path=_users, query={"file": "ZONE1/a.fq", "pubkey": PUBKEY}
    ),
    ("GET", "/portal/dashboard"): Sample(),
    ("GET", "/portal/people"): Sample(),
    ("POST", "/portal/people"): Sample(
        form=lambda _w, r: {"email": f"made-in-portal-by-{r}@uni.example.org"}
    ),
}


def extend_world(ctx: Context, world: PermissionWorld) -> None:
    """A second session per role, for signing out without ending the one the walk uses, and an
    invitation and applications of the portal's own (the API's samples, walked before, accept,
    submit and decide the world's ones)."""
    staff, pi = world.users["facility_assigned"], world.users["pi"]
    with invitations.handover():
        projects.add_member(ctx, world.users["admin"], world.project, PORTAL_TARGET, ProjectRole.MEMBER)
    draft = applications.create(
        ctx, staff, complete_form("seq-a", "pi@uni.example.org", title="Portal draft")
    )
    world.extra["portal_draft"] = str(draft.number)
    world.extra["portal_submitted"] = {}
    for review in ("approve", "reject", "request-changes"):
        sent = applications.create(ctx, staff, complete_form("seq-a", "pi@uni.example.org", title=review))
        applications.submit(ctx, pi, str(sent.number))
        world.extra["portal_submitted"][review] = str(sent.number)
    meta = encode_metadata(
        {"project": world.project, "delivery": world.extra["delivery"], "path": "page.bin"}
    )
    upload = uploads.create(
        ctx, staff, {"tus-resumable": "1.0.0", "upload-length": "1000", "upload-metadata": meta}
    )
    world.extra["portal_upload"] = upload.id
    with ctx.tx() as session:
        invited = accounts.create_user(session, None, "invited-in-browser@uni.example.org")
        _, world.extra["portal_invitation"] = invitations.create_invitation(ctx, session, None, invited.email)
        world.extra["portal_spare"] = {
            role: accounts.issue_token(ctx, session, session.merge(user), "portal session").token
            for role, user in world.users.items()
        }
