"""``levere projects ...`` and ``levere members ...``."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import typer

from levere.cli.accounts import client
from levere.cli.output import fields, handed_over, result, show, table
from levere.domain.units import SIZE_HELP, format_size, parse_size

projects = typer.Typer(help="Projects you can see, their quotas and facilities.", no_args_is_help=True)
members = typer.Typer(help="Who has access to a project, and with which role.", no_args_is_help=True)


def _q(part: str) -> str:
    """One path segment, quoted (an e-mail address may hold characters that are special in URLs)."""
    return quote(part, safe="@")


def _quota_line(q: dict[str, Any]) -> str:
    return (
        f"{format_size(q['used_bytes'])} used + {format_size(q['reserved_bytes'])} reserved "
        f"of {format_size(q['limit_bytes'])}"
    )


def zone_fields(zone: dict[str, Any] | None) -> list[tuple[str, str]]:
    """A sensitive project's secure project and shared disks, shown where others show the area."""
    if zone is None:
        return []
    pairs = [
        ("project area", "none: sensitive data is kept encrypted in the secure zone"),
        ("secure project", zone["secure_project"] or "not yet attached"),
    ]
    if not zone["disks_shown"]:
        return [*pairs, ("shared disks", "sign in with a second factor to see them")]
    if not zone["disks"] and zone.get("disks_hidden"):
        return [
            *pairs,
            ("shared disks", f"{zone['disks_hidden']}, not shown: your role does not let you see them"),
        ]
    if not zone["disks"]:
        return [*pairs, ("shared disks", "none yet (the helpdesk creates one for a delivery)")]
    return pairs + [
        (f"shared disk {d['name']}",
         f"{d['state']}, {format_size(d['used_bytes'])} used of {format_size(d['quota_bytes'])}, "
         f"ends {str(d['ends_at'])[:16].replace('T', ' ')} UTC")
        for d in zone["disks"]
    ]  # fmt: skip


def _area_cell(p: dict[str, Any]) -> str:
    if p["sensitive"]:
        return f"none (secure project {p['secure_project_id'] or '-'})"
    return next((_quota_line(q) for q in p["quotas"] if q["tier"] == "area"), "-")


@projects.command("list")
def list_projects() -> None:
    """Projects you can see."""
    data = client().get("/projects")
    show(data, lambda rows: table("Projects", ["identifier", "title", "your role", "facilities", "area"], [
        (p["identifier"], p["title"], p["my_role"] or "-", ", ".join(p["facilities"]),
         _area_cell(p)) for p in rows
    ]))  # fmt: skip


@projects.command("show")
def show_project(identifier: str) -> None:
    """A project, its quotas, facilities and members."""
    api = client()
    project = api.get(f"/projects/{_q(identifier)}")
    people = api.get(f"/projects/{_q(identifier)}/members")

    def render(p: dict[str, Any]) -> None:
        fields(f"Project {p['identifier']}", [
            ("title", p["title"]),
            ("sensitive", "yes" + (f" (secure project {p['secure_project_id']})" if p["secure_project_id"] else "")
             if p["sensitive"] else "no"),
            ("facilities", ", ".join(p["facilities"]) or "-"),
            ("sync to long-term", p["sync_mode"]),
            *[(f"quota {q['tier']}", _quota_line(q)) for q in p["quotas"]],
            *zone_fields(p.get("zone")),
        ])  # fmt: skip
        _members_table(p["identifier"], p["members"])

    show(project | {"members": people}, render)


def _members_table(identifier: str, rows: list[dict[str, Any]]) -> None:
    table(f"Members of {identifier}", ["e-mail", "name", "role", "account"], [
        (m["email"], m["name"], m["role"], "active" if m["has_account"] else "invited") for m in rows
    ])  # fmt: skip


@projects.command("set")
def set_project(
    identifier: str,
    sync_mode: Annotated[
        str | None, typer.Option(help="auto: sync sealed deliveries at once; manual: on request.")
    ] = None,
) -> None:
    """Change a project's settings (admin or helpdesk)."""
    p = client().patch(f"/projects/{_q(identifier)}", {"sync_mode": sync_mode})
    result(p, f"{identifier} updated")


@projects.command("quota")
def set_quota(
    identifier: str,
    tier: str,
    limit: Annotated[str, typer.Argument(help=f"The new quota, e.g. 2T; {SIZE_HELP}.")],
) -> None:
    """Change a granted quota, e.g. 'levere projects quota LEV-2026-0001 area 2T' (helpdesk)."""
    q = client().put(f"/projects/{_q(identifier)}/quotas/{_q(tier)}", {"limit": parse_size(limit, "LIMIT")})
    result(q, f"{identifier} {tier} quota is now {format_size(q['limit_bytes'])}")


@projects.command("assign-facility")
def assign_facility(identifier: str, facility: str) -> None:
    """Let a facility deliver into an existing project (admin or helpdesk)."""
    f = client().post(f"/projects/{_q(identifier)}/facilities", {"facility": facility})
    result(f, f"{facility} may now deliver into {identifier}")


@members.command("list")
def list_members(identifier: str) -> None:
    """Members of a project."""
    data = client().get(f"/projects/{_q(identifier)}/members")
    show(data, lambda rows: _members_table(identifier, rows))


@members.command("add")
def add_member(
    identifier: str,
    email: str,
    role: Annotated[str, typer.Option(help="admin, member or viewer.")] = "member",
) -> None:
    """Give someone access (they are invited by e-mail if they have no account)."""
    m = client().post(f"/projects/{_q(identifier)}/members", {"email": email, "role": role})
    e_mailed = m["mail_enabled"] and not m["has_account"]
    result(
        m,
        f"{m['email']} added to {identifier} as {m['role']}" + (" (invitation e-mailed)" if e_mailed else ""),
    )
    handed_over(m)


@members.command("remove")
def remove_member(identifier: str, email: str) -> None:
    """Take someone's access away."""
    client().delete(f"/projects/{_q(identifier)}/members/{_q(email)}")
    result({"project": identifier, "removed": email}, f"{email} removed from {identifier}")


@members.command("set-role")
def set_role(identifier: str, email: str, role: str) -> None:
    """Change someone's role: admin, member or viewer."""
    m = client().put(f"/projects/{_q(identifier)}/members/{_q(email)}", {"role": role})
    result(m, f"{m['email']} is now {m['role']} in {identifier}")


def register(app: typer.Typer) -> None:
    app.add_typer(projects, name="projects")
    app.add_typer(members, name="members")
