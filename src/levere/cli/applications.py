"""``levere apply`` and ``levere applications ...``."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer

from levere.cli.accounts import client
from levere.cli.output import State, done, fields, handed_over, result, show, table
from levere.domain.errors import ValidationFailed
from levere.domain.units import SIZE_HELP, format_size, parse_size

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


#: the form's size fields and the flags that set them
SIZE_FLAGS = {"quota_area_bytes": "--area-quota", "quota_longterm_bytes": "--longterm-quota"}
#: every other field given by a flag of ``levere apply``
FLAGS = {
    "title": "--title", "pi_email": "--pi", "data_ownership": "--data-ownership",
    "funding_source": "--funding-source", "grant_id": "--grant-id", "description": "--description",
    "facility": "--facility", "sensitive": "--sensitive", "secure_project_id": "--secure-project",
    "members": "--member", **SIZE_FLAGS,
}  # fmt: skip


def in_file(key: str, path: Path) -> str:
    return f"{key} (in {path.name})"


def sizes_from_file(body: dict[str, Any], path: Path) -> None:
    """Parse the file's sizes here, so that an error names the file's key rather than the API's field.
    A TOML or YAML number is a bare number, under the same rules as one written on a flag."""
    for key in SIZE_FLAGS:
        value = body.get(key)
        if value is not None:
            body[key] = parse_size(value if isinstance(value, bool) else str(value), in_file(key, path))


def renamed(exc: ValidationFailed, names: dict[str, str]) -> ValidationFailed:
    """``exc`` with its fields named as the user wrote them (a flag or a file's key)."""

    def name_of(field: str) -> str:
        base = re.split(r"[.\[]", field, maxsplit=1)[0]
        return names[base] + field[len(base) :] if base in names else field

    return ValidationFailed({name_of(field): why for field, why in exc.fields.items()})


def parse_member(text: str) -> dict[str, str]:
    email, _, role = text.partition(":")
    return {"email": email.strip(), "role": (role or "member").strip()}


def _area(app: dict[str, Any], nbytes: int | None) -> str:
    """An area quota in words: a sensitive project has no working area (its data lands on a shared
    disk in the secure zone, with the disk's own quota)."""
    if app["sensitive"]:
        asked = f"{format_size(nbytes)} asked, " if nbytes else ""
        return f"no area (sensitive data: {asked}not granted)"
    return f"{format_size(nbytes or 0)} area"


def render(app: dict[str, Any]) -> None:
    members = ", ".join(f"{m['email']} ({m['role']})" for m in app["members"]) or "-"
    granted = ""
    if app["granted_longterm_bytes"] is not None:
        granted = (
            f"{_area(app, app['granted_area_bytes'])}, {format_size(app['granted_longterm_bytes'])} long-term"
        )
    fields(f"Application {app['number']}", [
        ("state", app["state"].replace("_", " ")),
        ("title", app["title"]),
        ("PI", app["pi_email"]),
        ("data ownership", app["data_ownership"]),
        ("funding", f"{app['funding_source']} {app['grant_id']}".strip()),
        ("description", app["description"]),
        ("facility", app["facility"]),
        ("quota asked", f"{_area(app, app['quota_area_bytes'])}, {format_size(app['quota_longterm_bytes'])} long-term"),
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
    area_quota: Annotated[
        str | None,
        typer.Option(help=f"Quota for the working area, e.g. 500G (none for sensitive data); {SIZE_HELP}."),
    ] = None,
    longterm_quota: Annotated[
        str | None, typer.Option(help=f"Quota for long-term storage, e.g. 2T; {SIZE_HELP}.")
    ] = None,
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
    names = {key: in_file(key, file) for key in body} if file else {}
    if file:
        sizes_from_file(body, file)
    if "members" in body:
        body["members"] = [parse_member(m) if isinstance(m, str) else m for m in body["members"]]
    flags: dict[str, Any] = {
        "title": title, "pi_email": pi, "data_ownership": data_ownership, "funding_source": funding_source,
        "grant_id": grant_id, "description": description, "facility": facility, "quota_area_bytes": area_quota,
        "quota_longterm_bytes": longterm_quota, "sensitive": sensitive, "secure_project_id": secure_project,
    }  # fmt: skip
    for key, flag in SIZE_FLAGS.items():
        if flags[key] is not None:
            flags[key] = parse_size(str(flags[key]), flag)
    given = {k: v for k, v in flags.items() if v is not None}
    body.update(given)
    if member:
        body["members"] = [parse_member(m) for m in member]
        given["members"] = body["members"]
    names = FLAGS | names | {key: FLAGS[key] for key in given}  # a flag overrides the file's key
    api = client()
    try:
        drafted = app = api.post("/applications", body)
        if submit:
            handover = {k: drafted[k] for k in ("mail_enabled", "invitation_links") if k in drafted}
            app = api.post(f"/applications/{app['number']}/submit") | handover
    except ValidationFailed as exc:
        raise renamed(exc, names) from None
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
         "none" if a["sensitive"] else format_size(a["granted_area_bytes"] or a["quota_area_bytes"]),
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
    names = {key: in_file(key, file) for key in body} if file else {}
    if file:
        sizes_from_file(body, file)
    for pair in set_ or []:
        name, sep, value = pair.partition("=")
        if not sep:
            raise ValidationFailed({"--set": f"{pair!r} is not FIELD=VALUE"})
        name = name.strip()
        names[name] = f"--set {name}"
        body[name] = parse_size(value, names[name]) if name in SIZE_FLAGS else value
    if "members" in body:
        members = body["members"]
        items = members.split(",") if isinstance(members, str) else members
        body["members"] = [parse_member(m) if isinstance(m, str) else m for m in items]
    try:
        changed = client().patch(f"/applications/{quote(number, safe='')}", body)
    except ValidationFailed as exc:
        raise renamed(exc, names) from None
    show(changed, render)


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
        str | None,
        typer.Option(
            help=f"Grant another working-area quota, e.g. 400G (not for sensitive data); {SIZE_HELP}."
        ),
    ] = None,
    longterm_quota: Annotated[
        str | None, typer.Option(help=f"Grant another long-term quota, e.g. 2T; {SIZE_HELP}.")
    ] = None,
    comment: Annotated[str, typer.Option(help="A note to the applicant.")] = "",
) -> None:
    """Approve and provision the project (helpdesk)."""
    body = {
        "area_quota": None if area_quota is None else parse_size(area_quota, "--area-quota"),
        "longterm_quota": None if longterm_quota is None else parse_size(longterm_quota, "--longterm-quota"),
        "comment": comment,
    }
    try:
        project = client().post(f"/applications/{quote(number, safe='')}/approve", body)
    except ValidationFailed as exc:
        raise renamed(exc, {"area_quota": "--area-quota", "longterm_quota": "--longterm-quota"}) from None
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
