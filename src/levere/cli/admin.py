"""Helpdesk administration: ``levere facilities``, ``levere users``, ``levere invitations``, ``levere audit``."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import typer

from levere.cli.accounts import client
from levere.cli.output import done, err_console, handed_over, result, show, table
from levere.domain.errors import ValidationFailed
from levere.domain.units import count

facilities = typer.Typer(help="Sequencing facilities and their staff.", no_args_is_help=True)
users = typer.Typer(help="Accounts (helpdesk).", no_args_is_help=True)
invitations = typer.Typer(
    help="Invitations not yet accepted: list and re-send (helpdesk).", no_args_is_help=True
)
audit = typer.Typer(help="The tamper-evident audit log (helpdesk).", no_args_is_help=True)


@facilities.command("list")
def list_facilities() -> None:
    """Facilities known to levere."""
    data = client().get("/facilities")
    show(data, lambda rows: table("Facilities", ["name", "display name", "contact", "checksum file"], [
        (f["name"], f["display_name"], f["contact_email"], "required" if f.get("require_checksum_file") else "-")
        for f in rows]))  # fmt: skip


@facilities.command("create")
def create_facility(
    name: Annotated[str, typer.Argument(help="Short name, e.g. norseq-oslo.")],
    contact: Annotated[str, typer.Option(help="The facility's contact e-mail.")],
    display_name: Annotated[str, typer.Option(help="Full name.")] = "",
) -> None:
    """Register a facility (helpdesk)."""
    f = client().post("/facilities", {"name": name, "display_name": display_name, "contact_email": contact})
    result(f, f"facility {f['name']} created")


@facilities.command("update")
def update_facility(
    name: str,
    require_checksum_file: Annotated[
        bool | None,
        typer.Option(
            "--require-checksum-file/--no-require-checksum-file",
            help="Refuse a delivery from this facility unless its checksum file lists every file.",
        ),
    ] = None,
) -> None:
    """Change a facility's settings (helpdesk)."""
    if require_checksum_file is None:
        raise ValidationFailed({"settings": "give --require-checksum-file or --no-require-checksum-file"})
    f = client().patch(
        f"/facilities/{quote(name, safe='')}", {"require_checksum_file": require_checksum_file}
    )
    rule = "requires" if f["require_checksum_file"] else "does not require"
    result(f, f"facility {f['name']} {rule} a checksum file that lists every delivered file")


@facilities.command("add-staff")
def add_staff(
    facility: str,
    email: str,
    name: Annotated[str, typer.Option(help="Their name.")] = "",
) -> None:
    """Make someone staff of a facility; a new account gets a link to set a password (helpdesk)."""
    u = client().post(f"/facilities/{quote(facility, safe='')}/staff", {"email": email, "name": name})
    e_mailed = u["mail_enabled"] and not u["has_password"]
    result(u, f"{u['email']} is now staff of {facility}" + (" (invitation e-mailed)" if e_mailed else ""))
    handed_over(u)


@users.command("list")
def list_users() -> None:
    """Every account."""
    data = client().get("/users")
    show(data, lambda rows: table("Users", ["e-mail", "name", "kind", "two-factor", "password set"], [
        (u["email"], u["name"], u["kind"], "on" if u["totp_enabled"] else "off", "yes" if u["has_password"] else "no")
        for u in rows]))  # fmt: skip


@users.command("create")
def create_user(
    email: str,
    kind: Annotated[str, typer.Option(help="user, facility or helpdesk.")] = "user",
    facility: Annotated[str | None, typer.Option(help="Facility, for facility staff.")] = None,
    name: Annotated[str, typer.Option(help="Their name.")] = "",
) -> None:
    """Make an account; its owner gets a link to set a password (helpdesk)."""
    u = client().post("/users", {"email": email, "name": name, "kind": kind, "facility": facility})
    e_mailed = "; invitation e-mailed" if u["mail_enabled"] else ""
    result(u, f"account {u['email']} ({u['kind']}) created{e_mailed}")
    handed_over(u)


@invitations.command("list")
def list_invitations() -> None:
    """Everyone invited who has not set a password yet (helpdesk)."""
    data = client().get("/invitations")
    show(data, lambda rows: table("Pending invitations", ["e-mail", "name", "invited by", "project", "sent", "link"], [
        (i["email"], i["name"], i["invited_by"], i["project"], i["created_at"][:16].replace("T", " "),
         f"expired {i['expires_at'][:16].replace('T', ' ')}" if i["expired"]
         else f"works until {i['expires_at'][:16].replace('T', ' ')}")
        for i in rows]))  # fmt: skip


@invitations.command("resend")
def resend_invitation(email: str) -> None:
    """Make a fresh link for someone invited and e-mail it; their earlier links stop working (helpdesk)."""
    sent = client().post(f"/invitations/{quote(email, safe='@')}/resend")
    result(sent, f"a new invitation link for {sent['email']} was e-mailed" if sent["mail_enabled"]
           else f"a new invitation link for {sent['email']} is made; earlier links no longer work")  # fmt: skip
    handed_over(sent)


@audit.command("verify")
def verify() -> None:
    """Check the audit log's hash chain: any altered, removed or reordered event is found."""
    report = client().get("/audit/verify")
    if report["ok"]:
        show(
            report,
            lambda r: done(
                f"audit log intact: {count(r['events'], 'event')}, hash chain verified{_anchored(r)}"
            ),
        )
        return
    show(
        report,
        lambda r: err_console.print(
            f"[red]audit log damaged[/red] at event {r['first_bad_seq']}: {r['problem']}", highlight=False
        ),
    )
    raise typer.Exit(8)


def _anchored(report: dict[str, Any]) -> str:
    anchors = report.get("anchors") or []
    if not anchors:
        return "; no anchor outside the database yet (levere audit anchor writes one)"
    places = ", ".join(f"event {a['seq']} on {a['where']} ({a['written_at'][:19]})" for a in anchors)
    return f"; holds its anchors: {places}"


@audit.command("anchor")
def anchor() -> None:
    """Write the head of the audit chain, write-once, to long-term storage (helpdesk).

    Removing or rewriting the events up to it then shows in `levere audit verify`.
    """
    anchors = client().post("/audit/anchor", {})
    if not anchors:
        show(anchors, lambda _: done("the audit log is empty: nothing to anchor yet"))
        return
    show(anchors, lambda rows: done("audit log anchored: " + ", ".join(
        f"event {a['seq']} on {a['where']}" for a in rows)))  # fmt: skip


@audit.command("list")
def list_events(
    object_id: Annotated[
        str | None,
        typer.Option(
            "--object",
            "--object-id",
            help="Only events about this object: LEV-2026-0001, an application number, an e-mail, a facility.",
        ),
    ] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 50,
) -> None:
    """Recent audit events."""
    data = client().get("/audit", params={"limit": limit, **({"object_id": object_id} if object_id else {})})
    show(data, lambda rows: table("Audit events", ["#", "when", "who", "action", "object"], [
        (e["seq"], e["at"][:16].replace("T", " "), e["actor_email"], e["action"], e["object_label"])
        for e in rows]))  # fmt: skip


def register(app: typer.Typer) -> None:
    app.add_typer(facilities, name="facilities")
    app.add_typer(users, name="users")
    app.add_typer(invitations, name="invitations")
    app.add_typer(audit, name="audit")
