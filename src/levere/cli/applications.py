"""``levere apply`` and ``levere applications ...``."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer

from levere.cli.accounts import client
from levere.cli.output import State, done, fields, handed_over, result, show, table
from levere.domain.errors import ValidationFailed
from levere.domain.units import format_size

applications = typer.Typer(help="List, show, submit, withdraw and review applications.", no_args_is_help=True)


def read_form_file(path: Path) -> dict[str, Any]:
    import yaml  # only this command reads YAML: the others start without it

    try:
        text = path.read_text()
    except OSError as exc:
        raise ValidationFailed({"file": f"cannot read {path}: {exc.strerror}"}) from None
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ValidationFailed(
            {"file": f"{path} is not valid {path.suffix.lstrip('.') or 'YAML'}: {exc}"}
        ) from None
    if not isinstance(data, dict):
        raise ValidationFailed({"file": f"{path} must hold a table of fields"})
    form: dict[str, Any] = data.get("application", data)
    return form


def parse_member(text: str) -> dict[str, str]:
    email, _, role = text.partition(":")
    return {"email": email.strip(), "role": (role or "member").strip()}


def render(app: dict[str, Any]) -> None:
    members = ", ".join(f"{m['email']} ({m['role']})" for m in app["members"]) or "-"
    granted = ""
    if app["granted_area_bytes"] is not None:
        granted = f"{format_size(app['granted_area_bytes'])} area, {format_size(app['granted_longterm_bytes'])} long-term"
    fields(f"Application {app['number']}", [
        ("state", app["state"].replace("_", " ")),
        ("title", app["title"]),
        ("PI", app["pi_email"]),
        ("data ownership", app["data_ownership"]),
        ("funding", f"{app['funding_source']} {app['grant_id']}".strip()),
        ("description", app["description"]),
        ("facility", app["facility"]),
        ("quota asked", f"{format_size(app['quota_area_bytes'])} area, {format_size(app['quota_longterm_bytes'])} long-term"),
        ("quota granted", granted),
        ("sensitive", "yes" + (f" (secure project {app['secure_project_id']})" if app["secure_project_id"] else "")
         if app["sensitive"] else "no"),
        ("members", members),
        ("review comment", app["review_comment"]),
        ("project", app["project"]),
    ])  # fmt: skip


def apply(
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="A TOML or YAML file with the fields.")
    ] = None,
    title: Annotated[str | None, typer.Option(help="Project title.")] = None,
    pi: Annotated[str | None, typer.Option(help="The PI's e-mail (default: you).")] = None,
    data_ownership: Annotated[str | None, typer.Option(help="Who owns the data.")] = None,
    funding_source: Annotated[
        str | None, typer.Option(help="Funding source, e.g. the Research Council of Norway.")
    ] = None,
    grant_id: Annotated[str | None, typer.Option(help="Grant id.")] = None,
    description: Annotated[str | None, typer.Option(help="Scientific description.")] = None,
    facility: Annotated[str | None, typer.Option(help="The assisting facility's short name.")] = None,
    area_quota: Annotated[str | None, typer.Option(help="Quota for the working area, e.g. 500G.")] = None,
    longterm_quota: Annotated[str | None, typer.Option(help="Quota for long-term storage, e.g. 2T.")] = None,
    sensitive: Annotated[
        bool | None, typer.Option("--sensitive/--not-sensitive", help="Human or otherwise sensitive data.")
    ] = None,
    secure_project: Annotated[
        str | None, typer.Option(help="The users' secure project id (e.g. p1234), if it exists.")
    ] = None,
    member: Annotated[
        list[str] | None, typer.Option(help="EMAIL:ROLE with role admin, member or viewer (repeat).")
    ] = None,
    submit: Annotated[bool, typer.Option(help="Submit at once (only the PI can).")] = False,
) -> None:
    """File an application for a project area and quota (a draft until the PI submits it)."""
    body: dict[str, Any] = read_form_file(file) if file else {}
    if "members" in body:
        body["members"] = [parse_member(m) if isinstance(m, str) else m for m in body["members"]]
    flags = {
        "title": title, "pi_email": pi, "data_ownership": data_ownership, "funding_source": funding_source,
        "grant_id": grant_id, "description": description, "facility": facility, "quota_area_bytes": area_quota,
        "quota_longterm_bytes": longterm_quota, "sensitive": sensitive, "secure_project_id": secure_project,
    }  # fmt: skip
    body.update({k: v for k, v in flags.items() if v is not None})
    if member:
        body["members"] = [parse_member(m) for m in member]
    api = client()
    drafted = app = api.post("/applications", body)
    if submit:
        handover = {k: drafted[k] for k in ("mail_enabled", "invitation_links") if k in drafted}
        app = api.post(f"/applications/{app['number']}/submit") | handover
    show(app, render)
    if not submit and not State.json_output:
        done(
            f"application {app['number']} saved as a draft; the PI submits it with 'levere applications submit {app['number']}'"
        )
    handed_over(drafted)


@applications.command("list")
def list_applications(
    state: Annotated[str | None, typer.Option(help="Only this state (draft, submitted, ...).")] = None,
    queue: Annotated[bool, typer.Option(help="The helpdesk's review queue.")] = False,
) -> None:
    """Applications you can see."""
    data = (
        client().get("/applications/queue")
        if queue
        else client().get("/applications", params={"state": state} if state else None)
    )
    show(data, lambda rows: table("Applications", ["#", "state", "title", "PI", "facility", "area", "long-term", "project"], [
        (a["number"], a["state"].replace("_", " "), a["title"], a["pi_email"], a["facility"],
         format_size(a["granted_area_bytes"] or a["quota_area_bytes"]),
         format_size(a["granted_longterm_bytes"] or a["quota_longterm_bytes"]), a["project"]) for a in rows
    ]))  # fmt: skip


@applications.command("show")
def show_application(number: str) -> None:
    """One application, every field."""
    show(client().get(f"/applications/{quote(number, safe='')}"), render)


@applications.command("edit")
def edit(
    number: str,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="A TOML or YAML file with fields to change.")
    ] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="FIELD=VALUE (repeat).")] = None,
) -> None:
    """Change fields of a draft (or of an application the helpdesk sent back)."""
    body: dict[str, Any] = read_form_file(file) if file else {}
    for pair in set_ or []:
        name, sep, value = pair.partition("=")
        if not sep:
            raise ValidationFailed({"--set": f"{pair!r} is not FIELD=VALUE"})
        body[name.strip()] = value
    if "members" in body:
        members = body["members"]
        items = members.split(",") if isinstance(members, str) else members
        body["members"] = [parse_member(m) if isinstance(m, str) else m for m in items]
    show(client().patch(f"/applications/{quote(number, safe='')}", body), render)


@applications.command("submit")
def submit_application(number: str) -> None:
    """Submit (as the PI, which also confirms a draft made on your behalf)."""
    app = client().post(f"/applications/{quote(number, safe='')}/submit")
    result(app, f"application {app['number']} submitted to the helpdesk")


@applications.command("withdraw")
def withdraw(number: str) -> None:
    """Take back a draft, or a submitted application not yet decided on (its PI or author)."""
    app = client().post(f"/applications/{quote(number, safe='')}/withdraw")
    result(app, f"application {app['number']} withdrawn")


@applications.command("approve")
def approve(
    number: str,
    area_quota: Annotated[
        str | None, typer.Option(help="Grant another working-area quota, e.g. 400G.")
    ] = None,
    longterm_quota: Annotated[str | None, typer.Option(help="Grant another long-term quota.")] = None,
    comment: Annotated[str, typer.Option(help="A note to the applicant.")] = "",
) -> None:
    """Approve and provision the project (helpdesk)."""
    project = client().post(f"/applications/{quote(number, safe='')}/approve", {
        "area_quota": area_quota, "longterm_quota": longterm_quota, "comment": comment})  # fmt: skip
    show(project, lambda p: done(f"application {number} approved: project {p['identifier']} is provisioned"))
    handed_over(project)


@applications.command("reject")
def reject(number: str, reason: Annotated[str, typer.Option(help="Why (sent to the applicant).")]) -> None:
    """Reject with a reason (helpdesk)."""
    app = client().post(f"/applications/{quote(number, safe='')}/reject", {"reason": reason})
    result(app, f"application {number} rejected")


@applications.command("request-changes")
def request_changes(
    number: str, reason: Annotated[str, typer.Option(help="What to change (sent to the applicant).")]
) -> None:
    """Send an application back for changes (helpdesk)."""
    app = client().post(f"/applications/{quote(number, safe='')}/request-changes", {"reason": reason})
    result(app, f"application {number} sent back for changes")


def register(app: typer.Typer) -> None:
    app.command()(apply)
    app.add_typer(applications, name="applications")
