"""Moving data: ``levere deliver``, ``download``, ``ls``, ``deliveries ...`` and ``manifest``.

The engines live in :mod:`levere.cli.delivery`; this module turns options into their calls, shows
Rich progress on a terminal and prints receipts and tables (or JSON with ``--json``). The engines
are imported by the commands that use them: every other command, and ``--help``, starts without
them.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote

import typer
from rich.markup import escape

from levere.cli.accounts import client
from levere.cli.delivery.progress import Bars, Quiet, Reporter
from levere.cli.output import State, console, emit_json, err_console, fields, show, table
from levere.domain.errors import AlreadyExists, ValidationFailed
from levere.domain.replicas import ReplicaState
from levere.domain.units import SIZE_HELP, count, format_size, parse_size

if TYPE_CHECKING:
    from levere.cli.delivery.deliver import Receipt
    from levere.cli.delivery.download import Summary

MiB = 1024 * 1024
deliveries = typer.Typer(help="Deliveries of a project: list them, show one.", no_args_is_help=True)

Jobs = Annotated[int, typer.Option("--jobs", "-j", min=1, max=64, help="Files moved in parallel.")]
Retries = Annotated[
    int, typer.Option(min=1, max=100, help="Tries per request when the network or the service fails.")
]


def _q(text: str) -> str:
    return quote(text, safe="")


def _reporter(verb: str) -> tuple[Reporter, AbstractContextManager[Any]]:
    """Rich bars on a terminal; nothing when output is piped or JSON was asked for."""
    if State.json_output or not err_console.is_terminal:
        return Quiet(), nullcontext()
    bars = Bars(err_console, verb)
    return bars, bars


def _rate(nbytes: int, seconds: float) -> str:
    return f"{format_size(int(nbytes / seconds))}/s" if seconds > 0 and nbytes else "-"


# --- deliver ---------------------------------------------------------------------------------------


def deliver(
    project: Annotated[str, typer.Argument(help="The project's identifier, e.g. LEV-2026-0001.")],
    run_folder: Annotated[Path, typer.Argument(help="The run folder to deliver.", show_default=False)],
    name: Annotated[
        str | None, typer.Option(help="The delivery's name (default: the folder's name).")
    ] = None,
    metadata: Annotated[
        Path | None,
        typer.Option(
            help="A sample sheet (or JSON object) kept with the delivery; a relative path not found "
            "from the current folder is looked up in the run folder."
        ),
    ] = None,
    checksum_file: Annotated[
        Path | None,
        typer.Option(
            help="md5sum-style file to verify against (default: md5sum.txt, MD5SUMS, checksums.md5 or the "
            "one *.md5 at the top of the folder)."
        ),
    ] = None,
    no_checksum_file: Annotated[
        bool, typer.Option("--no-checksum-file", help="Do not look for a checksum file.")
    ] = False,
    jobs: Jobs = 4,
    seal: Annotated[
        bool, typer.Option("--seal/--no-seal", help="Seal the delivery when every file is there.")
    ] = True,
    retries: Retries = 6,
    chunk_size: Annotated[
        str,
        typer.Option(
            help="Bytes per upload request of a large file, e.g. 64M: smaller requests lose less to a "
            f"dropped connection, larger ones go faster; {SIZE_HELP}."
        ),
    ] = "256M",
    disk: Annotated[
        str | None,
        typer.Option(
            help="The shared disk (disk-7) a sensitive project's delivery lands on, encrypted at rest; "
            "needs a sign-in with a second factor."
        ),
    ] = None,
) -> None:
    """Deliver a run folder into a project: resumable, parallel, checksummed, then sealed.

    Run the same command again after an interruption: what the service already holds is not sent again, and unfinished files continue from where they stopped.
    """
    from levere.cli.delivery.deliver import Deliverer, Options  # see the module notes
    from levere.cli.delivery.metadata import metadata_path, read_metadata
    from levere.cli.delivery.retry import Retry

    if checksum_file is not None and no_checksum_file:
        raise ValidationFailed({"checksum file": "give --checksum-file or --no-checksum-file, not both"})
    meta = read_metadata(metadata_path(metadata, run_folder)) if metadata is not None else {}
    chunk = parse_size(chunk_size, "--chunk-size")
    if not MiB <= chunk <= 4096 * MiB:
        raise ValidationFailed({"--chunk-size": "must be between 1M and 4G"})
    options = Options(jobs=jobs, seal=seal, chunk=chunk, retry=Retry(attempts=retries), disk=disk)
    api = client()
    reporter, display = _reporter("deliver")
    try:
        with display:
            receipt = Deliverer(api, project, reporter, options).run(
                run_folder, name, meta, checksum_file, detect_checksum_file=not no_checksum_file
            )
    except KeyboardInterrupt:
        err_console.print("interrupted: run the same command again to resume where it stopped")
        raise
    finally:
        options.retry.cancel.set()  # stop any worker still running after an interruption
        api.close()
    show(receipt.as_json(), lambda _data: _print_receipt(receipt))


def _verified(receipt: Receipt) -> str:
    coverage = receipt.checksum_coverage
    if coverage is None or coverage.checksum_file is None:
        return "no md5sum.txt: checksums computed on arrival only"
    # levere compares each file with the listed checksums before publishing it; a plain md5sum
    # file it reads once more when the delivery is sealed
    when = (
        "as each file arrived, and again at sealing" if receipt.service_verified else "as each file arrived"
    )
    return f"{coverage.summary()} (by levere, {when})"


def _print_receipt(receipt: Receipt) -> None:
    d = receipt.delivery
    if receipt.already_sealed:
        headline = f"[green]✓[/green] {d['name']} was already delivered and sealed in {receipt.project}"
    elif d["state"] == "sealed":
        headline = f"[green]✓[/green] delivered and sealed {d['name']} in {receipt.project}"
    else:
        headline = f"[green]✓[/green] uploaded {d['name']} to {receipt.project} (not sealed: --no-seal)"
    console.print(headline, highlight=False)
    pairs = [
        ("delivery", f"{receipt.project}/{d['name']} ({d['state']})"),
        ("files", f"{d.get('file_count', 0):,} ({format_size(d.get('total_bytes'))})"),
    ]
    if not receipt.already_sealed:
        pairs += [
            ("sent now", f"{count(receipt.sent_files, 'file')}, {format_size(receipt.sent_bytes)} in "
             f"{receipt.seconds:.1f} s ({_rate(receipt.sent_bytes, receipt.seconds)})"),
            ("checksums", _verified(receipt)),
        ]  # fmt: skip
    if d.get("manifest_sha256"):
        pairs += [
            ("manifest SHA-256", d["manifest_sha256"]),
            (
                "manifest",
                f"levere manifest {receipt.project} {d['name']}  (writes {d['name']}{MANIFEST_SUFFIX[ManifestFormat.MD5SUM]})",
            ),
        ]
    width = max(len(key) for key, _ in pairs)
    for key, value in pairs:  # plain lines, never wrapped: checksums stay whole for copying
        console.print(f"  [bold]{key:<{width}}[/bold]  {value}", highlight=False)


# --- download --------------------------------------------------------------------------------------


def download(
    project: Annotated[str, typer.Argument(help="The project's identifier.")],
    to: Annotated[Path, typer.Option("--to", help="The local folder to download into.")],
    path: Annotated[
        str | None,
        typer.Argument(help="A file, a folder or a delivery (DELIVERY/PATH); default: the whole project."),
    ] = None,
    jobs: Jobs = 4,
    overwrite: Annotated[
        bool, typer.Option(help="Replace local files that differ from the service's.")
    ] = False,
    retries: Retries = 6,
    pubkey: Annotated[
        Path | None,
        typer.Option(
            help="Secure zone: your Crypt4GH public key file; files are saved as NAME.c4gh, encrypted "
            "to it, for 'crypt4gh decrypt --sk'. PROJECT is then a secure project (p1234) or a shared disk (disk-7).",
            show_default=False,
        ),
    ] = None,
    seckey: Annotated[
        Path | None,
        typer.Option(
            help="Secure zone: your Crypt4GH secret key file (crypt4gh-keygen); files are decrypted here "
            "as they arrive and checked against the delivery's checksums. Its passphrase is read from "
            "C4GH_PASSPHRASE, or asked for.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Download files, verified against the delivery manifest; run again to resume.

    What you ask for lands in --to under its own name, as with 'cp -r': a delivery RUN42 becomes DIR/RUN42/..., a file RUN42/a/x.fq becomes DIR/x.fq. Partial files are kept as NAME.part until they are complete and their checksums match.

    Secure-zone files (PROJECT a shared disk or a secure project) come encrypted to your own key: --pubkey, --seckey, or by default the Crypt4GH key your sign-in identity released. The service never sends plaintext.
    """
    if pubkey is not None or seckey is not None or _in_zone(project):
        _zone_download(project, to, path, pubkey, seckey)
        return
    from levere.cli.delivery.download import Downloader  # see the module notes
    from levere.cli.delivery.retry import Retry

    api = client()
    retry = Retry(attempts=retries)
    reporter, display = _reporter("download")
    try:
        with display:
            summary = Downloader(api, project, reporter, retry, jobs, overwrite).run(path, to)
    except KeyboardInterrupt:
        err_console.print("interrupted: run the same command again to resume where it stopped")
        raise
    finally:
        retry.cancel.set()
        api.close()
    data = {
        "project": project,
        "path": path,
        "to": summary.target,
        "files": summary.files,
        "bytes": summary.bytes,
        "fetched_files": summary.fetched_files,
        "fetched_bytes": summary.fetched_bytes,
        "already_there": summary.already_there,
        "seconds": round(summary.seconds, 3),
    }
    show(data, lambda _d: _print_summary(summary))


def _passphrase() -> str:
    return os.environ.get("C4GH_PASSPHRASE") or typer.prompt("Passphrase of the secret key", hide_input=True)


def _in_zone(where: str) -> bool:
    """A shared disk (disk-7) or a users' secure project (p1234) rather than a research project."""
    from levere.domain.secure import DISK_NAME, SECURE_PROJECT

    where = where.strip().lower()
    return bool(DISK_NAME.match(where) or SECURE_PROJECT.match(where))


def _zone_download(where: str, to: Path, path: str | None, pubkey: Path | None, seckey: Path | None) -> None:
    from levere.cli.delivery.zone_download import ZoneDownloader  # see the module notes

    api = client()
    try:
        summary = ZoneDownloader(api, where, pubkey=pubkey, seckey=seckey, passphrase=_passphrase).run(
            path, to
        )
    finally:
        api.close()
    data = {
        "from": where,
        "path": path,
        "to": summary.target,
        "files": summary.files,
        "bytes": summary.bytes,
        "decrypted": summary.decrypted,
        "saved": summary.saved,
        "recipient_from": summary.recipient_from,
    }
    what = "decrypted, checksums verified" if summary.decrypted else "encrypted to your key (.c4gh)"
    if summary.recipient_from:
        what = f"encrypted to the key your sign-in with {summary.recipient_from} released (.c4gh)"
    show(data, lambda _d: console.print(
        f"[green]✓[/green] {count(summary.files, 'file')} ({format_size(summary.bytes)}) in "
        f"{escape(summary.target)}, {what}", highlight=False,
    ))  # fmt: skip


def _print_summary(summary: Summary) -> None:
    console.print(
        f"[green]✓[/green] {count(summary.files, 'file')} ({format_size(summary.bytes)}) in {escape(str(summary.target))}, "
        f"checksums verified; fetched {summary.fetched_files:,} ({format_size(summary.fetched_bytes)}, "
        f"{_rate(summary.fetched_bytes, summary.seconds)})"
        + (f", {summary.already_there:,} already there" if summary.already_there else ""),
        highlight=False,
    )


# --- ls, deliveries, manifest --------------------------------------------------------------------


def _tiers(tiers: dict[str, str] | None) -> str:
    return (
        ", ".join(t if s == ReplicaState.PRESENT else f"{t} ({s})" for t, s in sorted((tiers or {}).items()))
        or "-"
    )


def ls(
    project: Annotated[str, typer.Argument(help="The project's identifier.")],
    path: Annotated[str | None, typer.Argument(help="Only under this delivery or folder.")] = None,
    long: Annotated[bool, typer.Option("--long", "-l", help="Full checksums.")] = False,
) -> None:
    """Files of a project: sizes, checksums and which storage tiers hold each."""
    prefix = (path or "").strip("/")
    entries = client().get(f"/projects/{_q(project)}/files", params={"prefix": prefix} if prefix else {})
    if prefix:  # the service matches a string prefix; a folder is wanted, not its namesakes
        entries = [e for e in entries if e["path"] == prefix or e["path"].startswith(prefix + "/")]

    def render(rows: list[dict[str, Any]]) -> None:
        cut: slice = slice(None) if long else slice(0, 12)
        table(
            f"Files of {project}" + (f" under {prefix}" if prefix else ""),
            ["path", "size", "md5", "sha256", "tiers"],
            [(e["path"], format_size(e["size"]), e["md5"][cut], e["sha256"][cut], _tiers(e.get("tiers")))
             for e in rows],
        )  # fmt: skip
        total = sum(e["size"] for e in rows)
        console.print(f"{count(len(rows), 'file')}, {format_size(total)}", highlight=False)
        shown = {e["path"].partition("/")[0] for e in rows}
        for d in client().get(f"/projects/{_q(project)}/deliveries"):  # what each checksum file covered
            if d["name"] in shown and d.get("checksum_coverage"):
                console.print(f"{d['name']}: {d['checksum_coverage']['summary']}", highlight=False)

    show(entries, render)


@deliveries.command("list")
def list_deliveries(project: Annotated[str, typer.Argument(help="The project's identifier.")]) -> None:
    """Deliveries of a project."""
    rows = client().get(f"/projects/{_q(project)}/deliveries")
    show(rows, lambda data: table(
        f"Deliveries of {project}", ["name", "state", "files", "size", "created", "sealed", "checksums"],
        [(d["name"], d["state"], f"{d.get('file_count', 0):,}", format_size(d.get("total_bytes")),
          _when(d.get("created_at")), _when(d.get("sealed_at")),
          (d.get("checksum_coverage") or {}).get("summary") or "-") for d in data],
    ))  # fmt: skip


@deliveries.command("show")
def show_delivery(
    project: Annotated[str, typer.Argument(help="The project's identifier.")],
    name: Annotated[str, typer.Argument(help="The delivery's name.")],
) -> None:
    """A delivery: its state, manifest checksum, files and unfinished uploads."""
    d = client().get(f"/projects/{_q(project)}/deliveries/{_q(name)}")

    def render(d: dict[str, Any]) -> None:
        fields(f"Delivery {project}/{d['name']}", [
            ("state", d["state"] + (f": {d['failure_reason']}" if d.get("failure_reason") else "")),
            ("files", f"{d.get('file_count', 0):,} ({format_size(d.get('total_bytes'))})"),
            ("created", _when(d.get("created_at"))),
            ("sealed", _when(d.get("sealed_at"))),
            ("manifest SHA-256", d.get("manifest_sha256") or "-"),
            ("checksums", (d.get("checksum_coverage") or {}).get("summary") or "-"),
            *[(f"metadata {k}", _short(v)) for k, v in (d.get("metadata") or {}).items()],
        ])  # fmt: skip
        files = d.get("files") or []
        if files:
            table("Files", ["path", "size", "md5", "tiers"], [
                (f["path"], format_size(f["size"]), f["md5"], _tiers(f.get("tiers"))) for f in files
            ])  # fmt: skip
        uploads = d.get("uploads") or []
        if uploads:
            table("Unfinished uploads", ["path", "received", "expires"], [
                (u["path"], f"{format_size(u['offset'])} of {format_size(u['length'])}", _when(u.get("expires_at")))
                for u in uploads
            ])  # fmt: skip

    show(d, render)


def _when(moment: str | None) -> str:
    """An API timestamp as people read it (UTC, to the minute)."""
    return f"{moment[:10]} {moment[11:16]} UTC" if moment else "-"


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= 80 else text[:77] + "..."


class ManifestFormat(StrEnum):
    MD5SUM = "md5sum"
    SHA256SUM = "sha256sum"
    JSON = "json"


#: what a manifest file is called unless -o names one: never a name a run folder holds itself
#: (md5sum.txt, MD5SUMS, ...), so that writing it into a downloaded run cannot replace the run's own
MANIFEST_SUFFIX = {
    ManifestFormat.MD5SUM: ".levere-md5sum.txt",
    ManifestFormat.SHA256SUM: ".levere-sha256sum.txt",
    ManifestFormat.JSON: ".levere-manifest.json",
}


def manifest_target(output: Path | None, delivery: str, format: ManifestFormat) -> Path | None:
    """Where the manifest goes: None for the screen (``-o -``), else a file; a folder gets the
    default name inside it."""
    default = Path(delivery).name + MANIFEST_SUFFIX[format]
    if output is None:
        return Path(default)
    if str(output) == "-":
        return None
    return output / default if output.is_dir() else output


def manifest(
    project: Annotated[str, typer.Argument(help="The project's identifier.")],
    delivery: Annotated[str, typer.Argument(help="The delivery's name.")],
    format: Annotated[
        ManifestFormat, typer.Option("--format", "-f", help="md5sum and sha256sum work with 'md5sum -c'.")
    ] = ManifestFormat.MD5SUM,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="A file or a folder to write to, or - for the screen "
            "(default: DELIVERY.levere-md5sum.txt in the current folder).",
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a file that is already there.")] = False,
) -> None:
    """A sealed delivery's manifest, to check a download with 'md5sum -c' inside its folder.

    The file is named DELIVERY.levere-md5sum.txt (or .levere-sha256sum.txt, .levere-manifest.json) unless -o names another, so it never replaces the run's own md5sum.txt; a file that is already there is left alone unless --force is given.
    """
    target = manifest_target(output, delivery, format)
    if target is not None and not force and target.exists():
        raise AlreadyExists(_exists(target))
    api = client()
    path = f"/projects/{_q(project)}/deliveries/{_q(delivery)}/manifest"
    try:
        with api.stream("GET", path, params={"format": format.value}) as response:
            if target is None:
                for piece in response.iter_bytes():
                    sys.stdout.buffer.write(piece)
                sys.stdout.buffer.flush()
                return
            _write_new(target, response.iter_bytes(), force)
    finally:
        api.close()
    if not State.json_output:
        err_console.print(f"[green]✓[/green] manifest of {escape(delivery)} written to {escape(str(target))}")
    else:
        emit_json(
            {"project": project, "delivery": delivery, "format": format.value, "written_to": str(target)}
        )


def _exists(target: Path) -> str:
    return (
        f"{target} is already there and was left alone: give another name with -o, or replace it with --force"
    )


def _write_new(target: Path, pieces: Iterable[bytes], replace: bool) -> None:
    """Write ``pieces`` to a hidden file beside ``target``, then move it into place: with a hard link
    unless ``replace`` (so a file that appeared meanwhile is not overwritten either), else a rename."""
    part = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
    try:
        with open(part, "xb") as fh:
            for piece in pieces:
                fh.write(piece)
        if replace:
            os.replace(part, target)
            return
        try:
            os.link(part, target)
        except FileExistsError:
            raise AlreadyExists(_exists(target)) from None
    except OSError as exc:
        raise ValidationFailed({"output": f"cannot write {target}: {exc.strerror or exc}"}) from None
    finally:
        part.unlink(missing_ok=True)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ``levere`` app."""
    app.command()(deliver)
    app.command()(download)
    app.command("ls")(ls)
    app.command()(manifest)
    app.add_typer(deliveries, name="deliveries")
