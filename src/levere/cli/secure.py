"""``levere secure ...``: secure projects, their members, shared disks and the standard analysis.

Every command needs a sign-in with a one-time code (``levere login --totp CODE``).
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer

from levere.cli.accounts import client
from levere.cli.output import State, console, done, emit_json, fields, result, show, table
from levere.cli.sync import NoWait, finish, follow
from levere.domain.errors import ValidationFailed
from levere.domain.secure import SECURE_PROJECT
from levere.domain.units import SIZE_HELP, format_size, parse_size

secure = typer.Typer(
    help="The secure zone: secure projects, who is let in, and shared disks (needs two-factor sign-in).",
    no_args_is_help=True,
)
disk = typer.Typer(
    help="Shared disks between a facility's secure project and a users' one.", no_args_is_help=True
)
members = typer.Typer(help="Staff let into a users' secure project until an end date.", no_args_is_help=True)


def _q(part: str) -> str:
    return quote(part, safe="@")


def end_date(text: str, option: str = "--until") -> str:
    """An end date as the API takes it: ISO 8601 (``2027-03-01`` or ``2027-03-01T12:00``), read
    as UTC when it names no time zone."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValidationFailed(
            {option: f"{text[:40]!r} is not a date such as 2027-03-01 or 2027-03-01T12:00"}
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.isoformat()


def _when(value: Any) -> str:
    return str(value)[:16].replace("T", " ") if value else "-"


# --- secure projects ------------------------------------------------------------------------


@secure.command("list")
def list_projects() -> None:
    """The secure projects you can see."""
    data = client().get("/secure/projects")
    show(data, lambda rows: table("Secure projects", ["identifier", "kind", "belongs to"], [
        (p["identifier"], p["kind"], p["project"] or p["facility"] or "-") for p in rows
    ]))  # fmt: skip


@secure.command("show")
def show_project(identifier: str) -> None:
    """A secure project: what it belongs to and its public key."""
    data = client().get(f"/secure/projects/{_q(identifier)}")
    show(data, lambda p: fields(f"Secure project {p['identifier']}", [
        ("kind", p["kind"]),
        ("research project" if p["kind"] == "users" else "facility", p["project"] or p["facility"]),
        ("public key", p["public_key"]),
        ("registered", _when(p["created_at"])),
    ]))  # fmt: skip


@secure.command("register")
def register(
    identifier: Annotated[
        str, typer.Argument(help="The secure project's id at the national service (p1234).")
    ],
    project: Annotated[
        str | None, typer.Option(help="The research project it is the users' secure project of.")
    ] = None,
    facility: Annotated[
        str | None, typer.Option(help="The facility it is the own secure project of.")
    ] = None,
) -> None:
    """Register an existing secure project (helpdesk): a users' one or a facility's."""
    body = {"identifier": identifier, "project": project, "facility": facility}
    made = client().post("/secure/projects", body)
    owner = made["project"] or made["facility"]
    result(made, f"secure project {made['identifier']} registered for {owner}")


# --- members --------------------------------------------------------------------------------


@members.command("list")
def list_members(identifier: str) -> None:
    """Staff let into a users' secure project, and until when."""
    data = client().get(f"/secure/projects/{_q(identifier)}/members")
    show(data, lambda rows: table(f"Let into {identifier}", ["e-mail", "until", "access"], [
        (m["email"], _when(m["ends_at"]),
         "active" if m["active"] else ("removed" if m["removed_at"] else "ended")) for m in rows
    ]))  # fmt: skip


@members.command("add")
def add_member(
    identifier: str,
    email: str,
    until: Annotated[
        str, typer.Option(help="When access ends by itself (2027-03-01; UTC unless a zone is given).")
    ],
) -> None:
    """Let a helpdesk operator or facility staff member into a users' secure project (its admins)."""
    made = client().post(
        f"/secure/projects/{_q(identifier)}/members", {"email": email, "ends_at": end_date(until)}
    )
    result(made, f"{made['email']} may act in {identifier} until {_when(made['ends_at'])} UTC")


@members.command("remove")
def remove_member(identifier: str, email: str) -> None:
    """End someone's access to a users' secure project now (its admins)."""
    made = client().delete(f"/secure/projects/{_q(identifier)}/members/{_q(email)}")
    result(made, f"{made['email']} no longer has access to {identifier}")


# --- shared disks ---------------------------------------------------------------------------


@disk.command("create")
def create_disk(
    facility_project: Annotated[str, typer.Argument(help="The facility's secure project (p1234).")],
    users_project: Annotated[str, typer.Argument(help="The users' secure project (p5678).")],
    until: Annotated[
        str, typer.Option(help="The end date: read-only from then on (UTC unless a zone is given).")
    ],
    quota: Annotated[str | None, typer.Option(help=f"Space on the disk (default 1 TiB). {SIZE_HELP}")] = None,
) -> None:
    """Create a shared disk (helpdesk)."""
    body = {
        "facility_project": facility_project,
        "users_project": users_project,
        "ends_at": end_date(until),
        "quota_bytes": parse_size(quota) if quota is not None else None,
    }
    made = client().post("/secure/disks", body)
    result(made, f"shared disk {made['name']} is open until {_when(made['ends_at'])} UTC "
                 f"({format_size(made['quota_bytes'])}); its public key: levere secure pubkey {made['name']}")  # fmt: skip


@disk.command("list")
def list_disks() -> None:
    """The shared disks you can see."""
    data = client().get("/secure/disks")
    show(data, lambda rows: table("Shared disks", ["name", "state", "facility", "users", "until", "used"], [
        (d["name"], d["state"], d["facility_project"], d["users_project"], _when(d["ends_at"]),
         f"{format_size(d['used_bytes'])} of {format_size(d['quota_bytes'])}") for d in rows
    ]))  # fmt: skip


@disk.command("show")
def show_disk(name: str) -> None:
    """A shared disk: its state, sides, quota and end date."""
    data = client().get(f"/secure/disks/{_q(name)}")
    show(data, lambda d: fields(f"Shared disk {d['name']}", [
        ("state", d["state"]),
        ("facility's secure project", d["facility_project"]),
        ("users' secure project", d["users_project"]),
        ("space", f"{format_size(d['used_bytes'])} used of {format_size(d['quota_bytes'])}"),
        ("read-only from", _when(d["ends_at"])),
        ("public key", d["public_key"] if d["state"] != "destroyed" else "- (destroyed)"),
        *[(label, _when(d[key])) for label, key in
          (("released", "released_at"), ("expired", "expired_at"), ("destroyed", "destroyed_at")) if d[key]],
    ]))  # fmt: skip


@disk.command("destroy")
def destroy_disk(name: str) -> None:
    """Destroy a shared disk with its keys (helpdesk): nothing on it can be read again."""
    made = client().post(f"/secure/disks/{_q(name)}/destroy")
    result(made, f"shared disk {made['name']} destroyed with its keys")


@secure.command("release")
def release(
    name: Annotated[str, typer.Argument(help="The shared disk (disk-7).")],
    delivery: Annotated[str, typer.Argument(help="The delivery on it to release.")],
    no_wait: NoWait = False,
) -> None:
    """Release a delivery to the users' secure project (the facility's side).

    From then on only that project reads it. The release runs as a job on the service: it goes on
    where it stopped if the service is interrupted; this command follows it to its end.
    """
    api = client()
    job = api.post(f"/secure/disks/{_q(name)}/deliveries/{_q(delivery)}/release")
    finish(api, job, wait=not no_wait)


@secure.command("pubkey")
def pubkey(name: Annotated[str, typer.Argument(help="The shared disk (disk-7).")]) -> None:
    """Print a shared disk's Crypt4GH public key, for 'crypt4gh encrypt --recipient_pk FILE'."""
    data = client().get(f"/secure/disks/{_q(name)}/pubkey")
    if State.json_output:
        emit_json(data)
    else:
        sys.stdout.write(data["pem"])


# --- the standard analysis -----------------------------------------------------------------


def _analysis_outcome(job: dict[str, Any]) -> None:
    files = (job.get("report") or {}).get("files") or []
    failed = [f for f in files if f["state"] == "failed"]
    if job["state"] == "done":
        done(f"analysis of {job['delivery']} finished: {len(files)} FASTQ file(s) analysed")
    else:
        console.print(f"[red]✗[/red] analysis of {job['delivery']} failed: {job['error']}", highlight=False)
    if failed:
        table("Files not analysed", ["file", "reason"], [(f["path"], f["message"]) for f in failed])


@secure.command("analyse")
def analyse(
    name: Annotated[str, typer.Argument(help="The shared disk (disk-7).")],
    delivery: Annotated[str, typer.Argument(help="The delivery on it.")],
    no_wait: NoWait = False,
) -> None:
    """Run the standard analysis (QC) of a delivery's FASTQ files on a shared disk (the facility)."""
    api = client()
    job = api.post(f"/secure/disks/{_q(name)}/deliveries/{_q(delivery)}/analysis")
    if no_wait:
        result(
            job,
            f"analysis of {delivery} started as job {job['id']}; see it with: levere secure qc {name} {delivery}",
        )
        return
    try:
        job = follow(api, job)
    except KeyboardInterrupt:
        console.print(f"stopped waiting; the analysis goes on (job {job['id']})")
        raise typer.Exit(130) from None
    show(job, _analysis_outcome)
    if job["state"] == "failed":
        raise typer.Exit(1)


def _percent(value: float) -> str:
    return f"{100 * value:.2f}"


@secure.command("qc")
def qc(
    name: Annotated[str, typer.Argument(help="The shared disk (disk-7).")],
    delivery: Annotated[str, typer.Argument(help="The delivery on it.")],
    page: Annotated[
        str | None, typer.Option(help="Print this FASTQ file's HTML page (with plots) instead of the table.")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="With --page: write the page to this file.")
    ] = None,
) -> None:
    """A delivery's analysis report: one line of figures per FASTQ file."""
    api = client()
    where = f"/secure/disks/{_q(name)}/deliveries/{_q(delivery)}/qc"
    if page is not None:
        html = api.send("GET", f"{where}/page", params={"file": page}).content
        if output is None:
            sys.stdout.buffer.write(html)
        else:
            output.write_bytes(html)
            done(f"the QC page of {page} is in {output}")
        return
    data = api.get(where)
    show(data, lambda r: table(
        f"Analysis of {r['delivery']} on {r['disk']} ({_when(r['made_at'])} UTC)",
        ["file", "state", "reads", "bases", "mean length", "GC %", "mean Q", "N %", "duplicates %"],
        [(f["path"], f["state"], f"{f['reads']:,}", f"{f['bases']:,}", f"{f['mean_length']:.1f}",
          _percent(f["gc_fraction"]), f"{f['mean_quality']:.2f}", _percent(f["n_fraction"]),
          _percent(f["duplicate_fraction"])) if f["state"] == "done"
         else (f["path"], f"failed: {f['message']}", "", "", "", "", "", "", "")
         for f in r["files"]],
    ))  # fmt: skip


@secure.command("ls")
def list_disk_files(
    name: Annotated[str, typer.Argument(help="A shared disk (disk-7) or a users' secure project (p1234).")],
    delivery: Annotated[str | None, typer.Option("--delivery", help="Only this delivery's files.")] = None,
) -> None:
    """List a shared disk's deliveries and files, or a users' secure project's released files.

    A shared disk lists for both its sides until release; a secure project for its members and the
    staff they let in.
    """
    params = {"delivery": delivery} if delivery else None
    if SECURE_PROJECT.match(name.strip().lower()):
        released = client().get(f"/secure/projects/{_q(name)}/files", params=params)
        show(released, lambda rows: table(
            f"Files of secure project {name} (sizes and checksums of the plaintext; stored encrypted)",
            ["path", "size", "sha256"],
            [(f["path"], format_size(f["size"]), f["sha256"]) for f in rows],
        ))  # fmt: skip
        return
    data = client().get(f"/secure/disks/{_q(name)}/files", params=params)

    def render(d: dict[str, Any]) -> None:
        table(
            f"Deliveries on shared disk {d['disk']} ({d['state']})",
            ["delivery", "project", "state", "files", "size"],
            [
                (r["name"], r["project"], r["state"], str(r["files"]), format_size(r["bytes"]))
                for r in d["deliveries"]
            ],
        )
        table(
            "Files (sizes of the plaintext; stored encrypted; released deliveries are read in the users' project)",
            ["delivery", "path", "size", "sha256"],
            [(f["delivery"], f["path"], format_size(f["size"]), f["sha256"]) for f in d["files"]],
        )

    show(data, render)  # fmt: skip


def register_commands(app: typer.Typer) -> None:
    secure.add_typer(disk, name="disk")
    secure.add_typer(members, name="members")
    app.add_typer(secure, name="secure")
