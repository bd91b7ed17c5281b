"""Long-term storage from the command line: ``levere sync``, ``status``, ``free``, ``restore``,
``verify`` and ``jobs``.

Jobs run on the service's workers; these commands start one and, unless ``--no-wait``, follow its
progress until it ends and print its report. Interrupting the wait leaves the job running.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from levere.cli.accounts import client
from levere.cli.client import Client
from levere.cli.output import State, console, done, emit_json, err_console, fields, show, table
from levere.cli.projects import zone_fields
from levere.domain.jobruns import FINISHED, JobKind, JobRunState
from levere.domain.units import count, format_size

POLL_SECONDS = 0.5
TIER_WORDS = {"area": "project area", "longterm": "long-term", "secure": "secure zone"}

jobs = typer.Typer(help="Background jobs of a project: sync, restore, verify.", no_args_is_help=True)

NoWait = Annotated[bool, typer.Option("--no-wait", help="Start the job and return at once.")]


def _job_path(job: dict[str, Any]) -> str:
    return f"/projects/{job['project']}/jobs/{job['id']}" if job["project"] else f"/jobs/{job['id']}"


def show_command(job: dict[str, Any]) -> str:
    where = f" --project {job['project']}" if job["project"] else ""
    return f"levere jobs show {job['id']}{where}"


def _what(job: dict[str, Any]) -> str:
    where = job["project"] or "every project"
    if job["delivery"]:
        where += f"/{job['delivery']}"
    return f"{job['kind']} of {where}"


def follow(api: Client, job: dict[str, Any]) -> dict[str, Any]:
    """Poll the job until it ends, with a progress bar for people (nothing extra with --json)."""
    path = _job_path(job)
    if State.json_output:
        while job["state"] not in FINISHED:
            time.sleep(POLL_SECONDS)
            job = api.get(path)
        return job
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn  # only when following a job

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[files]}"),
        TextColumn("{task.fields[size]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err_console, transient=True) as progress:
        bar = progress.add_task(_what(job), total=None, files="", size="")
        while True:
            # a job that moves no bytes (a release) counts its files on the bar
            by_bytes = bool(job["bytes_total"])
            note = f" ({job['state']}: {job['error']})" if job["state"] == JobRunState.RETRYING else ""
            progress.update(
                bar,
                total=(job["bytes_total"] if by_bytes else job["files_total"]) or None,
                completed=job["bytes_done"] if by_bytes else job["files_done"],
                description=_what(job) + note,
                files=f"{job['files_done']:,}/{count(job['files_total'], 'file')}",
                size=f"{format_size(job['bytes_done'])}/{format_size(job['bytes_total'])}"
                if by_bytes
                else "",
            )
            if job["state"] in FINISHED:
                return job
            time.sleep(POLL_SECONDS)
            job = api.get(path)


def finish(api: Client, job: dict[str, Any], wait: bool) -> None:
    """A job just asked for: how to follow it, or its progress to its end and its outcome (exit 1
    if it failed, 5 for a verify that found damage)."""
    if not wait:
        show(
            job,
            lambda j: done(f"{_what(j)} started as job {j['id']}; follow it with: {show_command(j)} --wait"),
        )
        return
    try:
        if job["project"] and job["state"] not in FINISHED:
            # the wait may outlast the token: a grant lets it read this job to its end
            with api.granted("job", job["project"], job["id"]):
                job = follow(api, job)
        else:
            job = follow(api, job)
    except KeyboardInterrupt:
        err_console.print(f"stopped waiting; the job goes on: {show_command(job)}")
        raise typer.Exit(130) from None
    show(job, render_job)
    if job["state"] == JobRunState.FAILED:
        raise typer.Exit(5 if job["kind"] == JobKind.VERIFY else 1)


def _render_release(job: dict[str, Any]) -> None:
    """A release job's outcome, in the words ``levere secure release`` has always used."""
    report = job["report"] or {}
    if job["state"] != JobRunState.DONE:
        console.print(f"[red]✗[/red] release of {job['delivery']} failed: {job['error']}", highlight=False)
        return
    tail = (
        f"; nothing is left on {report['disk']}: it is released and its keys are destroyed"
        if report["disk_state"] != "open"
        else ""
    )
    done(f"delivery {job['delivery']} ({report['files']} files) released to {report['users_project']}{tail}")


def render_job(job: dict[str, Any]) -> None:
    report = job["report"] or {}
    if job["kind"] == JobKind.VERIFY:
        _render_verify(job, report)
        return
    if job["kind"] == JobKind.RELEASE:
        _render_release(job)
        return
    tier = TIER_WORDS.get(report.get("tier", ""), "")
    moved = (
        f"{count(job['files_done'], 'file')}, {format_size(job['bytes_done'])}, copied to {tier} and verified"
    )
    if job["state"] == JobRunState.DONE:
        done(f"{_what(job)} finished: {moved}")
    else:
        console.print(f"[red]✗[/red] {_what(job)} failed: {job['error']} ({moved})", highlight=False)
    states = report.get("states") or {}
    if states:
        summary = ", ".join(
            f"{count(s['files'], 'file')} {name} ({format_size(s['bytes'])})"
            for name, s in sorted(states.items())
        )
        console.print(f"  {tier}: {summary}", highlight=False)
    failures = report.get("failures") or []
    if failures:
        table("Failed files", ["path", "reason"], [(f["path"], f["reason"]) for f in failures])


def _render_verify(job: dict[str, Any], r: dict[str, Any]) -> None:
    line = (
        f"checked {count(r.get('checked', 0), 'stored copy', 'stored copies')} ({format_size(r.get('bytes', 0))}): {r.get('ok', 0)} intact, "
        f"{r.get('damaged_found', 0)} damaged, {r.get('repaired', 0)} repaired, "
        f"{r.get('unreadable_count', 0)} unreadable"
    )
    if job["state"] == JobRunState.DONE:
        done(f"verify of {job['project'] or 'every project'}: {line}")
    else:
        console.print(f"[red]✗[/red] verify of {job['project'] or 'every project'}: {line}", highlight=False)
        console.print(f"  {job['error']}", highlight=False)
    if r.get("damaged"):
        table(
            "Damaged copies",
            ["path", "tier", "repaired", "damage"],
            [(d["path"], TIER_WORDS.get(d["tier"], d["tier"]), "yes" if d["repaired"] else f"NO: {d['error']}", d["reason"])
             for d in r["damaged"]],
        )  # fmt: skip
    if r.get("unreadable"):
        table(
            "Could not be read",
            ["path", "tier", "reason"],
            [(u["path"], TIER_WORDS.get(u["tier"], u["tier"]), u["reason"]) for u in r["unreadable"]],
        )


def sync(
    project: Annotated[str, typer.Argument(help="Project identifier, e.g. LEV-2026-0001.")],
    delivery: Annotated[str | None, typer.Argument(help="One delivery (run) only.")] = None,
    no_wait: NoWait = False,
) -> None:
    """Copy sealed deliveries to long-term storage, verified against their checksums (helpdesk)."""
    api = client()
    job = api.post(f"/projects/{project}/sync", {"delivery": delivery})
    finish(api, job, wait=not no_wait)


def status(
    project: Annotated[str, typer.Argument(help="Project identifier.")],
    files: Annotated[
        bool, typer.Option("--files", help="One line per file instead of per delivery.")
    ] = False,
    prefix: Annotated[str, typer.Option(help="With --files: only DELIVERY or DELIVERY/FOLDER.")] = "",
    problems: Annotated[
        bool, typer.Option("--problems", help="With --files: only files not yet everywhere.")
    ] = False,
) -> None:
    """Where a project's deliveries are: files and bytes per state on the area and long-term storage."""
    api = client()
    if files:
        rows = api.get(f"/projects/{project}/replicas", params={"prefix": prefix, "problems": problems})
        show(rows, lambda rs: _files_table(project, rs))
        return
    show(api.get(f"/projects/{project}/sync-status"), _render_status)


def _tier_cell(entry: dict[str, Any] | None) -> str:
    if entry is None:
        return "-"
    return str(entry["state"]) + (f": {entry['reason']}" if entry["reason"] else "")


def _files_table(project: str, rows: list[dict[str, Any]]) -> None:
    table(
        f"Files of {project}",
        ["path", "size", "project area", "long-term"],
        [(r["path"], format_size(r["size"]), _tier_cell(r["tiers"].get("area")), _tier_cell(r["tiers"].get("longterm")))
         for r in rows],
    )  # fmt: skip


def _counts(tiers: dict[str, Any], tier: str) -> str:
    states = tiers.get(tier) or {}
    return ", ".join(f"{c['files']} {s}" for s, c in sorted(states.items())) or "-"


def _render_status(data: dict[str, Any]) -> None:
    quotas = data["quotas"]
    fields(
        f"Project {data['project']}",
        [("sync to long-term", data["sync_mode"])]
        + [
            (f"quota {TIER_WORDS.get(t, t)}", f"{format_size(q['used_bytes'])} used + {format_size(q['reserved_bytes'])} "
             f"reserved of {format_size(q['limit_bytes'])}")
            for t, q in sorted(quotas.items())
        ]
        + zone_fields(data.get("zone")),
    )  # fmt: skip
    # a sensitive project's working copy is in the secure zone, not on a project area
    working, words = ("secure", "secure zone") if data.get("sensitive") else ("area", "project area")
    table(
        "Deliveries",
        ["delivery", "files", "size", words, "long-term", "files per state"],
        [
            (d["name"], d["files"], format_size(d["bytes"]), d["area"], d["longterm"],
             f"{words}: {_counts(d['tiers'], working)}; long-term: {_counts(d['tiers'], 'longterm')}")
            for d in data["deliveries"]
        ],
    )  # fmt: skip
    problems = [(d["name"], p) for d in data["deliveries"] for p in d["problems"]]
    if problems:
        table(
            "Problems",
            ["file", "tier", "state", "reason"],
            [
                (f"{name}/{p['path']}", TIER_WORDS.get(p["tier"], p["tier"]), p["state"], p["reason"])
                for name, p in problems
            ],
        )
    if data["jobs"]:
        _jobs_table(data["project"], data["jobs"])


def _jobs_table(project: str, rows: list[dict[str, Any]]) -> None:
    table(
        f"Recent jobs of {project}",
        ["id", "kind", "delivery", "state", "files", "size", "started by", "created"],
        [
            (j["id"], j["kind"], j["delivery"] or "-", j["state"] + (f" ({j['error']})" if j["error"] else ""),
             f"{j['files_done']}/{j['files_total']}", format_size(j["bytes_done"]), j["created_by"],
             str(j["created_at"])[:19])
            for j in rows
        ],
    )  # fmt: skip


def free(
    project: Annotated[str, typer.Argument(help="Project identifier.")],
    paths: Annotated[list[str], typer.Argument(help="DELIVERY, DELIVERY/FOLDER or DELIVERY/PATH.")],
) -> None:
    """Free quota in the project area by removing files that are safely on long-term storage (project admin or helpdesk).

    Anything not yet synced to long-term storage is refused and stays where it is.
    """
    result = client().post(f"/projects/{project}/free", {"paths": paths})

    def render(r: dict[str, Any]) -> None:
        note = f" ({r['already_freed']} were already freed)" if r["already_freed"] else ""
        tier = r.get("tier", "area")
        use = (
            f"; it now uses {format_size(r['area_used_bytes'])} of {format_size(r['area_limit_bytes'])}"
            if tier == "area"
            else ""
        )
        done(
            f"freed {count(r['freed_files'], 'file')}, {format_size(r['freed_bytes'])}, from the "
            f"{TIER_WORDS.get(tier, tier)}{note}{use}. "
            f"Bring them back with: levere restore {project} {' '.join(paths)}"
        )

    show(result, render)


def restore(
    project: Annotated[str, typer.Argument(help="Project identifier.")],
    paths: Annotated[list[str], typer.Argument(help="DELIVERY, DELIVERY/FOLDER or DELIVERY/PATH.")],
    no_wait: NoWait = False,
) -> None:
    """Copy freed files back into the project area from long-term storage, verified (project admin or helpdesk)."""
    api = client()
    job = api.post(f"/projects/{project}/restore", {"paths": paths})
    finish(api, job, wait=not no_wait)


def verify(
    project: Annotated[
        str | None, typer.Argument(help="Project identifier; every project if left out.")
    ] = None,
    no_wait: NoWait = False,
) -> None:
    """Re-read every stored copy on every tier and repair any damage from an intact copy (helpdesk).

    Each copy's checksums are compared with the ones recorded when it was delivered.
    """
    api = client()
    job = api.post("/verify", {"project": project})
    finish(api, job, wait=not no_wait)


@jobs.command("list")
def list_jobs(project: Annotated[str, typer.Argument(help="Project identifier.")]) -> None:
    """A project's recent jobs."""
    show(client().get(f"/projects/{project}/jobs"), lambda rows: _jobs_table(project, rows))


@jobs.command("show")
def show_job(
    job_id: str,
    project: Annotated[
        str | None, typer.Option(help="The job's project (none: a job of every project).")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow it until it ends.")] = False,
) -> None:
    """One job: its progress, or its report once it has ended."""
    api = client()
    job = api.get(f"/projects/{project}/jobs/{job_id}" if project else f"/jobs/{job_id}")
    if wait and job["state"] not in FINISHED:
        finish(api, job, wait=True)
        return
    if State.json_output:
        emit_json(job)
        return
    if job["state"] in FINISHED:
        render_job(job)
    else:
        done(
            f"{_what(job)}: {job['state']}, {job['files_done']:,}/{count(job['files_total'], 'file')}, "
            f"{format_size(job['bytes_done'])}/{format_size(job['bytes_total'])}"
            + (f" ({job['error']})" if job["error"] else "")
        )


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ``levere`` app."""
    app.command()(sync)
    app.command()(status)
    app.command()(free)
    app.command()(restore)
    app.command()(verify)
    app.add_typer(jobs, name="jobs")
