"""Server-side commands for the secure zone's master keys: ``levere master-key new|rewrap``.

They run on the server's machine with its configuration (like ``levere init``), never over the API:
the master key file is readable by levere only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from levere.cli.output import done, result
from levere.domain.errors import ValidationFailed

master_key = typer.Typer(
    help="The secure zone's master keys, which wrap every stored private key (server side).",
    no_args_is_help=True,
)


@master_key.command("new")
def new(
    path: Annotated[Path, typer.Argument(help="The master key file ([secure] master_key_file).")],
    key_id: Annotated[str, typer.Option("--id", help="A name for the new key (A-Z a-z 0-9 . _ -).")] = "",
) -> None:
    """Make a master key file, or put a new key at the top of an existing one (rotation).

    The new key wraps keys made from then on; older lines stay so that keys wrapped under them
    still open, until 'levere master-key rewrap' has moved them all.
    """
    from datetime import UTC, datetime

    from levere.crypt4gh import MasterKeys

    key_id = key_id or datetime.now(UTC).strftime("k%Y%m%d%H%M%S")
    line = MasterKeys.new_line(key_id)
    if path.exists():
        existing = MasterKeys.from_file(path)  # refuses a file others can read, or a broken one
        if key_id in existing.key_ids:
            raise ValidationFailed({"--id": f"{key_id!r} is already in {path}"})
        text = path.read_text(encoding="ascii")
        temporary = path.with_name(path.name + ".new")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(line + text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
        done(
            f"new master key {key_id} added at the top of {path}; restart levere, then run 'levere master-key rewrap'"
        )
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write("# levere master keys: the first line wraps new keys; keep older lines until rewrapped\n")
        out.write(line)
    done(f"master key file {path} made (readable by you only); set [secure] master_key_file to it")


@master_key.command("rewrap")
def rewrap() -> None:
    """Re-wrap every stored private key under the current (first) master key of the key file."""
    from dataclasses import asdict

    from levere.config import get_settings
    from levere.context import Context
    from levere.services import secure

    ctx = Context.build(get_settings())
    try:
        moved = secure.rewrap_keys(ctx)
    finally:
        ctx.close()
    result(
        asdict(moved),
        f"{moved.rewrapped} private key(s) re-wrapped under master key {moved.master_key_id}; "
        f"{moved.already_current} already were. Older lines of the key file can go once no key needs them.",
    )


def register(app: typer.Typer) -> None:
    app.add_typer(master_key, name="master-key")
